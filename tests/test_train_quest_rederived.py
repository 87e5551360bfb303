"""The training compressors against QuEST's method, rederived here from its published rules
(arXiv 2502.05003 and its reference implementation), not from uscl's code:

- int b (QuEST's trust quantizer): per row s = a_b * RMS(row), step = 2 s / (2^b - 1); clip to
  [-s, s], level index i = round(x / step + 1/2), value (i - 1/2) * step. The gradient passes
  (straight-through, scale 1) where |q(x) - x| <= RMS * a_b / (2^b - 1), else it is zero.
- had128: the same in the orthonormal 128-block Hadamard domain, rotated back; the gradient is
  H^T (mask * H g).
- FourEight: had128, then the int4 levels of the dense row (scale from the whole row), then in
  every 8 consecutive entries the 2 of 4 pairs with the smallest L2 norm zeroed; QuEST's mask is
  |q(x) - x| <= RMS a_4 / 15 with q = 0 at pruned entries.

Known, deliberate differences (checked as such below): exact ties (x / step an integer, e.g.
x = 0) round away from zero in uscl (q(-x) = -q(x)); QuEST's torch.round sends them to the even
index, so its q(0) = -step / 2. uscl passes a pruned entry's gradient straight through (its
sparsity rule) where QuEST masks pruned entries with |x| beyond half a step. QuEST adds 1e-8 to
its scale and builds its Hadamard matrix in bf16; neither is part of the method.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import hadamard

torch = pytest.importorskip("torch")

from gmse_cli.spec import resolve_format  # noqa: E402
from gmse_cli.training.torch_compress import TorchCompressor  # noqa: E402

# QuEST's clip constants a_b (OPTIMAL_GAUSSIAN_SCALES), full precision as published
A_B = {1: 0.7978845587140913, 2: 1.4935346200015913, 3: 2.051068354131873, 4: 2.513930578568423,
       5: 2.9160938834961225, 6: 3.276597282593217, 7: 3.6010497188221655, 8: 3.884938678807525}
H128 = hadamard(128).astype(np.float64) / np.sqrt(128.0)  # symmetric, orthonormal


def _data(kind: str, rows: int = 12, cols: int = 256, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        x = rng.standard_normal((rows, cols))
    elif kind == "heavy":  # Cauchy-like tails, rows of very different scales
        x = rng.standard_t(1.5, (rows, cols)) * rng.lognormal(0, 2, (rows, 1))
    else:  # repeated values: many exact ties between entries and between pair norms' inputs
        x = rng.integers(-3, 4, (rows, cols)) * 0.5 + (rng.random((rows, 1)) < 0.5) * 0.125
    return x.astype(np.float32)


def _quest_levels(v: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """QuEST's quantizer on rows ``v`` (float64): (q, rms, step)."""
    n = 2**bits
    rms = np.sqrt(np.mean(v * v, axis=-1, keepdims=True))
    s = A_B[bits] * rms
    step = 2 * s / (n - 1)
    i = np.round(np.clip(v, -s, s) / step + 0.5)  # np.round: half to even, as torch.round
    return (i - 0.5) * step, rms, step


def _blocks(x: np.ndarray, m: np.ndarray) -> np.ndarray:
    rows, cols = x.shape
    return (x.reshape(rows, cols // 128, 128) @ m).reshape(rows, cols)


def _near_edge(v: np.ndarray, step: np.ndarray, tol: float) -> np.ndarray:
    """Entries within ``tol`` (in steps) of a rounding boundary (a multiple of the step)."""
    h = v / step
    return np.abs(h - np.round(h)) < tol


def _run(name: str, x: np.ndarray, grad_out: np.ndarray, kernels: str) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.from_numpy(x).requires_grad_()
    y = TorchCompressor(resolve_format(name), kernels=kernels)(xt)
    y.backward(torch.from_numpy(grad_out.astype(np.float32)))
    return y.detach().numpy().astype(np.float64), xt.grad.numpy().astype(np.float64)


KINDS = ["gauss", "heavy", "ties"]


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", range(1, 9))
def test_int_forward_and_trust_gradient(bits, kind, kernels):
    x = _data(kind, seed=bits)
    g = np.random.default_rng(7).uniform(1, 2, x.shape).astype(np.float32).astype(np.float64)
    y, grad = _run(f"int{bits}", x, g, kernels)
    v = x.astype(np.float64)
    q, rms, step = _quest_levels(v, bits)
    # ties (x / step an integer): uscl rounds away from zero, QuEST to the even index
    ties = _near_edge(np.clip(v, -A_B[bits] * rms, A_B[bits] * rms), step, 1e-6) & (np.abs(v) < A_B[bits] * rms)
    h = v / step
    away = np.sign(np.where(h == 0, 1.0, h)) * (np.floor(np.abs(h)) + 0.5) * step
    want = np.where(ties, away, q)
    np.testing.assert_allclose(y, want, rtol=3e-7, atol=0)  # float32 rounding of the same level
    # gradient: exactly g where QuEST trusts, exactly 0 elsewhere (scale 1, no other factor)
    trusted = np.abs(want - v) <= rms * A_B[bits] / (2**bits - 1)
    band_edge = np.isclose(np.abs(want - v), rms * A_B[bits] / (2**bits - 1), rtol=1e-6, atol=0)
    np.testing.assert_array_equal(np.isin(grad / g, [0.0, 1.0]) | band_edge, True)
    agree = (grad != 0) == trusted
    assert (agree | band_edge).all(), np.argwhere(~(agree | band_edge))[:5]
    if kind == "heavy":
        assert 0 < trusted.mean() < 1  # both sides of the band exercised


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("kind", ["gauss", "heavy"])
def test_int_exact_ties_differ_only_by_the_documented_rule(kind, kernels):
    # x = 0 sits on a boundary of every midrise grid: QuEST's torch.round(0 + 1/2) = 0 gives
    # q(0) = -step / 2; uscl keeps q odd-symmetric (q(+0) = +step / 2, q(-0) = -step / 2).
    x = _data(kind, rows=4, cols=128, seed=3)
    x[:, ::5] = 0.0
    x[:, 1::10] = -0.0
    for bits in (1, 4):
        y, _ = _run(f"int{bits}", x, np.ones_like(x), kernels)
        q, _, step = _quest_levels(x.astype(np.float64), bits)
        plus, minus = np.zeros_like(x, bool), np.zeros_like(x, bool)
        plus[:, ::5] = True
        minus[:, 1::10] = True
        np.testing.assert_allclose(y[plus], (step / 2 * np.ones_like(x))[plus], rtol=3e-7)
        np.testing.assert_allclose(y[minus], (-step / 2 * np.ones_like(x))[minus], rtol=3e-7)
        np.testing.assert_allclose(q[plus | minus], (-step / 2 * np.ones_like(x))[plus | minus], rtol=1e-12)
        other = ~(plus | minus)
        np.testing.assert_allclose(y[other], q[other], rtol=3e-7)


def _rotated_view(y: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    # H is symmetric and orthonormal: H y is the quantized rotated row; with the output
    # gradient H 1 (set by the caller), H grad = mask * (H H 1) = the mask itself.
    return _blocks(y, H128), _blocks(grad, H128)


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_hadamard_int_weights_and_activations(bits, kind, kernels):
    # QuEST's HadamardTrustQuantizer (used on weights and on activations alike)
    x = _data(kind, seed=10 + bits)
    ones_rot = _blocks(np.ones_like(x, dtype=np.float64), H128)
    y, grad = _run(f"had128+int{bits}", x, ones_rot, kernels)
    yr, mask = _rotated_view(y, grad)
    r = _blocks(x.astype(np.float64), H128)
    q, rms, step = _quest_levels(r, bits)
    thr = rms * A_B[bits] / (2**bits - 1)
    # float32 butterflies move a rotated value by ~1e-7 of the row's scale: only values that
    # close to a rounding boundary or to the trust band's edge may land elsewhere
    tol = 1e-5 * np.abs(r).max(-1, keepdims=True)
    edge = _near_edge(r, step, 1e-4) | (np.abs(np.abs(q - r) - thr) < tol)
    np.testing.assert_allclose(yr[~edge], q[~edge], rtol=0, atol=2e-5 * float(np.abs(r).max()))
    np.testing.assert_allclose(mask[~edge], (np.abs(q - r) <= thr)[~edge], atol=1e-4)
    assert edge.mean() < 0.02


@pytest.mark.parametrize("kernels", ["auto", "torch"])
@pytest.mark.parametrize("kind", KINDS)
def test_four_eight(kind, kernels):
    # QuEST's HadamardFourEightTrustQuantizer against had128+2:4x2+int4-allstats
    x = _data(kind, seed=21)
    if kind == "ties":  # break exact ties between pair norms (torch.topk leaves their order open)
        x = x + np.random.default_rng(5).uniform(-1e-3, 1e-3, x.shape).astype(np.float32)
    ones_rot = _blocks(np.ones_like(x, dtype=np.float64), H128)
    y, grad = _run("had128+2:4x2+int4-allstats", x, ones_rot, kernels)
    yr, mask = _rotated_view(y, grad)
    r = _blocks(x.astype(np.float64), H128)
    q, rms, step = _quest_levels(r, 4)  # the dense row's scale
    rows, cols = r.shape
    norms = np.linalg.norm(r.reshape(rows, cols // 8, 4, 2), axis=-1)
    order = np.argsort(norms, axis=-1, kind="stable")
    pruned = np.zeros_like(norms, bool)
    np.put_along_axis(pruned, order[..., :2], True, axis=-1)
    pruned = np.repeat(pruned, 2, axis=-1).reshape(rows, cols)
    srt = np.sort(norms, axis=-1)
    close_pairs = np.repeat((srt[..., 2] - srt[..., 1]) < 1e-4 * rms, 8, -1)  # a group of 8 at a time
    q = np.where(pruned, 0.0, q)
    thr = rms * A_B[4] / 15
    tol = 1e-5 * np.abs(r).max(-1, keepdims=True)
    edge = close_pairs.reshape(rows, cols) | _near_edge(r, step, 1e-4) | (np.abs(np.abs(q - r) - thr) < tol)
    np.testing.assert_allclose(yr[~edge], q[~edge], rtol=0, atol=2e-5 * float(np.abs(r).max()))
    quest_mask = np.abs(q - r) <= thr
    kept = ~pruned & ~edge
    np.testing.assert_allclose(mask[kept], quest_mask[kept], atol=1e-4)
    # pruned entries: straight-through in uscl (documented); QuEST passes only |x| <= thr there
    drop = pruned & ~edge
    np.testing.assert_allclose(mask[drop], 1.0, atol=1e-4)
    assert not quest_mask[drop].all()
    assert edge.mean() < 0.05


def _quest_had_fn(v: np.ndarray, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """QuEST's HadamardTrustQuantizer on rows ``v``: (output, gradient map g -> H^T (m * H g))."""
    r = _blocks(v, H128)
    q, rms, _ = _quest_levels(r, bits)
    return _blocks(q, H128), np.abs(q - r) <= rms * A_B[bits] / (2**bits - 1)


def test_compressed_linear_matches_quest_w4a4():
    # The training layer as QuEST's QuantizedLinear: y = Q_a(x) Q_w(W)^T, each along its last
    # axis (input features), trust-masked gradients for both the input and the weight.
    from gmse_cli.training.config import EstimatorConfig
    from gmse_cli.training.model import CompressedLinear

    fmt = resolve_format("had128+int4")
    layer = CompressedLinear(256, 16, weights=fmt, activations=fmt, estimator=EstimatorConfig())
    rng = np.random.default_rng(4)
    w = (rng.standard_normal((16, 256)) * 0.02).astype(np.float32)
    x = rng.standard_t(3, (2, 5, 256)).astype(np.float32)
    gy = rng.standard_normal((2, 5, 16)).astype(np.float32)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
    xt = torch.from_numpy(x).requires_grad_()
    y = layer(xt)
    y.backward(torch.from_numpy(gy))
    wq, mw = _quest_had_fn(w.astype(np.float64), 4)
    xq, mx = _quest_had_fn(x.reshape(10, 256).astype(np.float64), 4)
    g = gy.reshape(10, 16).astype(np.float64)
    np.testing.assert_allclose(y.detach().numpy().reshape(10, 16), xq @ wq.T, rtol=1e-4, atol=1e-6)
    gw = _blocks(mw * _blocks(g.T @ xq, H128), H128)  # dL/dW through the weight's trust mask
    gx = _blocks(mx * _blocks(g @ wq, H128), H128)
    np.testing.assert_allclose(layer.weight.grad.numpy(), gw, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(xt.grad.numpy().reshape(10, 256), gx, rtol=1e-4, atol=1e-6)
    assert not mw.all() and not mx.all()


@pytest.mark.parametrize("bits", [1, 4])
def test_all_zero_row_is_zero_with_gradient(bits):
    # Documented: an all-zero group is exact (0) and passes its gradient. QuEST's 1e-8 scale
    # floor instead gives q = -1e-8 / (2^b - 1) and a zero trust band (|q| > 0 * trust), so
    # such a row would get no gradient there; uscl treats the floor as numerics, not method.
    x = np.zeros((2, 128), np.float32)
    x[1] = np.linspace(-2, 2, 128, dtype=np.float32)
    y, grad = _run(f"int{bits}", x, np.ones_like(x, dtype=np.float64), "auto")
    assert (y[0] == 0).all() and (grad[0] == 1).all()
