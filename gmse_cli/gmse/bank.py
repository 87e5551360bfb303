"""The Monte Carlo path: one seeded bank of Gaussian rows shared by every format of a run.

The bank holds rows of ``row_length`` entries (4096 by default), cut into *batches*; a batch
is also the "tensor" of per-tensor scales. Its samples come from a counter-based generator
(:mod:`.philox`): batch ``i`` is a fixed stretch of the seed's Gaussian stream, drawn in
parallel, bit-identical whatever the thread count and whatever order batches are asked for. Every format compresses the same rows (common
random numbers), so differences between formats are estimated far more precisely than either
value (:meth:`SampleBank.difference`). The estimate is the ratio of sums; its standard error
comes from unit totals (batches, or rows: below; ratio estimator), and sampling continues batch by batch until
the relative standard error reaches ``rel_err`` (or ``max_samples``). Seeded and
bit-reproducible.

A format whose rows are compressed independently (:attr:`Format.rows_independent`: no
per-tensor statistic) has i.i.d. rows, so its standard error comes from the row totals
instead: 128 rows at 4 batches, not 32 batch totals. The standard
error itself is then precise, so sampling can stop after 4 batches instead of 32 (VQ, which
meets 1e-3 in 4-8 batches, stops up to 8x sooner), and the stopping rule (stop when the
estimated error first reaches ``rel_err``) no longer favours an underestimated error.

An int-grid format whose scales come from its groups' extremes (and an e4m3fn-like MX grid) is
estimated by a control-variate regression on row statistics with exact Gaussian means
(:mod:`.control`): 4-12x less variance for absmax int grids, so as many times fewer samples.
The regression may stop the sampling from 512 rows (before, the ratio estimate may); statistics
that show less than 1.5x there are dropped and the ratio estimate goes on without them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from gmse_cli.errors import SpecError
from gmse_cli.gmse.backends import check_backend_name, check_device, compressor
from gmse_cli.gmse.clipping import ClipEnergy, clip_energy_for
from gmse_cli.gmse.control import (
    Control,
    RegressionSums,
    control_rows,
    controls_for,
    expected_per_row,
)
from gmse_cli.gmse.estimates import GmseDifference, GmseEstimate, interval95, make_estimate
from gmse_cli.limits import check_seed, is_whole
from gmse_cli.progress import watch_compiles
from gmse_cli.spec import DEFAULT_ROW_LENGTH, Format, check_row_length
from gmse_cli.threads import parallel_launches

__all__ = ["SampleBank", "DEFAULT_MAX_SAMPLES", "MEASURE_VERSION", "MIN_BATCHES", "stored_dof"]

MEASURE_VERSION = 1
"""Bumped whenever what the bank measures changes (the rows a per-tensor scale sees, the
estimator); part of the key of every stored GMSE (:mod:`gmse_cli.gmse.stored`). A new
generator does not bump it: its estimates are of the same constants."""

_BATCH_ELEMENTS = 1 << 17  # 512 KB of float32 per batch: big enough for kernels, small enough to stop early
MIN_BATCHES = 32
"""Batch units (a per-tensor statistic: each batch is one tensor) an estimate's standard error
needs at least: with fewer, the stopping rule's pick of a low batch-variance estimate costs
coverage (nvfp4 from 16: 93.8% over 600 seeds; from 32: 95.6% over 900), and from 2 a standard
error can be hundreds of times too small. Every estimator measured by batches (the engine, a
search's final values) draws this many."""
_CLIPPING_BACKENDS = ("numba", "numpy", "torch")  # compressors that clip as the format says
_MIN_ROWS = 16  # row units: below this the row-variance estimate itself is too noisy
_MIN_ROW_BATCHES = 4  # batches before stopping when rows are the units (and at least 16 rows)
_MIN_CONTROL_ROWS = 512  # rows before a control-variate regression may stop the sampling: its standard
# error is then within ~3% (at 128 rows the stopping rule's pick of a low one cost 1-3 points of
# coverage); before, the ratio estimate may stop it, and the regression is still what is reported
_MIN_CONTROL_GAIN = 1.5  # at those rows, the variance reduction the statistics must show to be kept:
# they cost 20-30% more time a batch (MX fp4/fp6 grids' 1.2-1.4x would not pay for it)
DEFAULT_MAX_SAMPLES = 1 << 26  # 64M elements per format by default
_HELD_ELEMENTS = 1 << 26  # batches beyond 256 MB are drawn again when asked for, not kept


def stored_dof(samples: int, row_length: int, fmt: Format) -> int | None:
    """Degrees of freedom of a stored Monte Carlo estimate of ``fmt``'s standard error that
    does not record its own: its rows (if its rows are independent) or batches at
    ``row_length``, minus one, at least the minimum's. None where a format measured by batches
    holds fewer than :data:`MIN_BATCHES` of them (earlier searches cached such formats from
    2-10 tensors, standard error and all): no interval is honest from it, so it is no hit."""
    if fmt.rows_independent:
        return max(_MIN_ROWS, samples // row_length) - 1
    batches = samples // (max(1, _BATCH_ELEMENTS // row_length) * row_length)
    return batches - 1 if batches >= MIN_BATCHES else None


def _row_sq_errors_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    diff = (y.astype(np.float64) - x.astype(np.float64))
    return np.einsum("ij,ij->i", diff, diff)


_row_sq_errors_kernel: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _row_sq_errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row sum of squared errors in float64 (fused numba reduction; numpy twin above)."""
    global _row_sq_errors_kernel
    if _row_sq_errors_kernel is None:
        from gmse_cli.kernel_cache import numba

        @numba.njit(parallel=True, cache=True, fastmath=False)
        def kernel(x, y):  # pragma: no cover - compiled
            rows, cols = x.shape
            out = np.empty(rows, dtype=np.float64)
            for r in numba.prange(rows):
                acc = 0.0
                for c in range(cols):
                    d = np.float64(y[r, c]) - np.float64(x[r, c])
                    acc += d * d
                out[r] = acc
            return out

        _row_sq_errors_kernel = kernel
    with parallel_launches():
        return _row_sq_errors_kernel(x, y)


class SampleBank:
    """A lazily grown, seeded bank of standard Gaussian rows shared by many formats.

    Batch ``i`` holds elements ``i * batch_elements ...`` of the seed's Philox stream
    (:func:`~gmse_cli.gmse.philox.gaussian_stream`), so the bank is identical whatever order
    formats ask for it and however far it grows. Memory: ``rows_per_batch * row_length * 4``
    bytes per batch held; the first 256 MB of batches are kept, later ones drawn again on
    each use (cheaper than holding them). ``backend`` names a compressor backend
    (:mod:`gmse_cli.gmse.backends`); ``device`` is where it runs.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        row_length: int = DEFAULT_ROW_LENGTH,
        batch_elements: int = _BATCH_ELEMENTS,
        backend: str = "numba",
        device: str = "cpu",
    ) -> None:
        check_row_length(row_length)
        if not (is_whole(batch_elements) and batch_elements >= 1):
            raise SpecError(f"batch_elements = {batch_elements!r} must be a positive whole number")
        check_backend_name(backend)
        check_device(device)  # before the bank holds it: the numba and numpy backends never read it
        self.seed = check_seed(seed)
        self.row_length = row_length
        self.rows_per_batch = max(1, batch_elements // row_length)
        self.backend = backend
        self.device = device
        self._batches: dict[int, np.ndarray] = {}
        self._norms: dict[int, np.ndarray] = {}
        self._controls: dict[tuple[int, tuple[Control, ...]], np.ndarray] = {}
        self._last: tuple[int, np.ndarray] | None = None  # the latest batch beyond the held ones
        self._held = max(1, _HELD_ELEMENTS // self.batch_elements)
        self._compress = compressor(backend, device)

    @property
    def batch_elements(self) -> int:
        return self.rows_per_batch * self.row_length

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, row_length) float32 samples of batch ``index`` and their per-row ||x||^2."""
        x = self._batches.get(index)
        if x is None and self._last is not None and self._last[0] == index:
            x = self._last[1]  # its control statistics follow its compression: no second draw
        if x is None:
            # Not in __init__: numba's import (0.3 s) waits until a batch is needed. The stream
            # starts numba's pool (idle OpenMP workers sleep) before the first kernel.
            from gmse_cli.gmse.philox import gaussian_stream, philox_key  # numba: only when drawing

            watch_compiles()
            n = self.batch_elements
            x = gaussian_stream(philox_key(self.seed), index * n, n).reshape(self.rows_per_batch, self.row_length)
            if index < self._held:
                self._batches[index] = x
            else:
                self._last = (index, x)
        if index not in self._norms:
            self._norms[index] = np.einsum("ij,ij->i", x, x, dtype=np.float64)
        return x, self._norms[index]

    def batch_totals(self, fmt: Format, index: int) -> tuple[float, float]:
        """(sum of squared errors, sum of ||x||^2) of ``fmt`` over batch ``index``."""
        x, norms = self.batch(index)
        y = self._compress(fmt, x)
        return float(_row_sq_errors(x, y).sum()), float(norms.sum())

    def _measured_batches(self, formats: tuple[Format, ...], max_samples: int) -> Iterator[tuple[list[np.ndarray], np.ndarray, bool]]:
        """Batch by batch: each format's squared-error totals per unit, the units' ||x||^2
        totals, and whether the minimum has been drawn (the caller may stop). The units are
        rows if every format's rows are independent (:attr:`Format.rows_independent`), else batches;
        at most ``max_samples`` per format beyond the minimum."""
        for fmt in formats:
            fmt.check_row_length(self.row_length)
        by_rows = all(f.rows_independent for f in formats)
        least = max(_MIN_ROW_BATCHES, -(-_MIN_ROWS // self.rows_per_batch)) if by_rows else MIN_BATCHES
        for index in range(max(least, max_samples // self.batch_elements)):
            x, norms = self.batch(index)
            errors = [_row_sq_errors(x, self._compress(f, x)) for f in formats]
            if not by_rows:
                errors, norms = [np.array([e.sum()]) for e in errors], np.array([norms.sum()])
            yield errors, norms, index + 1 >= least

    def run(self, fmt: Format, *, rel_err: float = 1e-3, max_samples: int = DEFAULT_MAX_SAMPLES) -> tuple[np.ndarray, np.ndarray, int]:
        """Error and norm totals per unit (rows or batches: :meth:`_measured_batches`), grown
        batch by batch until the relative standard error is met, and the batches drawn."""
        errors, norms, _, batches = self._run(fmt, rel_err, max_samples, ())
        return errors, norms, batches

    def _run(self, fmt: Format, rel_err: float, max_samples: int, controls: tuple[Control, ...],
             clip: ClipEnergy | None = None) -> tuple[np.ndarray, np.ndarray, RegressionSums | None, int]:
        """As :meth:`run`, with ``controls`` regressed on; with ``clip``, each row's error less
        its clipping energy (whose exact mean the caller adds back)."""
        errors: list[np.ndarray] = []
        norms: list[np.ndarray] = []
        sums = self._regression(controls)
        clipped = clip.mean_per_entry(self.row_length) if clip is not None else 0.0
        for (e,), n, may_stop in self._measured_batches((fmt,), max_samples):
            e = e - self._clipped_rows(len(errors), clip)
            errors.append(e)
            norms.append(n)
            if sums is not None:
                sums = _worth_keeping(sums, e, n, self.control_rows(len(errors) - 1, controls))
            if may_stop:
                g, se, _ = _estimate(errors, norms, _stopping(sums))
                if g + clipped == 0.0 or se <= rel_err * (g + clipped):
                    break
        return np.concatenate(errors), np.concatenate(norms), sums, len(errors)

    def _regression(self, controls: tuple[Control, ...]) -> RegressionSums | None:
        if not controls:
            return None
        return RegressionSums(np.array([expected_per_row(c, self.row_length) for c in controls]), self.row_length)

    def estimate(self, fmt: Format, *, rel_err: float = 1e-3, max_samples: int = DEFAULT_MAX_SAMPLES) -> GmseEstimate:
        """``fmt``'s GMSE to ``rel_err``: the ratio of sums, or, for an int grid whose scales
        come from its groups' extremes, the control-variate regression (:mod:`.control`)."""
        clip = self._clip_energy(fmt)
        errors, norms, sums, batches = self._run(fmt, rel_err, max_samples, controls_for(fmt, self.row_length), clip)
        g, se, dof = _estimate([errors], [norms], sums)
        if clip is not None:
            g += clip.mean_per_entry(self.row_length)
        samples = batches * self.batch_elements
        return make_estimate(fmt, self.row_length, g, se, "monte-carlo", samples, dof=dof)

    def _clip_energy(self, fmt: Format) -> ClipEnergy | None:
        """``fmt``'s clipping energy (:mod:`.clipping`), whose exact mean replaces the few rows
        that clip, where its rows are the units and a built-in compressor runs it (one
        registered from outside need not clip as the format says; the estimate would still be
        unbiased, but no longer the plain ratio of what that compressor did)."""
        if self.backend not in _CLIPPING_BACKENDS or not fmt.rows_independent:
            return None
        return clip_energy_for(fmt, self.row_length)

    def _clipped_rows(self, index: int, clip: ClipEnergy | None) -> np.ndarray | float:
        return clip.rows(self.batch(index)[0]) if clip is not None else 0.0

    def control_rows(self, index: int, controls: tuple[Control, ...]) -> np.ndarray:
        """The control statistics (:func:`~gmse_cli.gmse.control.control_rows`) of batch
        ``index``'s rows, kept beside the batch."""
        key = (index, controls)
        if key in self._controls:
            return self._controls[key]
        x = self.batch(index)[0]
        with parallel_launches():  # group statistics and pruning masks run numba kernels
            stats = control_rows(x, controls)
        if index < self._held:  # kept only beside a kept batch: memory bounded like the bank's
            self._controls[key] = stats
        return stats

    def row_errors(self, fmt: Format, *, batches: int) -> np.ndarray:
        """Per-row squared error sums over the first ``batches`` batches (for paired analyses)."""
        fmt.check_row_length(self.row_length)
        out = []
        for index in range(batches):
            x, _ = self.batch(index)
            out.append(_row_sq_errors(x, self._compress(fmt, x)))
        return np.concatenate(out)

    def difference(self, a: Format, b: Format, *, rel_err: float = 1e-3, max_samples: int = DEFAULT_MAX_SAMPLES) -> GmseDifference:
        """GMSE(a) - GMSE(b) on the same samples; its interval reflects only their disagreement."""
        diffs: list[np.ndarray] = []
        errors_b: list[np.ndarray] = []
        norms: list[np.ndarray] = []
        # controls are per row: only where both formats' units are rows
        both = a.rows_independent and b.rows_independent
        controls = tuple(dict.fromkeys(controls_for(a, self.row_length) + controls_for(b, self.row_length))) if both else ()
        sums = self._regression(controls)
        clip_a, clip_b = (self._clip_energy(f) if both else None for f in (a, b))
        mean_a, mean_b = (c.mean_per_entry(self.row_length) if c is not None else 0.0 for c in (clip_a, clip_b))
        for (ea, eb), n, may_stop in self._measured_batches((a, b), max_samples):
            ea = ea - self._clipped_rows(len(diffs), clip_a)
            eb = eb - self._clipped_rows(len(diffs), clip_b)
            diffs.append(ea - eb)
            errors_b.append(eb)
            norms.append(n)
            if sums is not None:
                sums = _worth_keeping(sums, ea - eb, n, self.control_rows(len(diffs) - 1, controls))
            if may_stop:
                d, se, _ = _estimate(diffs, norms, _stopping(sums))
                d += mean_a - mean_b
                b_gmse = float(np.concatenate(errors_b).sum() / np.concatenate(norms).sum()) + mean_b
                scale = max(abs(d), b_gmse, 1e-300)
                if se <= rel_err * scale:
                    break
        d, se, dof = _estimate(diffs, norms, sums)
        d += mean_a - mean_b
        low, high = interval95(d, se, floor=None, dof=dof)
        return GmseDifference(
            a=a.display_name, b=b.display_name, difference=d, ci_low=low,
            ci_high=high, std_err=se, samples=len(norms) * self.batch_elements,
        )


def _worth_keeping(sums: RegressionSums, errors: np.ndarray, norms: np.ndarray, stats: np.ndarray) -> RegressionSums | None:
    """``sums`` with one more batch of rows; None (the ratio estimate from here on, and no more
    statistics drawn) once it holds :data:`_MIN_CONTROL_ROWS` rows if the statistics reduce the
    variance less than :data:`_MIN_CONTROL_GAIN` times."""
    before = sums.rows
    sums.add(errors, norms, stats)
    if before < _MIN_CONTROL_ROWS <= sums.rows and sums.variance_reduction() < _MIN_CONTROL_GAIN:
        return None
    return sums


def _stopping(sums: RegressionSums | None) -> RegressionSums | None:
    """The regression that may decide when to stop: only from :data:`_MIN_CONTROL_ROWS` rows on
    (before, the ratio estimate decides; long rows reach the target in fewer rows than that)."""
    return sums if sums is not None and sums.rows >= _MIN_CONTROL_ROWS else None


def _estimate(errors: list[np.ndarray], norms: list[np.ndarray], sums: RegressionSums | None) -> tuple[float, float, int]:
    """(GMSE, standard error, degrees of freedom): the control-variate regression where there
    are controls and rows enough, the ratio estimate otherwise."""
    regressed = sums.estimate() if sums is not None else None
    if regressed is not None:
        return regressed
    e = np.concatenate(errors)
    g, se = _ratio_estimate(e, np.concatenate(norms))
    return g, se, len(e) - 1


def _ratio_estimate(errors: np.ndarray, norms: np.ndarray) -> tuple[float, float]:
    """Ratio-of-sums estimate and its delta-method standard error over unit totals (batches
    or rows)."""
    k = len(errors)
    g = float(errors.sum() / norms.sum())
    if k < 2:
        return g, math.inf
    resid = errors - g * norms
    se = math.sqrt(float((resid**2).sum()) / (k * (k - 1))) / float(norms.mean())
    return g, se
