"""The sample bank's generator: Philox4x32-10 and a Box-Muller transform, run in parallel.

Element ``e`` of the Gaussian stream of a key is a function of the key and ``e`` alone
(counter-based), so any part of the stream can be drawn on its own, by any number of threads,
and the bank is bit-identical on every machine whatever its thread count.

Layout. The stream is cut into tiles of ``TILE`` = 4 * 256 normals; tile ``t`` uses the
counters ``t * 256 + j`` (j = 0..255; a 64-bit counter in words 0 and 1, words 2 and 3 zero).
Counter ``j`` gives four 32-bit words w0..w3 (Salmon et al. 2011, Philox4x32 with 10 rounds,
as in Random123 and cuRAND); the pair (w0, w1) gives the normals at tile positions ``j`` and
``256 + j``, the pair (w2, w3) those at ``512 + j`` and ``768 + j`` (structure of arrays, so
the loops vectorize).

Transform. Box-Muller: r = sqrt(-2 ln u) with u = (w0 + 1/2) 2^-32 in (0, 1), angle
2 pi w1 2^-32; z = (r cos, r sin), rounded to float32. The logarithm, sine and cosine are
polynomials evaluated with +, -, *, / and sqrt only (all correctly rounded in IEEE 754) on an
exactly reduced argument, so the kernel and its numpy twin agree bit for bit, on any machine;
their error is below 1e-13 relative. u >= 2^-33 bounds |z| by sqrt(66 ln 2) = 6.76 (a standard
normal exceeds it with probability 1.4e-11).

Each numba kernel is private and has a numpy twin (``*_reference``) the tests compare it with.
"""

from __future__ import annotations

import math

import numpy as np

from gmse_cli.kernel_cache import numba
from gmse_cli.threads import parallel_launches

__all__ = [
    "TILE",
    "philox_key",
    "philox4x32",
    "philox4x32_reference",
    "box_muller",
    "box_muller_reference",
    "gaussian_stream",
    "gaussian_stream_reference",
]

_LANES = 256  # counters per tile
TILE = 4 * _LANES  # normals per tile

# Philox4x32 constants (Salmon et al. 2011): multipliers and the Weyl key increments.
_M0, _M1 = 0xD2511F53, 0xCD9E8D57
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_ROUNDS = 10

_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that e * _LN2_HI is exact for |e| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_SQRT2 = math.sqrt(2.0)
_TURN = (math.pi / 2) / 2.0**30  # radians per unit of the 30-bit offset within a quadrant
# ln x = 2 s (1 + s^2/3 + s^4/5 + ...), s = (x - 1)/(x + 1), |s| <= 0.1716: terms to s^21 leave < 1e-18
_LOG_COEFFS = tuple(1.0 / k for k in range(21, 0, -2))
# Taylor series on |phi| <= pi/4: terms to phi^17 (sin) and phi^18 (cos) leave < 1e-16
_SIN_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k + 1) for k in range(8, -1, -1))
_COS_COEFFS = tuple((-1.0) ** k / math.factorial(2 * k) for k in range(9, -1, -1))


def philox_key(seed: int) -> tuple[int, int]:
    """The 64-bit Philox key (two 32-bit words) of a bank seed, through numpy's SeedSequence
    (any non-negative integer seed; nearby seeds give unrelated keys)."""
    k0, k1 = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint32)
    return int(k0), int(k1)


# --------------------------------------------------------------------------------------------
# numba kernels (cached on disk; the bank imports this module only when it draws)
# --------------------------------------------------------------------------------------------

_m0, _m1 = np.uint64(_M0), np.uint64(_M1)
_w0, _w1 = np.uint32(_W0), np.uint32(_W1)
_LOW, _SHIFT = np.uint64(0xFFFFFFFF), np.uint64(32)
# numpy's error model: no checks on division, so the loops vectorize
_inline = numba.njit(inline="always", error_model="numpy")


@_inline
def _philox(c0, c1, c2, c3, k0, k1):  # pragma: no cover - compiled
    for _ in range(_ROUNDS):
        p0 = np.uint64(c0) * _m0
        p1 = np.uint64(c2) * _m1
        c0, c1, c2, c3 = (
            np.uint32(p1 >> _SHIFT) ^ c1 ^ k0, np.uint32(p1 & _LOW),
            np.uint32(p0 >> _SHIFT) ^ c3 ^ k1, np.uint32(p0 & _LOW),
        )
        k0 = np.uint32(k0 + _w0)
        k1 = np.uint32(k1 + _w1)
    return c0, c1, c2, c3


@_inline
def _horner(coeffs, x):  # pragma: no cover - compiled
    p = 0.0
    for c in coeffs:
        p = p * x + c
    return p


@_inline
def _radius(a):  # pragma: no cover - compiled
    # x = a + 1/2 exactly (through int32: AVX2 converts signed 32-bit lanes only)
    x = np.float64(np.int32(a ^ np.uint32(0x80000000))) + 2147483648.5
    e = -32.0
    for k in (16, 8, 4, 2, 1):  # exact: x -> [1/2, 2), e the power of two taken out
        big = x >= 2.0**k
        x = x * 2.0**-k if big else x
        e = e + k if big else e
    big = x >= _SQRT2
    x = x * 0.5 if big else x
    e = e + 1.0 if big else e
    s = (x - 1.0) / (x + 1.0)
    log_u = e * _LN2_HI + (2.0 * s * _horner(_LOG_COEFFS, s * s) + e * _LN2_LO)
    return math.sqrt(-2.0 * log_u)


@_inline
def _cos_sin(b):  # pragma: no cover - compiled
    # angle 2 pi b 2^-32 = quadrant q * pi/2 + phi, |phi| <= pi/4, split exactly in integers
    c = np.uint32(b + np.uint32(1 << 29))
    q = c >> np.uint32(30)
    phi = np.float64(np.int32(c & np.uint32((1 << 30) - 1)) - np.int32(1 << 29)) * _TURN
    p2 = phi * phi
    sn = phi * _horner(_SIN_COEFFS, p2)
    cs = _horner(_COS_COEFFS, p2)
    co = -sn if q & np.uint32(1) else cs
    si = cs if q & np.uint32(1) else sn
    return (-co, -si) if q >= np.uint32(2) else (co, si)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _k_raw(counters, k0, k1, out):  # pragma: no cover - compiled
    for i in numba.prange(counters.shape[0]):
        out[i, 0], out[i, 1], out[i, 2], out[i, 3] = _philox(
            counters[i, 0], counters[i, 1], counters[i, 2], counters[i, 3], k0, k1
        )


@numba.njit(cache=True, error_model="numpy")
def _k_box_muller(a, b, z0, z1):  # pragma: no cover - compiled
    for i in range(a.size):
        r = _radius(a[i])
        co, si = _cos_sin(b[i])
        z0[i] = np.float32(r * co)
        z1[i] = np.float32(r * si)


@_inline
def _tile(t, k0, k1, words, out):  # pragma: no cover - compiled
    # words: (4, _LANES) uint32 scratch; out: the tile's TILE float32 normals
    base = np.uint64(t) * np.uint64(_LANES)
    for j in range(_LANES):
        c = base + np.uint64(j)
        words[0, j], words[1, j], words[2, j], words[3, j] = _philox(
            np.uint32(c & _LOW), np.uint32(c >> _SHIFT), np.uint32(0), np.uint32(0), k0, k1
        )
    for half in range(2):
        for j in range(_LANES):
            r = _radius(words[2 * half, j])
            co, si = _cos_sin(words[2 * half + 1, j])
            out[2 * half * _LANES + j] = np.float32(r * co)
            out[(2 * half + 1) * _LANES + j] = np.float32(r * si)


@numba.njit(cache=True, parallel=True, error_model="numpy")
def _k_stream(k0, k1, start, out):  # pragma: no cover - compiled
    n = out.size
    first = start // TILE
    tiles = (start + n + TILE - 1) // TILE - first
    chunk = 16  # tiles per task: amortizes the scratch allocations
    for g in numba.prange((tiles + chunk - 1) // chunk):
        words = np.empty((4, _LANES), dtype=np.uint32)
        buf = np.empty(TILE, dtype=np.float32)
        for t in range(first + g * chunk, min(first + tiles, first + (g + 1) * chunk)):
            lo = max(t * TILE, start)
            hi = min((t + 1) * TILE, start + n)
            # A whole tile is drawn in place, a partial one into buf and copied: one call
            # site, so the (inlined) tile is compiled once.
            whole = lo == t * TILE and hi == (t + 1) * TILE
            _tile(t, k0, k1, words, out[lo - start : hi - start] if whole else buf)
            if not whole:
                out[lo - start : hi - start] = buf[lo - t * TILE : hi - t * TILE]


def _key_words(key: tuple[int, int]) -> tuple[np.uint32, np.uint32]:
    return np.uint32(key[0] & 0xFFFFFFFF), np.uint32(key[1] & 0xFFFFFFFF)


def philox4x32(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """(n, 4) uint32: Philox4x32-10 of each (n, 4) uint32 counter under the two-word ``key``."""
    counters = np.ascontiguousarray(counters, dtype=np.uint32).reshape(-1, 4)
    out = np.empty((counters.shape[0], 4), dtype=np.uint32)
    with parallel_launches():
        _k_raw(counters, *_key_words(key), out)
    return out


def box_muller(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two float32 standard normals from each pair of uint32 words (see the module)."""
    a = np.ascontiguousarray(a, dtype=np.uint32)
    b = np.ascontiguousarray(b, dtype=np.uint32)
    z0, z1 = np.empty(a.size, dtype=np.float32), np.empty(a.size, dtype=np.float32)
    _k_box_muller(a, b, z0, z1)
    return z0, z1


def gaussian_stream(key: tuple[int, int], start: int, n: int) -> np.ndarray:
    """Elements ``start .. start + n - 1`` of the standard normal stream of ``key`` (float32),
    drawn in parallel; the same bits whatever the thread count."""
    if start < 0 or n < 0:
        raise ValueError(f"stream range must be non-negative, got start={start}, n={n}")
    out = np.empty(n, dtype=np.float32)
    if n:
        with parallel_launches():
            _k_stream(*_key_words(key), start, out)
    return out


# --------------------------------------------------------------------------------------------
# numpy twins
# --------------------------------------------------------------------------------------------


def philox4x32_reference(counters: np.ndarray, key: tuple[int, int]) -> np.ndarray:
    """Plain numpy twin of :func:`philox4x32`."""
    c = np.asarray(counters, dtype=np.uint32).reshape(-1, 4).astype(np.uint64)
    x = [c[:, 0], c[:, 1], c[:, 2], c[:, 3]]
    k0, k1 = np.uint64(key[0] & 0xFFFFFFFF), np.uint64(key[1] & 0xFFFFFFFF)
    mask = np.uint64(0xFFFFFFFF)
    for _ in range(_ROUNDS):
        p0 = x[0] * np.uint64(_M0)
        p1 = x[2] * np.uint64(_M1)
        x = [(p1 >> np.uint64(32)) ^ x[1] ^ k0, p1 & mask, (p0 >> np.uint64(32)) ^ x[3] ^ k1, p0 & mask]
        k0 = (k0 + np.uint64(_W0)) & mask
        k1 = (k1 + np.uint64(_W1)) & mask
    return np.stack(x, axis=1).astype(np.uint32)


def _horner_reference(coeffs: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    p = np.zeros_like(x)
    for c in coeffs:
        p = p * x + c
    return p


def box_muller_reference(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain numpy twin of :func:`box_muller` (the same operations, so the same bits)."""
    x = np.asarray(a, dtype=np.uint32).astype(np.float64) + 0.5
    e = np.full_like(x, -32.0)
    for k in (16, 8, 4, 2, 1):
        big = x >= 2.0**k
        x = np.where(big, x * 2.0**-k, x)
        e = np.where(big, e + k, e)
    big = x >= _SQRT2
    x = np.where(big, x * 0.5, x)
    e = np.where(big, e + 1.0, e)
    s = (x - 1.0) / (x + 1.0)
    r = np.sqrt(-2.0 * (e * _LN2_HI + (2.0 * s * _horner_reference(_LOG_COEFFS, s * s) + e * _LN2_LO)))
    c = (np.asarray(b, dtype=np.uint32).astype(np.int64) + (1 << 29)) & 0xFFFFFFFF
    q = c >> 30
    phi = ((c & ((1 << 30) - 1)) - (1 << 29)).astype(np.float64) * _TURN
    p2 = phi * phi
    sn = phi * _horner_reference(_SIN_COEFFS, p2)
    cs = _horner_reference(_COS_COEFFS, p2)
    odd = (q & 1) == 1
    co, si = np.where(odd, -sn, cs), np.where(odd, cs, sn)
    flip = q >= 2
    co, si = np.where(flip, -co, co), np.where(flip, -si, si)
    return (r * co).astype(np.float32), (r * si).astype(np.float32)


def _counter_words(counter: np.ndarray) -> np.ndarray:
    """(n, 4) uint32 counters of 64-bit stream counters: low word, high word, 0, 0."""
    words = np.zeros((counter.size, 4), dtype=np.uint32)
    words[:, 0] = counter & np.uint64(0xFFFFFFFF)
    words[:, 1] = counter >> np.uint64(32)
    return words


def gaussian_stream_reference(key: tuple[int, int], start: int, n: int) -> np.ndarray:
    """Plain numpy twin of :func:`gaussian_stream`."""
    if n == 0:
        return np.empty(0, dtype=np.float32)
    first, last = start // TILE, (start + n - 1) // TILE
    out = []
    for t in range(first, last + 1):
        counter = np.arange(t * _LANES, (t + 1) * _LANES, dtype=np.uint64)
        words = philox4x32_reference(_counter_words(counter), key).T
        z = [*box_muller_reference(words[0], words[1]), *box_muller_reference(words[2], words[3])]
        out.append(np.concatenate(z))
    return np.concatenate(out)[start - first * TILE : start - first * TILE + n]
