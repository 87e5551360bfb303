"""The absmean scale rule (BitNet b1.58, Ma et al. 2024): scale = c * mean |x| over the group
(c = 1 unless given), codes = clip(round(x / scale), -1, 1) on a ternary grid.

Checked against a from-scratch numpy BitNet compressor (bit for bit), the Gaussian closed form
by scipy quadrature, and on Student-t weights the quadrature of the t density: there mean |W| is
a smaller fraction of the RMS than a Gaussian's sqrt(2/pi), so the absmean scale clips more
than its Gaussian stand-in ``rms0.7978845608`` and measures a larger MSE.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats

from gmse_cli.compress.scalar import quantize, quantize_reference
from gmse_cli.spec import resolve_format

SQRT_2_PI = math.sqrt(2 / math.pi)


def _rows(kind: str, rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)) if kind == "gauss" else rng.standard_t(3, (rows, cols))
    return (x * rng.lognormal(0, 1, (rows, 1))).astype(np.float32)  # rows of different scales


def _bitnet(x: np.ndarray, group: int | str, qmax: int = 1, c: float = 1.0) -> np.ndarray:
    """BitNet's round-clip, written from the paper: per group gamma = c * mean |W| (stored as
    float32), W~ = clip(round(W / gamma), -qmax, qmax) * gamma; a zero gamma gives zeros."""
    x64 = x.astype(np.float64)
    g = x.size if group == "tensor" else x.shape[1] if group == "row" else group
    flat = x64.reshape(-1, g)
    gamma = (c * np.mean(np.abs(flat), axis=1, keepdims=True)).astype(np.float32).astype(np.float64)
    safe = np.where(gamma > 0, gamma, 1.0)
    q = np.clip(np.rint(flat / safe), -qmax, qmax)
    return np.where(gamma > 0, q * gamma, 0.0).astype(np.float32).reshape(x.shape)


@pytest.mark.parametrize("kind", ["gauss", "student-t"])
@pytest.mark.parametrize("group", [4, 64, 256, "row", "tensor"])
@pytest.mark.parametrize("grid", ["lut[-1,0,1]", "sint2"])
def test_ternary_absmean_is_bitnets_round_clip_bit_for_bit(kind, group, grid):
    x = _rows(kind, 12, 512, seed=len(str(group)) + len(kind))
    name = f"{grid}-{group if isinstance(group, str) else f'g{group}'}-absmean"
    stage = resolve_format(name).stages[0]
    expected = _bitnet(x, group)
    np.testing.assert_array_equal(quantize(stage, x), expected, err_msg=name)
    np.testing.assert_array_equal(quantize_reference(stage, x), expected, err_msg=name)


@pytest.mark.parametrize(("name", "qmax", "c"), [("sint4-g32-absmean", 7, 1.0), ("sint3-row-absmean2.5", 3, 2.5)])
def test_other_widths_round_clip_to_their_grid(name, qmax, c):
    x = _rows("student-t", 8, 256, seed=3)
    stage = resolve_format(name).stages[0]
    group = "row" if "-row-" in name else 32
    np.testing.assert_array_equal(quantize(stage, x), _bitnet(x, group, qmax, c))
    np.testing.assert_array_equal(quantize_reference(stage, x), _bitnet(x, group, qmax, c))


def test_all_zero_groups_read_back_as_zeros_without_dividing_by_zero():
    x = _rows("gauss", 4, 128, seed=5)
    x[1] = 0.0
    x[2, :32] = 0.0
    for rule in ("absmean", "absmax"):  # absmean does what absmax does with an all-zero group
        stage = resolve_format(f"sint2-g32-{rule}").stages[0]
        with np.errstate(all="raise"):
            ref = quantize_reference(stage, x)
        out = quantize(stage, x)
        np.testing.assert_array_equal(out, ref)
        assert np.all(out[1] == 0) and np.all(out[2, :32] == 0) and np.isfinite(out).all()
    # a group that a sparsify stage empties entirely, and an all-zero tensor
    stage = resolve_format("lut[-1,0,1]-tensor-absmean").stages[0]
    with np.errstate(all="raise"):
        assert not quantize_reference(stage, np.zeros((3, 64), np.float32)).any()
    assert not quantize(stage, np.zeros((3, 64), np.float32)).any()
    mask = np.ones(x.shape, bool)
    mask[0, :32] = False
    stage = resolve_format("sint2-g32-absmean").stages[0]
    out = quantize(stage, x, mask)
    assert not out[0, :32].any() and np.isfinite(out).all()
    np.testing.assert_array_equal(out, quantize_reference(stage, x, mask))


def _ternary_mse(dist, s: float) -> float:
    """E[(x - s q(x / s))^2] / E[x^2] for a symmetric density, levels {-s, 0, s}, by quadrature."""
    inner = integrate.quad(lambda t: t * t * dist.pdf(t), 0, s / 2)[0]
    outer = integrate.quad(lambda t: (t - s) ** 2 * dist.pdf(t), s / 2, math.inf)[0]
    return 2 * (inner + outer) / dist.var()


def test_gaussian_gmse_is_the_closed_form(run_cli):
    closed = _ternary_mse(stats.norm(), SQRT_2_PI)
    assert closed == pytest.approx(0.2633818, abs=1e-7)
    res = run_cli("gmse", "lut[-1,0,1]-tensor-absmean", "--json")
    assert res.code == 0, res.stderr
    exact = json.loads(res.stdout)["results"][0]
    assert exact["gmse"] == pytest.approx(closed, rel=1e-9)  # the infinite-tensor limit
    res = run_cli("gmse", "lut[-1,0,1]-tensor-absmean", "--monte-carlo", "--rel-err", "2e-3", "--json")
    assert res.code == 0, res.stderr
    mc = json.loads(res.stdout)["results"][0]
    assert abs(mc["gmse"] - closed) <= 4 * mc["gmse_std_err"], (mc, closed)


def test_finite_groups_go_to_monte_carlo_and_match_a_from_scratch_estimate(run_cli):
    # a mean over 8 entries is no infinite-row limit: the exact path must not answer
    res = run_cli("gmse", "lut[-1,0,1]-g8-absmean", "--json", "--rel-err", "3e-3")
    assert res.code == 0, res.stderr
    got = json.loads(res.stdout)["results"][0]
    assert got["gmse_method"] == "monte-carlo"
    x = np.random.default_rng(8).standard_normal((64, 4096)).astype(np.float32)
    err = np.square(_bitnet(x, 8).astype(np.float64) - x).sum(1)
    norm = np.square(x.astype(np.float64)).sum(1)
    ours = err.sum() / norm.sum()
    ours_se = np.std(err - ours * norm, ddof=1) / norm.mean() / math.sqrt(len(err))
    assert abs(got["gmse"] - ours) <= 4 * math.hypot(got["gmse_std_err"], ours_se), (got, ours, ours_se)
    assert got["gmse"] < 0.98 * _ternary_mse(stats.norm(), SQRT_2_PI)  # finite groups differ


def test_student_t_weights_absmean_clips_more_than_the_gaussian_stand_in(run_cli, tmp_path):
    from safetensors.numpy import save_file

    nu = 5  # finite fourth moment: the row RMS settles within ~2% over 4096 entries
    rng = np.random.default_rng(58)
    w = rng.standard_t(nu, (96, 4096)).astype(np.float32)
    path = tmp_path / "model.safetensors"
    save_file({"model.layers.0.mlp.up_proj.weight": w}, str(path))
    absmean, stand_in = "lut[-1,0,1]-row-absmean", "lut[-1,0,1]-row-rms0.7978845608"
    res = run_cli("mse", str(path), "-f", absmean, "-f", stand_in, "--json")
    assert res.code == 0, res.stderr
    got = {r["name"]: r["mse"] for r in json.loads(res.stdout)["results"]}
    dist = stats.t(nu)
    want_absmean = _ternary_mse(dist, dist.expect(abs))  # mean |W| = 0.949, not 0.798 * 1.291
    want_stand_in = _ternary_mse(dist, SQRT_2_PI * dist.std())
    assert want_absmean > 1.05 * want_stand_in  # theory: a smaller scale clips the heavy tail
    assert got[absmean] == pytest.approx(want_absmean, rel=0.015)
    assert got[stand_in] == pytest.approx(want_stand_in, rel=0.015)
    assert got[absmean] > 1.04 * got[stand_in]


def test_training_forward_and_trust_band_use_the_absmean_scale():
    torch = pytest.importorskip("torch")
    from gmse_cli.training.torch_compress.scalar import TorchQuantize

    x = _rows("student-t", 6, 256, seed=9)
    for name, group in (("lut[-1,0,1]-tensor-absmean", "tensor"), ("sint2-g64-absmean", 64)):
        stage = resolve_format(name).stages[0]
        fn = TorchQuantize(stage, x.shape[1])
        for out, mask in (fn.call_torch(torch.from_numpy(x), None, True),
                          fn.call_numba(torch.from_numpy(x), None, True)):
            np.testing.assert_array_equal(out.numpy(), _bitnet(x, group), err_msg=name)
            # QuEST's trust band of a ternary grid: |x| <= 1.5 * gamma
            g = x.size if group == "tensor" else group
            flat = x.astype(np.float64).reshape(-1, g)
            gamma = np.mean(np.abs(flat), axis=1, keepdims=True).astype(np.float32).astype(np.float64)
            band = (np.abs(flat) <= 1.5 * gamma).reshape(x.shape)
            np.testing.assert_array_equal(mask.numpy(), band, err_msg=name)
        fast = fn.trust_from_scales(torch.from_numpy(x), None)
        plain = fn.trust_from_scales(torch.from_numpy(x), None, use_numba=False)
        np.testing.assert_array_equal(fast.numpy(), plain.numpy(), err_msg=name)


@pytest.mark.parametrize(
    ("name", "named"),
    [
        ("aint2-g64-absmean", "absmean"),  # an asymmetric grid's zero point needs min/max
        ("e2m1-g32-absmean-se8m0-floor", "floor"),  # amax-based e8m0 roundings need absmax
        ("sint2-absmax-absmean", "absmean"),
        ("sint2-absmax-rms", "rms"),
    ],
)
def test_bad_combinations_are_refused_in_one_line(run_cli, name, named):
    res = run_cli("gmse", name)
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in res.stderr


def test_scale_constant_applies_to_absmean_and_storage_counts_one_scale_per_group(run_cli, tmp_path):
    path = tmp_path / "bitnet.toml"
    path.write_text('name = "bitnet"\n[[stages]]\nkind = "quantize"\ngrid = "lut"\n'
                    'values = [-1.0, 0.0, 1.0]\nscale = "absmean"\nscale_constant = 1.5\ngroup = 64\n')
    fmt = resolve_format(str(path))
    assert fmt.stages[0].scale_constant == 1.5
    assert fmt.bits_per_param() == pytest.approx(math.log2(3) + 32 / 64)
    assert resolve_format("lut[-1,0,1]-g64-absmean1.5").stages[0] == fmt.stages[0]
    path.write_text(path.read_text().replace('"absmean"', '"absmax"'))
    res = run_cli("gmse", str(path))
    assert res.code == 2 and "scale_constant" in res.stderr and "absmean" in res.stderr


def test_scale_range_counts_absmean_scales_that_fp16_flushes():
    from gmse_cli.compress.scalar import scale_range

    # fp16's smallest subnormal is 2^-24 = 6.0e-8: groups of one 1e-7 among zeros have mean
    # |x| 3.1e-9, stored as 0, though their amax (the absmax scale) is stored
    x = np.zeros((2, 64), np.float32)
    x[0, [0, 32]] = 1e-7
    x[1] = 1.0
    got = scale_range(resolve_format("sint2-g32-absmean-sfp16").stages[0], x)
    assert (got.checked, got.over, got.flushed) == (4, 0, 2)
    assert scale_range(resolve_format("sint2-g32-absmax-sfp16").stages[0], x).flushed == 0


def test_a_scale_the_scale_format_flushes_to_zero_goes_to_monte_carlo(run_cli):
    # fp16's smallest subnormal is 2^-24 = 6.0e-8: scales of 1e-8 x mean |x| (or x RMS) are
    # stored as 0, so every row reads back as zeros and the GMSE is E x^2 / E x^2 = 1. The
    # quadrature has no zero scale: these formats are Monte Carlo's, not an error.
    res = run_cli("gmse", "lut[-1,0,1]-absmean0.00000001-sfp16", "int4-rms0.00000001-sfp16", "--json")
    assert res.code == 0, res.stderr
    for row in json.loads(res.stdout)["results"]:
        assert row["gmse_method"] == "monte-carlo", row
        assert row["gmse"] == pytest.approx(1.0, abs=1e-9), row


def test_a_constant_of_one_is_absmeans_own_spelling(tmp_path):
    # README: one format, one spelling: a setting written out at the value its absence means
    # gives the same spec and GMSE cache key. absmean's C is 1 unless given, so BitNet's rule
    # written with scale_constant = 1 (a file) or absmean1 (shorthand) is the same format.
    from gmse_cli.gmse.stored import gmse_key
    from gmse_cli.spec import load_format_toml

    plain = resolve_format("lut[-1,0,1]-tensor-absmean")
    path = tmp_path / "bitnet.toml"
    for constant in ("1", "1.0"):
        path.write_text('name = "bitnet"\n[[stages]]\nkind = "quantize"\ngrid = "lut"\nvalues = [-1.0, 0.0, 1.0]\n'
                        f'scale = "absmean"\ngroup = "tensor"\nscale_constant = {constant}\n')
        for fmt in (load_format_toml(path), resolve_format("lut[-1,0,1]-tensor-absmean1")):
            assert fmt.stages == plain.stages
            assert gmse_key(fmt, 4096) == gmse_key(plain, 4096)
    assert resolve_format("lut[-1,0,1]-tensor-absmean1.5").stages != plain.stages
