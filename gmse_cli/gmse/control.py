"""Control variates for the Monte Carlo GMSE: row statistics whose Gaussian expectations are exact.

An int grid whose scales come from each group's largest entries spends most of a row's squared
error where those entries are large: for symmetric int grids with absmax scales the sum over
groups of amax^2 explains about 90% of the variance of a row's error around its norm-scaled
mean, the sums of max(0, max x)^2 and min(0, min x)^2 about 85% for asymmetric grids, and the
sum of the power-of-two floor of amax, squared, most of it for e8m0 scales. An fp grid with e8m0
scales (OCP MX) spends most of its error where the top of a group saturates: the sum of the
squared excess of amax over the largest level (mxfp8-e4m3, whose largest level leaves two steps
of its top binade to saturate: 4.2x less variance than the row norm alone; mxfp4 and mxfp6,
one step: 1.2-1.4x, not worth it; the bank also drops any statistics that show less than 1.5x
over the first 512 rows). A pruned and quantized format spends most of its error's variance
in the energy its pruning drops: summed over the row, that explains 99.3% of it for
sparse-50+int4 and 99.7% for 2:4+int4 (137x and 297x less variance). Each such statistic
has an expectation under i.i.d. N(0, 1) entries that is a one-dimensional integral, computed
here to ~1e-13. Regressing the row errors on the row norm and these statistics, each centred at
its exact mean, and reading the intercept estimates the same constant with that much less
variance (multiple control variates; Glasserman, *Monte Carlo Methods in Financial Engineering*,
sec. 4.1.2). The standard error is the intercept's, from the regression residuals with
``rows - columns`` degrees of freedom. A statistic that explains little costs one degree of
freedom, never validity: the estimator is unbiased to O(1/rows) whatever the statistic.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import cache, lru_cache

import numpy as np

from gmse_cli.limits import MEMO_ENTRIES
from gmse_cli.memo import remembered
from gmse_cli.spec import (
    VQ,
    Format,
    GridKind,
    IntStyle,
    Quantize,
    Rotate,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
    Sparsify,
)

__all__ = ["Control", "RegressionSums", "controls_for", "control_rows", "expected_per_row", "regression_estimate"]

_MIN_ROWS_PER_COLUMN = 8  # fewer rows than this per regression column: the plain ratio estimate
_MAX_CONDITION = 1e10  # of X'X scaled to unit diagonal: beyond it the columns are collinear


@dataclass(frozen=True)
class Control:
    """One per-row statistic: the sum over a row's groups of ``group`` entries of ``kind``
    (``amax2``: max|x|^2; ``pow2``: (2^floor(log2 max|x|))^2; ``hi2``: max(0, max x)^2;
    ``lo2``: min(0, min x)^2; ``clip2``: max(0, max|x| - top 2^floor(log2 max|x|))^2, the
    squared saturation of the group's top under a floor-rounded e8m0 scale, ``top`` being the
    grid's largest level over 2^emax, in [1, 2); ``pruned2``: the energy of the entries
    ``pruning`` drops, a group being the entries it prunes together)."""

    group: int
    kind: str
    top: float = 0.0
    pruning: Sparsify | None = None  # pruned2: the pruning whose dropped energy is summed


def controls_for(fmt: Format, row_length: int) -> tuple[Control, ...]:
    """The statistics worth regressing ``fmt``'s row errors on: the energy its pruning drops
    (:func:`_pruning_controls`) and those of its first scalar stage, if that is an int grid
    whose scale is set by the group's extremes (absmax or mse rules) or an fp grid with
    floor-rounded e8m0 absmax scales, and no rotation comes before it, at its group size; none
    where rows are not independent (the units are then batches)."""
    if not fmt.rows_independent:
        return ()
    return _pruning_controls(fmt, row_length) + _quantizer_controls(fmt, row_length)


def _pruning_controls(fmt: Format, row_length: int) -> tuple[Control, ...]:
    """The energy of the entries a format's pruning drops, summed over the row: most of the
    variance of a pruned and quantized row's error (sparse-50+int4: 137x less with it,
    2:4+int4: 297x). Its mean is exact (:func:`~gmse_cli.compress.sparsity_gmse.nm_gmse`, with
    the whole row as the group for row-wise magnitude or block pruning). Not for a pruning
    alone, whose exact GMSE Monte Carlo is there to check rather than to borrow, nor after a
    rotation (the statistic would have to be taken on the rotated rows)."""
    stage = next((s for s in fmt.stages if isinstance(s, Sparsify)), None)
    if stage is None or not any(isinstance(s, Quantize | VQ) for s in fmt.stages):
        return ()
    if any(isinstance(s, Rotate) for s in fmt.stages[: fmt.stages.index(stage)]):
        return ()
    keep, units, unit = stage.kept_units(row_length)  # as the bit accounting counts them
    # Keeping none drops the whole row: the statistic is the row norm (and nm_gmse needs keep >= 1).
    return () if keep in (0, units) else (Control(units * unit, "pruned2", pruning=stage),)


def _quantizer_controls(fmt: Format, row_length: int) -> tuple[Control, ...]:
    stage = next((s for s in fmt.stages if isinstance(s, Quantize)), None)
    if stage is None or stage.scale not in (ScaleRule.ABSMAX, ScaleRule.MSE):
        return ()
    # A rotation first: the statistics of the unrotated rows explain nothing (1.00-1.11x).
    if any(isinstance(s, Rotate) for s in fmt.stages[: fmt.stages.index(stage)]):
        return ()
    group = row_length if stage.group == "row" else stage.group
    if not isinstance(group, int):
        return ()
    if stage.grid is GridKind.FP:
        return _saturation_controls(stage, group)
    # From here int grids only: a lut or Lloyd-Max grid's error is nearly scale-free (variance
    # reductions of 1.0-1.3x for nf4), not worth the statistics' cost per batch.
    if stage.grid is not GridKind.INT:
        return ()
    # Groups of one entry: amax^2 and hi^2 + lo^2 are each x^2, summed the row norm already
    # regressed on (a singular regression), so only what is not the norm stays.
    if stage.resolved_int_style is IntStyle.ASYMMETRIC:
        return (Control(group, "hi2"),) if group == 1 else (Control(group, "hi2"), Control(group, "lo2"))
    if stage.scale_format is ScaleFormat.E8M0:
        return (Control(group, "pow2"),) if group == 1 else (Control(group, "amax2"), Control(group, "pow2"))
    return () if group == 1 else (Control(group, "amax2"),)


def _saturation_controls(stage: Quantize, group: int) -> tuple[Control, ...]:
    """An fp grid's controls: its top's saturation, where e8m0 scales are floor-rounded from
    amax (OCP MX's rule, the default for absmax) and the saturation reaches past one step of the
    top binade, with amax^2 and its power-of-two floor."""
    from gmse_cli.compress.grids import grid_emax, grid_max

    floor = stage.scale_rounding in (None, ScaleRounding.FLOOR)
    if stage.scale is not ScaleRule.ABSMAX or stage.scale_format is not ScaleFormat.E8M0 or not floor:
        return ()
    if stage.scale_constant is not None or group == 1:
        return ()
    top = grid_max(stage) / 2.0 ** grid_emax(stage)
    # Worth it where saturation reaches past one step of the top binade: a largest level
    # below the all-ones mantissa (e4m3fn's 448 = 1.75 * 2^8: 4.2x less variance). Where the top
    # is 2 - 2^-m (e2m1, e2m3, e3m2, e5m2) the excess stays within one step: 1.2-1.4x.
    assert stage.mantissa_bits is not None
    if (2.0 - top) * 2.0**stage.mantissa_bits < 1.5:
        return ()
    return (Control(group, "amax2"), Control(group, "pow2"), Control(group, "clip2", top))


def control_rows(x: np.ndarray, controls: tuple[Control, ...]) -> np.ndarray:
    """(rows, len(controls)) float64: each control statistic of each row of float32 ``x``."""
    from gmse_cli.compress.group_stats import (  # numba: drawing only
        STAT_AMAX,
        STAT_HI,
        STAT_LO,
        group_stat,
    )

    out = np.empty((x.shape[0], len(controls)), dtype=np.float64)
    stats: dict[tuple[int, int], np.ndarray] = {}  # amax2 and pow2 share one pass
    for j, c in enumerate(controls):
        if c.pruning is not None:
            from gmse_cli.compress.sparsity import mask

            dropped = np.where(mask(c.pruning, x), np.float32(0.0), x)
            out[:, j] = np.einsum("ij,ij->i", dropped, dropped, dtype=np.float64)
            continue
        stat = STAT_HI if c.kind == "hi2" else STAT_LO if c.kind == "lo2" else STAT_AMAX
        if (c.group, stat) not in stats:
            stats[c.group, stat] = group_stat(x, None, c.group, stat)
        v = stats[c.group, stat]
        if c.kind in ("pow2", "clip2"):
            # frexp: v = m 2^e with m in [0.5, 1), so floor(log2 v) = e - 1 exactly (0 stays 0)
            floor = np.ldexp(np.where(v > 0, 1.0, 0.0), np.frexp(v)[1] - 1)
            v = floor if c.kind == "pow2" else np.maximum(v - c.top * floor, 0.0)
        out[:, j] = np.square(v).sum(axis=1)
    return out


def expected_per_row(control: Control, row_length: int) -> float:
    """E[the control's row statistic] for i.i.d. N(0, 1) rows of ``row_length`` entries."""
    if control.pruning is not None:
        return row_length * _pruned_energy(*control.pruning.kept_units(row_length))
    return (row_length // control.group) * _expected_per_group(control.group, control.kind, control.top)


_PANEL = 0.25
_UPPER = 40.0  # P(max|x| > 40) < 1e-340 per entry: the integrands vanish long before


def _survival(x: float, group: int, signed: bool) -> float:
    """P(M > x) for M the largest |entry| (or largest entry, ``signed``) of ``group`` N(0, 1)s,
    from the tail side so it keeps its digits where it is tiny."""
    tail = math.erfc(x / math.sqrt(2.0)) * (0.5 if signed else 1.0)
    return -math.expm1(group * math.log1p(-tail)) if tail < 1.0 else 1.0


@cache
def _gauss_legendre() -> tuple[np.ndarray, np.ndarray]:
    # at first use: numpy.polynomial costs 5 ms to import, and a table lookup needs none of this
    return np.polynomial.legendre.leggauss(24)


def _integral(fn, low: float, high: float) -> float:
    """Integral of a smooth ``fn`` from ``low`` to ``high``: Gauss-Legendre on panels of width
    at most 1/4, stopping once ``fn`` has vanished (past the group maximum's last digits)."""
    nodes, weights = _gauss_legendre()
    total = 0.0
    panels = max(1, math.ceil((high - low) / _PANEL))
    width = (high - low) / panels
    for i in range(panels):
        xs = low + width * (i + 0.5 * (nodes + 1.0))
        values = [fn(float(x)) for x in xs]
        total += 0.5 * width * float(np.dot(weights, values))
        if values[-1] == 0.0:
            break
    return total


_BINADES = range(-60, 7)  # M < 2^-60 has probability below 2^-60g; M >= 2^7 below 1e-3000


_MEANS_VERSION = 2  # bumped whenever _compute_expected_per_group or nm_gmse changes


def _remembered_mean(compute, **key) -> float:
    """An exact mean, computed once per machine (:mod:`gmse_cli.memo`) under ``key``."""
    return remembered("control-means", json.dumps({"control-means": _MEANS_VERSION, **key}), compute)


@lru_cache(maxsize=MEMO_ENTRIES)
def _expected_per_group(group: int, kind: str, top: float = 0.0) -> float:
    # ~1 ms of scalar quadrature each, 20 ms for the catalog
    return _remembered_mean(lambda: _compute_expected_per_group(group, kind, top), group=group, kind=kind, top=top)


@lru_cache(maxsize=MEMO_ENTRIES)
def _pruned_energy(keep: int, units: int, unit: int) -> float:
    """E[energy dropped] per entry: the exact GMSE of keeping the largest ``keep`` of ``units``
    units of ``unit`` entries (0.03-1 s for a row-wide group of 4,096-65,536 entries)."""
    from gmse_cli.compress.sparsity import ALGORITHM_VERSION
    from gmse_cli.compress.sparsity_gmse import nm_gmse

    return _remembered_mean(lambda: nm_gmse(keep, units, unit), sparsity=ALGORITHM_VERSION, kind="pruned2",
                            keep=keep, units=units, unit=unit)


def _compute_expected_per_group(group: int, kind: str, top: float) -> float:
    signed = kind in ("hi2", "lo2")  # min(0, min x)^2 has max(0, max x)^2's law, by symmetry

    def survival(x: float) -> float:
        return _survival(x, group, signed)

    if kind == "pow2":
        # sum over k of 4^k P(2^k <= M < 2^(k+1))
        return sum(4.0**k * (survival(2.0**k) - survival(2.0 ** (k + 1))) for k in _BINADES)
    if kind == "clip2":
        # over each binade [2^k, 2^(k+1)), the excess m - t (t = top 2^k) from t on: by parts,
        # E[(M - t)^2; t < M < b] = integral over (t, b) of 2(m - t) P(M > m) - (b - t)^2 P(M >= b)
        total = 0.0
        for k in _BINADES:
            t, b = top * 2.0**k, 2.0 ** (k + 1)
            if survival(t) > 0.0:
                total += _integral(lambda m, t=t: 2.0 * (m - t) * survival(m), t, b) - (b - t) ** 2 * survival(b)
        return total
    # E[M^2] = integral over x > 0 of 2x P(M > x)
    return _integral(lambda x: 2.0 * x * survival(x), 0.0, _UPPER)


class RegressionSums:
    """Running sums of the control-variate regression (X'X, X'y, y'y over rows), so that
    checking the stopping rule after each batch costs O(columns^2), not a refit of every row.
    The errors are shifted by the first batch's mean, which leaves every coefficient but the
    intercept unchanged and keeps y'y - b'X'y from cancelling."""

    def __init__(self, means: np.ndarray, row_length: int) -> None:
        self.means = means
        self.row_length = row_length
        width = len(means) + 2
        self.rows = 0
        self.shift: float | None = None
        self.xx = np.zeros((width, width))
        self.xy = np.zeros(width)
        self.yy = 0.0

    def add(self, errors: np.ndarray, norms: np.ndarray, stats: np.ndarray) -> None:
        if self.shift is None:
            self.shift = float(errors.mean())
        x = np.column_stack([np.ones_like(errors), norms - self.row_length, stats - self.means])
        y = errors - self.shift
        self.rows += len(errors)
        self.xx += x.T @ x
        self.xy += x.T @ y
        self.yy += float(y @ y)

    def variance_reduction(self) -> float:
        """How many times smaller the residual variance is with the control statistics than
        with the row norm alone (the ratio estimate's model); inf where nothing is left."""
        def rss(width: int) -> float:
            coef = np.linalg.lstsq(self.xx[:width, :width], self.xy[:width], rcond=None)[0]
            return max(self.yy - float(coef @ self.xy[:width]), 0.0)

        full = rss(len(self.xy))
        return rss(2) / full if full > 0 else math.inf

    def estimate(self) -> tuple[float, float, int] | None:
        """(GMSE, its standard error, degrees of freedom); None where too few rows make the
        regression worth less than the ratio estimate."""
        width = len(self.xy)
        if self.rows < _MIN_ROWS_PER_COLUMN * width:
            return None
        # Columns that (nearly) repeat one another (a format pair's controls, a statistic that
        # is constant over the rows drawn) leave the intercept unidentified: the ratio estimate.
        d = np.sqrt(np.diag(self.xx))
        if not np.all(d > 0) or np.linalg.cond(self.xx / np.outer(d, d)) > _MAX_CONDITION:
            return None
        # one factorization for both: the coefficients and Var(intercept) = s^2 [(X'X)^-1]_00
        solved = np.linalg.solve(self.xx, np.column_stack([self.xy, np.eye(width)[0]]))
        coef, inv00 = solved[:, 0], float(solved[0, 1])
        dof = self.rows - width
        # A (nearly) perfect control (pruning then an exact cast: the error is the dropped
        # energy) leaves a residual below the rounding of y'y - b'X'y: floored there, not at 0.
        rss = max(self.yy - float(coef @ self.xy), self.yy * np.finfo(np.float64).eps)
        se = math.sqrt(rss / dof * inv00)
        return (float(coef[0]) + self.shift) / self.row_length, se / self.row_length, dof


def regression_estimate(errors: np.ndarray, norms: np.ndarray, stats: np.ndarray, means: np.ndarray,
                        row_length: int) -> tuple[float, float, int] | None:
    """(GMSE, its standard error, degrees of freedom) from per-row squared errors regressed on
    the row norms (mean ``row_length``) and the control ``stats`` (rows, p) centred at their
    exact ``means`` (:class:`RegressionSums` over all rows at once)."""
    sums = RegressionSums(means, row_length)
    sums.add(errors, norms, stats)
    return sums.estimate()
