"""uscl's compressors against the libraries people deploy with, bit for bit.

Runs when the optional ``peers`` extra is installed (torchao, bitsandbytes, compressed-tensors);
each peer's tests are skipped, with the reason, when it is absent. Inputs: Gaussian,
heavy-tailed (Student t, 2 degrees of freedom), outliers, all-zero groups and exact ties
(values at a grid midpoint after scaling).
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import pytest

from gmse_cli.compress import compress
from gmse_cli.spec import resolve_format

torch = pytest.importorskip("torch", reason="the peers extra needs torch")

ROWS, COLS = 16, 256


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _inputs(kind: str, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        x = rng.standard_normal((ROWS, COLS))
    elif kind == "heavy":
        x = rng.standard_t(2, (ROWS, COLS))
    elif kind == "outlier":
        x = rng.standard_normal((ROWS, COLS))
        x[rng.random((ROWS, COLS)) < 0.01] *= 1000.0
    elif kind == "zero":
        x = rng.standard_normal((ROWS, COLS))
        x[:, :128] = 0.0  # whole groups (of 32, 64 and 128) of zeros
    else:  # ties: small integers and halves, scaled by powers of two: many exact midpoints
        x = rng.integers(-16, 17, (ROWS, COLS)) / 2.0 * 2.0 ** rng.integers(-3, 4, (ROWS, 1))
    return x.astype(np.float32)


KINDS = ["gaussian", "heavy", "outlier", "zero", "ties"]


def _same(ours: np.ndarray, theirs: np.ndarray) -> None:
    np.testing.assert_array_equal(ours.astype(np.float32), np.asarray(theirs, dtype=np.float32))


# -- torchao: MX with each ScaleCalculationMode -------------------------------------------------

MX = [
    ("mxfp4", "floor"), ("mxfp4-rceil", "rceil"), ("mxfp4-even", "even"), ("e2m1-g32-absmax-se8m0-ceil", "ceil"),
    ("mxfp8-e4m3", "floor"), ("mxfp8-e4m3-rceil", "rceil"), ("mxfp8-e5m2-rceil", "rceil"),
    ("mxfp6-e2m3", "floor"), ("mxfp6-e2m3-rceil", "rceil"), ("mxfp6-e2m3-even", "even"),
    ("mxfp6-e3m2-rceil", "rceil"),
]


@pytest.mark.skipif(not _have("torchao"), reason="torchao is not installed (pip install 'uscl[peers]')")
@pytest.mark.parametrize(("name", "mode"), MX)
@pytest.mark.parametrize("kind", KINDS)
def test_mx_scale_roundings_match_torchao(name, mode, kind):
    from torchao.prototype.mx_formats.config import ScaleCalculationMode
    from torchao.prototype.mx_formats.constants import DTYPE_FP6_E2M3, DTYPE_FP6_E3M2
    from torchao.prototype.mx_formats.mx_tensor import to_dtype, to_mx

    fmt = resolve_format(name)
    q = fmt.quantizer
    elem = {
        (2, 1): torch.float4_e2m1fn_x2, (4, 3): torch.float8_e4m3fn, (5, 2): torch.float8_e5m2,
        (2, 3): DTYPE_FP6_E2M3, (3, 2): DTYPE_FP6_E3M2,
    }[(q.exponent_bits, q.mantissa_bits)]
    x = _inputs(kind)
    scale, data = to_mx(torch.from_numpy(x), elem, 32, getattr(ScaleCalculationMode, mode.upper()))
    theirs = to_dtype(data, scale, elem, 32, torch.float32).numpy()
    _same(compress(fmt, x), theirs)


# -- compressed-tensors: W4A16 / W8A16 and their asymmetric versions ---------------------------


@pytest.mark.skipif(not _have("compressed_tensors"), reason="compressed-tensors is not installed (pip install 'uscl[peers]')")
@pytest.mark.parametrize(("name", "bits", "symmetric"), [("w4a16", 4, True), ("w8a16", 8, True), ("w3a16", 3, True), ("w4a16-asym", 4, False), ("int8-asym-g128", 8, False)])
@pytest.mark.parametrize("kind", KINDS)
def test_int_groups_match_compressed_tensors(name, bits, symmetric, kind):
    from compressed_tensors.quantization import QuantizationArgs
    from compressed_tensors.quantization.lifecycle.forward import fake_quantize
    from compressed_tensors.quantization.utils import calculate_qparams

    args = QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy="group", group_size=128)
    x = _inputs(kind)
    xt = torch.from_numpy(x)
    groups = xt.reshape(ROWS, -1, 128)
    scale, zp = calculate_qparams(groups.amin(-1), groups.amax(-1), args)
    scale = scale.to(torch.float16).to(torch.float32)  # the scales of an fp16 checkpoint
    if not symmetric:  # the zero point from the stored scale, as a checkpoint holds it
        lo = groups.amin(-1).clamp(max=0)
        zp = torch.clamp(torch.round(-8.0 * (bits == 4) - 128.0 * (bits == 8) - lo / scale), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    theirs = fake_quantize(xt, scale, zp, args).numpy()
    _same(compress(resolve_format(name), x), theirs)


# -- bitsandbytes: NF4, with and without double quantization -------------------------------------


@functools.cache
def _bnb_cpu() -> str | None:
    if not _have("bitsandbytes"):
        return "bitsandbytes is not installed (pip install 'uscl[peers]')"
    try:
        import bitsandbytes.functional as F

        q, state = F.quantize_4bit(torch.ones(64), blocksize=64, quant_type="nf4")
        F.dequantize_4bit(q, state)
    except Exception as exc:  # noqa: BLE001 -- any failure means no CPU backend
        return f"bitsandbytes cannot quantize on this machine's CPU: {exc}"
    return None


@pytest.fixture
def bnb_cpu() -> None:
    """Skips, with the reason, where bitsandbytes cannot quantize on this CPU: probed on first use,
    not at import, since importing bitsandbytes costs seconds of collection in every run."""
    reason = _bnb_cpu()
    if reason is not None:
        pytest.skip(reason)


@pytest.mark.usefixtures("bnb_cpu")
@pytest.mark.parametrize("kind", KINDS)
def test_nf4_matches_bitsandbytes(kind):
    import bitsandbytes.functional as F

    x = _inputs(kind)
    q, state = F.quantize_4bit(torch.from_numpy(x), blocksize=64, quant_type="nf4")
    _same(compress(resolve_format("nf4"), x), F.dequantize_4bit(q, state).numpy())


@pytest.mark.usefixtures("bnb_cpu")
@pytest.mark.parametrize("kind", KINDS)
def test_nf4_double_quantization_matches_bitsandbytes(kind):
    """The dq8 scales equal bitsandbytes' given its offset (torch's float32 mean, whose last bit
    depends on the CPU's summation order; uscl rounds the exact mean), the offsets agree to a
    float32 ulp, and the elements dequantized with uscl's scales are uscl's output."""
    import bitsandbytes.functional as F

    from gmse_cli.compress.scalar import dq_scales_reference

    # 64 x 256 values: 256 groups of 64, one full block of the second level
    x = np.concatenate([_inputs(kind, seed) for seed in range(64)]).astype(np.float32)
    q, state = F.quantize_4bit(torch.from_numpy(x), blocksize=64, quant_type="nf4", compress_statistics=True)
    raw = np.abs(x.reshape(1, -1, 64)).max(-1).astype(np.float64)
    # bitsandbytes' second level as its CUDA kernel and default backend code it (its native CPU
    # kernel's binary search can land one code off): its code, its block absmax, float32 math
    code, big = state.state2.code, state.state2.absmax
    c = (torch.from_numpy(raw.reshape(-1).astype(np.float32)) - state.offset).reshape(-1, 256)
    scaled = torch.clamp(c * (1.0 / big.clamp(min=1e-38).view(-1, 1)), -1, 1).reshape(-1)
    codes = torch.bucketize(scaled, (code[:-1] + code[1:]) / 2)
    theirs = ((code[codes].reshape(-1, 256) * big.view(-1, 1)).reshape(-1) + state.offset).numpy()
    _same(dq_scales_reference(raw, offset=float(state.offset)).reshape(-1), theirs)
    ours = dq_scales_reference(raw).reshape(-1).astype(np.float32)
    assert abs(float(np.float32(raw.mean())) - float(state.offset)) <= np.spacing(np.float32(state.offset))
    ours_state = F.QuantState(
        absmax=torch.from_numpy(ours), shape=x.shape, dtype=torch.float32, blocksize=64, quant_type="nf4", code=state.code
    )
    _same(compress(resolve_format("nf4-dq"), x), F.dequantize_4bit(q, ours_state).numpy())
