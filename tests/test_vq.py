"""Vector quantization: codebooks and exact search, against references built in this file.

References:
- Max (1960), Table I: the Gaussian Lloyd-Max quantizers, 2 bits +-0.4528, +-1.5104 (MSE
  0.1175), 3 bits +-0.2451, +-0.7560, +-1.3440, +-2.1520 (MSE 0.03455); 1 bit +-0.7979
  (MSE 1 - 2/pi = 0.3634);
- the Gaussian rate-distortion bound: MSE >= 4^-bits per coordinate;
- E8: integer or half-integer vectors with an even coordinate sum; the half-integer points
  with |v|^2 <= 10 are enumerated here with itertools;
- QuIP#'s E8P code uses opt_scale = 1.03, found by sweeping s over Gaussian samples in its
  convention Q(s x) / s; ours is c in c Q(x / c), so c = 1 / 1.03;
- brute-force nearest codewords and Monte Carlo MSEs computed here with plain numpy.

Every codebook is computed into a temporary cache (small ones only: the 2^16-point Gaussian
codebooks are never trained here).
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from gmse_cli.compress import compress, vq
from gmse_cli.compress.sparsity import mask as sparsity_mask
from gmse_cli.compress.vq import lloyd, store, streamed
from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import VQ, Sparsify, resolve_format

MAX_2BIT = np.array([-1.5104, -0.4528, 0.4528, 1.5104])
MAX_3BIT = np.array([-2.1520, -1.3440, -0.7560, -0.2451, 0.2451, 0.7560, 1.3440, 2.1520])
LLOYD_MAX_MSE = {1: 1 - 2 / math.pi, 2: 0.1175}
E8P = VQ(dim=8, bits=2, codebook="e8")


pytestmark = pytest.mark.usefixtures("private_codebook_cache")


def _brute_nearest(c: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Independent brute force: float64 distances via broadcasting, first index on ties."""
    out = np.empty(len(q), dtype=np.int64)
    c64 = c.astype(np.float64)
    for start in range(0, len(q), 64):
        chunk = q[start : start + 64].astype(np.float64)
        d = ((chunk[:, None, :] - c64[None]) ** 2).sum(-1)
        out[start : start + 64] = d.argmin(1)
    return out


def _mc_mse(c: np.ndarray, constant: float, vectors: int, seed: int) -> tuple[float, float]:
    """Per-coordinate MSE of c * Q(x / c) on fresh N(0, I) vectors, with its standard error."""
    x = np.random.default_rng(seed).standard_normal((vectors, c.shape[1]))
    idx = _brute_nearest(c, (x / constant).astype(np.float32))
    err = ((x - constant * c[idx].astype(np.float64)) ** 2).mean(1)
    return float(err.mean()), float(err.std(ddof=1) / math.sqrt(vectors))


def _save(tmp_path, name: str, arr: np.ndarray) -> str:
    path = tmp_path / name
    np.save(path, arr)
    return str(path)


# ---------------------------------------------------------------------------------------------
# E8P
# ---------------------------------------------------------------------------------------------


def test_e8p_points_are_distinct_and_in_shifted_e8():
    cb = vq.codebook(E8P).astype(np.float64)
    assert cb.shape == (65536, 8)
    assert len(np.unique(cb, axis=0)) == 65536
    v = cb - 0.25
    integer = np.all(v == np.round(v), axis=1)
    half = np.all(v - 0.5 == np.round(v - 0.5), axis=1)
    even = np.round(v.sum(1)) % 2 == 0
    assert np.all((integer | half) & even)


def test_e8p_holds_every_small_half_integer_point():
    # All v in D8 + 1/2 (half-integers, even sum) with |v|^2 <= 10, each shifted by +-1/4.
    values = (-2.5, -1.5, -0.5, 0.5, 1.5, 2.5)
    small = [
        v for v in itertools.product(values, repeat=8) if sum(t * t for t in v) <= 10 and round(sum(v)) % 2 == 0
    ]
    assert len(small) == 227 * 128
    cb = {tuple(row) for row in vq.codebook(E8P).astype(np.float64)}
    for shift in (0.25, -0.25):
        assert all(tuple(t + shift for t in v) in cb for v in small)
    # each codeword is v +- 1/4 with v half-integer; the other 29 patterns: five 3/2, three 1/2
    arr = vq.codebook(E8P).astype(np.float64)
    up = arr - 0.25
    v = np.where(np.all(up - 0.5 == np.round(up - 0.5), axis=1)[:, None], up, arr + 0.25)
    norm2 = (v**2).sum(1)
    assert (norm2 <= 10).sum() == 2 * 227 * 128
    big = np.sort(np.abs(v[norm2 > 10]), axis=1)
    assert len(big) == 2 * 29 * 128
    assert (big == [0.5] * 3 + [1.5] * 5).all()


def test_e8p_scale_constant_and_mse_match_quip_and_brute_force():
    info = vq.codebook_info(E8P)
    # QuIP#'s sweep used steps of 0.01 in s; our Monte Carlo is flat near the optimum.
    assert info.scale_constant == pytest.approx(1 / 1.03, abs=0.015)
    # fresh vectors through the exact search (itself checked against brute force below)
    x = np.random.default_rng(11).standard_normal((2**15, 8))
    c = info.scale_constant
    idx = vq.nearest(E8P, (x / c).astype(np.float32))
    err = ((x - c * vq.codebook(E8P)[idx].astype(np.float64)) ** 2).mean(1)
    assert abs(info.mse - err.mean()) < 4 * err.std() / math.sqrt(len(err))
    assert 4.0**-2 < info.mse < LLOYD_MAX_MSE[2]  # beats every 2-bit scalar grid


def test_e8p_fast_search_equals_brute_force_including_ties():
    cb = vq.codebook(E8P)
    rng = np.random.default_rng(3)
    parts = [
        rng.standard_normal((400, 8)),
        3 * rng.standard_normal((50, 8)),
        np.zeros((3, 8)),
        cb[rng.integers(0, 65536, 50)],  # codewords themselves
        (cb[rng.integers(0, 65536, 150)] + cb[rng.integers(0, 65536, 150)]) / 2,  # exact midpoints
        np.round(rng.standard_normal((150, 8)) * 2) / 2,  # lattice-like points: many exact ties
        np.full((2, 8), 0.25),
    ]
    q = np.concatenate(parts).astype(np.float32)
    want = _brute_nearest(cb, q)
    np.testing.assert_array_equal(vq.nearest(E8P, q), want)
    np.testing.assert_array_equal(vq.nearest_reference(cb, q[::5]), want[::5])


# ---------------------------------------------------------------------------------------------
# Gaussian Lloyd codebooks
# ---------------------------------------------------------------------------------------------


def test_one_dimensional_codebooks_are_max_levels():
    two = vq.codebook(VQ(dim=1, bits=2))[:, 0]
    np.testing.assert_allclose(two, MAX_2BIT, atol=3e-3)  # ~1e6 samples: level noise ~1e-3
    three = vq.codebook(VQ(dim=1, bits=3))[:, 0]
    np.testing.assert_allclose(three, MAX_3BIT, atol=5e-3)
    assert vq.scale_constant(VQ(dim=1, bits=2)) == 1.0


@pytest.mark.parametrize("dim, bits", [(2, 2), (4, 1), (2, 1)])
def test_vector_gain_within_rate_distortion_bound(dim, bits):
    stage = VQ(dim=dim, bits=bits)
    cb = vq.codebook(stage)
    assert cb.shape == (2 ** (dim * bits), dim)
    mse, se = _mc_mse(cb, 1.0, 20000, seed=5)
    assert 4.0**-bits < mse - 4 * se
    # d = 2 at 1 bit is the scalar 1-bit quantizer again (the quadrant centroids); higher d gains
    if (dim, bits) == (2, 1):
        assert mse == pytest.approx(LLOYD_MAX_MSE[1], abs=4 * se + 2e-3)
    else:
        assert mse + 4 * se < LLOYD_MAX_MSE[bits]
    assert abs(vq.codebook_info(stage).mse - mse) < 4 * se + 1e-3


def test_training_is_deterministic_and_cached_on_disk():
    a, info_a = vq.train_gaussian_codebook(2, 4, samples=2**14, max_iter=20)
    b, info_b = vq.train_gaussian_codebook(2, 4, samples=2**14, max_iter=20)
    assert a.tobytes() == b.tobytes() and info_a == info_b
    c, _ = vq.train_gaussian_codebook(2, 4, samples=2**14, max_iter=20, seed=vq.LLOYD_SEED + 7)
    assert a.tobytes() != c.tobytes()

    stage = VQ(dim=3, bits=1)  # a size not shipped with the package: trained, then cached
    first = vq.codebook(stage).copy()
    files = sorted((p.name, p.stat().st_mtime_ns) for p in (store.codebook_dir()).glob("gaussian-d3-b3-*"))
    assert [name.rsplit(".", 1)[1] for name, _ in files] == ["json", "npy"]
    vq.clear_caches()
    again = vq.codebook(stage)
    assert again.tobytes() == first.tobytes()
    assert sorted((p.name, p.stat().st_mtime_ns) for p in (store.codebook_dir()).glob("gaussian-d3-b3-*")) == files
    assert not again.flags.writeable


def test_large_codebooks_use_restricted_lloyd_and_improve_on_their_start():
    # 2^11 codewords: product of the 2^5 and 2^6 level scalar codebooks, then streamed Lloyd
    # (a short plan: the default one is for a one-off minutes-long run)
    plan = streamed.StreamedPlan(batch=2**15, iterations=6, forget=0.8, neighbours=16, refresh=3)
    cb, info = vq.train_gaussian_codebook(2, 11, plan=plan)
    assert cb.shape == (2048, 2) and len(np.unique(cb, axis=0)) == 2048
    left = vq.codebook(VQ(dim=1, bits=5))
    right = vq.codebook(VQ(dim=1, bits=6))
    product = np.concatenate([np.repeat(left, 64, axis=0), np.tile(right, (32, 1))], axis=1)
    start, se = _mc_mse(product, 1.0, 4000, seed=9)
    assert info.mse < start
    assert info.mse > 4.0**-5.5


def test_kernel_twins():
    rng = np.random.default_rng(0)
    c = rng.standard_normal((300, 3)).astype(np.float32)
    x = rng.standard_normal((5000, 3)).astype(np.float32)
    nb = streamed.knn_small(c, 16)
    assert (nb[:, 0] == np.arange(300)).all()
    fresh = np.empty_like(nb)
    streamed._k_refine_neighbours(c, nb, fresh)
    np.testing.assert_array_equal(fresh, streamed._refine_neighbours_reference(c, nb))
    labels = rng.integers(0, 300, 5000)
    want = streamed._walk_assign_reference(x, c, nb, labels)
    got = labels.copy()
    streamed._k_walk_assign(x, np.argsort(labels, kind="stable"), c, nb, got)
    np.testing.assert_array_equal(got, want)
    # the walk ends nearer than every neighbour of its codeword
    d_end = ((x - c[got]) ** 2).sum(1)
    d_nb = ((x[:, None, :] - c[nb[got]]) ** 2).sum(-1)
    assert (d_end[:, None] <= d_nb + 1e-6).all()
    sums, counts = np.empty((300, 3)), np.empty(300)
    err = lloyd._k_accumulate(x, got, c, sums, counts)
    rs, rc, rerr = lloyd._accumulate_reference(x, got, c)
    np.testing.assert_array_equal(counts, rc)
    np.testing.assert_allclose(sums, rs, rtol=1e-12)
    assert err == pytest.approx(rerr, rel=1e-12)


def test_codebook_file_keeps_its_name_whatever_the_suffix_case(tmp_path):
    # Regression: 'Grid.NPY' did not end in '.npy', so it was read as a named codebook and
    # lowercased to 'grid.npy', a file that does not exist.
    c = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float32)
    path = tmp_path / "Grid.NPY"
    with path.open("wb") as handle:
        np.save(handle, c)
    stage = VQ(dim=2, bits=1, codebook=str(path))
    assert stage.codebook == str(path)
    np.testing.assert_array_equal(vq.codebook(stage), c)



def test_a_format_files_relative_codebook_is_the_file_beside_it(tmp_path, monkeypatch):
    c = np.array([[1, 1], [-1, -1], [1, -1], [-1, 1]], dtype=np.float32)
    (tmp_path / "formats").mkdir()
    np.save(tmp_path / "formats" / "grid.npy", c)
    (tmp_path / "formats" / "mine.toml").write_text(
        '[[stages]]\nkind = "vq"\ndim = 2\nbits = 1\ncodebook = "grid.npy"\n'
    )
    monkeypatch.chdir(tmp_path)  # the command runs one folder up
    fmt = resolve_format("formats/mine.toml")
    assert Path(fmt.stages[0].codebook) == (tmp_path / "formats" / "grid.npy").resolve()
    np.testing.assert_array_equal(vq.codebook(fmt.stages[0]), c)
    x = np.array([[0.9, 1.2, -0.3, 0.8]], dtype=np.float32)  # RMS 0.87: slices scale to +-c
    y = compress(fmt, x)
    assert np.all(np.sign(y) == np.array([[1, 1, -1, 1]]))

# ---------------------------------------------------------------------------------------------
# Exact search on arbitrary codebooks (files exercise every path)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dim, index_bits, symmetric",
    [(1, 4, True), (2, 4, True), (2, 8, False), (3, 6, True), (4, 8, False), (3, 11, True), (8, 8, True)],
)
def test_fast_nearest_equals_brute_force(tmp_path, dim, index_bits, symmetric):
    rng = np.random.default_rng(dim * 100 + index_bits)
    k = 2**index_bits
    if symmetric:  # +-c pairs: the origin and many midpoints are exact ties
        half = rng.standard_normal((k // 2, dim))
        c = np.concatenate([half, -half])
        c = np.round(c * 8) / 8  # coarse coordinates: more exact ties
        c = np.unique(c, axis=0)
        while len(c) < k:
            c = np.unique(np.concatenate([c, rng.standard_normal((k - len(c), dim))]), axis=0)
    else:
        c = rng.standard_normal((k, dim)) * rng.uniform(0.5, 2.0, dim)
    c = c[:k].astype(np.float32)
    stage = VQ(dim=dim, bits=index_bits / dim, codebook=_save(tmp_path, "cb.npy", c))
    cb = vq.codebook(stage)
    q = np.concatenate(
        [
            rng.standard_normal((3000, dim)),
            6 * rng.standard_normal((100, dim)),  # beyond a grid's range
            np.zeros((2, dim)),
            (cb[rng.integers(0, k, 200)] + cb[rng.integers(0, k, 200)]) / 2,
            cb[:50],
        ]
    ).astype(np.float32)
    np.testing.assert_array_equal(vq.nearest(stage, q), _brute_nearest(cb, q))


def test_file_codebook_constant_follows_its_scale(tmp_path):
    base = vq.codebook(VQ(dim=2, bits=2))
    stage = VQ(dim=2, bits=2, codebook=_save(tmp_path, "double.npy", 2 * base))
    # c Q_{2C}(x / c) = 2c Q_C(x / 2c): the optimum moves from 1 to 1/2
    assert vq.scale_constant(stage) == pytest.approx(0.5, rel=0.02)
    assert vq.codebook_info(stage).mse == pytest.approx(vq.codebook_info(VQ(dim=2, bits=2)).mse, rel=0.02)


# ---------------------------------------------------------------------------------------------
# Quantization
# ---------------------------------------------------------------------------------------------


def _quantize_by_hand(x, c, constant, dim, group, mask=None):
    out = np.zeros_like(x)
    kept = np.ones(x.shape, dtype=bool) if mask is None else mask
    for r in range(x.shape[0]):
        for g0 in range(0, x.shape[1], group):
            sl = slice(g0, g0 + group)
            vals = x[r, sl][kept[r, sl]].astype(np.float64)
            if len(vals) == 0 or not vals.any():
                continue
            s = np.float32(constant * math.sqrt((vals**2).mean()))
            for j in range(g0, g0 + group, dim):
                u = x[r, j : j + dim] / s
                k = _brute_nearest(c, u[None].astype(np.float32))[0]
                out[r, j : j + dim] = s * c[k]
    return np.where(kept, out, 0)


@pytest.mark.parametrize("group", ["row", 8])
@pytest.mark.parametrize("masked", [False, True])
def test_quantize_by_hand(tmp_path, group, masked):
    rng = np.random.default_rng(4)
    c = rng.standard_normal((16, 2)).astype(np.float32)
    stage = VQ(dim=2, bits=2, codebook=_save(tmp_path, "c16.npy", c), group=group)
    x = rng.standard_normal((3, 32)).astype(np.float32)
    x[2] = 0  # a zero row outputs zeros
    m = rng.random(x.shape) < 0.6 if masked else None
    want = _quantize_by_hand(x, vq.codebook(stage), vq.scale_constant(stage), 2, 32 if group == "row" else 8, m)
    np.testing.assert_allclose(vq.quantize(stage, x, m), want, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    "stage",
    [
        VQ(dim=2, bits=2),
        VQ(dim=2, bits=2, group=16, scale_format="bf16"),
        VQ(dim=4, bits=1, scale_format="e8m0"),
        VQ(dim=2, bits=2, group=8, scale_format="e4m3"),
        VQ(dim=1, bits=3, group=32, scale_format="int8"),
        VQ(dim=8, bits=2, codebook="e8", group=64, scale_format="fp16"),
    ],
    ids=lambda s: f"d{s.dim}-b{s.bits:g}-{s.codebook}-{s.group}-{s.scale_format}",
)
def test_quantize_equals_reference(stage):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((6, 256)).astype(np.float32) * rng.uniform(0.1, 10, (6, 1)).astype(np.float32)
    x[1] = 0
    np.testing.assert_array_equal(vq.quantize(stage, x), vq.quantize_reference(stage, x))
    m = sparsity_mask(Sparsify(pattern="n:m", n=2, m=4), x)
    xs = np.where(m, x, np.float32(0))
    got = vq.quantize(stage, xs, m)
    np.testing.assert_array_equal(got, vq.quantize_reference(stage, xs, m))
    assert not got[~m].any()


def test_quantize_mse_is_the_codebook_mse():
    stage = VQ(dim=4, bits=1)
    x = np.random.default_rng(12).standard_normal((64, 4096)).astype(np.float32)
    y = vq.quantize(stage, x)
    mse = float(((y.astype(np.float64) - x) ** 2).mean())
    # per-row RMS scales of 4096 entries differ from 1 by about 1/90: a tiny excess over the
    # unit-variance codebook MSE
    assert mse == pytest.approx(vq.codebook_info(stage).mse, rel=0.02)


# ---------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------


def test_bad_input_is_a_clean_error(tmp_path):
    x = np.zeros((2, 16), dtype=np.float32)
    with pytest.raises(DataError, match="cannot read"):
        vq.codebook(VQ(dim=2, bits=2, codebook=str(tmp_path / "missing.npy")))
    with pytest.raises(SpecError, match=r"shape \(8, 2\).*need \(16, 2\)"):
        vq.codebook(VQ(dim=2, bits=2, codebook=_save(tmp_path, "short.npy", np.zeros((8, 2)))))
    bad = np.random.default_rng(0).standard_normal((16, 2))
    bad[3, 1] = np.nan
    with pytest.raises(DataError, match="non-finite"):
        vq.codebook(VQ(dim=2, bits=2, codebook=_save(tmp_path, "nan.npy", bad)))
    with pytest.raises(DataError, match="repeats"):
        vq.codebook(VQ(dim=2, bits=2, codebook=_save(tmp_path, "dup.npy", np.zeros((16, 2)))))
    (tmp_path / "junk.npy").write_bytes(b"not an array")
    with pytest.raises(DataError, match="not a .npy"):
        vq.codebook(VQ(dim=2, bits=2, codebook=str(tmp_path / "junk.npy")))
    with pytest.raises(DataError, match="2-D"):
        vq.quantize(VQ(dim=2, bits=2), x[0])
    with pytest.raises(DataError, match="mask shape"):
        vq.quantize(VQ(dim=2, bits=2), x, np.ones((2, 8), dtype=bool))
    with pytest.raises(SpecError, match="does not divide"):
        vq.quantize(VQ(dim=4, bits=1), np.zeros((2, 18), dtype=np.float32))
    with pytest.raises(DataError, match=r"shape \(n, 2\)"):
        vq.nearest(VQ(dim=2, bits=2), np.zeros((3, 4), dtype=np.float32))


# ---------------------------------------------------------------------------------------------
# Shipped Gaussian codebooks against HIGGS' published 2-D grids
# ---------------------------------------------------------------------------------------------

# The GMSE of HIGGS' grids (p = 2, 2^4, 2^6, 2^8 points), for when transformers'
# HIGGS integration is absent: index bits -> MSE per coordinate.
HIGGS_MSE = {4: 0.10755, 6: 0.029568, 8: 0.0077370}


def _paired_errors(codebooks: list[np.ndarray], vectors: int, seed: int) -> list[np.ndarray]:
    """Per-vector squared errors of each codebook on the same N(0, I) vectors (exact search)."""
    x = np.random.default_rng(seed).standard_normal((vectors, codebooks[0].shape[1]))
    out = [np.empty(vectors) for _ in codebooks]
    for start in range(0, vectors, 2**15):
        chunk = x[start : start + 2**15]
        for err, c in zip(out, codebooks, strict=True):
            c64 = c.astype(np.float64)
            d = (chunk**2).sum(1)[:, None] - 2 * chunk @ c64.T + (c64**2).sum(1)[None]
            err[start : start + 2**15] = ((chunk - c64[d.argmin(1)]) ** 2).mean(1)
    return out


@pytest.mark.parametrize("index_bits", [4, 6, 8])
def test_shipped_2d_codebooks_are_at_least_as_good_as_higgs(index_bits):
    stage = VQ(dim=2, bits=index_bits // 2)
    info = vq.codebook_info(stage)
    assert info.source == "python -m gmse_cli.compress.vq.shipped"  # read, not trained
    ours = vq.codebook(stage)
    try:
        from transformers.integrations.higgs import get_higgs_grid
    except ImportError:
        get_higgs_grid = None
    if get_higgs_grid is None:  # the numbers: not significantly above them
        mse, se = _mc_mse(ours, 1.0, 2**18, seed=21)
        assert mse < HIGGS_MSE[index_bits] + 3 * se
        return
    higgs = get_higgs_grid(2, 2**index_bits).double().numpy()
    a, b = _paired_errors([ours, higgs], 2**18, seed=21)
    diff = a - b  # paired: the sampling noise of the two cancels
    assert diff.mean() < 3 * diff.std(ddof=1) / math.sqrt(diff.size)
    assert abs(info.mse - a.mean()) < 4 * a.std(ddof=1) / math.sqrt(a.size) + 1e-4


def test_every_catalog_and_search_vq_size_ships_with_the_package():
    from gmse_cli.compress.vq.gaussian import codebook_stem
    from gmse_cli.compress.vq.shipped import SHIPPED
    from gmse_cli.spec import catalog, resolve_format

    sizes = {
        (s.dim, s.bits * s.dim)
        for name in catalog()
        for s in resolve_format(name).stages
        if isinstance(s, VQ) and s.codebook == "gaussian"
    }
    assert sizes <= set(SHIPPED)
    # and every size `uscl search` measures: a first search trained 18 for about 6 minutes
    from gmse_cli.search.space import SearchSpace

    space = SearchSpace()
    searched = {(dim, bits) for dim in space.vq_dims for bits in range(1, 17) if 2**bits <= space.vq_max_codewords}
    assert searched <= set(SHIPPED)
    for dim, bits in SHIPPED:
        stem = codebook_stem(dim, bits)
        assert (store.shipped_dir() / f"{stem}.npy").is_file() and (store.shipped_dir() / f"{stem}.json").is_file()
