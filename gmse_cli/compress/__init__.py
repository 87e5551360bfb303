"""Compressors: apply a :class:`~gmse_cli.spec.Format` to a tensor viewed as rows.

One module per family, each with a plain numpy reference (``*_reference``) and a fast numba
path that the tests compare with it:

- :mod:`.grids`    -- grid values (int, fp, lut, Lloyd-Max), FP casts, Gaussian quadrature
- :mod:`.scalar`   -- scale rules and formats (absmax, rms, mse; fp32 ... e8m0, e4m3) + rounding
- :mod:`.sparsity` -- magnitude, N:M and block masks
- :mod:`.vq`       -- codebooks (Gaussian Lloyd, E8 lattice) and nearest-codeword search
- :mod:`.rotate`   -- blockwise fast Walsh-Hadamard transform

Contract shared by every family: inputs are C-contiguous float32 arrays of shape
``(rows, row_length)``; a "tensor" (for per-tensor scales) is the whole array passed in;
outputs have the same shape and dtype, in the original (unrotated) domain.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from gmse_cli.spec import VQ, Format, Quantize, Rotate, Sparsify

__all__ = ["compress", "Backend"]

Backend = Literal["numba", "numpy"]


def compress(fmt: Format, x: np.ndarray, *, backend: Backend = "numba") -> np.ndarray:
    """Compress ``x`` (rows, row_length) with ``fmt``; returns the dequantized tensor.

    Stages run in order: rotations, then the sparsity mask, then the quantizer (which sees
    only the kept values), then the rotations are undone.
    """
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"compress expects a 2-D (rows, row_length) array, got shape {x.shape}")
    fmt.check_row_length(x.shape[1])
    reference = backend == "numpy"
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
            y = np.where(mask, y, np.float32(0.0))
        elif isinstance(stage, Quantize):
            from gmse_cli.compress import scalar

            y = (scalar.quantize_reference if reference else scalar.quantize)(stage, y, mask)
        elif isinstance(stage, VQ):
            from gmse_cli.compress import vq

            y = (vq.quantize_reference if reference else vq.quantize)(stage, y, mask)
    for stage in reversed(rotations):
        y = rotate.hadamard(y, stage, inverse=True, reference=reference)
    return y
