"""Scalar quantization: the numba kernels against their numpy twin, and both against blocks
worked out by hand (MXFP4, MXINT8, asymmetric int, scale formats), an independent ml_dtypes
implementation of NVFP4, and the exact Gaussian MSE."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmse_cli.compress.grid_mse import gaussian_mse, optimal_rms_constant
from gmse_cli.compress.scalar import quantize, quantize_reference
from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import Quantize, ScaleFormat, Sparsify, catalog, resolve_format

F32 = np.float32


def _both(stage: Quantize, x: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Quantize with the kernel, check the numpy twin gives the same values, return them."""
    got = quantize(stage, x, mask)
    np.testing.assert_array_equal(got, quantize_reference(stage, x, mask))
    assert got.dtype == np.float32 and got.shape == x.shape
    return got


# --------------------------------------------------------------------------------------------
# numba == numpy
# --------------------------------------------------------------------------------------------

FP_GRIDS = [
    (2, 1, "finite"),
    (2, 3, "finite"),
    (3, 2, "finite"),
    (4, 3, "fn"),
    (5, 2, "ieee"),
    (1, 2, "finite"),
    (3, 3, "finite"),
]


@st.composite
def _stages(draw) -> Quantize:
    kind = draw(st.sampled_from(["midrise", "signed", "full", "asymmetric", "fp", "lut", "lloyd-max"]))
    spec: dict = {}
    if kind in ("midrise", "signed", "full", "asymmetric"):
        spec = {
            "grid": "int",
            "int_style": kind,
            "bits": draw(st.integers(2 if kind == "signed" else 1, 8)),
        }
    elif kind == "fp":
        e, m, style = draw(st.sampled_from(FP_GRIDS))
        spec = {"grid": "fp", "exponent_bits": e, "mantissa_bits": m, "fp_style": style}
    elif kind == "lut":
        values = draw(
            st.lists(st.integers(-40, 40), min_size=2, max_size=9, unique=True).filter(any)
        )
        spec = {"grid": "lut", "values": tuple(sorted(v / 8 for v in values))}
    else:
        spec = {"grid": "lloyd-max", "bits": draw(st.integers(1, 4))}
    rules = (
        ["absmax", "mse"]
        if kind == "asymmetric"
        else ["absmax", "rms", "mse"] + (["none"] if kind == "fp" else [])
    )
    spec["scale"] = rule = draw(st.sampled_from(rules))
    if rule == "none":
        if spec["fp_style"] != "finite":
            spec["overflow"] = draw(st.sampled_from(["saturate", "inf"]))
        return Quantize(**spec)
    if rule == "rms":
        spec["scale_constant"] = draw(st.none() | st.floats(0.05, 4.0))
    spec["group"] = draw(st.sampled_from(["row", "tensor", 1, 2, 4, 8, 16]))
    dq8_fits = rule == "absmax" and kind != "asymmetric" and spec["group"] != "tensor"
    formats = [f for f in ScaleFormat if f is not ScaleFormat.DQ8 or dq8_fits]
    spec["scale_format"] = fmt = draw(st.sampled_from(formats))
    if fmt in (ScaleFormat.BF16, ScaleFormat.FP16, ScaleFormat.E8M0):
        spec["overflow"] = draw(st.sampled_from(["saturate", "inf"]))
    if fmt is ScaleFormat.E8M0:
        roundings = [None, "rceil", "nearest"]
        if rule == "absmax" and kind != "asymmetric":
            roundings += ["floor", "ceil"] + (["even"] if kind == "fp" else [])
        spec["scale_rounding"] = draw(st.sampled_from(roundings))
    if kind == "lut":
        spec["lut_rounding"] = draw(st.sampled_from(["nearest", "bitsandbytes"]))
    return Quantize(**spec)


def _data(rng: np.random.Generator, rows: int, cols: int, style: str) -> np.ndarray:
    if style == "gauss":  # rows of very different magnitudes
        x = rng.standard_normal((rows, cols)) * 10.0 ** rng.uniform(-4, 4, (rows, 1))
    elif style == "grid":  # multiples of 1/4: exact ties against power-of-two scales
        x = rng.integers(-12, 13, (rows, cols)) / 4.0
    elif style == "sparse":  # mostly zeros, some all-zero rows
        x = rng.standard_normal((rows, cols)) * (rng.random((rows, cols)) < 0.2)
        x[rng.random(rows) < 0.4] = 0.0
    else:  # heavy tails
        x = rng.standard_t(2, (rows, cols))
    return np.ascontiguousarray(x, dtype=F32)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stage=_stages(),
    rows=st.integers(1, 5),
    blocks=st.integers(1, 4),
    style=st.sampled_from(["gauss", "grid", "sparse", "heavy"]),
    masking=st.sampled_from(["none", "half", "most", "rows"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_equals_numpy_twin(stage, rows, blocks, style, masking, seed):
    rng = np.random.default_rng(seed)
    x = _data(rng, rows, 16 * blocks, style)
    mask = None
    if masking != "none":
        mask = rng.random(x.shape) < {"half": 0.5, "most": 0.1, "rows": 0.7}[masking]
        if masking == "rows":
            mask[rng.random(rows) < 0.5] = False  # fully masked rows
    got = _both(stage, x, mask)
    if stage.overflow == "saturate":
        assert np.all(np.isfinite(got))
    if mask is not None:
        assert np.all(got[~mask] == 0)


def _catalog_quantizers() -> list[tuple[str, Quantize]]:
    return [
        (name, s) for name, fmt in catalog().items() for s in fmt.stages if isinstance(s, Quantize)
    ]


@pytest.mark.parametrize(
    ("name", "stage"), _catalog_quantizers(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_catalog_quantizers_kernel_equals_numpy(name, stage):
    rng = np.random.default_rng(abs(hash(name)) % 2**32)
    x = _data(rng, 12, 256, "gauss")
    _both(stage, x)
    _both(stage, x, rng.random(x.shape) < 0.6)


# --------------------------------------------------------------------------------------------
# Worked by hand
# --------------------------------------------------------------------------------------------


def test_mxfp4_blocks_by_hand():
    # OCP MX: scale 2^(floor(log2 amax) - 2), E2M1 elements {0, .5, 1, 1.5, 2, 3, 4, 6}, RNE,
    # saturating. Ties: 5 -> 4, 3.5 -> 4, 2.5 -> 2, .75 -> 1, .25 -> 0, 1.25 -> 1 (even code).
    b1 = [40, 3, -7, 9, 30, 28, 25, 0.26, 2, 6, -40, 13, 20]  # amax 40: scale 2^(5-2) = 8
    e1 = [32, 4, -8, 8, 32, 32, 24, 0, 0, 8, -32, 12, 16]
    b2 = [7.9, 6.5, -5.1, 0.2, 0.3, 2.4, -1.25, 3.5]  # amax 7.9: scale 2^(2-2) = 1, 7.9 saturates
    e2 = [6, 6, -6, 0, 0.5, 2, -1, 4]
    b3: list[float] = []  # all zero
    b4 = [1e-38]  # floor(log2) = -127: scale 2^-129, clamped to e8m0's 2^-127 -> 1.70 -> 1.5
    e4 = [1.5 * 2.0**-127]
    x = np.zeros((1, 128), F32)
    expected = np.zeros((1, 128), F32)
    for k, (b, e) in enumerate([(b1, e1), (b2, e2), (b3, []), (b4, e4)]):
        x[0, 32 * k : 32 * k + len(b)] = b
        expected[0, 32 * k : 32 * k + len(e)] = e
    np.testing.assert_array_equal(_both(resolve_format("mxfp4").stages[0], x), expected)


def test_mxint8_elements_are_k_over_64():
    # amax 1.99: scale 2^(0 - 6); elements round(x * 64) / 64, clamped to +-127/64.
    x = np.zeros((1, 32), F32)
    x[0, :6] = [1.99, 0.3, -1.0, 0.0, 0.5, -0.7]
    expected = np.zeros((1, 32), F32)
    expected[0, :6] = np.array([127, 19, -64, 0, 32, -45]) / 64
    np.testing.assert_array_equal(_both(resolve_format("mxint8").stages[0], x), expected)


def test_asymmetric_int_with_zero_point_by_hand():
    stage = Quantize(grid="int", bits=4, int_style="asymmetric", scale="absmax", group=8)
    x = np.array(
        [[-1.5, 6.0, 0.0, 0.3, 1.1, -0.8, 2.6, 1.25, 1.0, 2.0, 3.0, 7.5, 0.25, 0.75, 5.0, 4.4]], F32
    )
    # group 1: range [-1.5, 6], scale 7.5/15 = 0.5, zero point 3: q = clip(rint(2x) + 3, 0, 15)
    # group 2: all positive, range [0, 7.5] (zero kept in range), scale 0.5, zero point 0
    # rint is half to even: 2 * 1.25 = 2.5 -> 2, 2 * 0.25 = .5 -> 0, 2 * .75 = 1.5 -> 2
    expected = [[-1.5, 6.0, 0.0, 0.5, 1.0, -1.0, 2.5, 1.0, 1.0, 2.0, 3.0, 7.5, 0.0, 1.0, 5.0, 4.5]]
    np.testing.assert_array_equal(_both(stage, x), np.array(expected, F32))


def test_signed_int_absmax_by_hand():
    stage = Quantize(grid="int", bits=4, int_style="signed", scale="absmax", group=4)
    x = np.array([[7.0, -3.4, 1.5, 0.49, -14.0, 3.0, 5.0, 1.0]], F32)
    # scale 1: rint -> 7, -3, 2 (half to even), 0; scale 2: -7, 2 (1.5 -> 2), 2 (2.5 -> 2), 0 (.5)
    expected = np.array([[7.0, -3.0, 2.0, 0.0, -14.0, 4.0, 4.0, 0.0]], F32)
    np.testing.assert_array_equal(_both(stage, x), expected)


def test_bf16_and_fp16_scales_by_hand():
    stage = Quantize(
        grid="int", bits=4, int_style="signed", scale="absmax", group=4, scale_format="bf16"
    )
    x = np.array([[7.07, 2.0, -3.0, 0.5]], F32)
    # raw scale 7.07 / 7 = 1.01 -> bf16 1.0078125 (step 2^-7); x / s rounds to 7, 2, -3, 0
    expected = np.array([[7, 2, -3, 0]], np.float64) * 1.0078125
    np.testing.assert_array_equal(_both(stage, x), expected.astype(F32))
    # fp16 scales underflow below 2^-24: a group of ~1e-9 has a zero stored scale -> zeros
    tiny = Quantize(
        grid="int", bits=4, int_style="signed", scale="absmax", group=4, scale_format="fp16"
    )
    np.testing.assert_array_equal(
        _both(tiny, np.array([[1e-9, -2e-9, 3e-9, 0.0]], F32)), np.zeros((1, 4), F32)
    )


def test_e8m0_scale_with_rms_rounds_log2_to_nearest():
    stage = Quantize(
        grid="int", bits=4, scale="rms", scale_constant=1.0, group=4, scale_format="e8m0"
    )
    x = np.array([[2.5, -2.5, 2.5, -2.5, 3.0, -3.0, 3.0, 3.0]], F32)
    # RMS 2.5: log2 = 1.32 -> scale 2; x / 2 = 1.25 clamps to the top level 1 -> +-2
    # RMS 3: log2 = 1.58 -> scale 4; x / 4 = .75 -> level 11/15 (7.5 * .75 = 5.6 -> j = 5)
    expected = np.array([[2, -2, 2, -2, 44 / 15, -44 / 15, 44 / 15, 44 / 15]], np.float64)
    np.testing.assert_array_equal(_both(stage, x), expected.astype(F32))


def test_int8_two_level_scales_by_hand():
    stage = Quantize(
        grid="int", bits=4, int_style="signed", scale="absmax", group=4, scale_format="int8"
    )
    x = np.array([[7.0, -3.2, 2.0, 0.1, 1.0, 0.5, -0.3, 0.0]], F32)
    # raw scales 1 and 1/7; s_t = fp32(1 / 255); stored codes 255 and rint(255 / 7) = 36
    s_t = float(F32(1.0 / 255))
    expected = np.concatenate(
        [np.array([7, -3, 2, 0]) * (255 * s_t), np.array([7, 4, -2, 0]) * (36 * s_t)]
    )
    np.testing.assert_array_equal(_both(stage, x), expected[None].astype(F32))


def _nvfp4_independent(x: np.ndarray) -> np.ndarray:
    """NVFP4 from its definition with ml_dtypes casts: blocks of 16, E4M3 block scales
    amax_block / 6 relative to the fp32 tensor scale amax_tensor / (448 * 6)."""
    s_t = float(F32(np.max(np.abs(x)).astype(np.float64) / (448 * 6)))
    blocks = x.astype(np.float64).reshape(x.shape[0], -1, 16)
    amax_b = np.max(np.abs(blocks), axis=-1, keepdims=True)
    code = np.clip(amax_b / 6 / s_t, 0, 448).astype(F32).astype(ml_dtypes.float8_e4m3fn)
    scale = code.astype(np.float64) * s_t
    safe = np.where(scale > 0, scale, 1.0)
    v = np.clip(blocks / safe, -6, 6).astype(F32).astype(ml_dtypes.float4_e2m1fn).astype(np.float64)
    return np.where(scale > 0, v * scale, 0.0).astype(F32).reshape(x.shape)


def test_nvfp4_matches_an_independent_ml_dtypes_implementation():
    rng = np.random.default_rng(4)
    x = (rng.standard_normal((16, 256)) * np.exp2(rng.uniform(-12, 6, (16, 1)))).astype(F32)
    x[3, 32:48] = 0.0  # an all-zero block
    x[5, :16] *= 1e-6  # a block whose E4M3 scale underflows
    np.testing.assert_array_equal(
        _both(resolve_format("nvfp4").stages[0], x), _nvfp4_independent(x)
    )


def test_default_rms_constant_is_the_optimal_one():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((8, 128)).astype(F32)
    for stage in (
        Quantize(grid="fp", exponent_bits=2, mantissa_bits=1),
        Quantize(grid="int", bits=3),
    ):
        pinned = stage.model_copy(update={"scale_constant": optimal_rms_constant(stage)})
        np.testing.assert_array_equal(quantize(stage, x), quantize(pinned, x))


# --------------------------------------------------------------------------------------------
# Against the exact Gaussian MSE
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["int4", "int2", "fp4", "lloyd-max-3", "ternary", "sint4-rms", "nf4-rms-row", "e3m2-rms"],
)
def test_per_row_rms_quantization_meets_the_exact_gaussian_mse(text):
    stage = resolve_format(text).stages[0]
    rng = np.random.default_rng(9)
    x = rng.standard_normal((512, 4096)).astype(F32)
    y = quantize(stage, x)
    empirical = float(np.mean((y.astype(np.float64) - x) ** 2))
    c = stage.scale_constant or optimal_rms_constant(stage)
    # 2M samples (Monte Carlo ~0.1%) and a per-row RMS instead of sigma = 1 (a second-order
    # effect near the optimal scale, ~1e-4): 0.5% covers both with room.
    assert empirical == pytest.approx(gaussian_mse(stage, c), rel=5e-3)


# --------------------------------------------------------------------------------------------
# Masks, zero groups, the mse rule
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["int4", "sint4-absmax", "aint4-row", "fp4-mse", "nf4-row", "sint8-mse-sbf16"]
)
def test_masked_row_equals_the_kept_values_alone(text):
    stage = resolve_format(text).stages[0]
    rng = np.random.default_rng(6)
    x = rng.standard_normal((6, 64)).astype(F32)
    mask = rng.random(x.shape) < 0.6
    got = _both(stage, x, mask)
    assert np.all(got[~mask] == 0)
    for i in range(x.shape[0]):
        alone = quantize(stage, x[i, mask[i]][None])[0]
        np.testing.assert_array_equal(got[i, mask[i]], alone)


def test_masked_tensor_absmax_uses_kept_entries_only():
    stage = Quantize(grid="int", bits=4, int_style="signed", scale="absmax", group="tensor")
    x = np.array([[1.0, 100.0], [-2.0, 3.5]], F32)
    mask = np.array([[True, False], [True, True]])
    # amax over kept = 3.5 -> scale .5: 1 -> 2, -2 -> -4, 3.5 -> 7; the dropped 100 -> 0
    np.testing.assert_array_equal(_both(stage, x, mask), np.array([[1.0, 0.0], [-2.0, 3.5]], F32))


@pytest.mark.parametrize("rule", ["absmax", "rms", "mse"])
@pytest.mark.parametrize("scale_format", list(ScaleFormat))
@pytest.mark.parametrize("grid", ["midrise", "fp", "asymmetric", "lut"])
def test_zero_and_fully_masked_groups_output_zeros(rule, scale_format, grid):
    spec = {
        "midrise": {"grid": "int", "bits": 3},
        "fp": {"grid": "fp", "exponent_bits": 2, "mantissa_bits": 1},
        "asymmetric": {"grid": "int", "bits": 3, "int_style": "asymmetric"},
        "lut": {"grid": "lut", "values": (-1.0, 0.0, 0.5, 1.0)},
    }[grid]
    if grid == "asymmetric" and rule == "rms":
        pytest.skip("asymmetric grids take absmax or mse")
    if scale_format is ScaleFormat.DQ8 and (rule != "absmax" or grid == "asymmetric"):
        pytest.skip("dq8 scales take symmetric absmax")
    stage = Quantize(**spec, scale=rule, group=8, scale_format=scale_format)
    x = np.zeros((3, 16), F32)
    x[1] = np.linspace(-2, 3, 16)
    x[2, 8:] = 5.0
    mask = np.ones(x.shape, bool)
    mask[1, :8] = False  # a fully masked group
    for m in (None, mask):
        got = _both(stage, x, m)
        assert np.all(np.isfinite(got))
        np.testing.assert_array_equal(got[0], 0.0)
        np.testing.assert_array_equal(got[2, :8], 0.0)
    np.testing.assert_array_equal(_both(stage, x, mask)[1, :8], 0.0)


@pytest.mark.parametrize("group", ["g8", "g32", "row", "tensor"])
@pytest.mark.parametrize("scale_format", ["e8m0", "bf16", "fp16", "e4m3", "int8"])
@pytest.mark.parametrize("base", ["int3", "sint4", "aint3", "e2m1", "nf4", "lm3"])
def test_mse_search_with_tied_candidates_equals_the_plain_search(base, scale_format, group):
    # The kernel skips candidates with a (scale, zero point) met before and stops an error sum
    # once it reaches the best so far; the numpy twin measures every ratio in full. Coarse
    # scale formats make many ratios share a candidate, and values on a grid of 1/4 give
    # exactly tied errors: the first best must still win.
    stage = resolve_format(f"{base}-mse-{group}-s{scale_format}").stages[0]
    rng = np.random.default_rng(sum(map(ord, f"{base}{scale_format}{group}")))
    x = np.zeros((6, 64), F32)  # row 0: all-zero groups
    x[1:3] = rng.integers(-12, 13, (2, 64)) / 4.0
    x[3] = rng.standard_normal(64) * 1e-3
    x[4] = rng.standard_t(2, 64)
    x[5, :32] = 0.5  # constant groups
    x[5, 32:] = rng.standard_normal(32) * 100.0
    mask = rng.random(x.shape) < 0.6
    mask[1, :32] = False  # fully masked groups
    _both(stage, x)
    _both(stage, x, mask)


def test_mse_rule_is_never_worse_than_absmax():
    rng = np.random.default_rng(12)
    x = rng.standard_t(3, (32, 256)).astype(F32)
    for text in ("sint4", "e2m1", "aint3", "nf4"):
        base = resolve_format(f"{text}-g32-absmax").stages[0]
        searched = base.model_copy(update={"scale": "mse"})
        err = [
            ((quantize(s, x).astype(np.float64) - x) ** 2).reshape(32, -1, 32).sum(-1)
            for s in (searched, base)
        ]
        assert np.all(err[0] <= err[1] * (1 + 1e-6))
        assert err[0].sum() < err[1].sum()  # heavy tails: clipping pays


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def test_bad_input_raises_clean_errors():
    x = np.zeros((2, 8), F32)
    # The spec itself refuses an rms scale on an asymmetric grid (pydantic wraps the SpecError).
    with pytest.raises(ValueError, match="asymmetric.*rms"):
        Quantize(grid="int", bits=4, int_style="asymmetric")
    with pytest.raises(DataError, match="2-D"):
        quantize(Quantize(grid="int", bits=4), np.zeros((2, 2, 2), F32))
    # The top-level compressor: the same error type as every family's (it raised ValueError),
    # and a format named as everywhere else.
    from gmse_cli.compress import compress

    for shape in ((8,), (2, 2, 8)):
        with pytest.raises(DataError, match="2-D"):
            compress(resolve_format("int4"), np.zeros(shape, F32))
    y = np.random.default_rng(0).standard_normal((2, 8)).astype(F32)
    np.testing.assert_array_equal(compress("int4", y), compress(resolve_format("int4"), y))
    with pytest.raises(DataError, match="mask shape"):
        quantize(Quantize(grid="int", bits=4), x, np.ones((2, 4), bool))
    with pytest.raises(SpecError, match="does not divide"):
        quantize(Quantize(grid="int", bits=4, group=3), x)
    with pytest.raises(SpecError, match="Quantize stage"):
        quantize(Sparsify(sparsity=0.5), x)
    assert quantize(Quantize(grid="int", bits=4), np.zeros((0, 8), F32)).shape == (0, 8)
    assert math.isfinite(float(quantize_reference(Quantize(grid="int", bits=4), x).sum()))


@pytest.mark.parametrize("name", ["nvfp4", "int4-g32-sint8", "e2m1-mse-g16-se4m3", "aint4-mse-g32-se4m3"])
@pytest.mark.parametrize("masked", [False, True])
def test_two_level_scale_chunks_with_the_tensor_top_equal_the_whole(name, masked):
    # A second-level scale depends on every group of the tensor: chunks of rows quantized with
    # the tensor's largest raw group scale (the max of each chunk's) give the whole tensor's
    # result, in the kernel and the reference alike; a chunk alone does not.
    from gmse_cli.compress.scalar import top_raw_scale

    stage = resolve_format(name).quantizer
    rng = np.random.default_rng(11)
    x = rng.standard_t(4, size=(300, 256)).astype(np.float32)
    x[7] *= 30  # the outlier row sets the tensor's scale
    mask = rng.random(x.shape) > 0.3 if masked else None
    chunks = [slice(i, i + 64) for i in range(0, 300, 64)]

    def part(c):
        return None if mask is None else mask[c]

    for quant, reference in ((quantize, False), (quantize_reference, True)):
        whole = quant(stage, x, mask)
        top = max(top_raw_scale(stage, x[c], part(c), reference=reference) for c in chunks)
        pieces = np.concatenate([quant(stage, x[c], part(c), top_raw_scale=top) for c in chunks])
        assert np.array_equal(whole, pieces)
        assert not np.array_equal(quant(stage, x[64:128], part(slice(64, 128))), whole[64:128])
