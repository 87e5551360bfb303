"""The Python API refuses bad arguments with one UsclError naming the value (README, "Limits":
"the Python API checks the same ones and raises one `UsclError` naming the value, never a numpy
traceback"), found by generated calls on the exported entry points.

Each case below raised a TypeError, ValueError, AttributeError or OverflowError from numpy or
Python before (the message it gave is in the test's docstring); good numpy scalars keep working
and give what the Python numbers give. Expected capacities come from the README's closed form
rho = L tanh(F log_{1/4} GMSE)^C, written here with ``math``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmse_cli
from gmse_cli.errors import LawError, SpecError, UsclError
from gmse_cli.law import sample_law
from gmse_cli.rank import compare, predict, rank
from gmse_cli.spec import as_format_list, resolve_formats

BOUNDED = settings(max_examples=15, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
LAW = gmse_cli.load_law()
STAGES = [("quantization", 0.0115, 0.0)]
HUGE = 10**400  # a Python int no float holds

# what no number, seed or law is: text, None, containers, arrays, bytes, objects
_NOT_A_NUMBER = st.one_of(
    st.none(), st.text(max_size=300), st.binary(max_size=8), st.lists(st.floats(0.1, 0.9), max_size=2),
    st.just(np.array([0.5, 0.6])), st.just(np.array([])), st.just({}), st.just(object()), st.just(1j),
)


def _names(message: str, value: object) -> bool:
    """The message names the value: its repr, its text, or (for objects) its type."""
    return any(s in message for s in (repr(value)[:40], str(value)[:40], type(value).__name__))


def _rho_int4(gmse: float = 0.0115) -> float:
    curve = LAW.families["quantization"]
    bits = -math.log(gmse) / math.log(4.0)
    return curve.L.value * math.tanh(curve.F.value * bits) ** curve.C.value


@BOUNDED
@given(bad=_NOT_A_NUMBER)
def test_a_level_that_is_no_number_is_named(bad):
    """Before: rank(level=None) and capacity_interval(level='x') raised TypeError ("'<' not
    supported between 'float' and 'str'"), level=array([.5, .6]) numpy's "truth value ... ambiguous"."""
    for call in (lambda: rank(["int4"], level=bad), lambda: predict("int4", level=bad),
                 lambda: gmse_cli.capacity_interval(LAW, STAGES, level=bad, draws=50),
                 lambda: gmse_cli.loss_interval(LAW, 1e8, 1e9, STAGES, level=bad, draws=50)):
        with pytest.raises(LawError, match="^level = ") as err:
            call()
        assert _names(str(err.value), bad)


@BOUNDED
@given(bad=st.one_of(_NOT_A_NUMBER, st.floats(), st.integers(max_value=-1), st.just(2**63), st.just(True)))
def test_an_rng_that_is_no_seed_is_named(bad):
    """Before: rng=-1 gave numpy's "expected non-negative integer", rng=0.5 or 'x' TypeError
    ("SeedSequence expects int ..."): the seed limits of --seed (0 .. 2**63-1) apply."""
    for call in (lambda: gmse_cli.capacity_interval(LAW, STAGES, draws=50, rng=bad),
                 lambda: gmse_cli.loss_interval(LAW, 1e8, 1e9, STAGES, draws=50, rng=bad),
                 lambda: sample_law(LAW, draws=50, rng=bad)):
        with pytest.raises(SpecError, match="^rng = ") as err:
            call()
        assert _names(str(err.value), bad)


@BOUNDED
@given(bad=st.one_of(_NOT_A_NUMBER, st.floats(), st.integers(), st.booleans(), st.just("paper-llama-c4")))
def test_a_law_that_is_no_law_is_named(bad):
    """Before: AttributeError ("'str' object has no attribute 'check_covers'" / "'rho'" / "'draws'")."""
    for call in (lambda: gmse_cli.factorized_capacity(bad, [("quantization", 0.0115)]),
                 lambda: gmse_cli.capacity_interval(bad, STAGES, draws=50),
                 lambda: gmse_cli.loss_interval(bad, 1e8, 1e9, STAGES, draws=50),
                 lambda: sample_law(bad, draws=50)):
        with pytest.raises(LawError, match="must be a Law") as err:
            call()
        assert type(bad).__name__ in str(err.value)
    with pytest.raises(LawError, match=type(bad).__name__):
        gmse_cli.law.law_to_toml(bad)  # before: AttributeError ('... has no attribute model_dump')


@BOUNDED
@given(bad=st.one_of(st.none(), st.floats(), st.integers(), st.text(min_size=1, max_size=20),
                     st.just(np.array(1.0)), st.lists(st.floats(), min_size=1, max_size=2),
                     st.just([("quantization",)]), st.just([("quantization", 0.01, 0.0, 1.0)])))
def test_stages_that_are_no_stage_tuples_are_named(bad):
    """Before: TypeError ("'float' object is not iterable", "cannot unpack non-iterable float")
    or ValueError ("not enough values to unpack") from the tuple unpacking."""
    for call in (lambda: gmse_cli.capacity_interval(LAW, bad, draws=50),
                 lambda: gmse_cli.loss_interval(LAW, 1e8, 1e9, bad, draws=50)):
        with pytest.raises(LawError, match="^stages must be a list of") as err:
            call()
        shown = bad[0] if isinstance(bad, list) and bad else bad
        assert type(shown).__name__ in str(err.value)
    with pytest.raises(LawError, match="^stages must be a list of"):
        gmse_cli.factorized_capacity(LAW, bad)


def test_stages_given_as_a_generator_are_all_counted():
    """Before: capacity_interval(law, <generator>) gave value 1.0 (the generator was spent on the
    coverage check) and loss_interval the dense model's loss; the value is int4's rho."""
    rho = _rho_int4()
    assert gmse_cli.capacity_interval(LAW, (s for s in STAGES), draws=50).value == pytest.approx(rho, rel=1e-12)
    loss = gmse_cli.loss_interval(LAW, 1e8, 1e9, (s for s in STAGES), draws=50).value
    expected = LAW.A.value * (1e8 * rho) ** -LAW.alpha.value + LAW.B.value * 1e9 ** -LAW.beta.value + LAW.E.value
    assert loss == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("where", ["params", "tokens"])
def test_a_count_beyond_any_float_is_named(where):
    """Before: OverflowError ("int too large to convert to float") from math.isfinite."""
    for call in (lambda: rank(["int4"], **{where: HUGE}), lambda: predict("int4", **{where: HUGE}),
                 lambda: compare(["int4", "fp4"], **{"params": HUGE} if where == "params" else {"tokens": HUGE}),
                 lambda: gmse_cli.loss_interval(LAW, *((HUGE, 1e9) if where == "params" else (1e8, HUGE)), STAGES)):
        with pytest.raises(LawError, match=f"^{where} = 1000"):
            call()


@pytest.mark.parametrize("bad", [HUGE, np.array(0.0115)], ids=["10**400", "0-d array"])
def test_scheme_capacity_names_a_gmse_it_cannot_read(bad):
    """Before: OverflowError (10**400) and TypeError ("iteration over a 0-d array")."""
    with pytest.raises(LawError, match="1000|array"):
        gmse_cli.scheme_capacity("int4", LAW, bad)


@BOUNDED
@given(bad=st.one_of(_NOT_A_NUMBER, st.booleans(), st.just(HUGE)))
def test_a_rel_err_that_is_no_number_is_named(bad):
    """Before: gmse_of(rel_err=None) raised TypeError ("'>' not supported between 'NoneType' and
    'int'"), an array numpy's "truth value ... ambiguous", 10**400 OverflowError."""
    for entry in (gmse_cli.gmse_of, gmse_cli.stage_gmse, gmse_cli.estimate_gmse):
        with pytest.raises(SpecError, match="^rel_err=") as err:
            entry("int4", rel_err=bad)
        assert _names(str(err.value), bad)


@pytest.mark.parametrize("bad", [None, True, 3, 2.5, object()], ids=lambda v: type(v).__name__ if type(v) is object else repr(v))
def test_what_is_no_format_nor_a_list_of_them_is_named(bad):
    """Before: TypeError ("'NoneType' object is not iterable", "'bool' object is not iterable")."""
    for call in (lambda: rank(bad if bad is not None else [None]), lambda: compare(bad), lambda: gmse_cli.estimate_gmse(bad),
                 lambda: resolve_formats(bad), lambda: as_format_list(bad)):
        with pytest.raises(SpecError, match=type(bad).__name__):
            call()


def test_a_bank_method_or_cache_of_the_wrong_kind_is_named():
    """Before: bank='x' gave AttributeError ("'str' has no attribute 'estimate'"), an array as
    method or cache numpy's "truth value ... ambiguous"."""
    with pytest.raises(SpecError, match="SampleBank.*str"):
        gmse_cli.estimate_gmse(["int4"], bank="x")
    for keyword in ("method", "cache"):
        with pytest.raises(SpecError, match=f"unknown {keyword}"):
            gmse_cli.estimate_gmse(["int4"], **{keyword: np.array(["auto", "off"])})


def test_numpy_scalars_are_the_numbers_they_hold():
    """Documented floats and ints take numpy's scalars: the same answers as Python's numbers."""
    kwargs = {"params": 2e8, "tokens": 2e10, "seed": 3, "draws": 300, "level": 0.9}
    as_numpy = {"params": np.float64(2e8), "tokens": np.int64(20_000_000_000), "seed": np.int64(3),
                "draws": np.int64(300), "level": np.float64(0.9)}
    assert rank(["int4", "nf4"], **as_numpy) == rank(["int4", "nf4"], **kwargs)
    a = gmse_cli.capacity_interval(LAW, STAGES, draws=np.int64(300), rng=np.int64(7), level=np.float32(0.5))
    b = gmse_cli.capacity_interval(LAW, STAGES, draws=300, rng=7, level=float(np.float32(0.5)))
    assert a == b and a.value == pytest.approx(_rho_int4(), rel=1e-12)
    assert gmse_cli.scheme_capacity("int4", LAW, np.float32(0.0115)) == pytest.approx(
        _rho_int4(float(np.float32(0.0115))), rel=1e-12)
    assert resolve_formats("int4") == [gmse_cli.resolve_format("int4")]  # one name, not its letters


def test_every_refusal_here_is_a_usclerror():
    assert issubclass(LawError, UsclError) and issubclass(SpecError, UsclError)


@pytest.mark.parametrize(("args", "message"), [
    ((10**400, 1, "ieee"), r"fp_max: e100000000000\.\.\.m1: need 1 <= exponent_bits <= 8"),
    ((9, 1, "ieee"), r"fp_max: e9m1: need"),
    ((2.0, 1, "finite"), r"fp_max: e2\.0m1: need"),
    ((2, 1, "x"), r"fp_max: fp_style 'x' is none of ieee, fn, finite"),
])
def test_fp_max_refuses_widths_no_float32_format_has(args, message):
    # fp_max(10**400, ...) computed 2^(2^10^400): about 20 GB before it was killed.
    from gmse_cli.spec import fp_max

    with pytest.raises(SpecError, match=message):
        fp_max(*args)
    assert fp_max(2, 1, "finite") == 6.0 and fp_max(4, 3, "fn") == 448.0 and fp_max(5, 2, "ieee") == 57344.0
