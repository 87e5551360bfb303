"""The input contract every compressor checks (see :mod:`gmse_cli.compress`)."""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.errors import DataError, SpecError

__all__ = ["check_input", "check_finite"]


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


def check_finite(x: np.ndarray, what: str, given: np.ndarray | None = None) -> None:
    """Raise :class:`DataError` naming the first nan or inf of float32 ``x`` (rows, row_length);
    ``given``: the array the caller passed, when ``x`` is its float32 conversion (a float64
    value beyond float32's range converts to inf: the message names the value given).

    A compressed format is defined on finite values only: unchecked, a nan or inf spoils the
    scale of its group, row or tensor, and the kernels turn that into zeros, infs or nans
    depending on the format and backend. A sum holding a nan or inf is not finite, so a finite
    float32 sum clears ``x`` in one pass without extra memory; only a sum that is not (a nan or
    inf, or finite values overflowing float32) looks at the values one by one."""
    with np.errstate(invalid="ignore", over="ignore"):
        if x.size == 0 or math.isfinite(float(x.sum())):
            return
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    value = f"{x[row, col]}"
    if given is not None and np.isfinite(given[row, col]):
        value = f"{given[row, col]}, {x[row, col]} in float32 (uscl compresses in float32)"
    count = int(bad.sum())
    raise DataError(
        f"{what}: x[{row}, {col}] = {value}; {count} value{'s are' if count > 1 else ' is'} nan or inf, "
        "and a compressed format is defined on finite values only"
    )
