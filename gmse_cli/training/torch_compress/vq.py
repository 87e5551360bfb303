"""Vector quantization in torch: the twin of :mod:`gmse_cli.compress.vq` (codebook, scales,
exact nearest-codeword search) and the norm trust mask of its straight-through gradient."""

from __future__ import annotations

import math

import numpy as np
import torch

from gmse_cli.spec import VQ
from gmse_cli.training.torch_compress.scalar import fp_round
from gmse_cli.training.torch_compress.ste import cpu_array

__all__ = ["TorchVQ", "vq_trust_radius"]

_F64 = torch.float64


def vq_trust_radius(codewords: np.ndarray) -> float:
    """R = the largest codeword norm + half the distance from that codeword to its nearest
    neighbour (in one dimension: the outermost level plus half the outermost gap)."""
    c = codewords.astype(np.float64)
    norms = np.sqrt((c * c).sum(1))
    top = int(np.argmax(norms))
    gaps = np.sqrt(((c - c[top]) ** 2).sum(1))
    gaps[top] = np.inf
    return float(norms[top] + 0.5 * gaps.min())


class TorchVQ:
    """One VQ stage: codebook, scale constant and search of gmse_cli.compress.vq."""

    def __init__(self, stage: VQ, row_length: int, *, numba: bool = True) -> None:
        from gmse_cli.compress import vq

        self.vq = vq
        self.numba = numba
        self.stage = stage
        cb, info = vq.codebook_and_info(stage)
        self.codewords = np.array(cb, dtype=np.float32)  # a writable copy for torch
        self.constant = float(info.scale_constant)
        self.group = row_length if stage.group == "row" else int(stage.group)
        self.radius = vq_trust_radius(self.codewords)
        self._device_cb: dict[torch.device, torch.Tensor] = {}

    def cb(self, device: torch.device) -> torch.Tensor:
        if device not in self._device_cb:
            self._device_cb[device] = torch.as_tensor(self.codewords, device=device)
        return self._device_cb[device]

    def scales(self, x: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        """Effective float32 scales (rows, groups): constant * RMS over kept entries, stored as
        the scale format stores it (vq's rules: the float32 raw scale is what gets cast)."""
        from gmse_cli.compress import scalar as sc

        rows, cols = x.shape
        xg = x.to(_F64).reshape(rows, cols // self.group, self.group)
        kg = torch.ones_like(xg, dtype=torch.bool) if kept is None else kept.reshape(xg.shape)
        zero = torch.zeros((), dtype=_F64, device=x.device)
        ss = torch.where(kg, xg * xg, zero).sum(-1)
        raw = self.constant * torch.sqrt(ss / kg.sum(-1).clamp(min=1).to(_F64))
        raw32 = raw.to(torch.float32)
        fmt = self.stage.scale_format.value
        if fmt == "fp32":
            return raw32
        if fmt == "bf16":
            return fp_round(raw32.to(_F64), *sc.BF16_P).to(torch.float32)
        if fmt == "fp16":
            return fp_round(raw32.to(_F64), *sc.FP16_P).to(torch.float32)
        if fmt == "e8m0":
            m, e = torch.frexp(raw)
            k = torch.clamp(torch.where(m >= math.sqrt(0.5), e, e - 1), -127, 127)
            return torch.where(raw > 0, torch.ldexp(torch.ones_like(raw), k), zero).to(torch.float32)
        top = float(raw.max()) if raw.numel() else 0.0
        if fmt == "e4m3":
            s_t = float(np.float32(top / 448.0))
            if s_t == 0:
                return torch.zeros_like(raw32)
            stored = fp_round((raw / s_t).to(torch.float32).to(_F64), *sc.E4M3_P)
            return (stored * s_t).to(torch.float32)
        s_t = float(np.float32(top / 255.0))
        if s_t == 0:
            return torch.zeros_like(raw32)
        return torch.where(raw > 0, torch.clamp(torch.round(raw / s_t), 1.0, 255.0) * s_t, zero).to(torch.float32)

    def nearest(self, q: torch.Tensor, *, chunk_elements: int = 1 << 22) -> torch.Tensor:
        """Index of the nearest codeword to each row of float32 ``q`` (n, d): float64 squared
        distances summed over coordinates in order, lowest index on ties (vq's brute force)."""
        c = self.cb(q.device).to(_F64)
        out = torch.empty(q.shape[0], dtype=torch.int64, device=q.device)
        step = max(1, chunk_elements // c.shape[0])
        for start in range(0, q.shape[0], step):
            qc = q[start : start + step].to(_F64)
            dist = torch.zeros((qc.shape[0], c.shape[0]), dtype=_F64, device=q.device)
            for i in range(c.shape[1]):
                dist += (qc[:, i, None] - c[None, :, i]) ** 2
            out[start : start + step] = torch.argmin(dist, dim=1)  # first minimum on ties
        return out

    def __call__(self, x: torch.Tensor, kept: torch.Tensor | None, trust: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        rows, cols = x.shape
        d = self.stage.dim
        scales = self.scales(x, kept)  # (rows, groups) float32
        per_entry = scales.repeat_interleave(self.group, dim=1)  # (rows, cols)
        zero_scale = per_entry == 0
        q = x / torch.where(zero_scale, torch.ones_like(per_entry), per_entry)  # float32, as vq divides
        if self.numba and x.device.type == "cpu":
            keep = kept.contiguous().numpy() if kept is not None else None
            out = torch.from_numpy(self.vq.quantize(self.stage, cpu_array(x), keep))
        else:
            idx = self.nearest(q.reshape(-1, d))
            out = (per_entry.reshape(-1, d) * self.cb(x.device)[idx]).reshape(rows, cols)
            out = torch.where(zero_scale, torch.zeros_like(out), out)
            if kept is not None:
                out = torch.where(kept, out, torch.zeros_like(out))
        mask = None
        if trust:
            norm2 = (q.to(_F64).reshape(rows, cols // d, d) ** 2).sum(-1)  # (rows, slices)
            inside = (norm2 <= self.radius**2).repeat_interleave(d, dim=1)
            mask = inside | zero_scale
        return out, mask
