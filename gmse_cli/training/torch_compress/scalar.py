"""Scalar quantization in torch: the twin of :mod:`gmse_cli.compress.scalar` (same plan, same
float64 arithmetic) and QuEST's trust mask for its straight-through gradient."""

from __future__ import annotations

import math

import numpy as np
import torch

from gmse_cli.spec import Quantize, ScaleStats
from gmse_cli.training.torch_compress.ste import cpu_array

__all__ = ["TorchQuantize", "fp_round", "trust_mask"]

_F64 = torch.float64


def fp_round(
    v: torch.Tensor, emin: int, mantissa_bits: int, max_value: float, over: float | None = None
) -> torch.Tensor:
    """Round float64 ``v`` onto an ExMy grid: nearest, ties to even (exact ops); a result beyond
    ``max_value`` becomes ``over`` (None: saturating); the torch twin of
    gmse_cli.compress.grids' reference rounding."""
    _, ex = torch.frexp(v.abs())
    step = torch.ldexp(torch.ones_like(v), torch.clamp(ex - 1, min=emin) - mantissa_bits)
    r = torch.round(v / step) * step  # torch.round: half to even, like np.rint
    top = max_value if over is None else over
    return torch.where(r.abs() > max_value, torch.copysign(torch.full_like(v, top), v), r)


def _ceil_log2(v: torch.Tensor) -> torch.Tensor:
    m, e = torch.frexp(v)
    return torch.where(m == 0.5, e - 1, e)


class TorchQuantize:
    """One Quantize stage; the plan (grid codes, levels, constants) is the numpy kernel's own."""

    def __init__(self, stage: Quantize, row_length: int, *, numba: bool = True) -> None:
        from gmse_cli.compress import scalar as sc

        self.sc = sc
        self.numba = numba
        self.stage = stage
        self.p = sc.plan(stage, row_length)
        self._tables: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}
        self.trust_lo, self.trust_hi = _trust_range(stage, self.p)

    def tables(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._tables:
            self._tables[device] = (
                torch.as_tensor(self.p.table, dtype=_F64, device=device),
                torch.as_tensor(self.p.mids, dtype=_F64, device=device),
            )
        return self._tables[device]

    # -- the grid ------------------------------------------------------------------------------

    def levels(self, v: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        p, sc = self.p, self.sc
        n = p.n
        if p.grid == sc.MIDRISE:
            h = v * (0.5 * (n - 1))
            j = torch.clamp(torch.floor(h.abs()), max=n // 2 - 1.0)
            return torch.copysign((2.0 * j + 1.0) / (n - 1), h)
        if p.grid == sc.SIGNED:
            return torch.clamp(torch.round(v), 1.0 - n // 2, n // 2 - 1.0)
        if p.grid == sc.FULL:
            return torch.clamp(torch.round(v), -float(n // 2), n // 2 - 1.0)
        if p.grid == sc.ASYM:
            return torch.clamp(torch.round(v) + z, 0, n - 1) - z
        if p.grid == sc.FP:
            return fp_round(v, p.fp.emin, p.fp.mantissa_bits, p.fp.max_value)
        table, mids = self.tables(v.device)
        return table[torch.searchsorted(mids, v.contiguous(), right=True)]

    def dequantize(
        self, xg: torch.Tensor, scale: torch.Tensor, z: torch.Tensor, deq: torch.Tensor | None = None
    ) -> torch.Tensor:
        """level * scale (``deq``, if given, dequantizes: dq8), 0 where the scale is 0."""
        pos = scale > 0
        safe = torch.where(pos, scale, torch.ones_like(scale))
        if self.p.grid == self.sc.TABLE32:  # bitsandbytes: x times the float32 reciprocal
            table, mids = self.tables(xg.device)
            inv = (1.0 / safe.to(torch.float32)).to(_F64)
            v = (xg * inv).to(torch.float32).to(_F64).contiguous()
            level = table[torch.searchsorted(mids, v, right=False)]
        else:
            level = self.levels(xg / safe, z)
        return torch.where(pos, level * (scale if deq is None else deq), 0.0)

    # -- scales ----------------------------------------------------------------------------------

    def _e8m0(self, raw: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        p, sc = self.p, self.sc
        if p.e8 == sc.E8_FLOOR:
            k = torch.frexp(amax)[1] - 1 - p.emax
        elif p.e8 == sc.E8_CEIL:
            k = _ceil_log2(amax) - p.emax
        elif p.e8 == sc.E8_EVEN:
            bits = amax.to(torch.float32).view(torch.int32).to(torch.int64)
            k = ((bits + sc.even_increment(p.fp.mantissa_bits)) >> 23) - 127 - p.emax
        elif p.e8 == sc.E8_RCEIL:
            k = _ceil_log2(raw.to(torch.float32).to(_F64))
        elif p.e8 == sc.E8_CEIL_RAW:
            k = _ceil_log2(raw)
        else:
            m, e = torch.frexp(raw)
            k = torch.where(m >= sc.SQRT_HALF, e, e - 1)
        scale = torch.ldexp(torch.ones_like(raw), torch.clamp(k, -sc.E8M0_EXP, sc.E8M0_EXP))
        scale = torch.where(k > sc.E8M0_EXP, torch.full_like(raw, p.over), scale)
        return torch.where(raw > 0, scale, torch.zeros_like(raw))

    def store_local(self, raw: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
        p, sc = self.p, self.sc
        if p.sfmt == sc.BF16:
            return fp_round(raw, *sc.BF16_P, p.over)
        if p.sfmt == sc.FP16:
            return fp_round(raw, *sc.FP16_P, p.over)
        if p.sfmt == sc.E8M0:
            return self._e8m0(raw, amax)
        return raw.to(torch.float32).to(_F64)

    def store_dq(self, raw: torch.Tensor) -> torch.Tensor:
        """The double-quantized (dq8) dequantization scales: the numpy twin's arithmetic on the
        small (rows, groups) array, on the CPU (its mean sums in one fixed order)."""
        out = self.sc.dq_scales_reference(raw.detach().cpu().numpy())
        return torch.from_numpy(out).to(raw.device)

    def store_global(self, raw: torch.Tensor) -> torch.Tensor:
        p, sc = self.p, self.sc
        top = float(raw.max()) if raw.numel() else 0.0
        if p.sfmt == sc.E4M3:
            s_t = float(np.float32(top / sc.E4M3_MAX))
            if s_t == 0:
                return torch.zeros_like(raw)
            return fp_round(raw / s_t, *sc.E4M3_P) * s_t
        s_t = float(np.float32(top / sc.INT8_MAX))
        if s_t == 0:
            return torch.zeros_like(raw)
        return torch.where(raw > 0, torch.clamp(torch.round(raw / s_t), 1.0, sc.INT8_MAX) * s_t,
                           torch.zeros_like(raw))

    def zero_point(self, lo: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        if self.p.grid != self.sc.ASYM:
            return torch.zeros_like(scale)
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        return torch.clamp(torch.round(-lo / safe), 0, self.p.n - 1)

    # -- mse rule --------------------------------------------------------------------------------

    def _group_error(self, xg, kg, scale, z) -> torch.Tensor:
        deq = self.dequantize(xg, scale[..., None], z[..., None])
        err = torch.where(kg, (deq - xg) ** 2, torch.zeros_like(xg)).sum(-1)
        return err.sum(0, keepdim=True) if self.p.tensor else err

    def _candidate(self, ratio, stats):
        p, sc = self.p, self.sc
        base = (stats["hi"] - stats["lo"]) / (p.n - 1) if p.grid == sc.ASYM else stats["amax"] / p.gmax
        if p.sfmt in sc.GLOBAL_FORMATS:  # two-level formats: measured with the float32 raw scale
            scale = (ratio * base).to(torch.float32).to(_F64)
        else:
            scale = self.store_local(ratio * base, stats["amax"])
        return scale, self.zero_point(ratio * stats["lo"], scale)

    def mse_ratio(self, xg, kg, stats) -> torch.Tensor:
        sc = self.sc
        shape = stats["amax"].shape
        best_r = torch.full(shape, math.nan, dtype=_F64, device=xg.device)
        best_err = torch.full(shape, math.inf, dtype=_F64, device=xg.device)
        for k in range(sc.MSE_COARSE):
            r = torch.full(shape, 1.0 - sc.MSE_COARSE_STEP * k, dtype=_F64, device=xg.device)
            err = self._group_error(xg, kg, *self._candidate(r, stats))
            better = err < best_err
            best_r, best_err = torch.where(better, r, best_r), torch.where(better, err, best_err)
        coarse = best_r
        for j in range(-sc.MSE_FINE, sc.MSE_FINE + 1):
            if j == 0:
                continue
            r = coarse + sc.MSE_FINE_STEP * j
            err = self._group_error(xg, kg, *self._candidate(r, stats))
            better = (err < best_err) & (r >= sc.MSE_MIN_RATIO) & (r <= 1.0)
            best_r, best_err = torch.where(better, r, best_r), torch.where(better, err, best_err)
        return best_r

    # -- the stage -------------------------------------------------------------------------------

    @property
    def fast_cpu(self) -> bool:
        """CPU tensors take the numba compressor plus a cheap mask (not the mse rule, whose
        clipping ratio the mask would have to search again)."""
        return self.p.rule != self.sc.MSE

    def __call__(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool,
                 dense: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(dequantized float32 x, trust mask or None) for float32 x of shape (rows, cols).

        ``kept``: the mask of a preceding sparsify stage (x is zero where it drops). ``dense``:
        the rows before pruning, where the statistics come from for ``scale_stats = "all"``
        (QuEST's FourEight: the scale of the whole row; required then with ``kept``). The
        trust mask is always checked on x itself, the quantizer's input.
        """
        source = None
        if kept is not None and self.stage.scale_stats is ScaleStats.ALL:
            if dense is None:
                raise ValueError("a quantizer with scale_stats 'all' needs the rows before pruning (dense)")
            source = dense.to(torch.float32)
        if self.numba and x.device.type == "cpu" and self.fast_cpu:
            return self.call_numba(x, kept, trust, source)
        return self.call_torch(x, kept, trust, source)

    def call_numba(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool,
                   source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward by gmse_cli.compress.scalar.quantize itself (fused numba, the same bits);
        the trust mask from group scales recomputed by the kernels of .cpu_kernels."""
        xa = cpu_array(x)
        keep = kept.contiguous().numpy() if kept is not None else None
        # with statistics over all entries the quantizer takes the rows before pruning
        out = torch.from_numpy(self.sc.quantize(self.stage, xa if source is None else cpu_array(source), keep))
        mask = self.trust_from_scales(torch.from_numpy(xa), kept, source=source) if trust else None
        return out, mask

    def trust_from_scales(self, x: torch.Tensor, kept: torch.Tensor | None, *, use_numba: bool = True,
                          source: torch.Tensor | None = None) -> torch.Tensor:
        """The trust mask for the rms, absmean, absmax and none rules: group statistics, the stored scale
        (as the scale format stores it), then the band check. ``use_numba=False`` is the plain
        torch twin of the CPU kernels. ``source``: the rows the statistics cover entirely
        (scale_stats 'all'); by default the entries of x that ``kept`` keeps."""
        from gmse_cli.training.torch_compress import cpu_kernels as kern

        p, sc = self.p, self.sc
        rows, cols = x.shape
        if p.rule == sc.NONE:
            return (x >= self.trust_lo) & (x <= self.trust_hi)
        group = rows * cols if p.tensor else p.group
        flat = x.reshape(1, rows * cols) if p.tensor else x  # one group = the whole tensor
        stats_of = flat if source is None else source.reshape(flat.shape)
        keep = None if kept is None or source is not None else kept.reshape(flat.shape)

        def stat(kind: int) -> torch.Tensor:  # (rows, groups) float64
            if use_numba:
                k = None if keep is None else keep.contiguous().numpy()
                return torch.from_numpy(kern.group_stat(stats_of.contiguous().numpy(), k, group, kind))
            xg = stats_of.to(_F64).reshape(flat.shape[0], -1, group)
            kg = torch.ones_like(xg, dtype=torch.bool) if keep is None else keep.reshape(xg.shape)
            zero = torch.zeros((), dtype=_F64)
            if kind == kern.STAT_ABSMEAN:
                return torch.where(kg, xg.abs(), zero).sum(-1) / kg.sum(-1).clamp(min=1)
            if kind == kern.STAT_RMS:
                count = kg.sum(-1).clamp(min=1)
                return torch.sqrt(torch.where(kg, xg * xg, zero).sum(-1) / count)
            if kind == kern.STAT_AMAX:
                return torch.where(kg, xg.abs(), zero).amax(-1)
            if kind == kern.STAT_LO:
                return torch.where(kg, xg, zero).amin(-1).clamp(max=0.0)
            return torch.where(kg, xg, zero).amax(-1).clamp(min=0.0)

        lo = None
        if p.rule in (sc.RMS, sc.ABSMEAN):
            raw = p.constant * stat(kern.STAT_RMS if p.rule == sc.RMS else kern.STAT_ABSMEAN)
            amax = raw  # only the absmax e8m0 rule reads amax
        elif p.grid == sc.ASYM:
            lo, hi = stat(kern.STAT_LO), stat(kern.STAT_HI)
            amax = torch.maximum(-lo, hi)
            raw = (hi - lo) / (p.n - 1)
        else:
            amax = stat(kern.STAT_AMAX)
            raw = amax / p.gmax
        scale = self.store_global(raw) if p.sfmt in sc.GLOBAL_FORMATS else self.store_local(raw, amax)
        z = self.zero_point(lo, scale) if lo is not None else torch.zeros_like(scale)
        lo_e, hi_e = self.band(scale, z)  # dq8: the band of the fp32 scale the elements round with
        if use_numba:
            return torch.from_numpy(kern.band_mask(flat.contiguous().numpy(), group, lo_e.numpy(), hi_e.numpy())).reshape(rows, cols)
        xg = flat.reshape(flat.shape[0], -1, group)
        lo32, hi32 = lo_e.to(torch.float32)[..., None], hi_e.to(torch.float32)[..., None]
        return ((xg >= lo32) & (xg <= hi32)).reshape(rows, cols)

    def band(self, scale: torch.Tensor, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per group, the trusted interval in the input's units (float64): the grid's range in
        scaled units, shifted by -z for asymmetric grids, times the scale; everything for a
        zero scale (the group is all zeros)."""
        pos = scale > 0
        lo = torch.where(pos, (self.trust_lo - z) * scale, torch.full_like(scale, -math.inf))
        hi = torch.where(pos, (self.trust_hi - z) * scale, torch.full_like(scale, math.inf))
        return lo, hi

    def _stats(self, xg: torch.Tensor, kg: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Per group (float64, over kept entries): only the statistics the rule reads (count, sum
        of squares or magnitudes, amax, lo, hi), as this runs every forward pass; unmasked, no masking."""
        p, sc = self.p, self.sc
        need = {sc.RMS: {"count", "ss"}, sc.ABSMEAN: {"count", "sa"}}.get(p.rule)
        need = need or ({"lo", "hi"} if p.grid == sc.ASYM else {"amax"})
        if p.rule == sc.MSE:
            need = {"count", "ss", "amax", "lo", "hi"}
        if kg is None:
            stats = {
                "count": lambda: torch.full(xg.shape[:-1], float(xg.shape[-1]), dtype=_F64, device=xg.device),
                "ss": lambda: (xg * xg).sum(-1),
                "sa": lambda: xg.abs().sum(-1),
                "amax": lambda: xg.abs().amax(-1),
                "lo": lambda: torch.clamp(xg.amin(-1), max=0.0),
                "hi": lambda: torch.clamp(xg.amax(-1), min=0.0),
            }
        else:
            stats = {
                "count": lambda: kg.sum(-1).to(_F64),
                "ss": lambda: torch.where(kg, xg * xg, 0.0).sum(-1),
                "sa": lambda: torch.where(kg, xg.abs(), 0.0).sum(-1),
                "amax": lambda: torch.where(kg, xg.abs(), 0.0).amax(-1),
                "lo": lambda: torch.clamp(torch.where(kg, xg, math.inf).amin(-1), max=0.0),
                "hi": lambda: torch.clamp(torch.where(kg, xg, -math.inf).amax(-1), min=0.0),
            }
        out = {name: stats[name]() for name in need}
        if p.tensor:  # one group: reduce the per-row statistics over rows
            reduce = {"count": torch.sum, "ss": torch.sum, "sa": torch.sum, "amax": torch.amax, "lo": torch.amin, "hi": torch.amax}
            out = {name: reduce[name](v, 0, keepdim=True) for name, v in out.items()}
        return out

    def call_torch(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool,
                   source: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The float64 torch twin (any device). With ``source`` (scale_stats 'all'), the rows
        before pruning are quantized whole and the dropped entries zeroed after."""
        p, sc = self.p, self.sc
        rows, cols = x.shape
        x64 = x.to(_F64) if source is None else source.to(_F64)
        if p.rule == sc.NONE:
            out = fp_round(x64, p.fp.emin, p.fp.mantissa_bits, p.fp.max_value, p.over)
            if kept is not None:
                out = torch.where(kept, out, 0.0)
            mask = ((x64 >= self.trust_lo) & (x64 <= self.trust_hi)) if trust else None
            return out.to(torch.float32), mask
        group = cols if p.tensor else p.group
        xg = x64.reshape(rows, cols // group, group)  # (rows, groups per row, group)
        kg = None if kept is None else kept.reshape(xg.shape)
        k_stats = kg if source is None else None  # the entries the statistics cover
        stats = self._stats(xg, k_stats)
        if p.rule == sc.MSE and k_stats is None:
            k_stats = torch.ones_like(xg, dtype=torch.bool)
        ratio = self.mse_ratio(xg, k_stats, stats) if p.rule == sc.MSE else 1.0
        if p.rule == sc.RMS:
            raw = p.constant * torch.sqrt(stats["ss"] / torch.clamp(stats["count"], min=1.0))
        elif p.rule == sc.ABSMEAN:
            raw = p.constant * (stats["sa"] / torch.clamp(stats["count"], min=1.0))
        elif p.grid == sc.ASYM:
            raw = ratio * ((stats["hi"] - stats["lo"]) / (p.n - 1))
        else:
            raw = ratio * (stats["amax"] / p.gmax)
        deq = None
        if p.sfmt == sc.DQ8:  # rounded with the fp32 scale, dequantized with the dq8 one
            scale, deq = raw.to(torch.float32).to(_F64), self.store_dq(raw)[..., None]
        elif p.sfmt in sc.GLOBAL_FORMATS:
            scale = self.store_global(raw)
        else:  # amax: read only by the absmax e8m0 roundings, which have it
            scale = self.store_local(raw, stats.get("amax", raw))
        z = self.zero_point(ratio * stats["lo"], scale) if "lo" in stats else torch.zeros_like(scale)
        out = self.dequantize(xg, scale[..., None], z[..., None], deq)
        if kg is not None:
            out = torch.where(kg, out, 0.0)
        mask = None
        if trust:
            lo_e, hi_e = self.band(scale, z)
            xg32 = x.reshape(xg.shape)  # compared as the CPU kernel compares: float32 x, float32 edges
            mask = (xg32 >= lo_e.to(torch.float32)[..., None]) & (xg32 <= hi_e.to(torch.float32)[..., None])
            mask = mask.reshape(rows, cols)
        return out.to(torch.float32).reshape(rows, cols), mask


def _trust_range(stage: Quantize, plan) -> tuple[float, float]:
    """[lowest level - half its gap, highest level + half its gap] in native (scaled) units."""
    from gmse_cli.compress import scalar as sc

    if plan.grid == sc.FP:
        # The gap below the largest ExMy value (the grid is symmetric): the top binade's step
        # 2^(floor(log2 max) - M), or, where the largest value opens its binade (a power of two:
        # every ExM0 grid), the step of the binade below, half as large.
        top = math.frexp(plan.fp.max_value)[1] - 1
        opens_binade = plan.fp.max_value == 2.0**top
        gap = 2.0 ** (top - plan.fp.mantissa_bits - (1 if opens_binade else 0))
        reach = plan.fp.max_value + 0.5 * gap
        return -reach, reach
    if plan.grid == sc.ASYM:
        return -0.5, plan.n - 1 + 0.5  # shifted by -z per group
    if plan.grid == sc.MIDRISE:
        reach = 1.0 + 1.0 / (plan.n - 1)
        return -reach, reach
    if plan.grid == sc.SIGNED:
        reach = plan.n // 2 - 1 + 0.5
        return -reach, reach
    if plan.grid == sc.FULL:
        return -(plan.n // 2) - 0.5, plan.n // 2 - 0.5
    t = plan.table
    return float(t[0] - 0.5 * (t[1] - t[0])), float(t[-1] + 0.5 * (t[-1] - t[-2]))


def trust_mask(stage: Quantize, x: torch.Tensor) -> torch.Tensor:
    """QuEST's trust mask of ``x`` (rows, cols) under one scalar stage (True = gradient passes)."""
    fn = TorchQuantize(stage, x.shape[1])
    return fn(x.to(torch.float32), None, True)[1]
