"""Gaussian codebooks: the Gaussian-MSE-optimal levels in 1-D, Lloyd with utility moves on
Gaussian samples in 2-D and up; cached on disk, the catalog's and the search's sizes shipped
with the package.

A codebook of ``2^index_bits`` codewords in ``dim`` dimensions minimizes the MSE of a standard
normal source (coordinates in units of the input's standard deviation):

- 1-D: the exact Lloyd-Max levels (:func:`~gmse_cli.compress.lloyd_max.lloyd_max_levels`), the
  global optimum (the Gaussian is log-concave, so Lloyd's fixed point is unique);
- up to 1024 codewords: Linde-Buzo-Gray (:mod:`gmse_cli.compress.vq.lloyd`) then utility moves
  (:mod:`gmse_cli.compress.vq.lbgu`) on a scrambled-Sobol Gaussian sample (quasi-random points
  through the normal quantile, in antithetic pairs): the sample's cell averages err far less
  than those of as many random points, so Lloyd settles nearer the true optimum;
- larger codebooks: the product of two smaller ones, then streamed Lloyd on fresh samples
  (:mod:`gmse_cli.compress.vq.streamed`; a 2^16-codeword codebook takes minutes, once).

Everything is seeded by :data:`~gmse_cli.compress.vq.store.LLOYD_SEED`, so every machine trains
the same codebook. The scale constant is 1: at a Lloyd fixed point every codeword is its
cell's centroid, which makes scaling stationary.

Cost on a busy 2-core machine (trained once, then cached): 2-D, 16 codewords, ~20 s; 64, ~1 min;
256, ~5 min; 256 codewords in 4-D 817 s, in 8-D 505 s (measured) -- which is why the catalog's
and the search space's sizes ship with the package (:mod:`gmse_cli.compress.vq.shipped`).
"""

from __future__ import annotations

from functools import cache

import numpy as np

from gmse_cli.compress.lloyd_max import lloyd_max_levels, lloyd_max_mse
from gmse_cli.compress.vq.lbgu import lbg_u
from gmse_cli.compress.vq.lloyd import canonical, lbg, lloyd_exact
from gmse_cli.compress.vq.measure import heldout_mse
from gmse_cli.compress.vq.store import (
    ALGORITHM_VERSION,
    LLOYD_SEED,
    CodebookInfo,
    cached_codebook,
    keep_codebook,
    load_codebook,
    shipped_dir,
)
from gmse_cli.compress.vq.streamed import StreamedPlan, lloyd_streamed, streamed_plan
from gmse_cli.errors import SpecError
from gmse_cli.progress import once
from gmse_cli.threads import parallel_launches

__all__ = ["train_gaussian_codebook", "gaussian_codebook", "gaussian_sample", "codebook_stem", "training_seconds"]

_EXACT_LLOYD_MAX = 1024  # above this (in 2-D and up), Lloyd runs streamed (lloyd_streamed)
# 1-D codebooks are the exact Lloyd-Max levels. (Lloyd on a sample of 2^18, started at its
# quantiles, stopped far from the optimum above 2^8 levels: 2^9 levels measured 6.9x the
# optimal MSE, worse than 2^8 levels; 2^16 levels 1500x.)
_EXACT_LEVELS_MAX_BITS = 16
_PATIENCE = 3  # candidate moves tried before LBG-U stops
_MAX_MOVES = 32  # LBG-U moves at most (bounds the cost: 8-D, 256 codewords keeps ~17)
_POLISH_TOL = 1e-8  # the last Lloyd run's stopping tolerance (relative MSE improvement)


# Training cost, measured by benchmarks/vq_training.py on a busy 2-core machine and rounded up:
# the estimate is an upper bound to plan with, not a prediction.
_SECONDS_PER_PAIR = 6e-9  # exact Lloyd: seconds per (vector, codeword) pair assigned (measured 0.9-3.9e-9)
_LBG_PASSES = 2000  # LBG's splits and LBG-U's moves, in full-codebook Lloyd iterations on its sample (455-1722)
_STREAMED_SECONDS = 4.0  # streamed Lloyd: seconds per iteration ...
_STREAMED_SECONDS_PER_VECTOR = 1.5e-6  # ... and per vector of its batch (2^23 floats: more in fewer dimensions)
_WARN_SECONDS = 600  # a longer training is announced before it starts


def _sample_count(codewords: int, dim: int) -> int:
    # About 1024 vectors per codeword, between 2^17 and 2^18 vectors: enough to find the
    # arrangement (the polish on a larger sample settles the centroids) at a bounded cost.
    return int(min(max(1024 * codewords, 2**17), 2**18))


def _polish_count(dim: int) -> int:
    # 2^21 vectors (at most 2^23 floats): the arrangement found, its centroids made exact
    return int(min(2**21, 2**23 // dim))


def gaussian_sample(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` (rounded up to even) standard normal vectors of ``dim`` coordinates, float32:
    scrambled Sobol points through the normal quantile, half of them negated copies of the
    other half (an exactly symmetric sample: no noise in the codebook's mean)."""
    # imported here: scipy.stats costs 0.7 s, and a codebook already trained needs none of it
    from scipy.special import ndtri
    from scipy.stats import qmc

    half = (n + 1) // 2
    m = max(int(np.ceil(np.log2(max(half, 1)))), 0)
    u = qmc.Sobol(dim, scramble=True, seed=seed).random_base2(m)[:half]
    z = ndtri(np.clip(u, 2.0**-53, 1 - 2.0**-53)).astype(np.float32)
    return np.concatenate([z, -z])


def train_gaussian_codebook(
    dim: int,
    index_bits: int,
    *,
    seed: int = LLOYD_SEED,
    samples: int | None = None,
    tol: float = 1e-6,
    max_iter: int = 100,
    plan: StreamedPlan | None = None,
    moves: int = _MAX_MOVES,
) -> tuple[np.ndarray, CodebookInfo]:
    """Train a Gaussian-MSE codebook of ``2^index_bits`` codewords in ``dim`` dimensions.

    1-D: the exact Lloyd-Max levels (no sample). Up to 1024 codewords: LBG,
    then up to ``moves`` utility moves, on ``samples`` vectors of :func:`gaussian_sample`
    (default: about 1024 per codeword, between 2^17 and 2^18) from ``seed``; each Lloyd run
    stops when an iteration improves the training MSE by less than ``tol`` relative, or after
    ``max_iter`` iterations; a last run (to 1e-8, at most ``2 * max_iter`` iterations) on
    2^21 vectors (at most 2^23 floats) from ``seed + 2``. Larger codebooks:
    :func:`~gmse_cli.compress.vq.streamed.lloyd_streamed` with ``plan`` (default
    :func:`~gmse_cli.compress.vq.streamed.streamed_plan`). The returned :class:`CodebookInfo`
    carries the MSE on 2^16 fresh random vectors (seed + 1) with exact search. Uncached:
    :func:`gaussian_codebook` caches.
    """
    if not (1 <= dim <= 16 and 1 <= index_bits <= 16):
        raise SpecError(f"vq: need 1 <= dim <= 16 and 1 <= index bits <= 16, got dim={dim}, bits={index_bits}")
    k = 2**index_bits
    kept_moves = None
    if dim == 1 and index_bits <= _EXACT_LEVELS_MAX_BITS:
        c = lloyd_max_levels(index_bits)[:, None]
        n, iterations, method = 0, 0, "exact Lloyd-Max levels"
        mse = lloyd_max_mse(index_bits)
    elif k > _EXACT_LLOYD_MAX and dim > 1:
        # Product start: two codebooks of about sqrt(K) codewords on the two halves.
        d1, b1 = dim // 2, index_bits // 2
        left, _ = gaussian_codebook(d1, b1)
        right, _ = gaussian_codebook(dim - d1, index_bits - b1)
        c, iterations, n, mse = lloyd_streamed(left, right, seed=seed, plan=plan or streamed_plan(dim))
        method = "streamed Lloyd from a product start"
    else:
        x = gaussian_sample(samples if samples is not None else _sample_count(k, dim), dim, seed)
        n = len(x)
        rng = np.random.default_rng([seed, 1])
        c, _, iterations, mse = lbg(x, k, tol=tol, max_iter=max_iter, rng=rng)
        method = "LBG on a scrambled-Sobol sample"
        if dim > 1:
            c, kept_moves, _, _ = lbg_u(
                x, c, tol=tol, max_iter=max_iter, patience=_PATIENCE, max_moves=moves, rng=rng
            )
            # Polished on a larger, independent sample: the arrangement is kept, while the
            # centroids of the small sample's cells, which carry its noise, are not.
            x = gaussian_sample(max(_polish_count(dim), n), dim, seed + 2)
            n += len(x)
            c, _, iterations, mse = lloyd_exact(x, c, tol=min(tol, _POLISH_TOL), max_iter=2 * max_iter, rng=rng)
            method = (
                "LBG, then utility moves (LBG-U), on a scrambled-Sobol sample; Lloyd on a larger one"
            )
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
        train_moves=kept_moves,
        method=method,
    )
    return cb, info


def _stored(stem: str, *, with_array: bool) -> tuple[np.ndarray | None, CodebookInfo] | None:
    """A Gaussian codebook shipped with the package, else from the disk cache; None if neither."""
    hit = load_codebook(stem, with_array=with_array, directory=shipped_dir())
    return hit if hit is not None else cached_codebook(stem, with_array=with_array)


def _available(dim: int, index_bits: int) -> bool:
    """Whether the codebook needs no training: exact levels, shipped, or in the disk cache."""
    exact = dim == 1 and index_bits <= _EXACT_LEVELS_MAX_BITS
    return exact or _stored(codebook_stem(dim, index_bits), with_array=False) is not None


def training_seconds(dim: int, index_bits: int, *, max_iter: int = 100) -> float:
    """A conservative estimate of the seconds :func:`train_gaussian_codebook` takes with its
    defaults, from the sizes alone; a streamed codebook counts the smaller codebooks it starts
    from unless they are shipped or cached.

    Up to 1024 codewords (2-D and up) the cost is the nearest-codeword assignment, measured
    at about the same time per (vector, codeword) pair from 2-D to 16-D, and less per pair for
    larger codebooks: :data:`_LBG_PASSES` iterations on the training sample (LBG and the
    utility moves) plus ``2 * max_iter`` on the polish sample. A streamed Lloyd iteration costs
    :data:`_STREAMED_SECONDS` plus :data:`_STREAMED_SECONDS_PER_VECTOR` per vector of its batch,
    at most what 2^16 codewords cost. 1-D codebooks cost seconds at most (0 here).
    """
    k = 2**index_bits
    if dim == 1:
        return 0.0
    if k > _EXACT_LLOYD_MAX:
        d1, b1 = dim // 2, index_bits // 2
        parts = [(d1, b1), (dim - d1, index_bits - b1)]
        start = sum(training_seconds(d, b) for d, b in dict.fromkeys(parts) if not _available(d, b))
        plan = streamed_plan(dim)
        return start + plan.iterations * (_STREAMED_SECONDS + plan.batch * _STREAMED_SECONDS_PER_VECTOR)
    n = _sample_count(k, dim)
    pairs = k * (n * _LBG_PASSES + max(_polish_count(dim), n) * 2 * max_iter)
    return pairs * _SECONDS_PER_PAIR


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(5, round(seconds, -1)):.0f} seconds"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} minutes"
    return f"about {seconds / 3600:.1f} hours"


def codebook_stem(dim: int, index_bits: int, seed: int = LLOYD_SEED) -> str:
    """The file stem of a Gaussian codebook in the cache and among the shipped ones."""
    return f"gaussian-d{dim}-b{index_bits}-seed{seed}-v{ALGORITHM_VERSION}"


@cache
def gaussian_codebook(dim: int, index_bits: int) -> tuple[np.ndarray, CodebookInfo]:
    """The Gaussian codebook (read-only) and its record: shipped with the package, else from
    the disk cache, else trained and stored there; held in memory once read."""
    stem = codebook_stem(dim, index_bits)
    hit = _stored(stem, with_array=True)
    if hit is not None:
        cb, info = hit
        assert cb is not None
    else:
        what = f"training the {dim}-d Gaussian VQ codebook of {2**index_bits:,} codewords"
        seconds = training_seconds(dim, index_bits)
        long = f"over {_WARN_SECONDS // 60} minutes: interrupt now to choose a smaller vq format" if seconds > _WARN_SECONDS else None
        with once(what, estimate=_duration(seconds) if seconds else None, warning=long), parallel_launches():
            cb, info = train_gaussian_codebook(dim, index_bits)
        info = keep_codebook(stem, cb, info)
    cb.setflags(write=False)
    return cb, info
