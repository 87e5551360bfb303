"""The GMSE engine's backend registry: numba and numpy built in, torch registered by the
training package, any other by whoever registers it.

References: the torch backend is checked against the numba backend on the same bank (the
torch compressors are a second implementation of gmse_cli.compress); a registered backend
that halves its input has GMSE exactly 1/4 (E||x - x/2||^2 / E||x||^2).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from gmse_cli.errors import BackendMissing, SpecError
from gmse_cli.gmse import SampleBank, backend_names, estimate_gmse, gmse_of, register_backend
from gmse_cli.gmse.backends import compressor
from gmse_cli.spec import Format, resolve_format

REPO = Path(__file__).resolve().parents[1]


def test_backend_names():
    assert backend_names()[:3] == ("numba", "numpy", "torch")


def test_a_registered_backend_compresses_the_bank():
    register_backend("halve-for-test", lambda device: lambda fmt, x: x * np.float32(0.5))
    est = gmse_of("int4", backend="halve-for-test", method="monte-carlo", rel_err=1e-2)
    assert est.gmse == pytest.approx(0.25, rel=1e-12)


def test_an_unknown_backend_is_a_spec_error():
    with pytest.raises(SpecError, match="unknown GMSE backend 'tpu'.*numba, numpy"):
        SampleBank(backend="tpu")


def test_torch_backend_matches_numba_on_the_same_bank():
    pytest.importorskip("torch")
    formats = [resolve_format(n) for n in ("int4", "nvfp4", "2:4+int4")]
    numba = estimate_gmse(formats, method="monte-carlo", rel_err=1e-2, backend="numba")
    torch = estimate_gmse(formats, method="monte-carlo", rel_err=1e-2, backend="torch")
    for a, b in zip(numba, torch, strict=True):
        assert b.samples == a.samples
        # Same samples, and on CPU the torch compressors run gmse_cli.compress's own kernels.
        assert b.gmse == pytest.approx(a.gmse, rel=1e-9)


def test_torch_backend_from_the_cli(run_cli):
    pytest.importorskip("torch")
    args = ("gmse", "int4", "mxfp4", "--monte-carlo", "--rel-err", "1e-2", "--json")
    torch, numba = run_cli(*args, "--backend", "torch"), run_cli(*args)
    assert torch.code == 0, torch.stderr
    assert [r["gmse"] for r in json.loads(torch.stdout)["results"]] == pytest.approx(
        [r["gmse"] for r in json.loads(numba.stdout)["results"]], rel=1e-9
    )


def test_cuda_device_without_cuda_is_one_clear_error(run_cli):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    with pytest.raises(BackendMissing, match="no CUDA device"):
        SampleBank(backend="torch", device="cuda")
    res = run_cli("gmse", "int4", "--backend", "torch", "--device", "cuda")
    assert res.code == 2 and "--device cuda: no CUDA device is available" in res.stderr


def test_torch_backend_without_the_extra_names_it():
    # None in sys.modules makes every `import torch` fail, as on a machine without the extra.
    script = "import sys; sys.modules['torch'] = None\nfrom gmse_cli.cli import main\nmain(['gmse', 'int4', '--backend', 'torch'])"
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: --backend torch needs the training extra (pip install 'uscl[train]'): ")
    assert res.stderr.count("\n") == 1


# --------------------------------------------------------------------------------------------
# Generated formats: every backend's compressor gives the same bits
# --------------------------------------------------------------------------------------------

ROW = 64
_QUANT_BASES = [
    "int2", "int4", "sint3", "aint4", "fint4", "e2m1", "e3m2", "e4m3", "e5m2", "e1m0", "lm2", "lm3",
    "lut[-1,0,0.5,2]", "lut[-1.5,-0.25,0.75]", "nf4", "ternary", "mxfp4", "nvfp4", "mxint8", "bf16",
    "vq1-b2", "vq2-b2", "vq4-b1",  # codebooks that ship with the package (no training)
]
_MODIFIERS = [
    "g4", "g16", "g32", "row", "tensor", "absmax", "rms", "mse", "rms1.5", "sfp16", "sbf16", "se8m0",
    "se4m3", "sint8", "sdq8", "rceil", "nearest", "floor", "even", "inf", "saturate", "bnb",
]
_SPARSE = ["2:4", "1:4", "3:8", "2:4x2", "1:2x8", "sparse30", "sparse75", "block4-50", "block16-25"]


@st.composite
def _generated_formats(draw):
    """A format from the shorthand grammar: [rotation +] [sparsity +] quantizer-modifiers
    (or sparsity alone); drawn pieces that make no valid format are discarded."""
    parts = []
    if draw(st.booleans()) and draw(st.booleans()):
        parts.append(draw(st.sampled_from(["had2", "had16", "had64"])))
    if draw(st.booleans()):
        parts.append(draw(st.sampled_from(_SPARSE)))
    if not parts or draw(st.integers(0, 3)):
        mods = draw(st.lists(st.sampled_from(_MODIFIERS), max_size=3, unique=True))
        if len(parts) and parts[-1][0] != "h" and draw(st.booleans()):
            mods.append("allstats")
        parts.append("-".join([draw(st.sampled_from(_QUANT_BASES)), *mods]))
    text = "+".join(parts)
    try:
        fmt = resolve_format(text)
        fmt.check_row_length(ROW)
    except SpecError:
        assume(False)
    return fmt


def _awkward_rows(style: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((6, ROW))
    if style == "scaled":  # rows of very different magnitudes, one all zero
        x *= 10.0 ** rng.uniform(-5, 5, (6, 1))
        x[2] = 0.0
    elif style == "ties":  # multiples of 1/8: exact ties against power-of-two scales and levels
        x = rng.integers(-16, 17, (6, ROW)) / 8.0
    elif style == "outlier":  # one huge entry per row, and subnormals
        x[np.arange(6), rng.integers(0, ROW, 6)] = 1e6
        x[5] *= 1e-40
    return np.ascontiguousarray(x, dtype=np.float32)


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(fmt=_generated_formats(), style=st.sampled_from(["gauss", "scaled", "ties", "outlier"]), seed=st.integers(0, 99))
def test_generated_formats_compress_alike_on_every_backend(fmt, style, seed):
    torch = pytest.importorskip("torch")
    from gmse_cli.training.torch_compress import TorchCompressor

    x = _awkward_rows(style, seed)
    ref = compressor("numba")(fmt, x)
    if not fmt.rotations:  # the numpy twin rotates with a dense float64 matrix: close, not equal
        np.testing.assert_array_equal(compressor("numpy")(fmt, x), ref, err_msg=fmt.display_name)
    np.testing.assert_array_equal(compressor("torch")(fmt, x), ref, err_msg=fmt.display_name)
    plain = TorchCompressor(fmt, kernels="torch")(torch.from_numpy(x)).detach().numpy()  # the GPU path
    np.testing.assert_array_equal(plain, ref, err_msg=fmt.display_name)
    train = TorchCompressor(fmt)(torch.from_numpy(x).requires_grad_()).detach().numpy()  # with autograd
    np.testing.assert_array_equal(train, ref, err_msg=fmt.display_name)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(fmt=_generated_formats(), style=st.sampled_from(["gauss", "scaled", "ties", "outlier"]), seed=st.integers(0, 99))
def test_a_format_whose_rows_are_independent_compresses_any_rows_alone(fmt, style, seed):
    # The bank takes the rows of such formats as i.i.d. units of its standard error
    # (Format.rows_independent): a row compressed alone must give the bits it gets inside
    # the whole tensor.
    x = _awkward_rows(style, seed)
    whole = compressor("numba")(fmt, x)
    if fmt.rows_independent:
        for rows in (slice(0, 2), slice(2, 3), slice(3, 6)):
            part = compressor("numba")(fmt, np.ascontiguousarray(x[rows]))
            np.testing.assert_array_equal(part, whole[rows], err_msg=fmt.display_name)


_TENSOR_PRUNING = {"stages": [{"kind": "sparsify", "pattern": "magnitude", "sparsity": 0.5, "granularity": "tensor"}]}


@pytest.mark.parametrize("spec", ["nvfp4", "nf4-dq", "int4-tensor", "sint4-rms-se4m3", "int4-g16-sint8", _TENSOR_PRUNING])
def test_formats_with_a_per_tensor_statistic_are_not_rows_independent(spec):
    # The converse, so the predicate is not vacuous: each of these compresses a row differently
    # when the other rows change.
    fmt = resolve_format(spec) if isinstance(spec, str) else Format.model_validate(spec)
    assert not fmt.rows_independent
    x = _awkward_rows("scaled", 3)
    whole = compressor("numba")(fmt, x)
    alone = compressor("numba")(fmt, np.ascontiguousarray(x[:1]))
    assert not np.array_equal(alone, whole[:1])


def test_a_rotation_with_random_signs_compresses_any_rows_alone():
    # Its signs are drawn per position in the row, not per row: rows stay independent.
    fmt = Format.model_validate({"stages": [
        {"kind": "rotate", "block": 64, "random_signs": True, "seed": 3},
        {"kind": "quantize", "grid": "int", "bits": 4, "scale": "absmax", "group": 32},
    ]})
    x = _awkward_rows("gauss", 5)
    assert fmt.rows_independent
    np.testing.assert_array_equal(compressor("numba")(fmt, np.ascontiguousarray(x[2:4])), compressor("numba")(fmt, x)[2:4])
