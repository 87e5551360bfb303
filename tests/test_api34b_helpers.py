"""The exported lower-level helpers refuse arguments of the wrong kind with one UsclError naming
the value (README, "Limits"), as the entry points above them do.

Each bad call below raised a TypeError, AttributeError, IndexError, OverflowError or numpy's
ambiguity ValueError before; good values (numpy scalars included) give what they gave. Expected
numbers come from closed forms written here (log base 4, Student's t at 1 degree of freedom,
the normal quantile from the standard library, numpy's inverted-CDF quantile).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np
import pytest

from gmse_cli.errors import UsclError
from gmse_cli.gmse import estimate_gmse, exact_gmse, has_exact, interval95, lookup_gmse, t95
from gmse_cli.law import capacity_parts, effective_bits, interval_ends, outside_domain
from gmse_cli.rank import pareto_mask, sort_rows
from gmse_cli.spec import resolve_format

INT4 = resolve_format("int4")
ARRAY = np.array([1, 2])

BAD_CALLS = {
    "effective_bits text": (lambda: effective_bits("x"), "'x'"),
    "effective_bits None": (lambda: effective_bits(None), "None"),
    "interval_ends text draws": (lambda: interval_ends("x", 0.95), "'x'"),
    "interval_ends 0-d draws": (lambda: interval_ends(np.float64(1.0), 0.95), "float64"),
    "interval_ends text level": (lambda: interval_ends(np.ones(5), "x"), "'x'"),
    "pareto_mask lists": (lambda: pareto_mask([1, 2], [1, 2]), "list"),
    "pareto_mask None": (lambda: pareto_mask(np.ones(2), None), "None"),
    "pareto_mask lengths": (lambda: pareto_mask(np.ones(3), np.ones(2)), "(2)"),
    "t95 text": (lambda: t95("x"), "'x'"),
    "t95 array": (lambda: t95(np.ones(2)), "ndarray"),
    "interval95 text": (lambda: interval95("a", 1.0), "'a'"),
    "interval95 std_err text": (lambda: interval95(1.0, "b"), "'b'"),
    "has_exact name": (lambda: has_exact("int4"), "'int4'"),
    "has_exact row_length": (lambda: has_exact(INT4, "x"), "'x'"),
    "exact_gmse None": (lambda: exact_gmse(None), "None"),
    "lookup_gmse name": (lambda: lookup_gmse("int4", row_length=4096, rel_err=1e-3), "'int4'"),
    "lookup_gmse row_length": (lambda: lookup_gmse(INT4, row_length="x", rel_err=1e-3), "'x'"),
    "lookup_gmse rel_err": (lambda: lookup_gmse(INT4, row_length=4096, rel_err="y"), "'y'"),
    "capacity_parts None": (lambda: capacity_parts(None), "None"),
    "outside_domain activations": (lambda: outside_domain(INT4, "x"), "'x'"),
    "sort_rows reverse nan": (lambda: sort_rows([], "rho", reverse=np.float32("nan")), "nan"),
    "estimate_gmse backend array": (lambda: estimate_gmse(["int4-se8m0"], backend=ARRAY, rel_err=0.1), "[1 2]"),
    "estimate_gmse progress array": (lambda: estimate_gmse(["int4"], progress=ARRAY), "[1 2]"),
}


@pytest.mark.parametrize("name", sorted(BAD_CALLS))
def test_bad_argument_is_one_usclerror_naming_it(name: str) -> None:
    call, named = BAD_CALLS[name]
    with pytest.raises(UsclError) as info:
        call()
    assert named in str(info.value)


def test_t95_huge_dof_is_the_normal_quantile() -> None:
    """dof = 1e308 raised OverflowError (dof**4); past 1e17 the expansion is Z95 to the last bit."""
    z = NormalDist().inv_cdf(0.975)
    for dof in (1e308, 1e100, np.float64(1e80), 10**400):
        assert t95(dof) == pytest.approx(z, rel=1e-15)
        assert t95(dof) == t95(math.inf)
    low, high = interval95(1.0, 0.1, dof=1e308)
    assert (low, high) == pytest.approx((1 - 0.1 * z, 1 + 0.1 * z), rel=1e-15)


def test_good_values_and_numpy_scalars_unchanged() -> None:
    assert t95(1) == t95(np.int32(1)) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-15)
    assert effective_bits(0.25) == pytest.approx(1.0, rel=1e-15)
    assert effective_bits(np.float32(1 / 16)) == pytest.approx(2.0, rel=1e-6)
    assert effective_bits(0) == math.inf
    draws = np.random.default_rng(0).normal(size=(3, 101))
    want = np.quantile(draws, [0.025, 0.975], axis=-1, method="inverted_cdf")
    np.testing.assert_array_equal(interval_ends(draws, np.float32(0.95)), want)
    np.testing.assert_array_equal(interval_ends(np.arange(1, 101), 0.9), [5.0, 95.0])
    np.testing.assert_array_equal(
        pareto_mask(np.array([1.0, 2.0, 3.0]), np.array([0.5, 0.4, 0.9])), [True, False, True])
    assert has_exact(INT4, np.int64(4096)) and has_exact(INT4)
    assert sort_rows([], "rho", reverse=np.bool_(True)) == []
    assert outside_domain(INT4) is None and outside_domain(INT4, None) is None
    assert capacity_parts(INT4)[0].family.value == "quantization"
    est = estimate_gmse(["int4"], progress=np.bool_(False), backend="numba")[0]
    assert est.gmse == exact_gmse(INT4)
