"""Compressors: apply a :class:`~gmse_cli.spec.Format` to a tensor viewed as rows.

One module per family, each with a plain numpy reference (``*_reference``) and a fast numba
path that the tests compare with it:

- :mod:`.grids`    -- grid values (int, fp, lut, Lloyd-Max), FP casts, Gaussian quadrature
- :mod:`.scalar`   -- scale rules and formats (absmax, rms, mse; fp32 ... e8m0, e4m3) + rounding
- :mod:`.sparsity` -- magnitude, N:M and block masks
- :mod:`.vq`       -- a package: codebooks (Gaussian Lloyd, E8 lattice), nearest-codeword search
  and the VQ compressor
- :mod:`.group_stats` -- per-group statistics over kept entries (RMS, max |x|, min, max)
- :mod:`.rotate`   -- blockwise fast Walsh-Hadamard transform

Contract shared by every family: inputs are C-contiguous float32 arrays of shape
``(rows, row_length)`` (:func:`compress` takes any real array of that shape and refuses nan
and inf with a :class:`~gmse_cli.errors.DataError` naming the first one); a "tensor" (for
per-tensor scales) is the whole array passed in; outputs have the same shape and dtype, in
the original (unrotated) domain.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import numpy as np

from gmse_cli.compress.checks import check_finite
from gmse_cli.errors import DataError, described
from gmse_cli.progress import watch_compiles
from gmse_cli.spec import VQ, Format, Quantize, Rotate, ScaleStats, Sparsify, resolve_format
from gmse_cli.threads import parallel_launches

__all__ = ["compress", "top_raw_scale", "scale_range", "Backend"]

Backend = Literal["numba", "numpy"]


def _rotated_and_masked(
    fmt: Format, x: np.ndarray, reference: bool, finite: bool = False
) -> tuple[np.ndarray, np.ndarray | None, list[Rotate]]:
    """``x`` rotated and sparsified as the quantizer of ``fmt`` sees it: (y, kept mask, rotations).

    A scalar quantizer whose statistics cover all entries (``scale_stats = "all"``) sees the
    rotated rows before pruning, with the mask (it zeroes the dropped entries itself).
    """
    try:
        given = np.asarray(x)
    except ValueError:  # a ragged list
        given = np.asarray(None)
    if given.dtype.kind not in "biuf":  # text, objects, complex (whose imaginary part a cast drops)
        raise DataError(f"compress: x must be a 2-D array of real numbers, not {described(x)} ({given.dtype})")
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: check_finite names it
        x = np.ascontiguousarray(given, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"compress: x must be 2-D (rows, row_length), got shape {x.shape}")
    fmt.check_row_length(x.shape[1])
    if not finite:
        check_finite(x, "compress", given if given is not x else None)
    y = x
    rotations = [s for s in fmt.stages if isinstance(s, Rotate)]
    if rotations:
        from gmse_cli.compress import rotate
    for stage in rotations:
        y = rotate.hadamard(y, stage, inverse=False, reference=reference)
    mask = None
    for stage in fmt.stages:
        if isinstance(stage, Sparsify):
            from gmse_cli.compress import sparsity

            mask = sparsity.mask_reference(stage, y) if reference else sparsity.mask(stage, y)
            q = fmt.quantizer
            if not (isinstance(q, Quantize) and q.scale_stats is ScaleStats.ALL):
                y = np.where(mask, y, np.float32(0.0))
    return y, mask, rotations


def compress(
    fmt: Format | str, x: np.ndarray, *, backend: Backend = "numba", top_raw_scale: float | None = None,
    finite: bool = False,
) -> np.ndarray:
    """Compress ``x`` (rows, row_length) with ``fmt`` (a :class:`Format`, or a name, shorthand or
    .toml path as :func:`~gmse_cli.spec.resolve_format` takes); returns the dequantized tensor,
    float32 of the shape of ``x``. ``backend``: ``numba`` (compiled kernels) or ``numpy`` (the
    reference twin).

    Stages run in order: rotations, then the sparsity mask, then the quantizer (which sees
    only the kept values, or with ``scale_stats = "all"`` takes its scale statistics over all
    entries before zeroing the dropped ones), then the rotations are undone.
    ``top_raw_scale``: for a quantizer with a two-level scale (e4m3, int8), the tensor's
    largest raw group scale when ``x`` is a chunk of its rows (:func:`top_raw_scale`), so
    chunks quantize as the whole tensor would.
    ``finite``: the caller knows ``x`` holds no nan or inf (Gaussian samples), so the check that
    names the first one is skipped (5-17% of a call on the GMSE engine's batches).

    Raises :class:`~gmse_cli.errors.DataError` for an ``x`` that is not 2-D or holds nan or
    inf (naming the first), :class:`~gmse_cli.errors.SpecError` for a format that does not
    resolve or whose groups do not divide the row length.
    """
    fmt = resolve_format(fmt)
    reference = backend == "numpy"
    if reference:
        return _compress(fmt, x, True, top_raw_scale, finite)
    watch_compiles()  # the first run on a machine compiles the kernels: say so
    with parallel_launches():  # starts the pool first: idle OpenMP workers sleep
        return _compress(fmt, x, False, top_raw_scale, finite)


def _compress(fmt: Format, x: np.ndarray, reference: bool, top_raw_scale: float | None, finite: bool) -> np.ndarray:
    y, mask, rotations = _rotated_and_masked(fmt, x, reference, finite)
    for stage in fmt.stages:
        if isinstance(stage, Quantize):
            from gmse_cli.compress import scalar

            quantize = scalar.quantize_reference if reference else scalar.quantize
            y = quantize(stage, y, mask, top_raw_scale=top_raw_scale)
        elif isinstance(stage, VQ):
            from gmse_cli.compress import vq

            y = (vq.quantize_reference if reference else vq.quantize)(stage, y, mask)
    if rotations:
        from gmse_cli.compress import rotate
    for stage in reversed(rotations):
        y = rotate.hadamard(y, stage, inverse=True, reference=reference)
    return y


def top_raw_scale(fmt: Format, x: np.ndarray, *, backend: Backend = "numba") -> float:
    """The largest raw group scale that the two-level scalar quantizer of ``fmt`` finds in the
    rows ``x`` (after its rotations and sparsity): maximized over a tensor's chunks, it is the
    ``top_raw_scale`` that lets :func:`compress` take the tensor a chunk at a time."""
    from gmse_cli.compress import scalar

    if not isinstance(fmt.quantizer, Quantize):
        raise ValueError(f"format '{fmt.display_name}' has no scalar quantizer")
    with nullcontext() if backend == "numpy" else parallel_launches():
        y, mask, _ = _rotated_and_masked(fmt, x, backend == "numpy")
        return scalar.top_raw_scale(fmt.quantizer, y, mask, reference=backend == "numpy")


def scale_range(fmt: Format, x: np.ndarray):
    """How many scales (or plain-cast elements) of the scalar quantizer of ``fmt`` leave their
    format's range on the rows ``x`` (after its rotations and sparsity): a
    :class:`~gmse_cli.compress.scalar.ScaleRange`, all zero for formats that cannot
    (:func:`~gmse_cli.compress.scalar.can_leave_range`)."""
    from gmse_cli.compress import scalar

    stage = fmt.quantizer
    if not isinstance(stage, Quantize) or not scalar.can_leave_range(stage):
        return scalar.ScaleRange(0, 0, 0)
    with parallel_launches():
        y, mask, _ = _rotated_and_masked(fmt, x, reference=False)
        return scalar.scale_range(stage, y, mask)
