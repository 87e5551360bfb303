"""Metamorphic properties of the compressors and the GMSE engine, on every catalog format and
composites built from the shorthand: what a format's definition implies about compress(), not
numbers taken from its output.

- sign symmetry: compress(-x) = -compress(x) exactly for symmetric grids. Legitimately
  asymmetric: full-range ints (w4a16, fint: codes -2^(b-1) ... 2^(b-1)-1, scale amax/7.5, so a
  group's negative extreme lands on -8 and its positive one clips to 7; everywhere else the
  grid is symmetric, checked below), NF4 and other asymmetric luts, and the Gaussian VQ
  codebooks (Lloyd codebooks of a sample, not antipodal). A midrise grid has no zero level,
  so an exact 0 (a tie) takes the same level as -0; random rows hold no zeros;
- scale equivariance: compress(c x) = c compress(x) exactly for c a power of two (every scale
  format scales exactly: fp32/bf16/fp16/e8m0 by the exponent, e4m3/int8 under an fp32
  tensor scale), plain casts only while c x stays in the cast's normal range; for c = 3 to
  float rounding where scales are stored in fp32 (bf16, fp16 and e8m0 round c s, not s);
- permutations: of rows, of whole structural units (groups, N:M blocks, Hadamard blocks, VQ
  slices), and within a group for element-wise formats, permute the output exactly (dq8 only
  while all the tensor's scales share one block of 256, as here: moving a row to another block
  changes the absmax its scales are double-quantized with);
- idempotence: compress(compress(x)) = compress(x) for absmax and plain-cast grids (the
  output's group absmax is the largest level times the stored scale, which stores back to
  itself), sparsity and their composites; not for RMS scales (the output's RMS differs),
  full-range ints (the -8 extreme raises the absmax), dq8 (dequantized with the
  double-quantized scale), e8m0 'nearest' (4.5 s rounds down to 4 s, whose nearest power
  then halves the scale: 4 s saturates to 3 s) or rotations (float rounding);
- edge rows (all zero, one nonzero, half zero), float16/float64 and non-contiguous inputs:
  numba, numpy and torch backends agree bit for bit (rotations: to float rounding);
- nan and inf are refused with a DataError naming the value (peers disagree with each other:
  torchao's and bitsandbytes' absmax scales turn a whole group nan, ml_dtypes casts nan to
  -0 in e2m1; before, uscl's numba path zeroed a whole int4 row or nvfp4 tensor silently);
- GMSE does not depend on the Gaussian's sigma for formats whose scales are exact in fp32:
  own Monte Carlo at sigma 1e-3 and 1e3 against the engine's estimate. Power-of-two (e8m0)
  scales make the GMSE periodic in log2(sigma) instead (same value at 2 sigma, checked).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gmse_cli.compress import compress, scale_range, top_raw_scale
from gmse_cli.compress.scalar import can_leave_range
from gmse_cli.errors import DataError, SpecError
from gmse_cli.gmse import estimate_gmse
from gmse_cli.gmse.backends import compressor
from gmse_cli.spec import (
    VQ,
    IntStyle,
    Quantize,
    Rotate,
    ScaleFormat,
    ScaleRounding,
    ScaleRule,
    Sparsify,
    catalog_names,
    resolve_format,
)

try:  # the torch backend is the train extra's: the core's tests run without it
    import torch

    from gmse_cli.training.torch_compress import TorchCompressor
except ImportError:
    torch = TorchCompressor = None

COMPOSITES = [
    "2:4x2+int4", "sparse-50+int3", "had128+sint4-g128", "had32+mxfp4", "had128+nvfp4",
    "had128+2:4+sint4-g64", "sint4-g64", "sint8-g32-sbf16", "fint4-g64-sbf16", "aint4-g64",
    "aint3-g32-sfp32", "lm3-g128", "lm2-row", "e2m1-g16-absmax-se4m3", "e4m3-g32-rms",
    "e2m1-g32-mse", "sint4-g128-mse", "aint4-g128-mse", "nf4-sdq8", "lut[-1,0,1]-rms1.224",
    "lut[-1,-0.25,0.5,1]-g32-absmax", "mxfp4-ceil", "mxfp4-nearest", "int4-tensor", "sint4-tensor",
    "sint4-g32-sint8", "sint4-g32-se4m3", "e2m1-g32-rms-se8m0", "fp16-saturate", "e3m2-g32-absmax-se8m0",
    "1:4+sint4-g32", "4:8+mxfp4", "sparse30+int4", "block4-50", "block8-25+sint4-g64",
    "2:4+e2m1-g16-absmax-se4m3", "2:4+sint4-g128-allstats", "sint8-row", "sint4-g128-sfp16-inf",
    "int3-g64", "int2-g32-absmax", "fint8-g32", "sint6-g16-se8m0-rceil",
]
FORMATS = [*catalog_names(), *COMPOSITES]
ROWS, COLS = 8, 256  # every format's groups, blocks and slices divide 256


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    return np.random.default_rng(20261206).standard_normal((ROWS, COLS)).astype(np.float32)


def _stages(fmt, kind):
    return [s for s in fmt.stages if isinstance(s, kind)]


def _scalar(fmt) -> Quantize | None:
    q = fmt.quantizer
    return q if isinstance(q, Quantize) else None


def _full_range(fmt) -> bool:
    q = _scalar(fmt)
    return q is not None and q.int_style is IntStyle.FULL


def _symmetric_grid(fmt) -> bool:
    q = _scalar(fmt)
    if _stages(fmt, VQ):
        return all(s.codebook == "e8" for s in _stages(fmt, VQ))  # E8P: sign-closed by construction
    if q is None:
        return True  # sparsity and rotations only
    if q.values is not None:
        return sorted(q.values) == sorted(-v for v in q.values)
    return not _full_range(fmt)


@pytest.mark.parametrize("name", FORMATS)
def test_sign_symmetry(name, x):
    fmt = resolve_format(name)
    y, y_neg = compress(fmt, x), compress(fmt, -x)
    if _symmetric_grid(fmt):
        np.testing.assert_array_equal(y_neg, -y)
    elif _full_range(fmt):
        # only code -2^(b-1) has no mirror: a mismatch is where one side sits on its group's
        # lowest level (x / scale beyond +-(2^b - 1) / 2 after the scale's rounding)
        g = _scalar(fmt).group

        def on_lowest(a):
            ag = a.reshape(ROWS, -1, g)
            return (ag == ag.min(-1, keepdims=True)).reshape(a.shape)

        differ = y_neg != -y
        assert differ.any()
        assert (on_lowest(y_neg) | on_lowest(y))[differ].all()


def _plain_cast(fmt) -> bool:
    q = _scalar(fmt)
    return q is not None and q.scale is ScaleRule.NONE


@pytest.mark.parametrize("name", FORMATS)
def test_power_of_two_scale_equivariance(name, x):
    fmt = resolve_format(name)
    y = compress(fmt, x)
    # a plain fp16 cast is exact only while c x stays normal and below 65504
    factors = (0.5, 8.0) if _plain_cast(fmt) else (2.0**-7, 2.0**9)
    for c in factors:
        np.testing.assert_array_equal(compress(fmt, (c * x).astype(np.float32)), np.float32(c) * y)


def _fp32_scaled(fmt) -> bool:
    for s in _stages(fmt, Quantize) + _stages(fmt, VQ):
        if s.scale is ScaleRule.NONE and not (s.kind == "quantize" and s.exponent_bits == 8 and s.mantissa_bits == 23):
            return False  # plain casts other than fp32 round c x on an absolute grid
        if s.scale_format in (ScaleFormat.FP16, ScaleFormat.BF16, ScaleFormat.E8M0):
            return False
    return True


@pytest.mark.parametrize("name", [n for n in FORMATS if _fp32_scaled(resolve_format(n))])
def test_scale_equivariance_to_float_rounding(name, x):
    fmt = resolve_format(name)
    y = compress(fmt, x)
    y3 = compress(fmt, (3 * x).astype(np.float32))
    compared = np.ones(x.shape, dtype=bool)
    if _full_range(fmt):  # a group's extreme sits on the tie +-(2^b - 1) / 2: rounding decides it
        g = _scalar(fmt).group
        ag = np.abs(x.reshape(ROWS, -1, g))
        compared = (ag < ag.max(-1, keepdims=True)).reshape(x.shape)
    # 3 x and 3 s are each rounded once in float32: a few ulps, never a different level
    atol = 8 * np.finfo(np.float32).eps * np.abs(3 * y).max()
    np.testing.assert_allclose(y3[compared], 3 * y[compared], rtol=0, atol=atol)


def _unit(fmt) -> tuple[int, bool]:
    """(the smallest block of a row that every stage treats as a whole, whether the format is
    element-wise inside its scale groups: no rotation, sparsity or VQ)."""
    unit, elementwise = 1, True
    for s in fmt.stages:
        if isinstance(s, Rotate):
            unit, elementwise = math.lcm(unit, s.block), False
        elif isinstance(s, Sparsify):
            elementwise = False
            if s.m:
                unit = math.lcm(unit, s.m * (s.block or 1))
            elif s.block:
                unit = math.lcm(unit, s.block)
        elif isinstance(s, VQ):
            unit, elementwise = math.lcm(unit, s.dim), False
        elif isinstance(s.group, int):
            unit = math.lcm(unit, s.group)
    return unit, elementwise


@pytest.mark.parametrize("name", FORMATS)
def test_permutation_equivariance(name, x):
    fmt = resolve_format(name)
    rng = np.random.default_rng(7)
    y = compress(fmt, x)
    rows = rng.permutation(ROWS)
    np.testing.assert_array_equal(compress(fmt, x[rows]), y[rows])
    unit, elementwise = _unit(fmt)
    units = rng.permutation(COLS // unit)
    cols = (units[:, None] * unit + np.arange(unit)).ravel()
    np.testing.assert_array_equal(compress(fmt, x[:, cols]), y[:, cols])
    if elementwise:
        g = _scalar(fmt).group if isinstance(_scalar(fmt).group, int) else COLS
        inside = np.concatenate([b * g + rng.permutation(g) for b in range(COLS // g)])
        np.testing.assert_array_equal(compress(fmt, x[:, inside]), y[:, inside])


def _idempotent(fmt) -> bool:
    if _stages(fmt, Rotate) or _stages(fmt, VQ):
        return False
    q = _scalar(fmt)
    if q is None:
        return True
    return (
        q.scale in (ScaleRule.ABSMAX, ScaleRule.NONE, ScaleRule.MSE)
        and q.int_style is not IntStyle.FULL
        and q.scale_format is not ScaleFormat.DQ8
        and q.scale_rounding is not ScaleRounding.NEAREST
    )


@pytest.mark.parametrize("name", [n for n in FORMATS if _idempotent(resolve_format(n))])
def test_idempotence(name, x):
    fmt = resolve_format(name)
    y = compress(fmt, x)
    again = compress(fmt, y)
    if _scalar(fmt) is not None and _scalar(fmt).scale is ScaleRule.MSE:
        # the search finds ratio 1 again, its scale recomputed to float rounding
        np.testing.assert_allclose(again, y, rtol=0, atol=4 * np.finfo(np.float32).eps * np.abs(y).max())
    else:
        np.testing.assert_array_equal(again, y)


def test_not_idempotent_where_the_definition_says_so():
    """The exceptions named in the module docstring, each on an input built for it."""
    row = np.linspace(-1.0, 1.0, 256, dtype=np.float32)[None, :]
    once = compress("int4", row)  # RMS scale: the output's RMS is not the input's
    assert not np.array_equal(compress("int4", once), once)
    neg = -np.abs(row)  # amax at -1: w4a16 puts it on -8 s, raising the absmax to 8/7.5
    once = compress("w4a16", neg)
    assert once.min() == pytest.approx(-8 / 7.5, rel=1e-3)
    assert not np.array_equal(compress("w4a16", once), once)
    g = np.zeros((1, 32), np.float32)
    g[0, 0] = 4.5  # e8m0 nearest: 2^round(log2(4.5 / 6)) = 1, 4.5 -> 4; then 2^round(log2(4/6)) = 1/2
    g[0, 1] = 4.0
    once = compress("mxfp4-nearest", g)
    assert once[0, 0] == 4.0 and compress("mxfp4-nearest", once)[0, 0] == 3.0


def _edge_rows() -> np.ndarray:
    rng = np.random.default_rng(3)
    e = rng.standard_normal((5, COLS)).astype(np.float32)
    e[1] = 0
    e[2] = 0
    e[2, 37] = 1.5
    e[3] = 0
    e[3, 0] = -2e-3
    e[4, :128] = 0
    return e


_TORCH = None if torch is None else compressor("torch")


@pytest.mark.parametrize("name", FORMATS)
def test_backends_agree_on_edge_rows_and_input_layouts(name):
    fmt = resolve_format(name)
    e = _edge_rows()
    y = compress(fmt, e)
    assert y.dtype == np.float32 and np.isfinite(y).all()
    # the numpy rotation multiplies dense matrices (float rounding); numpy's E8P search takes 1 s
    if not _stages(fmt, Rotate) and name != "e8p":
        np.testing.assert_array_equal(compress(fmt, e, backend="numpy"), y)
    if _TORCH is not None:
        np.testing.assert_array_equal(_TORCH(fmt, e), y)
    for dtype in (np.float16, np.float64):
        np.testing.assert_array_equal(compress(fmt, e.astype(dtype)), compress(fmt, e.astype(dtype).astype(np.float32)))
    wide = np.zeros((COLS, 2 * e.shape[0]), np.float32)
    wide[:, ::2] = e.T
    strided = wide[:, ::2].T  # neither C- nor F-contiguous
    np.testing.assert_array_equal(compress(fmt, strided), y)
    if _TORCH is not None:
        np.testing.assert_array_equal(_TORCH(fmt, strided), y)


@pytest.mark.parametrize("name", FORMATS)
def test_rows_the_structure_does_not_divide_are_one_error_in_every_backend(name):
    fmt = resolve_format(name)
    unit, _ = _unit(fmt)
    odd = np.random.default_rng(4).standard_normal((3, 250)).astype(np.float32)  # 250 = 2 x 5^3
    runs = {"numba": lambda: compress(fmt, odd)}
    if _TORCH is not None:
        runs["torch"] = lambda: _TORCH(fmt, odd)
    if name != "e8p":
        runs["numpy"] = lambda: compress(fmt, odd, backend="numpy")
    for backend, run in runs.items():
        if 250 % unit == 0:
            assert run().shape == odd.shape, backend
        else:
            with pytest.raises(SpecError, match="does not divide the row length 250"):
                run()


@pytest.mark.parametrize("name", ["sint4-tensor", "int4-tensor", "nvfp4", "2:4+int4", "vq4-b2", "had128+int4"])
@pytest.mark.parametrize("kernels", ["auto", "torch"])
def test_torch_compressor_takes_no_rows(name, kernels):
    """Before: per-tensor scales on a (0, 256) tensor raised ZeroDivisionError (auto) or
    IndexError (torch kernels); compress() returns the empty array."""
    if torch is None:
        pytest.skip("needs the train extra (torch)")
    empty = torch.zeros((0, COLS))
    out = TorchCompressor(resolve_format(name), kernels=kernels)(empty)
    assert out.shape == (0, COLS)
    assert compress(name, empty.numpy()).shape == (0, COLS)


@pytest.mark.parametrize("name", ["int4", "nvfp4", "mxfp4", "nf4", "int4-g128", "sint4-tensor", "2:4+int4",
                                  "sparse-50", "vq4-b2", "had128+int4", "fp16", "fp32"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_nonfinite_input_is_refused_naming_the_value(name, bad, backend, x):
    """Before: int4 returned zeros for a row holding a nan, nvfp4 zeros for the whole tensor,
    sint4-tensor nan for the whole tensor, fp32 the nan, and numba and numpy disagreed."""
    fmt = resolve_format(name)
    poisoned = x.copy()
    poisoned[5, 17] = bad
    with pytest.raises(DataError, match=rf"x\[5, 17\] = {bad}"):
        compress(fmt, poisoned, backend=backend)
    if _scalar(fmt) is not None and can_leave_range(_scalar(fmt)):  # the others count nothing
        with pytest.raises(DataError, match=r"x\[5, 17\]"):
            scale_range(fmt, poisoned)
    if name == "nvfp4":
        with pytest.raises(DataError, match=r"x\[5, 17\]"):
            top_raw_scale(fmt, poisoned, backend=backend)


def test_a_float64_beyond_float32_is_named_as_given(x):
    wide = x.astype(np.float64)
    wide[2, 3] = -1e39  # -inf in float32, which the message would otherwise name
    with pytest.raises(DataError, match=r"x\[2, 3\] = -1e\+39, -inf in float32 .*; 1 value is nan or inf"):
        compress("int4", wide)


def test_finite_values_whose_sum_overflows_are_accepted():
    big = np.full((2, 64), 3e38, dtype=np.float32)
    big[1] *= -1
    np.testing.assert_array_equal(compress("fp32", big), big)
    np.testing.assert_array_equal(compress("sint4-g32", big), big)  # amax / 7 * 7


# --------------------------------------------------------------------------------------------
# GMSE against sigma
# --------------------------------------------------------------------------------------------

_SIGMA_FORMATS = ["int4", "int4-g32", "nf4", "sparse-50", "2:4+int4", "vq4-b2", "had128+int4", "int3-g128",
                  "sint4-g64"]


def _own_gmse(fmt, z: np.ndarray, sigma: float) -> tuple[float, float]:
    """Ratio estimate of E||x - C(x)||^2 / E||x||^2 over i.i.d. rows, and its standard error."""
    x = (sigma * z).astype(np.float32)
    x64 = x.astype(np.float64)
    err = ((x64 - compress(fmt, x).astype(np.float64)) ** 2).sum(1)
    norm = (x64**2).sum(1)
    g = err.sum() / norm.sum()
    resid = err - g * norm
    return g, math.sqrt((resid**2).sum() / (len(z) - 1) / len(z)) / norm.mean()


@pytest.mark.parametrize("name", _SIGMA_FORMATS)
def test_gmse_does_not_depend_on_sigma(name):
    fmt = resolve_format(name)
    z = np.random.default_rng(99).standard_normal((32, 4096))
    engine = estimate_gmse([fmt], rel_err=3e-3, cache="use")[0]
    g1, se = _own_gmse(fmt, z, 1.0)
    for sigma in (1e-3, 1e3):
        g, _ = _own_gmse(fmt, z, sigma)
        if _fp32_scaled(fmt):  # the same rows, scaled: only float rounding (fp16 scales round c s)
            assert g == pytest.approx(g1, rel=1e-5)
        assert abs(g - engine.gmse) <= 5 * math.hypot(se, engine.std_err), (sigma, g, engine)


@pytest.mark.parametrize(("name", "spread"), [("mxfp4", 1.05), ("mxint8", 1.15), ("e2m1-g32-rms-se8m0", 1.05),
                                              ("int4-g32", None), ("nvfp4", None)])
def test_power_of_two_scales_make_gmse_periodic_in_log2_sigma(name, spread):
    """e8m0 scales: exactly the same GMSE an octave apart (and 2^10 octaves), but within an
    octave it moves by several percent (README: mxfp4 0.0128-0.0139, mxint8 5.7e-5-6.9e-5);
    fp16 scales (int4-g32) and e4m3 under an fp32 tensor scale (nvfp4) do not move."""
    z = np.random.default_rng(5).standard_normal((16, 4096))
    base = _own_gmse(name, z, 1.3)[0]
    if spread is None:
        for sigma in (1.3 * 2**0.25, 1.3 * 2**0.5, 1.3 * 2**0.75):
            assert _own_gmse(name, z, sigma)[0] == pytest.approx(base, rel=1e-4)
        return
    for octave in (-10, 1, 10):
        assert _own_gmse(name, z, 1.3 * 2.0**octave)[0] == base
    within = [_own_gmse(name, z, 2 ** (k / 8))[0] for k in range(8)]
    assert max(within) / min(within) > spread
