"""gmse_cli.compress.normal against scipy.special (the peer it replaces on the fast paths)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from gmse_cli.compress.normal import binomial_cdf, chi2_cdf, erfinv, ndtri, normal_tail


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, float), np.asarray(b, float)
    keep = b > 1e-300
    return float(np.max(np.abs(a[keep] - b[keep]) / b[keep]))


def test_normal_tail_matches_scipy_however_small():
    x = np.linspace(-37.0, 37.0, 4001)
    assert _rel(normal_tail(x), special.ndtr(-np.abs(x))) < 2e-13  # cephes loses ~z^2 eps far out
    assert list(normal_tail(np.array([-np.inf, 0.0, np.inf]))) == [0.0, 0.5, 0.0]
    assert np.isnan(normal_tail(np.array([np.nan])))[0]
    assert normal_tail(np.float64(-1.0)) == pytest.approx(special.ndtr(-1.0), rel=1e-15)  # 0-d works


@pytest.mark.parametrize("p", [1e-300, 1e-30, 1e-10, 0.01, 0.3, 0.7, 0.999])
def test_ndtri_matches_scipy(p):
    assert ndtri(p) == pytest.approx(float(special.ndtri(p)), rel=2e-15)


@pytest.mark.parametrize("y", [5e-324, 1e-300, 1e-17, 1e-9, 1e-4, 0.049, 0.5, 0.9, 1 - 1e-12, -0.3, -1e-8])
def test_erfinv_keeps_the_digits_of_small_arguments(y):
    assert erfinv(y) == pytest.approx(float(special.erfinv(y)), rel=1e-15)


def test_erfinv_rejects_the_ends():
    for y in (1.0, -1.0, 2.0):
        with pytest.raises(ValueError):
            erfinv(y)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 8, 9, 16, 33, 64, 201])
def test_chi2_cdf_and_survival_match_scipy(k):
    x = np.concatenate([[0.0], np.geomspace(1e-10, 3000.0, 2000)])
    p, q = chi2_cdf(k, x)
    assert _rel(p, special.gammainc(k / 2, x / 2)) < 2e-13
    assert _rel(q, special.gammaincc(k / 2, x / 2)) < 2e-13
    assert p[0] == 0.0 and q[0] == 1.0


def test_chi2_with_two_degrees_of_freedom_is_exponential():
    # closed form, independent of both implementations: P(chi2_2 < x) = 1 - exp(-x/2)
    x = np.array([1e-12, 0.5, 3.0, 40.0])
    p, q = chi2_cdf(2, x)
    np.testing.assert_allclose(p, -np.expm1(-x / 2), rtol=1e-14)
    np.testing.assert_allclose(q, np.exp(-x / 2), rtol=1e-14)


@pytest.mark.parametrize("n", [1, 3, 7, 31, 127])
def test_binomial_cdf_matches_scipy(n):
    p = np.linspace(0.0, 1.0, 501)
    for k in sorted({0, 1, n // 2, n - 1}):
        np.testing.assert_allclose(binomial_cdf(k, n, p, 1.0 - p), special.bdtr(k, n, p), rtol=0, atol=5e-14)
    assert np.all(binomial_cdf(n, n, p, 1 - p) == 1.0) and np.all(binomial_cdf(-1, n, p, 1 - p) == 0.0)


def test_binomial_cdf_small_case_by_hand():
    # P[Bin(3, p) <= 1] = (1 - p)^3 + 3 p (1 - p)^2
    p = np.array([0.1, 0.5, 0.9])
    np.testing.assert_allclose(binomial_cdf(1, 3, p, 1 - p), (1 - p) ** 3 + 3 * p * (1 - p) ** 2, rtol=1e-14)


def test_exact_gmse_needs_no_scipy_special(tmp_path):
    # the point of the module: catalog quadratures without the 0.12-0.17 s import. A grid's optimal
    # rms constant (fp8-e4m3's) is searched with scipy.optimize once per machine and remembered, so
    # a first process fills a cache of the test's own and the second, the one checked, reads it.
    import os
    import subprocess
    import sys

    code = (
        "import sys; from gmse_cli.gmse.exact import exact_gmse; from gmse_cli.spec import resolve_format;"
        "[exact_gmse(resolve_format(n)) for n in ('int4', 'fp8-e4m3', '2:4', '2:4x2', 'sparse-50', 'lloyd-max-4')];"
        "print(sorted(m for m in sys.modules if m.startswith('scipy')))"
    )
    env = os.environ | {"USCL_CACHE_DIR": str(tmp_path)}
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "[]", out
