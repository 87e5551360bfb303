"""Vector quantization: codebooks and exact nearest-codeword search.

A :class:`~gmse_cli.spec.VQ` stage cuts each row into slices of ``dim`` consecutive entries and
replaces every slice by ``s * c``: ``c`` the codeword nearest to the slice divided by ``s``, a
per-group scale ``s = constant * RMS(group)`` stored in the stage's scale format.

Modules, from the top down:

- :mod:`.compressor`: :func:`quantize` (numba) and its numpy twin :func:`quantize_reference`,
  :func:`nearest`;
- :mod:`.codebooks`: a stage's codebook, its record (:class:`CodebookInfo`: scale constant,
  Gaussian MSE, provenance) and its search structure, each computed once;
- :mod:`.gaussian`: Gaussian-MSE codebooks trained by Lloyd on Gaussian samples
  (:func:`train_gaussian_codebook`), with :mod:`.lloyd` (fixed sample, up to 1024 codewords)
  and :mod:`.streamed` (fresh samples, larger codebooks);
- :mod:`.e8p`: QuIP#'s E8P lattice codebook (:func:`e8p_codebook`);
- :mod:`.measure`: held-out Gaussian MSE and the MSE-optimal scale constant (Monte Carlo);
- :mod:`.store`: codebook records and the on-disk cache (``cache_dir()/codebooks``, keyed by
  :data:`ALGORITHM_VERSION`);
- :mod:`.search`, :mod:`.search_kernels`: exact nearest-codeword search (numba) and its
  brute-force twin :func:`nearest_reference`: the answer equals brute force bit for bit
  (ties go to the lowest codeword index).
"""

from __future__ import annotations

from gmse_cli.compress.vq.codebooks import (
    clear_caches,
    codebook,
    codebook_and_info,
    codebook_info,
    scale_constant,
)
from gmse_cli.compress.vq.compressor import nearest, quantize, quantize_reference
from gmse_cli.compress.vq.e8p import e8p_codebook
from gmse_cli.compress.vq.gaussian import train_gaussian_codebook
from gmse_cli.compress.vq.search import nearest_reference
from gmse_cli.compress.vq.store import ALGORITHM_VERSION, LLOYD_SEED, CodebookInfo

__all__ = [
    "ALGORITHM_VERSION",
    "LLOYD_SEED",
    "CodebookInfo",
    "codebook",
    "codebook_info",
    "codebook_and_info",
    "scale_constant",
    "e8p_codebook",
    "train_gaussian_codebook",
    "nearest",
    "nearest_reference",
    "quantize",
    "quantize_reference",
    "clear_caches",
]
