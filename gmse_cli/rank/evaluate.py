"""The evaluation engine behind rank, predict and compare: from formats to predictions.

Every format (or weight x activation :class:`~gmse_cli.spec.Scheme`) goes through the same
steps: the GMSE of each tensor's whole pipeline and of each lossy stage alone (one
:func:`~gmse_cli.gmse.estimate_gmse` call over the distinct formats, so one shared sample bank),
the factorized capacity rho = prod rho_family(GMSE_stage), the single-GMSE capacity beside it,
then the law: effective parameters N * rho, predicted loss A (N rho)^-alpha + B D^-beta + E,
its difference from the dense bf16 model (rho = 1, the paper's uncompressed baseline), the
parameters a format needs to match that dense model (N / rho) and the memory they take
(N / rho * bits per parameter).

Intervals come from one set of Monte Carlo draws of the law's constants shared by every row
(:func:`~gmse_cli.law.sample_law`: rows of the law's joint draws where the law file carries
them, marginals otherwise; model in :mod:`gmse_cli.law`) together with draws of each
stage's GMSE within its standard error. A stage's GMSE draws are seeded from ``seed`` and the
measurement itself, so a format gets the same interval whether it is ranked alone or in the
catalog. The loss difference to bf16 is computed draw by draw, so the constants common to
both models (E, B D^-beta) cancel and its interval is far tighter than the loss interval.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Unpack

import numpy as np

from gmse_cli.errors import LawError, SpecError
from gmse_cli.law import (
    Law,
    LawSamples,
    capacity_parts,
    check_draws,
    check_level,
    check_scale,
    evidence_line,
    factorized_capacity,
    interval_ends,
    load_law,
    outside_domain,
    sample_law,
    tensor_parts,
)
from gmse_cli.limits import check_seed
from gmse_cli.rank.results import DEFAULT_TOKENS_PER_PARAM, Prediction, StageRow
from gmse_cli.spec import (
    DEFAULT_ROW_LENGTH,
    Family,
    Format,
    Scheme,
    check_row_length,
    resolve_format,
)

if TYPE_CHECKING:
    from gmse_cli.gmse import GmseEstimate, GmseOptions

__all__ = ["evaluate_all", "resolve_law"]


# --------------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------------


def _as_scheme(item: Format | Scheme | str | Path, act: Format | None) -> Scheme:
    if isinstance(item, Scheme):
        if act is not None and item.activations is not None:
            raise SpecError(
                f"scheme '{item.display_name}' already has activations; leave act out or pass its weight format"
            )
        return item if act is None else item.model_copy(update={"activations": act})
    return Scheme(weights=resolve_format(item), activations=act)


def resolve_law(law: Law | str | Path | None) -> Law:
    """``law`` itself, or the law file or shipped law it names (``None``: the shipped default)."""
    return law if isinstance(law, Law) else load_law(law)


def _resolve_scale(params: float, tokens: float | None) -> tuple[float, float]:
    if tokens is None:
        check_scale(params, 1.0)
        tokens = DEFAULT_TOKENS_PER_PARAM * params
        if not math.isfinite(tokens):  # name the count given, not a token count never given
            raise LawError(f"params = {params!r}: {DEFAULT_TOKENS_PER_PARAM:g} tokens per parameter (the default "
                           "tokens) overflows; give tokens")
    check_scale(params, tokens)
    return float(params), float(tokens)


def _key(fmt: Format) -> tuple:
    # Two formats with the same stages have the same GMSE whatever they are called.
    return fmt.stages


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def _power_term(coefficient: float, count: float, exponent: float) -> float:
    """coefficient * count^-exponent; inf where it overflows (a count below 1 under a huge
    exponent), as the law's own loss gives, where Python's float power would raise."""
    with np.errstate(over="ignore"):
        return float(coefficient * np.float64(count) ** -exponent)


def _loss_above_dense(A, alpha, params: float, rho):
    """A (N rho)^-alpha - A N^-alpha: the loss a capacity rho adds to the dense model's.

    As A N^-alpha expm1(-alpha ln rho), not a difference of two losses: near rho = 1 (fp32,
    fp16) or at large N that difference cancels to a few digits or to 0 (bf16 at N = 1e300:
    0.0 for ~1e-41). rho = 0 is an infinite loss; where the product is 0 * inf (N^-alpha
    underflowing under a huge drawn alpha) the plain difference stands.
    """
    A, alpha, rho = (np.asarray(v, dtype=float) for v in (A, alpha, rho))
    with np.errstate(divide="ignore", over="ignore", invalid="ignore", under="ignore"):
        scale = A * np.float64(params) ** -alpha
        out = scale * np.expm1(-alpha * np.log(rho))
        out = np.where(np.isnan(out), A * (params * rho) ** -alpha - scale, out)
    out = np.where(rho == 0, np.inf, out)
    return float(out) if out.ndim == 0 else out


# --------------------------------------------------------------------------------------------
# Draws and intervals
# --------------------------------------------------------------------------------------------


def _stage_draws(samples: LawSamples, family: Family, est: GmseEstimate, seed: int) -> np.ndarray:
    # Seeded by the measurement itself, so a stage gets the same draws in any company.
    key = zlib.crc32(np.array([est.gmse, est.std_err], dtype=np.float64).tobytes())
    rng = np.random.default_rng([seed, key])
    return samples.capacity([(family, est.gmse, est.std_err)], rng=rng)


def _gmse_interval(est: GmseEstimate, level: float) -> tuple[float, float]:
    """``est``'s interval at coverage ``level``: its own 95% interval (value -+ t95(dof) * std_err,
    the low end clipped at 0) widened or narrowed by t_level(dof) / t95(dof), so that every
    [low, high] of a row has the coverage its ``level`` says. Exact GMSEs are points."""
    half95 = est.ci_high - est.gmse
    if level == 0.95 or not half95 > 0:
        return est.ci_low, est.ci_high
    from scipy.stats import t  # only for a --level other than 0.95: the default path stays light

    dof = est.dof if est.dof is not None else math.inf
    half = half95 * float(t.ppf(0.5 + level / 2, dof) / t.ppf(0.975, dof))
    return max(est.gmse - half, 0.0), est.gmse + half


def _span(q, value: float) -> tuple[float, float]:
    """Interval ends widened to hold the point value (see gmse_cli.law)."""
    return min(float(q[0]), value), max(float(q[1]), value)


# --------------------------------------------------------------------------------------------
# The evaluation shared by rank, predict and compare
# --------------------------------------------------------------------------------------------


def evaluate_all(
    items: Sequence[Format | Scheme | str | Path], *, law: Law | str | Path | None, params: float,
    tokens: float | None, act: Format | str | None, seed: int, draws: int, level: float, progress: bool,
    vary_L: bool, **options: Unpack[GmseOptions],
) -> tuple[list[Prediction], np.ndarray]:
    """The predictions, and the (rows, draws) capacity draws behind their intervals.

    Keywords as in :func:`~gmse_cli.rank.rank`, all required here (the entry points fill in
    the defaults).
    """
    seed = check_seed(seed)
    law = resolve_law(law)
    params, tokens = _resolve_scale(params, tokens)
    check_level(level)
    check_draws(draws)  # before the GMSE work, not after it
    act_fmt = resolve_format(act) if act is not None else None
    schemes = [_as_scheme(item, act_fmt) for item in items]
    parts_of = [capacity_parts(s) for s in schemes]
    # Refuse an uncovered family before spending any time on GMSE.
    for scheme, parts in zip(schemes, parts_of, strict=True):
        try:
            law.check_covers(p.family for p in parts)
        except LawError as exc:
            raise LawError(f"format '{scheme.display_name}': {exc}") from None
    # Name a format that rows cannot split, before its stages (int4-g128, not int4-g128[quantize]).
    row_length = check_row_length(options.get("row_length", DEFAULT_ROW_LENGTH))
    for fmt in (f for s in schemes for f in (s.weights, s.activations) if f is not None):
        try:
            fmt.check_row_length(row_length)
        except SpecError as exc:
            raise SpecError(f"format '{fmt.display_name}': {exc}") from None
    whole_of = [tensor_parts(s) for s in schemes]
    unique: dict[tuple, Format] = {}
    for part in (p for parts in (*parts_of, *whole_of) for p in parts):
        unique.setdefault(_key(part.format), part.format)
    from gmse_cli.gmse import estimate_gmse

    # The law's draws (their own generator, seeded alike) before the GMSE work, so that a
    # vary_L of the wrong kind is refused before any time is spent.
    samples = sample_law(law, draws=draws, rng=seed, vary_L=vary_L)
    estimates = estimate_gmse(list(unique.values()), seed=seed, progress=progress, **options)
    gmse = dict(zip(unique, estimates, strict=True))

    # Every row's draws at once: (rows, draws) matrices, one quantile call per quantity.
    stage_draws: dict[tuple, np.ndarray] = {}
    rho_draws = np.ones((len(schemes), samples.draws))
    for i, parts in enumerate(parts_of):
        for p in parts:
            key = (p.family, _key(p.format))
            if key not in stage_draws:
                stage_draws[key] = _stage_draws(samples, p.family, gmse[_key(p.format)], seed)
            rho_draws[i] *= stage_draws[key]
    stage_keys = list(stage_draws)
    stage_q = interval_ends(np.stack([stage_draws[k] for k in stage_keys]), level) if stage_keys else None
    stage_interval = {k: (stage_q[0, j], stage_q[1, j]) for j, k in enumerate(stage_keys)}
    loss_draws = samples.loss(params, tokens, rho_draws)
    delta_draws = _loss_above_dense(samples.A, samples.alpha, params, rho_draws)
    rho_q, loss_q, delta_q = (interval_ends(d, level) for d in (rho_draws, loss_draws, delta_draws))

    dense = float(law.loss(params, tokens, 1.0))
    beyond = law.beyond_fitted(params, tokens)
    data_term = _power_term(law.B.value, tokens, law.beta.value)
    out: list[Prediction] = []
    for i, scheme in enumerate(schemes):
        stages: list[StageRow] = []
        for p in parts_of[i]:
            est = gmse[_key(p.format)]
            rho = float(law.rho(p.family, est.gmse))
            low, high = stage_interval[(p.family, _key(p.format))]
            gmse_low, gmse_high = _gmse_interval(est, level)
            stages.append(StageRow(
                tensor=p.tensor, family=p.family, name=p.format.display_name, gmse=est.gmse,
                gmse_low=gmse_low, gmse_high=gmse_high, gmse_method=est.method,
                effective_bits=est.effective_bits, rho=rho,
                rho_low=_span((low, high), rho)[0], rho_high=_span((low, high), rho)[1],
            ))
        rho = factorized_capacity(law, [(s.family, s.gmse) for s in stages])
        whole = {p.tensor: (p, gmse[_key(p.format)]) for p in whole_of[i]}
        rho_single = factorized_capacity(law, [(p.family, est.gmse) for p, est in whole.values()])
        loss = float(law.loss(params, tokens, rho))
        delta = _loss_above_dense(law.A.value, law.alpha.value, params, rho)
        w_est = whole["weights"][1]
        w_gmse = _gmse_interval(w_est, level)
        act_est = whole["activations"][1] if "activations" in whole else None
        bits = scheme.weights.bits_per_param(options.get("row_length", DEFAULT_ROW_LENGTH))
        (rho_low, rho_high), (loss_low, loss_high), (delta_low, delta_high) = (
            _span(q[:, i], value) for q, value in ((rho_q, rho), (loss_q, loss), (delta_q, delta))
        )
        out.append(Prediction(
            name=scheme.display_name,
            family=scheme.weights.family,
            activations=scheme.activations.display_name if scheme.activations is not None else None,
            bits_per_param=bits,
            gmse=w_est.gmse, gmse_low=w_gmse[0], gmse_high=w_gmse[1], gmse_method=w_est.method,
            effective_bits=w_est.effective_bits,
            act_gmse=act_est.gmse if act_est is not None else None,
            rho=rho, rho_low=rho_low, rho_high=rho_high, rho_single_gmse=rho_single,
            params=params, tokens=tokens, effective_params=params * rho,
            predicted_loss=_finite(loss), loss_low=_finite(loss_low), loss_high=_finite(loss_high),
            delta_loss_vs_bf16=_finite(delta), delta_loss_low=_finite(delta_low),
            delta_loss_high=_finite(delta_high),
            params_to_match=params / rho if rho > 0 else None,
            memory_to_match_bytes=params / rho * bits / 8 if rho > 0 else None,
            law=law.name, level=level,
            outside_domain=(reason := outside_domain(scheme)),
            evidence=evidence_line(scheme.activations) if reason else None,
            fitted_range_recorded=law.fitted_range is not None,
            fitted_gmse_recorded=law.fitted_gmse_recorded,
            beyond_fitted_range=beyond,
            beyond_fitted_gmse=law.beyond_fitted_gmse((s.family, s.gmse) for s in stages),
            stages=tuple(stages),
            params_term=_finite(_power_term(law.A.value, params * rho, law.alpha.value)) if rho > 0 else None,
            data_term=data_term,
            irreducible=law.E.value,
            dense_loss=dense,
        ))
    return out, rho_draws
