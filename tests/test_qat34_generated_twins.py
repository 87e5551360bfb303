"""The format trained is the format measured: on generated shorthands (not only catalog names),
the training compressor's forward equals gmse_cli.compress on the same values (float32 and
bfloat16 inputs, odd row counts, one row, both kernel paths), and its gradient mask obeys
README's trust rule, checked here without the trainer's scale code: an entry inside the range
its group's grid reaches passes, and a cut entry was clipped outward at an extreme level."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from gmse_cli.compress import compress  # noqa: E402
from gmse_cli.spec import resolve_format  # noqa: E402
from gmse_cli.training.torch_compress import TorchCompressor  # noqa: E402

# Drawn from a generator of the README grammar (bases x granularity x rule x scale format x
# e8m0 rounding x overflow x sparsity x statistics x rotation); each once accepted by the trainer.
GENERATED = [
    "aint5-se8m0", "fint4-sbf16-saturate", "e2m0-rms2.5-sint8", "lm5-sfp16",
    "lut[-3,-1,0,0.5,2]-tensor", "lut[-1.5,-0.5,0.5,1.5]-g8-bnb", "lut[-2,-1,0,1,2]-row-mse",
    "e5m3-rms2.5-sfp16-saturate", "int8-se4m3", "fint2-sint8", "mxfp4-rceil-row",
    "e3m2-g32-absmax-se8m0-nearest", "sint3-g16-mse-se4m3", "nf4-tensor", "int6-g16",
    "sparse-50+lm2-absmax-sfp16", "sparse30+e3m1-mse-keptstats", "1:4+int5-g8-rms2.5-sint8",
    "sparse-50+lm3-g16-absmax-se4m3", "sparse-50+lm3-g8-sint8-allstats",
    "2:4x2+int10-rms1.5-sfp16-allstats", "sparse-50+nf4-g16-rms1.5-sbf16-inf-keptstats",
    "sparse30+e3m0-sbf16-allstats", "4:8+sint5-g8-rms-se4m3-keptstats", "1:2+e3m3-tensor-absmax",
    "2:4+fint5-row-absmax", "1:4+fp16", "vq4-b2-g8", "vq2-b4-sbf16", "vq1-b3", "2:4+vq2-b2",
    # absmean (BitNet b1.58's rule), drawn where it is legal: centred grids, raw-scale e8m0 roundings
    "lut[-1,0,1]-tensor-absmean", "sint4-g32-absmean", "e2m1-g16-absmean1.5-se8m0-rceil",
    "sparse-50+int3-row-absmean0.8-sbf16-allstats", "2:4+nf4-g8-absmean2.5-se4m3-keptstats",
    "fint2-g8-absmean-sint8", "lm3-g16-absmean1.2-se8m0", "sparse30+e3m2-tensor-absmean-sfp16",
]
ROTATED = ["had16+lut[-1.5,-0.5,0.5,1.5]-g16-rms-bnb", "had16+fp16", "had32+sint4-g32-se8m0",
           "had32+2:4+lm2", "had16+vq2-b2", "had32+sint3-g32-absmean1.4"]


def _data(rows: int, cols: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_t(4, size=(rows, cols)) * rng.lognormal(0, 1.5, size=(rows, 1))
    x[0, : cols // 2] = np.round(x[0, : cols // 2] * 2) / 2  # exact ties
    if rows > 1:
        x[1, : cols // 4] = 0.0
    return x.astype(np.float32)


@pytest.mark.parametrize("name", GENERATED + ROTATED)
def test_training_forward_is_the_measured_format(name):
    fmt = resolve_format(name)
    rotated = name in ROTATED
    for rows, seed in ((1, 0), (7, 1)):
        x = _data(rows, 96, seed)
        # the dense-matrix numpy rotation differs from the butterflies in float32 rounding
        ref = compress(fmt, x, backend="numba" if rotated else "numpy")
        xb = torch.from_numpy(x).to(torch.bfloat16)
        ref_b = compress(fmt, xb.float().numpy(), backend="numba" if rotated else "numpy")
        for kernels in ("auto", "torch"):
            comp = TorchCompressor(fmt, kernels=kernels)
            np.testing.assert_array_equal(comp(torch.from_numpy(x)).numpy(), ref)
            yb = comp(xb)
            assert yb.dtype == torch.bfloat16
            assert torch.equal(yb, torch.from_numpy(ref_b).to(torch.bfloat16))


SCALAR = [n for n in GENERATED if "vq" not in n]


@pytest.mark.parametrize("name", SCALAR)
def test_gradient_mask_cuts_only_clipped_entries(name):
    fmt = resolve_format(name)
    stage = fmt.stages[-1]
    x = _data(9, 96, 5)
    y = compress(fmt, x, backend="numpy")
    g = torch.from_numpy(np.random.default_rng(2).uniform(1, 2, size=x.shape).astype(np.float32))
    for kernels in ("auto", "torch"):
        xt = torch.from_numpy(x).requires_grad_()
        (TorchCompressor(fmt, kernels=kernels)(xt) * g).sum().backward()
        m = (xt.grad / g).numpy()
        assert np.all((m == 0) | (np.abs(m - 1) < 1e-6))  # a mask, not a scaled gradient
        if stage.scale.value == "none":
            continue
        group = stage.group
        width = x.size if group == "tensor" else 96 if group == "row" else int(group)
        xg, yg, mg = x.reshape(-1, width), y.reshape(-1, width), m.reshape(-1, width) > 0.5
        lo, hi = yg.min(1, keepdims=True), yg.max(1, keepdims=True)
        inside = (xg >= lo) & (xg <= hi)
        assert not (inside & ~mg).any(), "a value inside the grid's reach lost its gradient"
        clipped = ((xg > yg) & (yg == hi)) | ((xg < yg) & (yg == lo))
        assert not (~mg & ~clipped).any(), "a cut value was not clipped at an extreme level"


@pytest.mark.parametrize(("name", "width", "emax", "reach"), [
    ("e3m2-g32-absmax-se8m0", 32, 4, 30.0),   # e3m2: largest 28, gap below it 4
    ("e2m1-g32-absmax-se8m0", 32, 2, 7.0),    # e2m1: largest 6, gap below it 2
])
def test_e8m0_floor_band_by_hand(name, width, emax, reach):
    x = _data(6, 256, 3)
    g = x.astype(np.float64).reshape(-1, width)
    amax = np.abs(g).max(1, keepdims=True)
    s = 2.0 ** (np.floor(np.log2(np.where(amax > 0, amax, 1.0))) - emax)
    expected = ((np.abs(g) / s <= reach) | (amax == 0)).reshape(x.shape)  # zero groups pass
    assert (~expected).any()  # the case exercises the cut
    for kernels in ("auto", "torch"):
        xt = torch.from_numpy(x).requires_grad_()
        TorchCompressor(resolve_format(name), kernels=kernels)(xt).sum().backward()
        np.testing.assert_array_equal(xt.grad.numpy() > 0.5, expected)
