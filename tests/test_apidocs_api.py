"""The README-advertised Python API's docstrings say what each function raises, and what they
claim is what the function does.

Before: no docstring of ``gmse_of``, ``estimate_gmse``, ``stage_gmse``, ``predict``,
``compare``, ``resolve_format``, ``load_law``, ``save_law``, ``scheme_capacity``,
``load_runs``, ``gmse_cli.fit.fit`` or ``gmse_cli.compress.compress`` named the error it
raises on bad input; ``estimate_gmse`` was annotated ``Sequence`` although it takes one
format alone (README, Python API); ``predict`` documented none of its parameters (units of N
and D, the default D) and ``save_law`` only said "Write atomically".

Numbers are derived here: int8's GMSE by quadrature of its 256-level grid over [-s, s]
(scipy), the loss terms and the default D from the README's formula.
"""

from __future__ import annotations

import inspect
import math
import re

import numpy as np
import pytest

import gmse_cli
from gmse_cli.compress import compress
from gmse_cli.errors import UsclError
from gmse_cli.fit import fit
from gmse_cli.rank import rank


def _raised(call) -> type[BaseException]:
    with pytest.raises(UsclError) as info:
        call()
    return type(info.value)


# (callable, a call with bad input): the error raised must be named in the docstring's Raises
BAD_CALLS = [
    (gmse_cli.resolve_format, lambda: gmse_cli.resolve_format("int99x")),
    (gmse_cli.gmse_of, lambda: gmse_cli.gmse_of("int4", rel_err=-1)),
    (gmse_cli.estimate_gmse, lambda: gmse_cli.estimate_gmse("int4-g128", row_length=100)),
    (gmse_cli.stage_gmse, lambda: gmse_cli.stage_gmse("int99x")),
    (gmse_cli.predict, lambda: gmse_cli.predict("int4", params=-1)),
    (gmse_cli.compare, lambda: gmse_cli.compare(["int4", "int99x"])),
    (rank, lambda: rank(["int4"], tokens=0)),
    (gmse_cli.load_law, lambda: gmse_cli.load_law("no-such-law")),
    (gmse_cli.save_law, lambda: gmse_cli.save_law("not a law", "x.toml")),
    (gmse_cli.capacity, lambda: gmse_cli.capacity(-1.0, 1.0, 0.4, 1.4)),
    (gmse_cli.predicted_loss, lambda: gmse_cli.predicted_loss(-1, 1e9, A=1, alpha=0.3, B=1, beta=0.3, E=1)),
    (gmse_cli.scheme_capacity, lambda: gmse_cli.scheme_capacity("int4", gmse_cli.load_law(), [float("nan")])),
    (gmse_cli.load_runs, lambda: gmse_cli.load_runs("no-such-runs.jsonl")),
    (fit, lambda: fit(["x"])),
    (compress, lambda: compress("int4", np.full((1, 128), np.nan))),
    (compress, lambda: compress("int4-g128", np.ones((2, 100)))),
]


# a docstring may say its errors are another function's, naming it
DELEGATES = {gmse_cli.gmse_of: gmse_cli.estimate_gmse, gmse_cli.stage_gmse: gmse_cli.estimate_gmse,
             gmse_cli.compare: rank}


@pytest.mark.parametrize("function, call", BAD_CALLS, ids=lambda v: getattr(v, "__name__", ""))
def test_docstring_names_the_error_bad_input_raises(function, call):
    error = _raised(call)
    doc = inspect.getdoc(function) or ""
    if function in DELEGATES:
        delegate = DELEGATES[function]
        assert re.search(rf"(errors as in|Raises as) :func:`~?[\w.]*{delegate.__name__}`", doc), doc
        doc = inspect.getdoc(delegate) or ""
    assert "Raises" in doc, f"{function.__name__}: no Raises"
    assert error.__name__ in doc, f"{function.__name__} raises {error.__name__}, which its docstring does not name"


def test_estimate_gmse_takes_one_format_as_its_docstring_and_annotation_say():
    one = gmse_cli.estimate_gmse("int4")
    assert [e.name for e in one] == ["int4"]
    annotation = str(inspect.signature(gmse_cli.estimate_gmse).parameters["formats"].annotation)
    assert annotation.startswith("Format | str |"), annotation


def test_int8_gmse_is_the_quadrature_of_its_grid_relative_to_unit_variance():
    """gmse_of's GMSE, the error relative to unit variance: int8 is 256 levels evenly over
    [-s, s], s = 3.8849386788 * RMS (its catalog description); the infinite-row value is the
    integral of (x - q(x))^2 against the standard normal density, cell by cell."""
    stats = pytest.importorskip("scipy.stats")
    integrate = pytest.importorskip("scipy.integrate")
    s = 3.8849386788
    levels = np.linspace(-s, s, 256)
    edges = np.concatenate([[-np.inf], (levels[:-1] + levels[1:]) / 2, [np.inf]])
    want = sum(integrate.quad(lambda x, q=q: (x - q) ** 2 * stats.norm.pdf(x), lo, hi, limit=200)[0]
               for q, lo, hi in zip(levels, edges[:-1], edges[1:], strict=True))
    got = gmse_cli.gmse_of("int8")
    assert got.method == "exact" and got.gmse == pytest.approx(want, rel=1e-8)
    assert got.bits_per_param == 8 + 32 / 4096  # an fp32 scale per 4096-entry row


def test_compress_returns_float32_of_the_input_shape():
    x = np.random.default_rng(0).standard_normal((3, 256))
    for backend in ("numba", "numpy"):
        y = compress("int4", x, backend=backend)
        assert y.dtype == np.float32 and y.shape == x.shape


def test_predict_docstring_claims():
    law = gmse_cli.load_law()
    p = gmse_cli.predict("int4", params=1e9)
    assert p.tokens == 100 * 1e9 and p.params == 1e9
    assert p.predicted_loss == pytest.approx(p.params_term + p.data_term + p.irreducible, rel=1e-12)
    assert p.data_term == pytest.approx(law.B.value * 1e11 ** -law.beta.value, rel=1e-12)
    c = gmse_cli.compare(["fp4", "int4", "nvfp4"])
    assert len(c.p_most_capacity) == len(c.p_least_memory) == len(c.rows) == 3
    assert all(0 <= v <= 1 for v in (*c.p_most_capacity, *c.p_least_memory))


def test_save_law_writes_what_load_law_reads_back(tmp_path):
    law = gmse_cli.load_law()
    gmse_cli.save_law(law, tmp_path / "law.toml")
    again = gmse_cli.load_law(tmp_path / "law.toml")
    assert again.A.value == law.A.value and again.alpha.value == law.alpha.value
    assert (again.draws is None) == (law.draws is None)
    assert math.isclose(gmse_cli.scheme_capacity("int4", again, [0.0115]),
                        gmse_cli.scheme_capacity("int4", law, [0.0115]))
