"""E8P: QuIP#'s 2^16-point codebook of the E8 lattice shifted by 1/4.

The search structure built from :func:`e8p_abs_patterns` finds the nearest point in closed form
(per shift, the best sign pattern of each absolute pattern); see
:mod:`gmse_cli.compress.vq.search_kernels`.
"""

from __future__ import annotations

from functools import cache

import numpy as np

__all__ = ["e8p_abs_patterns", "e8p_codebook"]


# QuIP#'s 29 norm-12 patterns (five 3/2, three 1/2), named by where the three 1/2 sit: the 28
# position triples meeting coordinates 0..3 an odd number of times, less {1, 4, 5}, plus
# {0, 1, 4} and {2, 3, 7} (its final table, after the fix of a duplicated entry).
_E8P_EXTRA_DROP = frozenset({(1, 4, 5)})
_E8P_EXTRA_ADD = frozenset({(0, 1, 4), (2, 3, 7)})


@cache
def e8p_abs_patterns() -> np.ndarray:
    """QuIP#'s 256 absolute patterns (256, 8) float64 (read-only), in this module's canonical
    order.

    E8 = D8 u (D8 + 1/2): integer vectors with an even coordinate sum, and the same shifted by
    1/2 in every coordinate. The patterns are absolute values |v| of points v of the
    half-integer coset (every pattern of positive half-integers is |v| for some v with an
    even sum, since flipping one sign changes the sum by an odd integer):

    - all 227 patterns with |v|^2 <= 10;
    - 29 of the 56 patterns with |v|^2 = 12 made of five 3/2 and three 1/2 (QuIP#'s choice,
      see ``_E8P_EXTRA_*``), filling the table to 2^8.

    Order: by squared norm, then lexicographically.
    """
    halves = np.array([0.5, 1.5, 2.5])
    grid = np.stack(np.meshgrid(*[halves] * 8, indexing="ij"), axis=-1).reshape(-1, 8)
    norm2 = (grid**2).sum(1)
    inner = grid[norm2 <= 10.0]  # exact: squares of halves are exact binary fractions

    def chosen(p: np.ndarray) -> bool:
        ones = tuple(int(i) for i in np.flatnonzero(p == 0.5))
        if len(ones) != 3 or np.count_nonzero(p == 1.5) != 5:
            return False
        odd = len(set(ones) & {0, 1, 2, 3}) % 2 == 1
        return (odd and ones not in _E8P_EXTRA_DROP) or ones in _E8P_EXTRA_ADD

    # only the 56 rows of five 3/2 and three 1/2 go through chosen() (a loop over 6,561 cost 50 ms)
    shaped = (np.count_nonzero(grid == 0.5, axis=1) == 3) & (np.count_nonzero(grid == 1.5, axis=1) == 5)
    twelve = np.array([p for p in grid[shaped] if chosen(p)])
    patterns = np.concatenate([inner, twelve])
    assert patterns.shape == (256, 8), patterns.shape
    keys = tuple(patterns[:, i] for i in range(7, -1, -1)) + ((patterns**2).sum(1),)
    ordered = patterns[np.lexsort(keys)]
    ordered.setflags(write=False)  # shared by every caller (cached)
    return ordered


@cache
def _e8p_codebook_cached() -> np.ndarray:
    a = e8p_abs_patterns()
    codes = np.arange(128)
    neg = np.zeros((128, 8), dtype=bool)
    for i in range(1, 8):
        neg[:, i] = (codes >> (i - 1)) & 1 == 1
    # The sign of coordinate 0 makes the coordinate sum even: the number of negated
    # coordinates must have the parity of the pattern's (integer) sum.
    flips = np.broadcast_to(neg, (256, 128, 8)).copy()
    sums = np.rint(a.sum(1)).astype(np.int64)
    flips[:, :, 0] = (neg[None, :, 1:].sum(2) + sums[:, None]) % 2 == 1
    v = np.where(flips, -a[:, None, :], a[:, None, :])
    out = np.stack([v - 0.25, v + 0.25])
    cb = out.reshape(65536, 8).astype(np.float32)
    cb.setflags(write=False)
    return cb


def e8p_codebook() -> np.ndarray:
    """QuIP#'s E8P codebook: 2^16 points of E8 + 1/4, (65536, 8) float32 (read-only).

    Index ``i = shift << 15 | pattern << 7 | signs``: ``pattern`` one of the 256 absolute
    patterns (:func:`e8p_abs_patterns`), ``signs`` bit ``j - 1`` negates coordinate ``j``
    (``j = 1..7``), coordinate 0's sign makes the coordinate sum even (so the signed point is
    in D8 + 1/2, inside E8), and ``shift`` adds +1/4 (1) or -1/4 (0) to every coordinate.
    """
    return _e8p_codebook_cached()
