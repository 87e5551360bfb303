"""The VQ compressor: per-group scales, exact nearest codewords, dequantized output.

A :class:`~gmse_cli.spec.VQ` stage cuts each row into slices of ``dim`` consecutive entries and
replaces every slice by ``s * c``, ``c`` the codeword nearest (Euclidean) to the slice divided
by ``s``. The scale ``s`` is per group (a row, or ``group`` consecutive entries):
``s = constant * RMS(group)``, the RMS over kept entries only when a sparsity mask is given,
stored in ``stage.scale_format`` (fp32, bf16, fp16, e8m0, e4m3 or int8, with the same rules as
the scalar quantizer's rms scales); masked entries output 0.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.compress.checks import check_input
from gmse_cli.compress.group_stats import STAT_RMS, group_stat, group_stat_reference
from gmse_cli.compress.vq.codebooks import codebook, scale_constant, stage_searcher
from gmse_cli.compress.vq.search import nearest_reference, nearest_with
from gmse_cli.compress.vq.search_kernels import assign
from gmse_cli.errors import DataError
from gmse_cli.kernel_cache import numba
from gmse_cli.spec import VQ, FpStyle, ScaleFormat

__all__ = ["quantize", "quantize_reference", "nearest"]


def _validate(stage: VQ, x: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None, int]:
    x, mask = check_input(stage, VQ, "vq", x, mask)
    group = x.shape[1] if stage.group == "row" else stage.group
    return x, mask, group


def _store_scales(raw: np.ndarray, fmt: ScaleFormat) -> np.ndarray:
    """Effective float32 scales from raw float64 ones, by storage format (the scalar rules)."""
    from gmse_cli.compress.fpcast import fp_cast_reference

    raw32 = raw.astype(np.float32)
    if fmt is ScaleFormat.FP32:
        return raw32
    if fmt is ScaleFormat.BF16:
        return fp_cast_reference(raw32, 8, 7, FpStyle.IEEE)
    if fmt is ScaleFormat.FP16:
        return fp_cast_reference(raw32, 5, 10, FpStyle.IEEE)
    if fmt is ScaleFormat.E8M0:
        m, e = np.frexp(raw)
        k = np.where(m >= math.sqrt(0.5), e, e - 1)  # log2 of the raw scale, rounded to nearest
        return np.where(raw > 0, np.ldexp(1.0, np.clip(k, -127, 127)), 0.0).astype(np.float32)
    top = float(raw.max()) if raw.size else 0.0
    if fmt is ScaleFormat.E4M3:  # NVFP4-style: e4m3 scales times one float32 tensor scale
        s_t = float(np.float32(top / 448.0))
        if s_t == 0:
            return np.zeros_like(raw32)
        stored = fp_cast_reference((raw / s_t).astype(np.float32), 4, 3, FpStyle.FN)
        return (stored.astype(np.float64) * s_t).astype(np.float32)
    s_t = float(np.float32(top / 255.0))  # int8 codes 1..255 times a float32 tensor scale
    if s_t == 0:
        return np.zeros_like(raw32)
    return np.where(raw > 0, np.clip(np.rint(raw / s_t), 1.0, 255.0) * s_t, 0.0).astype(np.float32)


def _scales(stage: VQ, rms: np.ndarray, constant: float) -> np.ndarray:
    return _store_scales(constant * rms, stage.scale_format)


@numba.njit(parallel=True, cache=True)
def _k_apply(idx, scales, group, c, mask, has_mask, out):
    rows, n = out.shape
    d = c.shape[1]
    for r in numba.prange(rows):
        for t in range(n // d):
            k = idx[r, t]
            sc = scales[r, (t * d) // group]
            for i in range(d):
                j = t * d + i
                if k < 0 or (has_mask and not mask[r, j]):
                    out[r, j] = 0.0
                else:
                    out[r, j] = sc * c[k, i]


def quantize(stage: VQ, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Vector-quantize ``x`` (rows, row_length); ``mask`` (True = kept) zeroes dropped entries.

    numba, parallel over rows; equal element for element to :func:`quantize_reference`.
    """
    x, mask, group = _validate(stage, x, mask)
    cb = codebook(stage)
    rows, n = x.shape
    scales = _scales(stage, group_stat(x, mask, group, STAT_RMS), scale_constant(stage))
    idx = np.empty((rows, n // stage.dim), dtype=np.int64)
    assign(stage_searcher(stage), x, scales, group, idx)
    has_mask = mask is not None
    m = mask if has_mask else np.ones((1, 1), dtype=np.bool_)
    out = np.empty_like(x)
    _k_apply(idx, scales, group, cb, m, has_mask, out)
    return out


def quantize_reference(stage: VQ, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Plain numpy twin of :func:`quantize` (brute-force nearest codeword, chunked)."""
    x, mask, group = _validate(stage, x, mask)
    cb = codebook(stage)
    rows, n = x.shape
    rms = group_stat_reference(x, mask, group, STAT_RMS)
    scales = _scales(stage, rms, scale_constant(stage))  # (rows, groups)
    per_entry = np.repeat(scales, group, axis=1)  # (rows, n)
    safe = np.where(per_entry == 0, np.float32(1.0), per_entry)
    q = (x / safe).reshape(-1, stage.dim)
    idx = nearest_reference(cb, q)
    out = (per_entry.reshape(-1, stage.dim) * cb[idx]).reshape(rows, n)
    out = np.where(per_entry == 0, np.float32(0.0), out)
    if mask is not None:
        out = np.where(mask, out, np.float32(0.0))
    return out.astype(np.float32)


def nearest(stage: VQ, q: np.ndarray) -> np.ndarray:
    """Index of the nearest codeword of ``stage``'s codebook to each row of ``q`` (n, dim).

    Exact and equal to ``nearest_reference(codebook(stage), q)``; numba, parallel over rows.
    """
    q = np.ascontiguousarray(q, dtype=np.float32)
    if q.ndim != 2 or q.shape[1] != stage.dim:
        raise DataError(f"vq: queries must have shape (n, {stage.dim}), got {q.shape}")
    return nearest_with(stage_searcher(stage), q)
