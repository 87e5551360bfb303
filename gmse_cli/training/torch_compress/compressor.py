"""A format as one differentiable torch function: the stages of :mod:`.scalar`,
:mod:`.sparsity`, :mod:`.rotate` and :mod:`.vq` composed in the format's order."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

import torch

from gmse_cli.spec import VQ, Format, Quantize, Rotate, Sparsify
from gmse_cli.training.config import EstimatorConfig
from gmse_cli.training.torch_compress.rotate import hadamard_torch
from gmse_cli.training.torch_compress.scalar import TorchQuantize
from gmse_cli.training.torch_compress.sparsity import TorchSparsify
from gmse_cli.training.torch_compress.ste import apply_masked
from gmse_cli.training.torch_compress.vq import TorchVQ

__all__ = ["TorchCompressor", "compress_torch"]


class TorchCompressor:
    """A format as a differentiable torch function on (rows, row_length) tensors."""

    def __init__(self, fmt: Format, estimator: EstimatorConfig | None = None, *,
                 kernels: Literal["auto", "torch"] = "auto") -> None:
        """``kernels="auto"``: CPU tensors go through gmse_cli.compress's numba kernels (the
        same bits, several times faster); ``"torch"``: torch ops on every device."""
        self.fmt = fmt
        self.estimator = estimator or EstimatorConfig()
        self.kernels = kernels
        self._stages: dict[int, list] = {}

    def _built(self, row_length: int) -> list:
        if row_length not in self._stages:
            self.fmt.check_row_length(row_length)
            built = []
            for stage in self.fmt.stages:
                if isinstance(stage, Quantize):
                    built.append(TorchQuantize(stage, row_length, numba=self.kernels == "auto"))
                elif isinstance(stage, Sparsify):
                    built.append(TorchSparsify(stage, row_length, self.estimator.rbbm_p, numba=self.kernels == "auto"))
                elif isinstance(stage, VQ):
                    built.append(TorchVQ(stage, row_length, numba=self.kernels == "auto"))
                else:
                    built.append(stage)
            self._stages[row_length] = built
        return self._stages[row_length]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"compress_torch expects a 2-D (rows, row_length) tensor, got {tuple(x.shape)}")
        dtype = x.dtype
        y = x.to(torch.float32)
        stages = self._built(y.shape[1])
        if y.numel() == 0:  # no rows: nothing to compress (a tensor-wide group would be empty)
            return x.clone()
        rotations = [s for s in stages if isinstance(s, Rotate)]
        trust = self.estimator.trust
        for rot in rotations:
            y = hadamard_torch(y, rot)
        kept: torch.Tensor | None = None
        dense: torch.Tensor | None = None  # the rows before pruning (scale_stats 'all' reads them)
        for stage in stages:
            if isinstance(stage, TorchSparsify):
                dense = y.detach()
                box: dict[str, torch.Tensor] = {}

                def sparse_fn(t: torch.Tensor, stage=stage, box=box):
                    out, keep, bw = stage(t)
                    box["kept"] = keep
                    return out, bw

                y = apply_masked(y, sparse_fn)
                kept = box["kept"]
            elif isinstance(stage, TorchQuantize | TorchVQ):
                extra = (dense,) if isinstance(stage, TorchQuantize) else ()

                def quant_fn(t: torch.Tensor, stage=stage, kept=kept, extra=extra):
                    return stage(t, kept, trust, *extra)

                y = apply_masked(y, quant_fn)
        for rot in reversed(rotations):
            y = hadamard_torch(y, rot, inverse=True)
        return y.to(dtype)


@lru_cache(maxsize=256)
def _cached(fmt: Format) -> TorchCompressor:
    return TorchCompressor(fmt)


def compress_torch(fmt: Format, x: torch.Tensor) -> torch.Tensor:
    """Compress ``x`` (rows, row_length) with ``fmt`` on x's device; same values as
    ``gmse_cli.compress.compress``. Differentiable (module docstring) when x requires grad."""
    return _cached(fmt)(x)
