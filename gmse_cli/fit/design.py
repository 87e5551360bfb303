"""The design of a fit: which runs form which schemes, and what the runs can identify.

Checked before any optimization, so the solver can assume clean input: option values, enough
runs, model sizes and token counts for the law's exponents, an uncompressed reference scheme for
decoupled capacities, and per family enough distinct GMSE values to fit its capacity curve
(otherwise the curve is held at a base law) and a design in which L is not confounded with A.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError, bad_value
from gmse_cli.fit.params import FAMILY_KEYS
from gmse_cli.fit.results import MODELS
from gmse_cli.law import CURVE_SHAPES
from gmse_cli.limits import MAX_BOOTSTRAP, is_real, is_whole
from gmse_cli.runs import Run
from gmse_cli.spec import Family

__all__ = [
    "validate_options",
    "check_runs",
    "group_by_scheme",
    "canonical_order",
    "check_one_format_per_scheme",
    "reference_scheme",
    "held_at_law",
    "DEFAULT_CURVE",
    "resolve_curve",
    "family_shapes",
    "hold_unidentified",
    "scheme_weights",
]


def validate_options(model: str, huber_delta: float, bootstrap: int, *, bootstrap_starts: int = 1,
                     capacity_delta: float = 1e-4) -> None:
    if model not in MODELS:
        raise FitError(f"unknown model '{model}' (expected one of {', '.join(MODELS)})")
    for name, value, usual in (("huber_delta", huber_delta, "1e-3 is Chinchilla's"),
                               ("capacity_delta", capacity_delta, "1e-4 is the paper's")):
        if not (is_real(value) and value > 0 and math.isfinite(value)):
            raise bad_value(FitError, name, value, f"must be a positive number ({usual})")
    if not (is_whole(bootstrap) and 0 <= bootstrap <= MAX_BOOTSTRAP):
        raise bad_value(FitError, "bootstrap", bootstrap, f"must be a whole number from 0 to {MAX_BOOTSTRAP:,}")
    if not (is_whole(bootstrap_starts) and 1 <= bootstrap_starts <= 1000):
        raise FitError(f"bootstrap_starts {bootstrap_starts!r} must be a whole number from 1 to 1000")


DEFAULT_CURVE = "erf"
"""The shape of the capacity curves a fit fits: erf predicts QuEST's held-out schemes better than
the paper's tanh (0.0041 against 0.0054 RMSE of log-loss; README, "How far to trust a prediction")."""


def resolve_curve(curve: str | None, prior: Mapping[str, tuple[float, float]] | None) -> str:
    """The curve shape a fit uses: ``curve``, or by default erf, or tanh where a prior names a
    curve's F or C (the paper's prior holds its tanh curve's constants, which mean nothing for erf)."""
    on_shape = sorted(k for k in (prior or {}) if k.rpartition(".")[2] in ("F", "C"))
    if curve is None:
        return "tanh" if on_shape else DEFAULT_CURVE
    if curve not in CURVE_SHAPES:
        raise bad_value(FitError, "curve", curve, f"must be one of {', '.join(CURVE_SHAPES)}")
    if curve != "tanh" and on_shape:
        raise FitError(f"the prior on {', '.join(on_shape)} is on a tanh curve's constants; fit --curve tanh with it, "
                       f"or leave the curve constants out of the prior")
    return curve


def family_shapes(families: Sequence[str], names: Sequence[str], held: Mapping[int, tuple[float, str]], base_law,
                  curve: str | None) -> dict[str, str | None]:
    """Each family's curve shape: its base law's where the whole curve is held at that law
    (:func:`held_at_law`), else ``curve``, the shape the fit fits (None: only the held ones)."""
    out = {}
    for fam in families:
        whole = all(names.index(f"{fam}.log{k}") in held for k in FAMILY_KEYS)
        out[fam] = base_law.curve(fam).shape if whole and base_law is not None else curve
    return out


def check_runs(runs: Sequence[Run], model: str, n_free: int, *, law_free: Sequence[str]) -> None:
    n = len(runs)
    if n == 0:
        raise FitError("no runs to fit (check the files and the --where / --exclude-worst selection)")
    need = n_free + 1
    if n < need:
        raise FitError(
            f"a {model} fit has {n_free} free constants and needs at least {need} runs; got {n} "
            "(add runs, or hold constants fixed)"
        )
    sizes = len({r.N for r in runs})
    tokens = len({r.D for r in runs})
    if ("alpha" in law_free or "A" in law_free) and sizes < 3:
        raise FitError(f"a {model} fit needs runs at 3 or more model sizes N to fit A and alpha; got {sizes}")
    if ("beta" in law_free or "B" in law_free) and tokens < 3:
        raise FitError(f"a {model} fit needs runs at 3 or more token counts D to fit B and beta; got {tokens}")
    # With one capacity for every run, A N^-alpha and B D^-beta are two power laws of the same
    # variable when log D is affine in log N (one D/N): the exponents trade places and run off.
    if ("alpha" in law_free and "beta" in law_free and (model == "dense" or len({r.scheme for r in runs}) == 1)
            and _on_one_line(np.log([r.N for r in runs]), np.log([r.D for r in runs]))):
        ratios = sorted({r.D / r.N for r in runs})
        shown = f"D/N = {ratios[0]:.4g} at every run" if ratios[-1] <= ratios[0] * (1 + 1e-4) else "D a power of N at every run"
        raise FitError(
            f"a {model} fit cannot tell the parameter term from the data term ({shown}), so "
            "alpha and beta are not identified; add runs at other tokens per parameter, or hold alpha or "
            "beta (--fix)"
        )


def _on_one_line(log_n: np.ndarray, log_d: np.ndarray, tol: float = 1e-4) -> bool:
    """Whether log D = a + b log N at every run, to ``tol`` (CSV rounding stays well inside it)."""
    design = np.column_stack([np.ones_like(log_n), log_n - log_n.mean()])
    coef = np.linalg.lstsq(design, log_d, rcond=None)[0]
    return bool(np.max(np.abs(design @ coef - log_d)) <= tol)


def group_by_scheme(runs: Sequence[Run]) -> tuple[list[str], np.ndarray]:
    """Scheme names in order of first appearance, and each run's index into them."""
    names: list[str] = []
    index: dict[str, int] = {}
    of_run = np.empty(len(runs), dtype=int)
    for i, r in enumerate(runs):
        if r.scheme not in index:
            index[r.scheme] = len(names)
            names.append(r.scheme)
        of_run[i] = index[r.scheme]
    return names, of_run


def canonical_order(runs: Sequence[Run]) -> np.ndarray:
    """The runs' indices sorted by what each run is (N, D, loss, formats, scheme), not by where
    its file put it: the bootstrap draws in this order, so reordering a runs file keeps its
    intervals. Identical runs tie; which of them is drawn changes nothing."""
    keys = [(r.N, r.D, r.loss, r.weights, r.activations or "", r.scheme) for r in runs]
    return np.array(sorted(range(len(runs)), key=keys.__getitem__), dtype=int)


def check_one_format_per_scheme(runs: Sequence[Run]) -> None:
    """Raise unless every scheme name stands for one pair of formats.

    A scheme is named by its formats' names, and a format file keeps whatever name it was given:
    `uscl formats show int4-g128 > f.toml` with the group edited still says int4-g128. Its runs
    and the catalog format's would pool into one scheme (one decoupled capacity, one held-out
    group, one GMSE in the report) while their GMSEs differ."""
    seen: dict[str, tuple[tuple[str, ...], str]] = {}
    by_name: dict[tuple[str, str | None], tuple[str, ...]] = {}  # runs named, not specified: resolved once
    for run in runs:
        named = run.weights_spec is None and run.activations_spec is None
        content = by_name.get((run.weights, run.activations)) if named else None
        if content is None:
            content = tuple(fmt.model_dump_json(exclude={"name", "description"}) if fmt is not None else ""
                            for fmt in (run.weight_format(), run.activation_format()))
            if named:
                by_name[(run.weights, run.activations)] = content
        first = seen.setdefault(run.scheme, (content, run.source))
        if first[0] != content:
            where = f"in {first[1]} and {run.source}" if first[1] != run.source else f"in {run.source}"
            raise FitError(f"scheme '{run.scheme}' names two different formats ({where}): runs of one scheme "
                           "must share one format; give each format its own name (a format file's name, a CSV's "
                           "scheme cell)")


def reference_scheme(runs: Sequence[Run], schemes: Sequence[str], of_run: np.ndarray) -> int:
    """The uncompressed scheme a decoupled fit pins at rho = 1."""
    dense = [j for j, s in enumerate(schemes)
             if np.any(of_run == j) and runs[int(np.flatnonzero(of_run == j)[0])].is_dense]
    if not dense:
        raise FitError(
            "a decoupled fit needs runs of an uncompressed reference scheme (bf16, fp16 or fp32 weights, "
            f"no activation format) to pin rho = 1; schemes present: {', '.join(schemes)}"
        )
    # Prefer bf16 weights (the format: a scheme's label is the user's to choose), then the most
    # runs, then the format's and the scheme's names, so neither a label nor the runs' order decides.
    def rank(j: int) -> tuple:
        weights = runs[int(np.flatnonzero(of_run == j)[0])].weights
        return weights != "bf16", -int(np.sum(of_run == j)), weights, schemes[j]

    return min(dense, key=rank)


def held_at_law(base_law, family: str, names: Sequence[str]) -> dict[int, tuple[float, str]]:
    """A family's L, F, C held at ``base_law``'s curve: internal index -> (log value, origin)."""
    curve = base_law.families[Family(family)]
    return {names.index(f"{family}.log{k}"): (math.log(getattr(curve, k).value), f"held at law '{base_law.name}'")
            for k in FAMILY_KEYS}


def hold_unidentified(families, n_gmse, incidence, stage_family, base_law, names, notes,
                      user_fixed: Mapping[int, float], stage_bits=None) -> dict[int, tuple[float, str]]:
    """Families the runs cannot identify are held at the base law (or L at 1 if only L is lost).

    When the families' L are confounded with A together (every run carries one lossy stage,
    quantization or sparsity), the one held at 1 is the family whose stages reach the highest
    bits (``stage_bits``): there its curve has saturated at L, so holding it keeps capacities
    relative to the uncompressed model (bf16 near 1) instead of moving the common scale onto it.
    """
    held: dict[int, tuple[float, str]] = {}
    fitted: list[int] = []
    for j, fam in enumerate(families):
        idx = [names.index(f"{fam}.log{k}") for k in FAMILY_KEYS]
        if all(i in user_fixed for i in idx):
            continue
        if n_gmse[fam] >= 3:
            fitted.append(j)
            continue
        if base_law is None or Family(fam) not in base_law.families:
            raise FitError(
                f"family '{fam}' has {n_gmse[fam]} distinct GMSE value(s) in these runs; fitting its "
                "L, F, C needs 3 or more (add runs, or give a base law that covers it)"
            )
        held.update(held_at_law(base_law, fam, names))
        notes.append(f"family '{fam}': {n_gmse[fam]} distinct GMSE value(s), too few to fit; L, F, C held at law '{base_law.name}'")
    # L_f is confounded with A unless the runs differ in how many stages of f they carry
    # (e.g. weights-only vs weights + activations): check the design's rank.
    fitted = [j for j in fitted if names.index(f"{families[j]}.logL") not in user_fixed]
    if stage_bits is not None:  # the best-saturated family last: it is the one found dependent
        present = np.asarray(incidence).sum(axis=1) > 0
        top = {j: max((b for b, f, p in zip(stage_bits, stage_family, present, strict=True) if f == j and p),
                      default=-math.inf) for j in fitted}
        fitted.sort(key=lambda j: top[j])
    counts = np.stack([incidence[stage_family == j].sum(axis=0) for j in fitted], axis=1) if fitted else None
    if counts is not None and 0 not in user_fixed:  # with A held, L is identified by the data
        design = np.ones((counts.shape[0], 1))
        for col, j in enumerate(fitted):
            trial = np.hstack([design, counts[:, col : col + 1]])
            if np.linalg.matrix_rank(trial) > np.linalg.matrix_rank(design):
                design = trial
            else:
                fam = families[j]
                held[names.index(f"{fam}.logL")] = (0.0, "held at 1: not identifiable from A with these runs")
                notes.append(f"family '{fam}': L is confounded with A (each run's number of {fam} stages is the "
                             "same, or follows from its other families' counts); held at 1")
    return held


def scheme_weights(of_run: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Data weights that make every fitted scheme count the same: a scheme's runs each weigh
    1 / (its fitted runs), scaled so the weights of the fitted runs sum to their number (the
    objective keeps its units). Runs not fitted weigh 0."""
    train = np.asarray(train, dtype=bool)
    counts = np.bincount(of_run[train], minlength=int(of_run.max()) + 1).astype(float)
    fitted = np.count_nonzero(counts)
    with np.errstate(divide="ignore"):
        per_run = np.where(train, train.sum() / fitted / counts[of_run], 0.0)
    return per_run

