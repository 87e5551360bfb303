"""The input contract every compressor checks (see :mod:`gmse_cli.compress`)."""

from __future__ import annotations

import numpy as np

from gmse_cli.errors import DataError, SpecError

__all__ = ["check_input"]


def check_input(
    stage: object, kind: type, what: str, x: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """``stage`` of type ``kind``; ``x`` as a C-contiguous float32 (rows, row_length) array whose
    rows the stage can split; ``mask`` (kept entries) as a bool array of x's shape. ``what``
    names the compressor in the error messages."""
    if not isinstance(stage, kind):
        raise SpecError(f"{what}: expected a {kind.__name__} stage, got {type(stage).__name__}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise DataError(f"{what}: x must be 2-D (rows, row_length), got shape {x.shape}")
    stage.check_row_length(x.shape[1])
    if mask is not None:
        mask = np.ascontiguousarray(mask, dtype=np.bool_)
        if mask.shape != x.shape:
            raise DataError(f"{what}: mask shape {mask.shape} differs from x shape {x.shape}")
    return x, mask
