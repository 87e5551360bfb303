"""Differentiable compressors: forward equality with gmse_cli.compress, and the gradient rules
(QuEST trust mask, straight-through and RBBM sparsity, Hadamard, VQ norm mask) on hand-made
and random tensors, each checked against paper.md's definitions computed here directly."""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gmse_cli.compress import compress  # noqa: E402
from gmse_cli.errors import TrainError  # noqa: E402
from gmse_cli.spec import Format, Sparsify  # noqa: E402
from gmse_cli.spec import resolve_format as _resolve  # noqa: E402
from gmse_cli.training.config import EstimatorConfig  # noqa: E402
from gmse_cli.training.torch_compress import TorchCompressor, compress_torch, rbbm_mask  # noqa: E402

# One member (or more) of every family and option the trainer offers: scalar grids of each kind
# and scale rule/format, sparsity patterns, a rotation, composites, vector quantization.
FAMILIES = [
    "int4", "int2", "int1", "ternary", "fp4", "nf4", "lloyd-max-3", "mxfp4", "nvfp4", "int4-g128",
    "int4-asym-g128", "int3-mse", "int4-tensor", "fp8-e4m3", "bf16", "lm3-g64-sbf16",
    "sparse-50", "sparse-90", "2:4", "block8-50", "sparse30-tensor",
    "2:4+int4", "sparse-50+int4", "vq4-b1", "vq2-b2", "vq2-b2-g64-se8m0",
    # N:M over blocks (2:4x2 is QuEST's pairs) and quantizers with statistics over all entries
    "2:4x2", "1:4x8", "3:32x4", "2:4x2+int4-allstats", "2:4x2+int3-mse-g64-allstats",
    "1:4x8+e2m1-g32-absmax-se8m0-allstats", "2:8x4+sint4-g64-se4m3-allstats", "2:4+aint4-g32-allstats",
    # the ecosystem's conventions: e8m0 roundings, full-range ints, bitsandbytes NF4 and its
    # double quantization, IEEE overflow
    "mxfp4-rceil", "mxfp4-even", "e2m1-g32-absmax-se8m0-ceil", "mxfp8-e4m3-rceil", "w4a16",
    "w3a16", "w4a16-asym", "nf4-dq", "fp16", "sint4-g32-sfp16-inf", "int3-mse-g64-se8m0-rceil",
    # BitNet's absmean rule, alone, after a mask, over all entries, per tensor
    "lut[-1,0,1]-tensor-absmean", "2:4+sint2-g64-absmean-sbf16", "2:4x2+sint3-g32-absmean1.5-allstats",
]
ROTATED = ["had128+int4", "had64+2:4+int4", "had128+2:4x2+int4-allstats"]


def resolve_format(name: str) -> Format:
    if name == "sparse30-tensor":  # no shorthand for tensor-wide masks
        return Format(name=name, stages=(Sparsify(sparsity=0.3, granularity="tensor"),))
    return _resolve(name)


def _data(rows: int = 24, cols: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    # rows of different scales, heavy-ish tails, exact ties and zeros: the awkward cases
    x = rng.standard_t(5, size=(rows, cols)) * rng.lognormal(0, 1, size=(rows, 1))
    x[0, :64] = np.round(x[0, :64] * 2) / 2
    x[1, :16] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("name", FAMILIES)
def test_forward_equals_numpy_compressors(name):
    fmt = resolve_format(name)
    x = _data()
    ref = compress(fmt, x, backend="numpy")
    assert np.array_equal(compress(fmt, x, backend="numba"), ref)  # the twins themselves
    fast = compress_torch(fmt, torch.from_numpy(x)).numpy()
    plain = TorchCompressor(fmt, kernels="torch")(torch.from_numpy(x)).numpy()  # the GPU code path
    np.testing.assert_array_equal(fast, ref)
    np.testing.assert_array_equal(plain, ref)


@pytest.mark.parametrize("name", ROTATED)
def test_forward_equals_numba_with_rotations(name):
    # compress(backend="numpy") rotates with a dense float64 matrix, the numba path (the GMSE
    # engine's) with float32 butterflies; the torch twin repeats the butterflies, bit for bit.
    fmt = resolve_format(name)
    x = _data()
    ref = compress(fmt, x, backend="numba")
    np.testing.assert_array_equal(compress_torch(fmt, torch.from_numpy(x)).numpy(), ref)
    np.testing.assert_array_equal(TorchCompressor(fmt, kernels="torch")(torch.from_numpy(x)).numpy(), ref)


def test_shapes_dtypes_and_no_grad():
    x = torch.from_numpy(_data()).to(torch.bfloat16)
    y = compress_torch(resolve_format("int4"), x)
    assert y.dtype == torch.bfloat16 and y.shape == x.shape and not y.requires_grad


# --------------------------------------------------------------------------------------------
# QuEST's trust mask
# --------------------------------------------------------------------------------------------

A_B = {1: 0.7978845587, 2: 1.4935346200, 3: 2.0510683541, 4: 2.5139305786}  # paper.md


def _grad_of(fmt_name: str, x: np.ndarray, **estimator) -> np.ndarray:
    """dL/dx for L = sum(C(x) * g) with a fixed random g, divided by g: the gradient mask."""
    comp = TorchCompressor(resolve_format(fmt_name), EstimatorConfig(**estimator))
    xt = torch.from_numpy(x).requires_grad_()
    g = torch.from_numpy(np.random.default_rng(1).uniform(1, 2, size=x.shape).astype(np.float32))
    (comp(xt) * g).sum().backward()
    return (xt.grad / g).numpy()


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_trust_mask_is_quests_half_step_rule(bits):
    # paper.md: the gradient passes only where |q(x) - x| <= RMS * a_b / (2^b - 1).
    # (No exact zeros: with 1 bit, x = 0 sits exactly on the boundary, |q(0) - 0| = s.)
    hand = np.array([
        [3.0, 0.5, -0.5, 0.25, -0.25, 0.1, -0.1, 0.02],  # one outlier far outside the grid
        [1.0, -1.0, 1.0, -1.0, 1.0, -1.0, 1.0, -1.0],    # all inside
        [-6.0, 0.2, 0.3, -0.1, 2.5, 0.03, 0.05, -2.0],   # outliers on both sides
    ], dtype=np.float32)
    for x in (hand, _data(rows=8, cols=64, seed=bits) + np.float32(1e-3)):
        q = compress(resolve_format(f"int{bits}"), x, backend="numpy").astype(np.float64)
        rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
        expected = np.abs(q - x) <= rms * A_B[bits] / (2**bits - 1)
        got = _grad_of(f"int{bits}", x)
        np.testing.assert_array_equal(got, expected.astype(np.float32))
    assert not expected.all() and expected.mean() > 0.5  # the random rows exercise both sides


def test_trust_mask_generalized_to_other_grids():
    # Documented rule: inside the grid's range widened by half the outermost gap. ternary:
    # levels {-1, 0, 1} x s, s = 1.2240089519 * RMS, so the edge is 1.5 s.
    x = np.array([[4.0, 0.5, -0.5, 0.25, -1.0, 0.0, 1.5, -1.75]], dtype=np.float32)
    s = 1.2240089519 * math.sqrt(float(np.mean(x.astype(np.float64) ** 2)))
    expected = (np.abs(x) <= 1.5 * s).astype(np.float32)
    np.testing.assert_array_equal(_grad_of("ternary", x), expected)
    assert 0 < expected.sum() < x.size
    # plain straight-through without the trust rule
    np.testing.assert_array_equal(_grad_of("ternary", x, trust=False), np.ones_like(x))


@pytest.mark.parametrize(("name", "c", "top", "below", "probes", "length"), [
    ("e2m0-rms0.8", 0.8, 4.0, 2.0, [4.5, -4.8, 5.3, -5.6, 6.5], 256),
    ("e3m0-rms0.55", 0.55, 16.0, 8.0, [18.0, -19.4, 20.6, -22.0, 25.0], 1024),
])
def test_trust_mask_of_exm0_grids_uses_the_gap_below_the_largest_value(name, c, top, below, probes, length):
    # An ExM0 grid's positive values are powers of two: its largest value opens a binade, so
    # the outermost gap is top - top/2 (e2m0: 4 - 2), not the step of the top binade (4): the
    # band ends at top + (top - below)/2 = 1.25 top, where it ended at 1.5 top.
    x = np.array([[1.0] * (length - len(probes)) + probes], dtype=np.float32)
    s = c * math.sqrt(float(np.mean(x.astype(np.float64) ** 2)))
    scaled = np.abs(x) / s
    assert ((scaled > top + below / 2) & (scaled < 1.5 * top)).any()  # probes between the two edges
    expected = (scaled <= top + below / 2).astype(np.float32)
    xt = torch.from_numpy(x)
    for kernels in ("auto", "torch"):
        xg = xt.clone().requires_grad_()
        TorchCompressor(resolve_format(name), kernels=kernels)(xg).sum().backward()
        np.testing.assert_array_equal(xg.grad.numpy(), expected)


def test_trust_mask_cpu_kernels_equal_torch_path():
    x = _data()
    for name in ("int3", "fp4", "nf4", "mxfp4", "int4-asym-g128", "int4-tensor", "lm3-g64-sbf16", "nvfp4",
                 "2:4x2+int4-allstats", "2:4+e2m1-g32-absmax-se8m0-allstats", "2:4x2+aint4-g64-allstats",
                 "2:4+sint2-g64-absmean-sbf16", "lut[-1,0,1]-tensor-absmean"):
        xt = torch.from_numpy(x).requires_grad_()
        a = TorchCompressor(resolve_format(name))(xt)
        a.sum().backward()
        fast = xt.grad.clone()
        xt.grad = None
        b = TorchCompressor(resolve_format(name), kernels="torch")(xt)
        b.sum().backward()
        np.testing.assert_array_equal(fast.numpy(), xt.grad.numpy(), err_msg=name)
        assert 0.5 < float(fast.mean()) <= 1.0


# --------------------------------------------------------------------------------------------
# Sparsity: straight-through and RBBM
# --------------------------------------------------------------------------------------------

W = np.array([[0.1, -0.2, 0.5, -1.0, 2.0, 0.05, -0.3, 0.8]], dtype=np.float32)


def test_magnitude_sparsity_is_straight_through():
    # Masks are recomputed on every call (here: for W and for -3 W) and pruned weights still
    # get their gradient, so they can grow back.
    y = TorchCompressor(resolve_format("sparse-50"))(torch.from_numpy(W)).numpy()
    np.testing.assert_array_equal(y, np.where(np.abs(W) >= 0.5, W, 0))
    y2 = TorchCompressor(resolve_format("sparse-50"))(torch.from_numpy(W * np.float32(0.01) + np.eye(1, 8, 0, dtype=np.float32)))
    assert y2.numpy()[0, 0] != 0  # a different tensor, a different mask
    np.testing.assert_array_equal(_grad_of("sparse-50", W), np.ones_like(W))


@pytest.mark.parametrize("p", [0.1, 0.3, 0.45])
def test_rbbm_mask_matches_paper(p):
    # paper.md: T_p = RMS(w) * Phi^-1(0.5 + p); T_k the top-k threshold (smallest kept |w|);
    # M_bw = (|w| < min(T_p, T_k)) | (|w| > max(T_p, T_k)).
    a = np.abs(W.astype(np.float64))
    t_k = 0.5  # keep the 4 largest of 8: 2.0, 1.0, 0.8, 0.5
    t_p = math.sqrt(float(np.mean(a**2))) * NormalDist().inv_cdf(0.5 + p)
    expected = (a < min(t_p, t_k)) | (a > max(t_p, t_k))
    kept = torch.from_numpy(a >= t_k)
    np.testing.assert_array_equal(rbbm_mask(torch.from_numpy(W), kept, p).numpy(), expected)
    np.testing.assert_array_equal(_grad_of("sparse-50", W, rbbm_p=p), expected.astype(np.float32))
    assert not expected.all()  # a band exists for every p here


def test_rbbm_with_tp_equal_tk_is_plain_magnitude_pruning():
    # Choose p so that T_p = T_k exactly: only |w| == T_k itself is masked.
    a = np.abs(W.astype(np.float64))
    rms = math.sqrt(float(np.mean(a**2)))
    p = NormalDist().cdf(0.5 / rms) - 0.5
    got = rbbm_mask(torch.from_numpy(W), torch.from_numpy(a >= 0.5), p).numpy()
    assert got.sum() >= W.size - 1 and not got[0, 2]  # at most the boundary weight 0.5


def test_rbbm_nm_uses_group_thresholds():
    x = _data(rows=4, cols=16)
    p = 0.2
    grad = _grad_of("2:4", x, rbbm_p=p)
    a = np.abs(x.astype(np.float64))
    rms = np.sqrt(np.mean(a**2, axis=1, keepdims=True))
    t_p = rms * NormalDist().inv_cdf(0.5 + p)
    groups = a.reshape(4, 4, 4)
    t_k = np.sort(groups, axis=-1)[..., 2:3]  # the smaller of the two kept in each group of 4
    t_k = np.repeat(t_k, 4, axis=-1).reshape(4, 16)
    expected = (a < np.minimum(t_p, t_k)) | (a > np.maximum(t_p, t_k))
    np.testing.assert_array_equal(grad, expected.astype(np.float32))


def test_composite_gradient_is_the_product_of_stage_rules():
    # 2:4 then int4: the quantizer's trust mask (on the pruned tensor) times the straight-
    # through sparsity rule; pruned entries are zeros, inside the grid, so they keep gradient.
    x = _data(rows=8, cols=64)
    sparse = compress(resolve_format("2:4"), x, backend="numpy")
    # int4 on the kept values: statistics over kept entries only (the composite's rule), so
    # compute the expected trust from the composite's own output on kept entries.
    qc = compress(resolve_format("2:4+int4"), x, backend="numpy").astype(np.float64)
    keep = sparse != 0
    rms = np.sqrt((sparse.astype(np.float64) ** 2).sum(1, keepdims=True) / keep.sum(1, keepdims=True))
    expected = ~keep | (np.abs(qc - sparse) <= rms * A_B[4] / 15)
    np.testing.assert_array_equal(_grad_of("2:4+int4", x), expected.astype(np.float32))


def test_nm_blocks_mask_is_recomputed_and_straight_through():
    # 2:4x2 (QuEST's pairs): each call ranks the pairs of the tensor it is given; every entry,
    # pruned or not, gets its gradient (the rule of plain N:M).
    x = np.array([[3, 0, 0.1, 0, 0, 2, 0, 0.2], [0, 1, 0, 0, 0.5, 0.5, 0, 0]], dtype=np.float32)
    y = TorchCompressor(resolve_format("2:4x2"))(torch.from_numpy(x)).numpy()
    want = np.array([[3, 0, 0, 0, 0, 2, 0, 0], [0, 1, 0, 0, 0.5, 0.5, 0, 0]], dtype=np.float32)
    np.testing.assert_array_equal(y, want)
    y2 = TorchCompressor(resolve_format("2:4x2"))(torch.from_numpy(x[:, ::-1].copy())).numpy()
    np.testing.assert_array_equal(y2, want[:, ::-1])
    np.testing.assert_array_equal(_grad_of("2:4x2", x), np.ones_like(x))
    with pytest.raises(TrainError, match="not of blocks"):
        _grad_of("2:4x2", x, rbbm_p=0.2)


def test_quest_composite_gradient_uses_the_whole_row_scale():
    # 2:4x2 then int4 with statistics over all entries: the trust band is half a step of the
    # scale a_4 * RMS of the *whole* row, checked on the pruned tensor (pruned zeros pass).
    x = _data(rows=8, cols=64)
    sparse = compress(resolve_format("2:4x2"), x, backend="numpy")
    qc = compress(resolve_format("2:4x2+int4-allstats"), x, backend="numpy").astype(np.float64)
    keep = sparse != 0
    rms = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True))
    expected = ~keep | (np.abs(qc - sparse) <= rms * A_B[4] / 15)
    assert not expected.all()
    np.testing.assert_array_equal(_grad_of("2:4x2+int4-allstats", x), expected.astype(np.float32))


# --------------------------------------------------------------------------------------------
# Rotations and vector quantization
# --------------------------------------------------------------------------------------------


def test_hadamard_gradient_is_the_transposed_rotation():
    from scipy.linalg import hadamard

    x = _data(rows=4, cols=128)
    h = hadamard(128).astype(np.float64) / math.sqrt(128)
    g = np.random.default_rng(2).standard_normal(x.shape)
    # With the trust rule, dL/dx = H^T (mask * H g) with the int4 trust mask of the rotated x.
    xt = torch.from_numpy(x).requires_grad_()
    y = TorchCompressor(resolve_format("had128+int4"))(xt)
    (y * torch.from_numpy(g.astype(np.float32))).sum().backward()
    rotated = x.astype(np.float64) @ h
    q = compress(resolve_format("int4"), rotated.astype(np.float32), backend="numpy").astype(np.float64)
    rms = np.sqrt(np.mean(rotated**2, axis=1, keepdims=True))
    mask = np.abs(q - rotated) <= rms * A_B[4] / 15
    expected = ((g @ h) * mask) @ h.T
    np.testing.assert_allclose(xt.grad.numpy(), expected, rtol=1e-5, atol=1e-5)
    # straight-through: an orthonormal H cancels, the gradient is g itself
    xt.grad = None
    y = TorchCompressor(resolve_format("had128+int4"), EstimatorConfig(trust=False))(xt)
    (y * torch.from_numpy(g.astype(np.float32))).sum().backward()
    np.testing.assert_allclose(xt.grad.numpy(), g, rtol=1e-5, atol=1e-5)


def test_vq_norm_trust_mask():
    from gmse_cli.compress import vq

    fmt = resolve_format("vq4-b1")
    stage = fmt.stages[0]
    cb = vq.codebook(stage).astype(np.float64)
    constant = vq.scale_constant(stage)
    # R = the outermost codeword's norm + half its distance to its nearest neighbour
    norms = np.linalg.norm(cb, axis=1)
    top = int(np.argmax(norms))
    dists = np.linalg.norm(cb - cb[top], axis=1)
    radius = norms[top] + 0.5 * np.min(dists[np.arange(len(cb)) != top])
    x = _data(rows=6, cols=64)
    x[2, :4] = [9.0, -9.0, 9.0, 9.0]  # a slice far outside the codebook
    scale = np.float32(constant * np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1, keepdims=True)))
    v = (x / scale).astype(np.float64).reshape(6, 16, 4)
    inside = (np.sum(v**2, axis=-1) <= radius**2)
    expected = np.repeat(inside, 4, axis=1).astype(np.float32)
    got = _grad_of("vq4-b1", x)
    np.testing.assert_array_equal(got, expected)
    assert got[2, :4].sum() == 0 and 0.5 < got.mean() < 1
