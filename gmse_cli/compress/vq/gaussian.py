"""Gaussian codebooks: Lloyd (k-means) on standard normal samples, cached on disk.

A codebook of ``2^index_bits`` codewords in ``dim`` dimensions minimizes the MSE of a standard
normal source (coordinates in units of the input's standard deviation). Samples come from the
fixed seed :data:`~gmse_cli.compress.vq.store.LLOYD_SEED`, so every machine trains the same
codebook. Up to 1024 codewords (and in 1-D), Linde-Buzo-Gray on a fixed sample
(:mod:`gmse_cli.compress.vq.lloyd`); larger codebooks start from the product of two smaller ones
and run streamed Lloyd on fresh samples (:mod:`gmse_cli.compress.vq.streamed`; a 2^16-codeword
codebook takes minutes, once). The scale constant is 1: at a Lloyd fixed point every codeword is
its cell's centroid, which makes scaling stationary.
"""

from __future__ import annotations

from functools import cache

import numpy as np

from gmse_cli.compress.vq.lloyd import canonical, lbg
from gmse_cli.compress.vq.measure import heldout_mse
from gmse_cli.compress.vq.store import (
    ALGORITHM_VERSION,
    LLOYD_SEED,
    CodebookInfo,
    load_codebook,
    save_codebook,
)
from gmse_cli.compress.vq.streamed import StreamedPlan, lloyd_streamed, streamed_plan
from gmse_cli.errors import SpecError
from gmse_cli.progress import once

__all__ = ["train_gaussian_codebook", "gaussian_codebook"]

_EXACT_LLOYD_MAX = 1024  # above this (in 2-D and up), Lloyd runs streamed (lloyd_streamed)


def _sample_count(codewords: int, dim: int) -> int:
    # About 1024 samples per codeword, at least 2^20 and at most 2^25 floats (128 MiB).
    return int(min(max(1024 * codewords, 2**20 // dim), 2**25 // dim))


def train_gaussian_codebook(
    dim: int,
    index_bits: int,
    *,
    seed: int = LLOYD_SEED,
    samples: int | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    plan: StreamedPlan | None = None,
) -> tuple[np.ndarray, CodebookInfo]:
    """Train a Gaussian-MSE codebook of ``2^index_bits`` codewords in ``dim`` dimensions.

    Up to 1024 codewords (and in 1-D): Linde-Buzo-Gray on ``samples`` standard normal vectors
    (default: about 1024 per codeword, between 2^20 and 2^25 floats) drawn from ``seed`` as
    antithetic pairs; each Lloyd run stops when an iteration improves the training MSE by less
    than ``tol`` relative, or after ``max_iter`` iterations. Larger codebooks:
    :func:`~gmse_cli.compress.vq.streamed.lloyd_streamed` with ``plan`` (default
    :func:`~gmse_cli.compress.vq.streamed.streamed_plan`). The returned :class:`CodebookInfo`
    carries the MSE on 2^16 fresh vectors (seed + 1) with exact search. Uncached:
    :func:`gaussian_codebook` caches.
    """
    if not (1 <= dim <= 16 and 1 <= index_bits <= 16):
        raise SpecError(f"vq: need 1 <= dim <= 16 and 1 <= index bits <= 16, got dim={dim}, bits={index_bits}")
    k = 2**index_bits
    if k > _EXACT_LLOYD_MAX and dim > 1:
        # Product start: two codebooks of about sqrt(K) codewords on the two halves.
        d1, b1 = dim // 2, index_bits // 2
        left, _ = gaussian_codebook(d1, b1)
        right, _ = gaussian_codebook(dim - d1, index_bits - b1)
        c, iterations, n, mse = lloyd_streamed(left, right, seed=seed, plan=plan or streamed_plan(dim))
    else:
        n = samples if samples is not None else _sample_count(k, dim)
        # Antithetic pairs (z, -z): the sample is exactly symmetric, so sampling noise cannot
        # shift the whole codebook (a nearly free direction for Lloyd, which would amplify it).
        half = np.random.default_rng(seed).standard_normal(((n + 1) // 2, dim), dtype=np.float32)
        x = np.concatenate([half, -half])
        n = len(x)
        c, _, iterations, mse = lbg(x, k, tol=tol, max_iter=max_iter, rng=np.random.default_rng([seed, 1]))
    cb = canonical(c)
    held_mse, held_n = heldout_mse(cb, 1.0, seed=seed + 1, e8p=False)
    info = CodebookInfo(
        kind="gaussian",
        dim=dim,
        index_bits=index_bits,
        codewords=k,
        scale_constant=1.0,
        mse=held_mse,
        mse_samples=held_n,
        seed=seed,
        train_samples=int(n),
        train_iterations=int(iterations),
        train_mse=float(mse),
    )
    return cb, info


@cache
def gaussian_codebook(dim: int, index_bits: int) -> tuple[np.ndarray, CodebookInfo]:
    """The Gaussian codebook (read-only) and its record: from the disk cache, else trained and
    stored there; held in memory once read."""
    stem = f"gaussian-d{dim}-b{index_bits}-seed{LLOYD_SEED}-v{ALGORITHM_VERSION}"
    hit = load_codebook(stem, with_array=True)
    if hit is not None:
        cb, info = hit
        assert cb is not None
    else:
        with once(f"training the {dim}-d Gaussian VQ codebook of {2**index_bits:,} codewords"):
            cb, info = train_gaussian_codebook(dim, index_bits)
        save_codebook(stem, cb, info)
    cb.setflags(write=False)
    return cb, info
