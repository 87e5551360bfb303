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

from gmse_cli.errors import BackendMissing, SpecError
from gmse_cli.gmse import SampleBank, backend_names, estimate_gmse, gmse_of, register_backend
from gmse_cli.spec import resolve_format

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
