"""Measuring real weights: per-row error sums, ratio estimates, and one pass per layer.

For a format C and a weight matrix W (rows = the input dimension) the layer's value is

    MSE_layer = ||W - C(W)||^2 / ||W||^2

a ratio of sums over rows. :func:`measure_layers` reads each selected tensor once (in chunks,
two passes, or whole: :func:`~gmse_cli.realmse.layers.locality`) for every target format and
keeps per-layer tallies; with ``sample`` the layer estimate is a ratio of sums over the
sampled rows with a finite-population-corrected delta-method interval
(:func:`ratio_influence`), and layers combine as independent strata (:meth:`Tally.combined`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
from pydantic import Field

from gmse_cli.errors import DataError, SpecError, bad_value
from gmse_cli.frozen import Frozen
from gmse_cli.realmse.layers import RowSample, locality, sample_rows
from gmse_cli.realmse.tensorfile import DEFAULT_CHUNK_BYTES, TensorInfo, iter_row_chunks, read_rows
from gmse_cli.spec import Format, Quantize
from gmse_cli.threads import parallel_launches

__all__ = [
    "row_errors",
    "ratio_influence",
    "ratio_estimate",
    "SkippedLayer",
    "MeasuredLayer",
    "Tally",
    "LayerTally",
    "check_sampling",
    "measure_layers",
]


# --------------------------------------------------------------------------------------------
# Kernels: per-row squared error and squared norm
# --------------------------------------------------------------------------------------------


def _row_errors_numpy(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x64 = x.astype(np.float64)
    d = y.astype(np.float64) - x64
    return np.einsum("ij,ij->i", d, d), np.einsum("ij,ij->i", x64, x64)


_kernel: Callable | None = None


def _row_errors_numba(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    global _kernel
    if _kernel is None:
        from gmse_cli.kernel_cache import numba

        @numba.njit(parallel=True, cache=True)
        def kernel(x, y):  # pragma: no cover - compiled
            rows, cols = x.shape
            err = np.empty(rows, dtype=np.float64)
            norm = np.empty(rows, dtype=np.float64)
            for r in numba.prange(rows):
                e = 0.0
                n = 0.0
                for c in range(cols):
                    xv = np.float64(x[r, c])
                    d = np.float64(y[r, c]) - xv
                    e += d * d
                    n += xv * xv
                err[r] = e
                norm[r] = n
            return err, norm

        _kernel = kernel
    with parallel_launches():
        return _kernel(x, y)


def row_errors(x: np.ndarray, y: np.ndarray, *, reference: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Per-row ``(||y - x||^2, ||x||^2)`` in float64 for float32 ``(rows, row_length)`` arrays.

    One fused pass (numba); ``reference=True`` runs the plain numpy twin.
    """
    if reference:
        return _row_errors_numpy(x, y)
    return _row_errors_numba(x, y)


def ratio_influence(
    err: np.ndarray,
    norm: np.ndarray,
    *,
    population: int | None = None,
    certain: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """sum(err) / sum(norm) over sampled rows, and each row's influence on it.

    The influence vector ``psi`` is the linearization of the ratio around its value, scaled so
    that ``sqrt(sum(psi**2))`` is the delta-method standard error. Two estimates made on the
    same rows (common random numbers) have a difference whose standard error is
    ``sqrt(sum((psi_a - psi_b)**2))``, far below either error when the formats err alike.

    ``population``: the rows the random sample was drawn from without replacement (the
    finite-population correction makes the influence 0 when all were measured); ``None`` is an
    unbounded population (i.i.d. rows, as from a Gaussian bank). ``certain`` (bool per row)
    marks a stratum measured in full, outside the random sample: the random rows then stand
    for ``population`` rows each weighted ``population / (number of random rows)``.
    """
    m = len(err)
    if certain is None:
        certain = np.zeros(m, dtype=bool)
    rand = ~certain
    k = int(rand.sum())
    weight = 1.0 if population is None or k == 0 else population / k
    total = float(norm[certain].sum()) + weight * float(norm[rand].sum())
    if total == 0.0:
        return 0.0, np.zeros(m)
    r = (float(err[certain].sum()) + weight * float(err[rand].sum())) / total
    psi = np.zeros(m)
    if k == 0 or (population is not None and k >= population):
        return r, psi  # every row measured: the value is exact
    if k < 2:
        psi[rand] = math.inf
        return r, psi
    fpc = 1.0 if population is None else 1.0 - k / population
    with np.errstate(invalid="ignore"):  # inf errors (float32 overflow) give nan: the callers name it
        psi[rand] = (err[rand] - r * norm[rand]) * (weight * math.sqrt(fpc * k / (k - 1)) / total)
    return r, psi


def ratio_estimate(err: np.ndarray, norm: np.ndarray, *, population: int | None = None) -> tuple[float, float]:
    """sum(err) / sum(norm) over sampled rows and its delta-method standard error (see
    :func:`ratio_influence`; 0 when every row of a finite population was measured)."""
    r, psi = ratio_influence(err, norm, population=population)
    return r, math.sqrt(float(psi @ psi))


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------


class SkippedLayer(Frozen):
    """A layer a format cannot split (its row length), and why."""

    name: str
    reason: str
    all_zeros: bool = Field(default=False, exclude=True)  # no signal at all, whatever the format


class MeasuredLayer(Protocol):
    """What a tally needs of a layer: a weight tensor (:class:`TensorInfo`) or the inputs of a
    linear layer over some tokens."""

    @property
    def name(self) -> str: ...
    @property
    def rows(self) -> int: ...
    @property
    def row_length(self) -> int: ...
    @property
    def params(self) -> int: ...


class LayerTally(NamedTuple):
    """One layer measured for one target format."""

    info: MeasuredLayer
    rows: int  # rows measured
    mse: float
    std_err: float
    params: float
    dof: float  # degrees of freedom of std_err (random rows - 1); inf: exact


@dataclass
class Tally:
    """Per-layer results for one target format."""

    layers: list[LayerTally] = field(default_factory=list)
    skipped: list[SkippedLayer] = field(default_factory=list)
    # scales (or plain-cast elements) checked, beyond their format's largest value, flushed to 0
    checked: int = 0
    over: int = 0
    flushed: int = 0

    def add_range(self, counts: tuple[int, int, int]) -> None:
        self.checked += counts[0]
        self.over += counts[1]
        self.flushed += counts[2]

    def combined(self, names: Collection[str] | None = None) -> tuple[float, float, int]:
        """Parameter-weighted mean of the layer MSEs, its standard error (independent strata),
        and the parameters measured; over the layers named in ``names`` only, if given (a
        composite's stage must be averaged over the layers the whole format measured)."""
        layers, params = self._selected(names)
        if not params:
            return math.nan, 0.0, 0
        mse = sum(t.mse * t.params for t in layers) / params
        var = sum((t.std_err * t.params / params) ** 2 for t in layers)
        return mse, math.sqrt(var), params

    def add(self, info: MeasuredLayer, rows: int, mse: float, psi: np.ndarray, params: int,
            certain: np.ndarray | None = None) -> None:
        """Record a layer measured on ``rows`` rows with influence vector ``psi`` and stratum
        ``certain`` (see :func:`ratio_influence`); its standard error has (random rows - 1)
        degrees of freedom. Random rows, not nonzero influences: an all-zero row drawn has
        influence 0 yet is a measured draw like any other."""
        dof = math.inf  # exact: every row measured, or every draw the same
        if np.any(psi):
            k = len(psi) - (0 if certain is None else int(np.count_nonzero(certain)))
            dof = max(1.0, k - 1.0)
        self.layers.append(LayerTally(info, rows, mse, math.sqrt(float(psi @ psi)), params, dof))

    def combined_dof(self, names: Collection[str] | None = None) -> float:
        """Welch-Satterthwaite degrees of freedom of :meth:`combined`'s standard error: a
        sample's few random rows (2 of a 40-row layer at ``--sample 0.05``) give a standard error
        of 1 degree of freedom, whose 95% interval needs 12.7 standard errors, not 1.96."""
        layers, params = self._selected(names)
        parts = [((t.std_err * t.params / params) ** 2, t.dof) for t in layers if t.std_err > 0]
        den = sum(v * v / d for v, d in parts)
        return sum(v for v, _ in parts) ** 2 / den if den > 0 else math.inf

    def _selected(self, names: Collection[str] | None) -> tuple[list[LayerTally], float]:
        layers = [t for t in self.layers if names is None or t.info.name in names]
        return layers, sum(t.params for t in layers)


def check_sampling(sample: float | None, chunk_bytes: int) -> None:
    """Raise :class:`SpecError` for a ``--sample`` outside (0, 1] or a non-positive chunk."""
    if sample is not None and not (0.0 < sample <= 1.0):
        raise bad_value(SpecError, "sample", sample, "must be a fraction in (0, 1] (e.g. 0.1 for 10% of rows)")
    if chunk_bytes < 1:
        raise SpecError(f"chunk_bytes {chunk_bytes} must be positive")


def measure_layers(
    layers: Sequence[TensorInfo],
    targets: Sequence[Format],
    *,
    sample: float | None = None,
    seed: int = 0,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    backend: str = "numba",
    on_layer: Callable[[TensorInfo], None] | None = None,
) -> list[Tally]:
    """Per-layer MSE of every target on every layer: one read of each tensor for all targets."""
    from gmse_cli.compress import compress, scale_range, top_raw_scale
    from gmse_cli.compress.scalar import can_leave_range

    check_sampling(sample, chunk_bytes)
    reference = backend == "numpy"
    rng = np.random.default_rng(seed)
    tallies = [Tally() for _ in targets]
    where = [locality(t) for t in targets]
    # Formats whose scales (or plain-cast elements) can leave their range are checked too.
    ranged = {i for i, t in enumerate(targets) if isinstance(t.quantizer, Quantize) and can_leave_range(t.quantizer)}

    def check_range(i: int, x: np.ndarray) -> None:
        if i in ranged:
            tallies[i].add_range(scale_range(targets[i], x))

    for info in layers:
        fits: list[int] = []
        for i, target in enumerate(targets):
            try:
                target.check_row_length(info.row_length)
                fits.append(i)
            except SpecError as exc:
                tallies[i].skipped.append(SkippedLayer(name=info.name, reason=str(exc)))
        chosen = sample_rows(info, sample, rng, chunk_bytes) if fits else RowSample(None, None, info.rows)
        rows = chosen.rows
        measured = info.rows if rows is None else len(rows)
        err = {i: [] for i in fits}
        norm: list[np.ndarray] = []
        chunked = [i for i in fits if where[i] == "rows"]
        two_pass = [i for i in fits if where[i] == "two-pass"]
        whole = [i for i in fits if where[i] == "tensor"]
        tops = dict.fromkeys(two_pass, 0.0)
        if chunked or (two_pass and rows is None):
            for x in iter_row_chunks(info, rows=rows, chunk_bytes=chunk_bytes):
                for j, i in enumerate(chunked):
                    e, n = row_errors(x, compress(targets[i], x, backend=backend), reference=reference)
                    err[i].append(e)
                    check_range(i, x)
                    if j == 0:
                        norm.append(n)
                if rows is None:
                    for i in two_pass:  # first pass: the tensor's largest raw group scale
                        tops[i] = max(tops[i], top_raw_scale(targets[i], x, backend=backend))
        if two_pass and rows is not None:
            # A sample's largest group scale is not the tensor's (an RMS scale's largest group
            # need not hold the largest |w|): the first pass reads every row.
            for x in iter_row_chunks(info, chunk_bytes=chunk_bytes):
                for i in two_pass:
                    tops[i] = max(tops[i], top_raw_scale(targets[i], x, backend=backend))
        if two_pass:
            for x in iter_row_chunks(info, rows=rows, chunk_bytes=chunk_bytes):
                for j, i in enumerate(two_pass):
                    y = compress(targets[i], x, backend=backend, top_raw_scale=tops[i])
                    e, n = row_errors(x, y, reference=reference)
                    err[i].append(e)
                    check_range(i, x)
                    if j == 0 and not chunked:
                        norm.append(n)
        if whole:
            # The compressor needs the tensor at once: one float32 copy, read block by block.
            # With a sample too: a tensor-wide statistic (an RMS scale, dq8's mean scale) of the
            # sampled rows, half of them the largest, is not the tensor's; only the sampled
            # rows' errors are kept.
            x = read_rows(info, slice(None), chunk_bytes=chunk_bytes)
            for j, i in enumerate(whole):
                e, n = row_errors(x, compress(targets[i], x, backend=backend), reference=reference)
                if rows is not None:
                    e, n = e[rows], n[rows]
                err[i].append(e)
                check_range(i, x)
                if j == 0 and not (chunked or two_pass):
                    norm.append(n)
            del x
        norms = np.concatenate(norm) if fits else None
        if norms is not None and not norms.any():
            # ||W||^2 = 0: the relative error 0/0 is undefined. Reporting 0 would claim a
            # lossless layer and pull the parameter-weighted mean down by its share. (With
            # --sample the rows with the largest |w| are always measured, so a sample of zeros
            # means an all-zero layer.)
            for i in fits:
                tallies[i].skipped.append(SkippedLayer(
                    name=info.name, all_zeros=True, reason=f"tensor '{info.name}' is all zeros: its relative MSE (0/0) is undefined"))
            fits = []
        if fits:
            assert norms is not None
            for i in fits:
                mse, psi = ratio_influence(
                    np.concatenate(err[i]), norms, population=chosen.population, certain=chosen.certain
                )
                if math.isnan(mse):  # finite float32 inputs near its largest value, summed by a rotation
                    raise DataError(f"format '{targets[i].display_name}' on tensor '{info.name}' gives no defined "
                                    "error (nan): its values overflow float32 in the format's arithmetic")
                tallies[i].add(info, measured, mse, psi, info.params, chosen.certain)
        if on_layer is not None:
            on_layer(info)
    return tallies
