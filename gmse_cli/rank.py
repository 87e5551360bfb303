"""Ranking formats by what they keep: capacity, effective parameters, predicted loss.

    rank(["int4", "fp4", "nvfp4"], params=200e6)   -> list[RankRow]   (one row per format)
    predict("2:4+int4", params=200e6, tokens=20e9) -> Prediction      (the full breakdown)
    compare(["fp4", "int4"])                        -> Comparison      (who wins, how often)

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
catalog. :func:`compare` reads the same draws jointly: how often each format wins.
The loss difference to bf16 is computed draw by draw, so the constants common to both models
(E, B D^-beta) cancel and its interval is far tighter than the loss interval.
"""

from __future__ import annotations

import inspect
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np
from pydantic import Field

from gmse_cli.errors import DataError, LawError, SpecError
from gmse_cli.figures import save_figure
from gmse_cli.frozen import Frozen
from gmse_cli.law import (
    DEFAULT_DRAWS,
    Law,
    LawSamples,
    capacity_parts,
    check_draws,
    check_scale,
    factorized_capacity,
    load_law,
    sample_law,
    tensor_parts,
)
from gmse_cli.spec import DEFAULT_ROW_LENGTH, Family, Format, Scheme, catalog, resolve_format

if TYPE_CHECKING:
    from gmse_cli.gmse import GmseEstimate, GmseOptions

__all__ = [
    "DEFAULT_PARAMS",
    "DEFAULT_TOKENS_PER_PARAM",
    "StageRow",
    "RankRow",
    "Prediction",
    "Comparison",
    "rank",
    "compare",
    "predict",
    "pareto_front",
    "pareto_mask",
    "sort_rows",
    "SORT_COLUMNS",
    "plot_rank",
    "check_plot_path",
]

DEFAULT_PARAMS = 200e6  # the paper's largest Llama size of its own sweep (200M non-embedding)
DEFAULT_TOKENS_PER_PARAM = 100.0  # the middle of the paper's 50/100/200 tokens per parameter


class StageRow(Frozen):
    """One factor of a capacity product: a lossy stage of the weights or of the activations."""

    tensor: str = Field(description="weights or activations")
    family: Family
    name: str = Field(description="the stage as a standalone format")
    gmse: float
    gmse_low: float
    gmse_high: float
    gmse_method: str = Field(description="exact or monte-carlo")
    effective_bits: float | None = Field(description="log_{1/4}(GMSE); None when GMSE is 0")
    rho: float
    rho_low: float
    rho_high: float


class _Outcome(Frozen):
    """What the law says about one format or scheme at one model size and token count."""

    name: str
    family: str = Field(description="the weight format's lossy families, e.g. sparsity+quantization")
    activations: str | None = Field(description="activation format, None for weight-only")
    bits_per_param: float = Field(description="stored bits per weight (elements, scales, masks)")
    gmse: float = Field(description="GMSE of the whole weight pipeline")
    gmse_low: float
    gmse_high: float
    effective_bits: float | None = Field(description="log_{1/4}(GMSE) of the weights")
    act_gmse: float | None = Field(description="GMSE of the whole activation pipeline")
    rho: float = Field(description="capacity: the product of the per-stage capacities")
    rho_low: float
    rho_high: float
    rho_single_gmse: float = Field(
        description="capacity read from each tensor's whole-pipeline GMSE instead (equal for one-stage formats)"
    )
    params: float = Field(description="N, non-embedding parameters")
    tokens: float = Field(description="D, training tokens")
    effective_params: float = Field(description="N * rho: the dense-equivalent parameter count")
    predicted_loss: float | None = Field(description="None when rho = 0 (infinite)")
    loss_low: float | None
    loss_high: float | None
    delta_loss_vs_bf16: float | None = Field(description="predicted loss minus the dense (rho = 1) model's")
    delta_loss_low: float | None
    delta_loss_high: float | None
    params_to_match: float | None = Field(description="N / rho: parameters needed to match the dense model")
    memory_to_match_bytes: float | None = Field(description="N / rho * bits_per_param / 8")
    law: str
    level: float = Field(description="coverage of every [low, high] interval")


class RankRow(_Outcome):
    """One row of :func:`rank`."""

    pareto: bool = Field(description="no other row has both fewer bits per parameter and higher rho")


class Prediction(_Outcome):
    """:func:`predict`: the outcome with its full breakdown."""

    stages: tuple[StageRow, ...] = Field(description="each lossy stage's GMSE and capacity")
    params_term: float | None = Field(description="A * (N rho)^-alpha (None when rho = 0)")
    data_term: float = Field(description="B * D^-beta")
    irreducible: float = Field(description="E")
    dense_loss: float = Field(description="the dense bf16 model's loss, rho = 1")


SORT_COLUMNS: tuple[str, ...] = tuple(k for k in RankRow.model_fields if k not in ("law", "level", "params", "tokens"))
# Columns where more is better sort descending by default.
_DESCENDING = {"rho", "rho_low", "rho_high", "rho_single_gmse", "effective_bits", "effective_params", "pareto"}


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


def _resolve_law(law: Law | str | Path | None) -> Law:
    return law if isinstance(law, Law) else load_law(law)


def _resolve_scale(params: float, tokens: float | None) -> tuple[float, float]:
    if tokens is None:
        check_scale(params, 1.0)
        tokens = DEFAULT_TOKENS_PER_PARAM * params
    check_scale(params, tokens)
    return float(params), float(tokens)


def _key(fmt: Format) -> tuple:
    # Two formats with the same stages have the same GMSE whatever they are called.
    return fmt.stages


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


# --------------------------------------------------------------------------------------------
# The evaluation shared by rank and predict
# --------------------------------------------------------------------------------------------


def _stage_draws(samples: LawSamples, family: Family, est: GmseEstimate, seed: int) -> np.ndarray:
    # Seeded by the measurement itself, so a stage gets the same draws in any company.
    key = zlib.crc32(np.array([est.gmse, est.std_err], dtype=np.float64).tobytes())
    rng = np.random.default_rng([seed, key])
    return samples.capacity([(family, est.gmse, est.std_err)], rng=rng)


def _quantiles(draws: np.ndarray, level: float) -> np.ndarray:
    """(2, rows) interval ends of (rows, draws); no interpolation, so infinite draws stay inf."""
    return np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=-1, method="inverted_cdf")


def _span(q, value: float) -> tuple[float, float]:
    """Interval ends widened to hold the point value (see gmse_cli.law)."""
    return min(float(q[0]), value), max(float(q[1]), value)


def _evaluate_all(
    items: Sequence[Format | Scheme | str | Path], *, law: Law | str | Path | None, params: float,
    tokens: float | None, act: Format | str | None, seed: int, draws: int, level: float, progress: bool,
    vary_L: bool, **options: Unpack[GmseOptions],
) -> tuple[list[Prediction], np.ndarray]:
    """The predictions, and the (rows, draws) capacity draws behind their intervals."""
    law = _resolve_law(law)
    params, tokens = _resolve_scale(params, tokens)
    if not 0 < level < 1:
        raise LawError(f"level = {level} must lie in (0, 1), e.g. 0.95")
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
    whole_of = [tensor_parts(s) for s in schemes]
    unique: dict[tuple, Format] = {}
    for part in (p for parts in (*parts_of, *whole_of) for p in parts):
        unique.setdefault(_key(part.format), part.format)
    from gmse_cli.gmse import estimate_gmse

    estimates = estimate_gmse(list(unique.values()), seed=seed, progress=progress, **options)
    gmse = dict(zip(unique, estimates, strict=True))

    # Every row's draws at once: (rows, draws) matrices, one quantile call per quantity.
    samples = sample_law(law, draws=draws, rng=seed, vary_L=vary_L)
    stage_draws: dict[tuple, np.ndarray] = {}
    rho_draws = np.ones((len(schemes), samples.draws))
    for i, parts in enumerate(parts_of):
        for p in parts:
            key = (p.family, _key(p.format))
            if key not in stage_draws:
                stage_draws[key] = _stage_draws(samples, p.family, gmse[_key(p.format)], seed)
            rho_draws[i] *= stage_draws[key]
    stage_keys = list(stage_draws)
    stage_q = _quantiles(np.stack([stage_draws[k] for k in stage_keys]), level) if stage_keys else None
    stage_interval = {k: (stage_q[0, j], stage_q[1, j]) for j, k in enumerate(stage_keys)}
    loss_draws = samples.loss(params, tokens, rho_draws)
    with np.errstate(invalid="ignore"):  # inf - finite stays inf
        delta_draws = loss_draws - samples.loss(params, tokens, 1.0)
    rho_q, loss_q, delta_q = (_quantiles(d, level) for d in (rho_draws, loss_draws, delta_draws))

    dense = float(law.loss(params, tokens, 1.0))
    data_term = law.B.value * tokens ** -law.beta.value
    out: list[Prediction] = []
    for i, scheme in enumerate(schemes):
        stages: list[StageRow] = []
        for p in parts_of[i]:
            est = gmse[_key(p.format)]
            rho = float(law.rho(p.family, est.gmse))
            low, high = stage_interval[(p.family, _key(p.format))]
            stages.append(StageRow(
                tensor=p.tensor, family=p.family, name=p.format.display_name, gmse=est.gmse,
                gmse_low=est.ci_low, gmse_high=est.ci_high, gmse_method=est.method,
                effective_bits=est.effective_bits, rho=rho,
                rho_low=_span((low, high), rho)[0], rho_high=_span((low, high), rho)[1],
            ))
        rho = factorized_capacity(law, [(s.family, s.gmse) for s in stages])
        whole = {p.tensor: (p, gmse[_key(p.format)]) for p in whole_of[i]}
        rho_single = factorized_capacity(law, [(p.family, est.gmse) for p, est in whole.values()])
        loss = float(law.loss(params, tokens, rho))
        w_est = whole["weights"][1]
        act_est = whole["activations"][1] if "activations" in whole else None
        bits = scheme.weights.bits_per_param(options.get("row_length", DEFAULT_ROW_LENGTH))
        (rho_low, rho_high), (loss_low, loss_high), (delta_low, delta_high) = (
            _span(q[:, i], value) for q, value in ((rho_q, rho), (loss_q, loss), (delta_q, loss - dense))
        )
        out.append(Prediction(
            name=scheme.display_name,
            family=scheme.weights.family,
            activations=scheme.activations.display_name if scheme.activations is not None else None,
            bits_per_param=bits,
            gmse=w_est.gmse, gmse_low=w_est.ci_low, gmse_high=w_est.ci_high,
            effective_bits=w_est.effective_bits,
            act_gmse=act_est.gmse if act_est is not None else None,
            rho=rho, rho_low=rho_low, rho_high=rho_high, rho_single_gmse=rho_single,
            params=params, tokens=tokens, effective_params=params * rho,
            predicted_loss=_finite(loss), loss_low=_finite(loss_low), loss_high=_finite(loss_high),
            delta_loss_vs_bf16=_finite(loss - dense), delta_loss_low=_finite(delta_low),
            delta_loss_high=_finite(delta_high),
            params_to_match=params / rho if rho > 0 else None,
            memory_to_match_bytes=params / rho * bits / 8 if rho > 0 else None,
            law=law.name, level=level,
            stages=tuple(stages),
            params_term=_finite(law.A.value * (params * rho) ** -law.alpha.value) if rho > 0 else None,
            data_term=data_term,
            irreducible=law.E.value,
            dense_loss=dense,
        ))
    return out, rho_draws


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def rank(
    formats: Sequence[Format | Scheme | str | Path] | None = None,
    *,
    law: Law | str | Path | None = None,
    params: float = DEFAULT_PARAMS,
    tokens: float | None = None,
    act: Format | str | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    level: float = 0.95,
    progress: bool = False,
    vary_L: bool = False,
    **options: Unpack[GmseOptions],
) -> list[RankRow]:
    """One :class:`RankRow` per format or scheme, in the order given, Pareto frontier marked.

    ``formats``: catalog names, shorthand, .toml paths, :class:`Format` or :class:`Scheme`
    (``None``: the whole catalog). ``law``: a :class:`Law`, a law file or a shipped law name
    (``None``: the shipped default). ``params`` N and ``tokens`` D (default
    ``DEFAULT_TOKENS_PER_PARAM * params``) set the model the loss is predicted for. ``act`` is an
    activation format applied to every row. ``seed`` and the GMSE ``options`` (``rel_err``,
    ``row_length``, ``method``, ``backend``, ``device``, ``max_samples``, ``bank``: see
    :class:`~gmse_cli.gmse.GmseOptions`) go to :func:`~gmse_cli.gmse.estimate_gmse`; ``seed`` also
    seeds the ``draws`` Monte Carlo draws behind every ``level`` interval; ``vary_L`` also
    draws each curve's L the law's joint draws do not carry (see :mod:`gmse_cli.law` for why it
    is held by default).

    Raises :class:`LawError` for a family the law does not cover or a non-positive N or D,
    :class:`SpecError` for a format that does not resolve.
    """
    items = list(catalog().values()) if formats is None else list(formats)
    preds, _ = _evaluate_all(
        items, law=law, params=params, tokens=tokens, act=act, seed=seed, draws=draws, level=level,
        progress=progress, vary_L=vary_L, **options,
    )
    return _rows(preds)


def _rank_keywords(caller: str, given: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """rank's keywords with rank's defaults, updated by ``given`` (checked) and ``fixed``: the
    one signature compare and predict share, so the three cannot drift apart."""
    from gmse_cli.gmse import GmseOptions

    own = {k: p.default for k, p in inspect.signature(rank).parameters.items() if p.kind is p.KEYWORD_ONLY}
    allowed = (set(own) | GmseOptions.__optional_keys__) - set(fixed)
    if unknown := set(given) - allowed:
        raise TypeError(f"{caller}() got unexpected keywords {sorted(unknown)}")
    return own | given | fixed


def _rows(preds: Sequence[Prediction]) -> list[RankRow]:
    front = pareto_mask(np.array([p.bits_per_param for p in preds]), np.array([p.rho for p in preds]))
    return [
        RankRow(**p.model_dump(exclude={"stages", "params_term", "data_term", "irreducible", "dense_loss"}),
                pareto=bool(on))
        for p, on in zip(preds, front, strict=True)
    ]


class Comparison(Frozen):
    """:func:`compare`: rows and, draw by draw of the law's constants, which one wins."""

    rows: tuple[RankRow, ...]
    p_most_capacity: tuple[float, ...] = Field(
        description="per row: share of the draws in which its rho is at least every other row's"
    )
    p_least_memory: tuple[float, ...] = Field(
        description="per row: share of the draws in which it needs the least memory to match bf16"
    )


def compare(formats: Sequence[Format | Scheme | str | Path], **kwargs: Any) -> Comparison:
    """Rank ``formats`` (keywords as in :func:`rank`) and say how often each wins.

    Marginal intervals overstate how uncertain a comparison is: formats of one family share a
    curve, so a draw of F and C that lowers one raises no other -- their order follows their
    GMSE in every draw. The shares here are computed on the shared draws, so they carry that
    correlation (ties count for every tied row, so shares may sum to more than 1).
    """
    preds, rho = _evaluate_all(list(formats), **_rank_keywords("compare", kwargs))
    bits = np.array([p.bits_per_param for p in preds])[:, None]
    with np.errstate(divide="ignore"):
        memory = np.where(rho > 0, bits / np.where(rho > 0, rho, 1.0), np.inf)  # (rows, draws), up to N / 8
    return Comparison(
        rows=tuple(_rows(preds)),
        p_most_capacity=tuple(float(x) for x in np.mean(rho >= rho.max(axis=0), axis=1)),
        p_least_memory=tuple(float(x) for x in np.mean(memory <= memory.min(axis=0), axis=1)),
    )


def predict(
    scheme: Format | Scheme | str | Path,
    params: float = DEFAULT_PARAMS,
    tokens: float | None = None,
    law: Law | str | Path | None = None,
    **kwargs: Any,
) -> Prediction:
    """The law's prediction for one format or scheme, with each stage's GMSE and capacity and
    the three loss terms (other keywords as in :func:`rank`, ``progress`` aside)."""
    keywords = _rank_keywords("predict", kwargs, params=params, tokens=tokens, law=law, progress=False)
    (pred,), _ = _evaluate_all([scheme], **keywords)
    return pred


def pareto_mask(bits: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """True where no other point has bits <= and rho >= with one of them strict.

    Sweep in order of bits: a point is on the frontier when its rho is the best among equal
    bits and strictly above the best rho of every cheaper point. O(n log n).
    """
    n = bits.size
    mask = np.zeros(n, dtype=bool)
    order = np.lexsort((-rho, bits))  # by bits, then best rho first
    best_cheaper = -math.inf
    i = 0
    while i < n:
        j = i
        while j < n and bits[order[j]] == bits[order[i]]:
            j += 1
        group = order[i:j]
        top = rho[group[0]]
        if top > best_cheaper:
            mask[group[rho[group] == top]] = True
        best_cheaper = max(best_cheaper, top)
        i = j
    return mask




def pareto_front(rows: Sequence[RankRow]) -> list[RankRow]:
    """The rows no other row beats on both bits per parameter and capacity, by bits."""
    mask = pareto_mask(np.array([r.bits_per_param for r in rows]), np.array([r.rho for r in rows]))
    return sorted((r for r, on in zip(rows, mask, strict=True) if on), key=lambda r: r.bits_per_param)


def sort_rows(rows: Sequence[RankRow], column: str, *, reverse: bool = False) -> list[RankRow]:
    """Rows sorted by ``column`` (a :class:`RankRow` field): ascending, except where more is
    better (rho, effective bits or parameters, pareto); ``reverse`` flips it. Missing values
    (None) go last either way; ties keep their order."""
    if column not in SORT_COLUMNS:
        raise SpecError(f"cannot sort by '{column}' (columns: {', '.join(SORT_COLUMNS)})")
    descending = (column in _DESCENDING) != reverse
    present = [r for r in rows if getattr(r, column) is not None]
    missing = [r for r in rows if getattr(r, column) is None]
    return sorted(present, key=lambda r: getattr(r, column), reverse=descending) + missing


# --------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------


def check_plot_path(path: str | Path) -> Path:
    """Raise :class:`DataError` unless ``path`` is a writable .png/.pdf/.svg file path.

    Checked before any GMSE is computed, so a typo costs nothing.
    """
    import os

    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise DataError(f"plot path '{path}' must end in .png, .pdf or .svg")
    parent = path.parent
    if not parent.is_dir():
        raise DataError(f"cannot write plot '{path}': folder '{parent}' does not exist")
    if path.is_dir():
        raise DataError(f"cannot write plot '{path}': it is a folder (name a file)")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise DataError(f"cannot write plot '{path}': permission denied (choose another path)")
    return path


def _coincident(rows: Sequence[RankRow], xy) -> dict[tuple[float, float], list[RankRow]]:
    """Rows grouped by their point, to 3 significant digits, so one label names them all."""
    groups: dict[tuple[float, float], list[RankRow]] = {}
    for r in rows:
        x, y = xy(r)
        groups.setdefault((float(f"{x:.3g}"), float(f"{y:.3g}")), []).append(r)
    return groups


def plot_rank(rows: Sequence[RankRow], path: str | Path, *, law: Law | str | Path | None = None) -> Path:
    """Two panels: (a) rho against GMSE with each family's fitted curve (and its 95% band of
    the constants' draws) and every row as a labelled point; (b) rho against bits per
    parameter with the Pareto frontier. Written with matplotlib's Agg backend."""
    path = check_plot_path(path)
    law = _resolve_law(law)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {Family.QUANTIZATION: "tab:blue", Family.SPARSITY: "tab:orange", Family.VQ: "tab:green"}
    fig, (ax_g, ax_b) = plt.subplots(1, 2, figsize=(15, 6.5), dpi=110)

    # Near-lossless casts (fp32: GMSE ~ 1e-19) would stretch the axis over the flat part of
    # every curve; they are drawn at its left edge instead.
    g_lo = 1e-5
    grid = np.logspace(math.log10(g_lo), 0, 300)
    samples = sample_law(law, draws=1000, rng=0)
    shown = {Family(f) for r in rows for f in r.family.split("+") if f != Family.NONE.value}
    for family, curve in sorted(law.families.items()):
        if family not in shown:
            continue
        color = colors.get(family, "tab:gray")
        band = np.array([samples.rho(family, g) for g in grid])  # (grid, draws)
        lo, hi = np.quantile(band, [0.025, 0.975], axis=1)
        ax_g.fill_between(grid, lo, hi, color=color, alpha=0.07, linewidth=0)
        ax_g.plot(grid, curve.rho(grid), color=color, linestyle="--" if family is Family.VQ else "-", label=f"{family} curve (L={curve.L.value:.3g}, "
                  f"F={curve.F.value:.3g}, C={curve.C.value:.3g}); band: 95% of constants' draws")
    for (x, y), group in _coincident(rows, lambda r: (max(r.gmse, g_lo), r.rho)).items():
        r = group[0]
        single = r.activations is None and "+" not in r.family and r.family != Family.NONE.value
        color = colors.get(Family(r.family), "tab:gray") if single else "black"
        ax_g.scatter([x], [y], marker="o" if single else "D", s=18, zorder=3,
                     color=color, facecolors=color if single else "none")
        ax_g.annotate(", ".join(g.name for g in group), (x, y), fontsize=6, xytext=(3, 2),
                      textcoords="offset points")
    ax_g.scatter([], [], marker="D", facecolors="none", color="black", label="composite / W x A (factorized rho)")
    ax_g.set_xscale("log")
    ax_g.set_xlim(g_lo / 1.5, 1.5)
    ax_g.set_xlabel(f"GMSE of the whole weight pipeline (below {g_lo:g}: drawn at the edge)")
    ax_g.set_ylabel("capacity rho")
    ax_g.set_title(f"(a) capacity against Gaussian MSE - law {law.name}")
    ax_g.set_ylim(0, 1.05)
    ax_g.legend(fontsize=7, loc="lower left")
    ax_g.grid(alpha=0.3)

    front = pareto_front(rows)
    for r in rows:
        ax_b.errorbar([r.bits_per_param], [r.rho], yerr=[[r.rho - r.rho_low], [r.rho_high - r.rho]],
                      fmt="none", color="tab:gray", alpha=0.25, elinewidth=0.6, capsize=0)
    for (x, y), group in _coincident(rows, lambda r: (r.bits_per_param, r.rho)).items():
        on = any(g.pareto for g in group)
        ax_b.scatter([x], [y], s=18, zorder=3, color="tab:red" if on else "tab:gray")
        ax_b.annotate(", ".join(g.name for g in group), (x, y), fontsize=6, xytext=(3, 2),
                      textcoords="offset points")
    if front:
        xs = [r.bits_per_param for r in front]
        ys = [r.rho for r in front]
        ax_b.step(xs, ys, where="post", color="tab:red", label="Pareto frontier")
    ax_b.errorbar([], [], yerr=[], fmt="none", color="tab:gray", alpha=0.4, label=f"{rows[0].level:.0%} interval of rho" if rows else None)
    ax_b.set_xscale("log", base=2)
    ax_b.set_xlabel("bits per parameter")
    ax_b.set_ylabel("capacity rho")
    ax_b.set_title("(b) capacity against storage cost")
    ax_b.set_ylim(0, 1.05)
    ax_b.legend(fontsize=7, loc="lower right")
    ax_b.grid(alpha=0.3)
    # fixed margins: tight_layout would measure every label (seconds with a whole catalog)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.09, top=0.93, wspace=0.15)
    save_figure(fig, path, dpi=None)
    return path
