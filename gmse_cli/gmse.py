"""The GMSE engine: how much of a standard Gaussian a format destroys.

    GMSE(format) = E||x - C(x)||^2 / E||x||^2,   x i.i.d. standard normal

Two methods:

- **Monte Carlo** over a bank of Gaussian rows (``row_length`` entries, 4096 by default). One
  bank is shared by every format of an invocation (common random numbers), so differences
  between formats are estimated far more precisely than either value
  (:meth:`SampleBank.difference`). The bank is cut into *batches* of rows; a batch is also the
  "tensor" of per-tensor scales. The estimate is the ratio of sums; its standard error comes
  from the batch totals (ratio estimator), and sampling continues batch by batch until the
  relative standard error reaches ``rel_err`` (or ``max_samples``). Seeded and bit-reproducible.
- **Exact** quadrature where a closed form exists: single-stage scalar grids with an RMS scale
  per row or tensor (the infinite-row limit) or no scale, unstructured magnitude sparsity and
  N:M sparsity. ``method="auto"`` uses it there and Monte Carlo everywhere else.

Effective bits = log_{1/4}(GMSE). A format whose effective bits exceed its stored bits per
parameter breaks the rate-distortion bound (GMSE >= 4^-bits): that is a bug in its compressor
or its bit accounting, and :func:`estimate_gmse` raises instead of reporting it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gmse_cli.errors import BackendMissing, SpecError
from gmse_cli.spec import (
    DEFAULT_ROW_LENGTH,
    Family,
    Format,
    Quantize,
    Rotate,
    ScaleRule,
    Sparsify,
    SparsityPattern,
    resolve_format,
)

__all__ = [
    "GmseEstimate",
    "GmseDifference",
    "SampleBank",
    "estimate_gmse",
    "gmse_of",
    "stage_gmse",
    "exact_gmse",
    "has_exact",
    "effective_bits_of",
]

Method = Literal["auto", "exact", "monte-carlo"]
GmseBackend = Literal["numba", "numpy", "torch"]

_Z95 = 1.959963984540054  # two-sided 95% normal quantile
_BATCH_ELEMENTS = 1 << 17  # 512 KB of float32 per batch: big enough for kernels, small enough to stop early
_MIN_BATCHES = 16  # below this the batch-variance estimate itself is too noisy
_DEFAULT_MAX_SAMPLES = 1 << 26  # 64M elements = 256 MB of bank at most
# Effective bits may exceed stored bits only by Monte Carlo noise; anything beyond is a bug.
_RD_SLACK_BITS = 0.01


class GmseEstimate(BaseModel):
    """A GMSE point estimate with its 95% interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="the format's display name")
    bits_per_param: float = Field(description="stored bits per parameter at this row length")
    gmse: float = Field(description="E||x - C(x)||^2 / E||x||^2 for standard normal x")
    ci_low: float = Field(description="lower end of the 95% interval")
    ci_high: float = Field(description="upper end of the 95% interval")
    std_err: float = Field(description="standard error (0 for the exact method)")
    effective_bits: float | None = Field(description="log_{1/4}(GMSE); None when GMSE is 0")
    method: Literal["exact", "monte-carlo"]
    samples: int = Field(description="Gaussian elements used (0 for the exact method)")


class GmseDifference(BaseModel):
    """GMSE(a) - GMSE(b) on common random numbers, with its (much tighter) paired interval."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    a: str
    b: str
    difference: float
    ci_low: float
    ci_high: float
    std_err: float
    samples: int


def effective_bits_of(gmse: float) -> float | None:
    """log_{1/4}(GMSE), or None for a lossless result."""
    return -math.log(gmse) / math.log(4.0) if gmse > 0 else None


# --------------------------------------------------------------------------------------------
# Exact path
# --------------------------------------------------------------------------------------------


def _lossy_stages(fmt: Format) -> list:
    return [s for s in fmt.stages if not isinstance(s, Rotate)]


def has_exact(fmt: Format) -> bool:
    """Whether a closed form / quadrature exists for this format's GMSE."""
    stages = _lossy_stages(fmt)
    if len(stages) != 1:
        return False
    stage = stages[0]
    if isinstance(stage, Quantize):
        if stage.scale is ScaleRule.NONE:
            return True
        return stage.scale is ScaleRule.RMS and stage.group in ("row", "tensor")
    if isinstance(stage, Sparsify):
        return stage.pattern in (SparsityPattern.MAGNITUDE, SparsityPattern.NM)
    return False


def exact_gmse(fmt: Format) -> float:
    """The GMSE by quadrature / closed form (the infinite-row limit of per-row statistics)."""
    if not has_exact(fmt):
        raise SpecError(
            f"format '{fmt.display_name}' has no exact GMSE (only single-stage scalar grids with an "
            "rms or no scale per row/tensor, and magnitude or N:M sparsity); use --monte-carlo"
        )
    (stage,) = _lossy_stages(fmt)
    if isinstance(stage, Quantize):
        from gmse_cli.compress.grids import gaussian_mse, optimal_rms_constant

        if stage.scale is ScaleRule.NONE:
            return float(gaussian_mse(stage, 1.0))
        constant = stage.scale_constant or optimal_rms_constant(stage)
        return float(gaussian_mse(stage, constant))
    from gmse_cli.compress.sparsity import magnitude_gmse, nm_gmse

    if stage.pattern is SparsityPattern.MAGNITUDE:
        return float(magnitude_gmse(stage.sparsity))
    return float(nm_gmse(stage.n, stage.m))


# --------------------------------------------------------------------------------------------
# Monte Carlo path
# --------------------------------------------------------------------------------------------


def _row_sq_errors_numpy(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    diff = (y.astype(np.float64) - x.astype(np.float64))
    return np.einsum("ij,ij->i", diff, diff)


_row_sq_errors_kernel: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None


def _row_sq_errors(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-row sum of squared errors in float64 (fused numba reduction; numpy twin above)."""
    global _row_sq_errors_kernel
    if _row_sq_errors_kernel is None:
        import numba

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
    return _row_sq_errors_kernel(x, y)


class SampleBank:
    """A lazily grown, seeded bank of standard Gaussian rows shared by many formats.

    Batch ``i`` is drawn from its own generator seeded by ``SeedSequence(seed).spawn``, so the
    bank is identical whatever order formats ask for it and however far it grows.
    Memory: ``rows_per_batch * row_length * 4`` bytes per batch held.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        row_length: int = DEFAULT_ROW_LENGTH,
        batch_elements: int = _BATCH_ELEMENTS,
        backend: GmseBackend = "numba",
        device: str = "cpu",
    ) -> None:
        if row_length < 1:
            raise SpecError(f"--row-length {row_length} must be positive")
        self.seed = seed
        self.row_length = row_length
        self.rows_per_batch = max(1, batch_elements // row_length)
        self.backend = backend
        self.device = device
        self._seeds = np.random.SeedSequence(seed)
        self._batches: list[np.ndarray] = []
        self._norms: list[np.ndarray] = []
        self._compress = _compressor(backend, device)

    @property
    def batch_elements(self) -> int:
        return self.rows_per_batch * self.row_length

    def batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(rows, row_length) float32 samples of batch ``index`` and their per-row ||x||^2."""
        while len(self._batches) <= index:
            (child,) = self._seeds.spawn(1)
            rng = np.random.default_rng(child)
            x = rng.standard_normal((self.rows_per_batch, self.row_length), dtype=np.float32)
            self._batches.append(x)
            self._norms.append(np.einsum("ij,ij->i", x, x, dtype=np.float64))
        return self._batches[index], self._norms[index]

    def batch_totals(self, fmt: Format, index: int) -> tuple[float, float]:
        """(sum of squared errors, sum of ||x||^2) of ``fmt`` over batch ``index``."""
        x, norms = self.batch(index)
        y = self._compress(fmt, x)
        return float(_row_sq_errors(x, y).sum()), float(norms.sum())

    def run(
        self,
        fmt: Format,
        *,
        rel_err: float = 1e-3,
        max_samples: int = _DEFAULT_MAX_SAMPLES,
        min_batches: int = _MIN_BATCHES,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-batch error and norm totals, grown until the relative standard error is met."""
        fmt.check_row_length(self.row_length)
        max_batches = max(min_batches, max_samples // self.batch_elements)
        errors: list[float] = []
        norms: list[float] = []
        for index in range(max_batches):
            e, n = self.batch_totals(fmt, index)
            errors.append(e)
            norms.append(n)
            if index + 1 >= min_batches:
                _, se = _ratio_estimate(np.asarray(errors), np.asarray(norms))
                g = sum(errors) / sum(norms)
                if g == 0.0 or se <= rel_err * g:
                    break
        return np.asarray(errors), np.asarray(norms)

    def estimate(self, fmt: Format, *, rel_err: float = 1e-3, max_samples: int = _DEFAULT_MAX_SAMPLES) -> GmseEstimate:
        errors, norms = self.run(fmt, rel_err=rel_err, max_samples=max_samples)
        g, se = _ratio_estimate(errors, norms)
        return _make_estimate(fmt, self.row_length, g, se, "monte-carlo", len(errors) * self.batch_elements)

    def row_errors(self, fmt: Format, *, batches: int) -> np.ndarray:
        """Per-row squared error sums over the first ``batches`` batches (for paired analyses)."""
        fmt.check_row_length(self.row_length)
        out = []
        for index in range(batches):
            x, _ = self.batch(index)
            out.append(_row_sq_errors(x, self._compress(fmt, x)))
        return np.concatenate(out)

    def difference(self, a: Format, b: Format, *, rel_err: float = 1e-3, max_samples: int = _DEFAULT_MAX_SAMPLES) -> GmseDifference:
        """GMSE(a) - GMSE(b) on the same samples; its interval reflects only their disagreement."""
        a.check_row_length(self.row_length)
        b.check_row_length(self.row_length)
        max_batches = max(_MIN_BATCHES, max_samples // self.batch_elements)
        ea: list[float] = []
        eb: list[float] = []
        nn: list[float] = []
        for index in range(max_batches):
            e1, n = self.batch_totals(a, index)
            e2, _ = self.batch_totals(b, index)
            ea.append(e1)
            eb.append(e2)
            nn.append(n)
            if index + 1 >= _MIN_BATCHES:
                d, se = _ratio_estimate(np.subtract(ea, eb), np.asarray(nn))
                scale = max(abs(d), sum(eb) / sum(nn), 1e-300)
                if se <= rel_err * scale:
                    break
        d, se = _ratio_estimate(np.subtract(ea, eb), np.asarray(nn))
        return GmseDifference(
            a=a.display_name, b=b.display_name, difference=d, ci_low=d - _Z95 * se,
            ci_high=d + _Z95 * se, std_err=se, samples=len(nn) * self.batch_elements,
        )


def _ratio_estimate(errors: np.ndarray, norms: np.ndarray) -> tuple[float, float]:
    """Ratio-of-sums estimate and its delta-method standard error over batch totals."""
    k = len(errors)
    g = float(errors.sum() / norms.sum())
    if k < 2:
        return g, math.inf
    resid = errors - g * norms
    se = math.sqrt(float((resid**2).sum()) / (k * (k - 1))) / float(norms.mean())
    return g, se


def _compressor(backend: GmseBackend, device: str) -> Callable[[Format, np.ndarray], np.ndarray]:
    if backend in ("numba", "numpy"):
        from gmse_cli.compress import compress

        return lambda fmt, x: compress(fmt, x, backend=backend)
    if backend == "torch":
        try:
            import torch

            from gmse_cli.training.torch_compress import compress_torch
        except ImportError as exc:
            raise BackendMissing(
                f"--backend torch needs the training extra (pip install 'uscl[train]'): {exc}"
            ) from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendMissing(f"--device {device}: no CUDA device is available")

        def run(fmt: Format, x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                y = compress_torch(fmt, torch.from_numpy(x).to(device))
            return y.float().cpu().numpy()

        return run
    raise SpecError(f"unknown GMSE backend '{backend}' (expected numba, numpy or torch)")


def _make_estimate(fmt: Format, row_length: int, g: float, se: float, method: str, samples: int) -> GmseEstimate:
    bits = fmt.bits_per_param(row_length)
    eff = effective_bits_of(g)
    # Rate-distortion: GMSE >= 4^-bits for any code of `bits` bits per Gaussian entry.
    if eff is not None and eff - _RD_SLACK_BITS - (_Z95 * se / g / math.log(4.0) if g > 0 else 0.0) > bits:
        raise SpecError(
            f"format '{fmt.display_name}' breaks the rate-distortion bound: {eff:.3f} effective bits "
            f"from {bits:.3f} stored bits per parameter (its compressor or bit accounting is wrong)"
        )
    half = _Z95 * se
    return GmseEstimate(
        name=fmt.display_name, bits_per_param=bits, gmse=g, ci_low=max(g - half, 0.0),
        ci_high=g + half, std_err=se, effective_bits=eff, method=method, samples=samples,
    )


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def _validate(rel_err: float, row_length: int, method: str, max_samples: int) -> None:
    if not (rel_err > 0 and math.isfinite(rel_err)):
        raise SpecError(f"--rel-err {rel_err} must be a positive number (e.g. 1e-3)")
    if rel_err >= 1:
        raise SpecError(f"--rel-err {rel_err} must be below 1 (it is a relative standard error)")
    if row_length < 1:
        raise SpecError(f"--row-length {row_length} must be positive")
    if method not in ("auto", "exact", "monte-carlo"):
        raise SpecError(f"unknown method '{method}' (expected auto, exact or monte-carlo)")
    if max_samples < 1:
        raise SpecError(f"max_samples {max_samples} must be positive")


def estimate_gmse(
    formats: Sequence[Format | str],
    *,
    rel_err: float = 1e-3,
    seed: int = 0,
    row_length: int = DEFAULT_ROW_LENGTH,
    method: Method = "auto",
    backend: GmseBackend = "numba",
    device: str = "cpu",
    max_samples: int = _DEFAULT_MAX_SAMPLES,
    progress: bool = False,
    bank: SampleBank | None = None,
) -> list[GmseEstimate]:
    """GMSE of each format, Monte Carlo on one shared sample bank unless exact applies.

    ``rel_err`` is the target relative standard error; ``max_samples`` caps the Gaussian
    elements per format (memory: 4 bytes each, shared across formats).
    """
    _validate(rel_err, row_length, method, max_samples)
    resolved = [resolve_format(f) for f in formats]
    for fmt in resolved:
        fmt.check_row_length(row_length)
        if method == "exact" and not has_exact(fmt):
            exact_gmse(fmt)  # raises the explanatory SpecError
    if bank is None:
        bank = SampleBank(seed=seed, row_length=row_length, backend=backend, device=device)
    results: list[GmseEstimate] = []
    task = None
    progress_bar = None
    if progress:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        from gmse_cli.cli._console import err_console

        progress_bar = Progress(
            TextColumn("GMSE {task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), console=err_console, transient=True,
        )
        progress_bar.start()
        task = progress_bar.add_task("", total=len(resolved))
    try:
        for fmt in resolved:
            if progress_bar is not None:
                progress_bar.update(task, description=fmt.display_name)
            use_exact = method == "exact" or (method == "auto" and has_exact(fmt))
            if use_exact:
                results.append(_make_estimate(fmt, row_length, exact_gmse(fmt), 0.0, "exact", 0))
            else:
                results.append(bank.estimate(fmt, rel_err=rel_err, max_samples=max_samples))
            if progress_bar is not None:
                progress_bar.advance(task)
    finally:
        if progress_bar is not None:
            progress_bar.stop()
    return results


def gmse_of(fmt: Format | str, **kwargs) -> GmseEstimate:
    """GMSE of one format (same keywords as :func:`estimate_gmse`)."""
    return estimate_gmse([fmt], **kwargs)[0]


def stage_gmse(fmt: Format | str, **kwargs) -> list[tuple[Family, GmseEstimate]]:
    """GMSE of each lossy stage alone, for the factorized capacity prod rho_family(GMSE_stage)."""
    fmt = resolve_format(fmt)
    parts = fmt.stage_formats()
    estimates = estimate_gmse([f for _, f in parts], **kwargs)
    return [(family, est) for (family, _), est in zip(parts, estimates, strict=True)]
