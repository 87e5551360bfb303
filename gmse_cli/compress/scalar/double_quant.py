"""The dq8 scale format: bitsandbytes' double quantization of absmax scales (QLoRA).

bitsandbytes' ``quantize_4bit(..., compress_statistics=True)`` keeps one fp32 absmax per group,
then stores each absmax ``a`` as follows (``functional.quantize_4bit`` and the reference
``quantize_blockwise`` of its default backend):

1. ``offset`` = the mean absmax of the tensor (float32);
2. ``c = float32(a - offset)``, taken in blocks of :data:`~gmse_cli.spec.DQ_BLOCK` consecutive
   groups (row-major over the whole tensor; the last block may be partial), each with its
   fp32 absmax ``A = max |c|``;
3. ``v = float32(c * float32(1 / A))`` (the partial last block: ``float32(c / A)``), clamped to
   [-1, 1], coded as the nearest value of :func:`dynamic_code` by float32 midpoints, a value at
   a midpoint taking the lower one;
4. the effective scale is ``float32(float32(code[q] * A) + offset)``.

The elements are rounded with the fp32 absmax itself; only their dequantization uses the
effective scale (as bitsandbytes does). Where uscl differs: ``offset`` is the float32-rounded
exact mean (torch's float32 mean sums in a CPU-dependent order and may differ in its last
bit), and bitsandbytes' native CPU kernel binary-searches a copy of the code whose first entry
is set to -1 (the CUDA kernel and the reference backend do not).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from gmse_cli.kernel_cache import numba
from gmse_cli.spec import DQ_BLOCK

__all__ = ["dynamic_code", "dq_scales", "dq_scales_reference", "DQ_BLOCK"]

_TINY = 1e-38  # bitsandbytes clamps a block's absmax to this before taking its reciprocal


def _linspace_f32(start: float, stop: float, n: int) -> np.ndarray:
    """torch.linspace(start, stop, n, dtype=float32): a float32 step, points in float64 from
    the nearer end, rounded to float32."""
    a, b = np.float32(start), np.float32(stop)
    step = np.float32((b - a) / np.float32(n - 1))
    i = np.arange(n)
    low = np.float64(a) + np.float64(step) * i
    high = np.float64(b) - np.float64(step) * (n - 1 - i)
    return np.where(i < n // 2, low, high).astype(np.float32)


@cache
def dynamic_code() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic code (``create_dynamic_map(signed=True)``): 256
    sorted float32 values in [-1, 1] (as float64), read-only.

    For i = 0 ... 6, the midpoints of 2^i + 1 points evenly spaced over [0.1, 1], times
    10^(i - 6), with both signs; then 0 and 1. All arithmetic in float32 as bitsandbytes' torch
    code does it (Dettmers 2016, "8-Bit Approximations for Parallelism in Deep Learning").
    """
    values: list[np.ndarray] = []
    for i in range(7):
        edges = _linspace_f32(0.1, 1.0, 2**i + 1)
        means = (edges[:-1] + edges[1:]) / np.float32(2)
        scaled = np.float32(10.0 ** (i - 6)) * means
        values += [scaled, -scaled]
    values.append(np.array([0.0, 1.0], dtype=np.float32))
    code = np.sort(np.concatenate(values)).astype(np.float64)
    code.flags.writeable = False
    return code


@cache
def _code_midpoints() -> np.ndarray:
    code = dynamic_code().astype(np.float32)
    mids = ((code[:-1] + code[1:]) / np.float32(2)).astype(np.float64)
    mids.flags.writeable = False
    return mids


# --------------------------------------------------------------------------------------------
# numpy reference
# --------------------------------------------------------------------------------------------


def dq_scales_reference(raw: np.ndarray, offset: float | None = None) -> np.ndarray:
    """Effective dq8 scales (float64 holding float32 values) of the raw scales ``raw`` (rows,
    groups), every group of one tensor; twin of :func:`dq_scales`. ``offset``: the tensor's
    mean absmax as another implementation summed it (default: the exact mean, rounded)."""
    a = raw.astype(np.float32).astype(np.float64).reshape(-1)
    if a.size == 0:
        return np.zeros_like(raw, dtype=np.float64)
    # float64 sum in order (float32 values, so exact up to 2^29 of them), rounded once
    if offset is None:
        offset = float(np.float32(np.cumsum(a)[-1] / a.size))
    c = (a - offset).astype(np.float32).astype(np.float64)
    code, mids = dynamic_code(), _code_midpoints()
    out = np.empty_like(c)
    for start in range(0, c.size, DQ_BLOCK):
        block = c[start : start + DQ_BLOCK]
        big = float(np.max(np.abs(block)))
        safe = max(big, _TINY)
        if block.size == DQ_BLOCK:
            v = (block * float(np.float32(1.0) / np.float32(safe))).astype(np.float32)
        else:
            v = (block / safe).astype(np.float32)
        q = np.searchsorted(mids, np.clip(v.astype(np.float64), -1.0, 1.0), side="left")
        deq = (code[q] * big).astype(np.float32).astype(np.float64)
        out[start : start + DQ_BLOCK] = (deq + offset).astype(np.float32)
    return out.reshape(raw.shape)


# --------------------------------------------------------------------------------------------
# numba kernel
# --------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def _k_dq(raw, code, mids, block, out):
    flat = raw.reshape(-1)
    res = out.reshape(-1)
    n = flat.size
    total = 0.0
    for i in range(n):
        total += np.float64(np.float32(flat[i]))
    offset = np.float64(np.float32(total / n))
    for start in range(0, n, block):
        stop = min(start + block, n)
        big = 0.0
        for i in range(start, stop):
            big = max(big, abs(np.float64(np.float32(np.float64(np.float32(flat[i])) - offset))))
        inv = np.float32(1.0) / np.float32(max(big, _TINY))
        for i in range(start, stop):
            c = np.float32(np.float64(np.float32(flat[i])) - offset)
            if stop - start == block:
                v = np.float64(np.float32(c * inv))
            else:
                v = np.float64(np.float32(np.float64(c) / max(big, _TINY)))
            v = min(max(v, -1.0), 1.0)
            q = 0
            for m in mids:  # midpoints below v: a value at a midpoint takes the lower level
                q += m < v
            deq = np.float64(np.float32(code[q] * big))
            res[i] = np.float64(np.float32(deq + offset))


def dq_scales(raw: np.ndarray) -> np.ndarray:
    """Effective dq8 scales (module docstring) of the raw scales ``raw`` (rows, groups): the
    groups of one tensor, row-major. numba, equal to :func:`dq_scales_reference`."""
    raw = np.ascontiguousarray(raw, dtype=np.float64)
    out = np.zeros_like(raw)
    if raw.size:
        _k_dq(raw, dynamic_code(), _code_midpoints(), DQ_BLOCK, out)
    return out
