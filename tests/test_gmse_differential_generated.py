"""uscl against an independent implementation of its format language (tests/gmse_independent.py,
written from the README and the spec docstrings, importing nothing from gmse_cli) on formats
generated across the shorthand grammar: int (midrise, signed, asymmetric, full), ExMy, lut and
Lloyd-Max grids; groups, rows and tensors; absmax, rms, rmsC, absmean[C] and mse rules; fp32, bf16, fp16,
e8m0 (each rounding), e4m3, int8 and dq8 scales; magnitude, N:M, N:MxK and block pruning with
kept or all statistics; Hadamard rotations; rows of 256 to 8192.

Three checks: bits per parameter against a hand count; the compressors element by element on
one Gaussian tensor; and the GMSE, uscl's estimate against an independent Monte Carlo, within
5.5 joint standard errors (row-unit formats only, whose standard errors rest on hundreds of
rows: a false failure has probability ~4e-8 per format). `python benchmarks/gmse_differential.py
N SEED` runs the GMSE check on many more formats.
"""

from __future__ import annotations

import dataclasses
import math
import re

import gmse_independent as gi
import numpy as np
import pytest

from gmse_cli.compress import compress
from gmse_cli.compress.grid_mse import optimal_rms_constant
from gmse_cli.errors import UsclError
from gmse_cli.gmse import gmse_of
from gmse_cli.spec import Quantize, resolve_format


def _generated(n: int, seed: int, rows=gi.ROW_LENGTHS, keep=lambda spec: True,
               absmean: float = 0.0) -> list[tuple[str, int]]:
    """n generated (format, row length) pairs that uscl accepts, of those ``keep`` lets through
    (``absmean``: the generator's weight of absmean scale rules)."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, int]] = []
    while len(out) < n:
        spec, row = gi.random_spec(rng, absmean), int(rng.choice(rows))
        if not keep(spec):
            continue
        try:
            fmt = resolve_format(spec)
            for st in fmt.stages:
                st.check_row_length(row)
        except UsclError:
            continue
        out.append((spec, row))
    return out


def _has_absmean(spec: str) -> bool:
    return "absmean" in spec


BITS_CASES = _generated(400, 20261206) + _generated(100, 20261207, keep=_has_absmean, absmean=1.0)
COMPRESSOR_CASES = _generated(120, 7)
ABSMEAN_CASES = _generated(40, 8, rows=[256, 1024, 4096], keep=_has_absmean, absmean=1.0)


def test_bits_per_param_match_a_hand_count():
    wrong = [(s, row, resolve_format(s).bits_per_param(row), gi.bits_per_param(s, row))
             for s, row in BITS_CASES
             if abs(resolve_format(s).bits_per_param(row) - gi.bits_per_param(s, row)) > 1e-12 * gi.bits_per_param(s, row)]
    assert not wrong, wrong[:5]


def _with_uscl_constants(spec: str) -> gi.Spec:
    """The independent spec, with uscl's optimal rms constant where the spec leaves it out: FP
    grids have one local minimum per binade, nearly equal, and either side may pick another
    (their MSEs are compared in :func:`test_optimal_rms_constants_are_optimal`)."""
    ours = gi.parse(spec)
    fmt = resolve_format(spec)
    stages = []
    for mine, theirs in zip(ours.stages, fmt.stages, strict=True):
        if isinstance(mine, gi.Q) and mine.rule == "rms" and mine.const is None:
            mine = dataclasses.replace(mine, const=optimal_rms_constant(theirs))
        stages.append(mine)
    return gi.Spec(stages)


@pytest.mark.parametrize("chunk", range(4))
def test_compressors_agree_element_by_element(chunk):
    rng = np.random.default_rng(100 + chunk)
    differing = []
    for spec, row in COMPRESSOR_CASES[chunk::4] + ABSMEAN_CASES[chunk::4]:
        x = rng.standard_normal((4, row), dtype=np.float32)
        ours = gi.compress(_with_uscl_constants(spec), x.astype(np.float64)[None])[0]
        theirs = np.asarray(compress(spec, x), dtype=np.float64)
        far = np.abs(ours - theirs) > 1e-5 * float(np.max(np.abs(x)))
        # a scale one float32 ulp apart may flip a value lying on a rounding boundary
        if np.sum(far) > 2:
            differing.append((spec, row, int(np.sum(far))))
    assert not differing, differing


def test_optimal_rms_constants_are_optimal():
    # uscl's constant is no worse than the independent search's (closed-form partial moments)
    specs = ["e2m0", "e2m1", "e2m3", "e3m0", "e3m2", "e4m1", "e4m3", "e5m2", "lm2", "lm3"]
    rng = np.random.default_rng(5)
    for _ in range(5):
        v = np.sort(rng.choice(np.arange(-40, 41), int(rng.integers(3, 9)), replace=False)) * 0.25
        specs.append("lut[" + ",".join(f"{t:g}" for t in v) + "]")
    for spec in specs:
        (stage,) = resolve_format(spec).stages
        assert isinstance(stage, Quantize)
        levels = gi.native_levels(gi.parse(spec).stages[0])
        theirs = gi.grid_mse(levels, optimal_rms_constant(stage))
        ours = gi.grid_mse(levels, gi.optimal_constant(tuple(levels)))
        assert theirs <= ours * (1 + 1e-9), (spec, theirs, ours)


def _row_unit_cases() -> list[tuple[str, int]]:
    """Generated formats without a per-tensor statistic and without the mse rule (slow in
    numpy), on rows of at most 4096."""
    def keep(spec: str) -> bool:
        return "-mse" not in spec and not gi.needs_tensor_units(gi.parse(spec))

    return (_generated(10, 41, rows=[256, 1024, 4096], keep=keep)
            + _generated(5, 42, rows=[256, 1024, 4096], keep=lambda s: keep(s) and _has_absmean(s), absmean=1.0))


GMSE_CASES = _row_unit_cases()
Z_BOUND = 5.5  # a false failure ~4e-8 per format (normal tails; hundreds of rows on each side)


@pytest.mark.parametrize(("spec", "row"), GMSE_CASES)
def test_gmse_agrees_with_an_independent_monte_carlo(spec, row):
    est = gmse_of(spec, row_length=row, rel_err=3e-3, seed=17)
    ours, se = gi.monte_carlo(spec, row, 1 << 19, seed=23)
    joint = math.hypot(se, est.std_err)
    assert joint > 0 or ours == est.gmse
    # (plus rounding: a grid so coarse that everything rounds to zero has GMSE 1 +- 1e-16)
    assert abs(ours - est.gmse) <= Z_BOUND * joint + 1e-12, (spec, row, est.gmse, est.std_err, ours, se)


@pytest.mark.parametrize("name", ["e5m2-g128", "e5m1-g128"])
def test_tied_optimal_constants_resolve_to_the_largest(name):
    """Grids of many binades are nearly scale-free: the Gaussian MSE has minima a factor 2 apart
    that tie to rounding. uscl takes the largest in its search range (the top level at most 20
    sigma), whatever the rounding noise: the one that clips real weights' outliers least."""
    (stage,) = [s for s in resolve_format(name).stages if isinstance(s, Quantize)]
    c = optimal_rms_constant(stage)
    e, m = (5, 2) if "e5m2" in name else (5, 1)
    levels = gi.fp_grid(e, m, gi.default_style(e, m))
    here, half = gi.grid_mse(levels, c), gi.grid_mse(levels, c / 2)
    assert half == pytest.approx(here, rel=1e-9)  # a smaller constant ties ...
    assert 10 < c * levels.max() <= 20  # ... and doubling c would put the top level past 20 sigma


def _absmean_legal(q: gi.Q) -> bool:
    """The README's rule for absmean, written out: a centred scale (no asymmetric int grid),
    no e8m0 rounding defined from a group's amax (floor, ceil, even), no dq8 double
    quantization (which needs absmax)."""
    return (not (q.grid == "int" and q.style == "asym") and q.rounding not in ("floor", "ceil", "even")
            and q.sfmt != "dq8")


def _absmean_specs(n: int, seed: int) -> list[tuple[str, bool]]:
    """Generated absmean formats whose absmax twin (absmean's token read as absmax) is valid,
    with whether absmean itself is legal there."""
    rng = np.random.default_rng(seed)
    out: list[tuple[str, bool]] = []
    while len(out) < n:
        spec = gi.random_spec(rng, absmean=1.0)
        if rng.random() < 0.4:  # besides, asymmetric grids, amax roundings and dq8 on purpose
            spec = (f"{rng.choice(['sint4', 'fint3', 'int2', 'aint4', 'e2m1', 'e4m3', 'nf4', 'lm3'])}"
                    f"-{rng.choice(['g32', 'g64', 'row'])}-absmean{rng.choice(['', '0.8'])}"
                    f"{rng.choice(['', '-sbf16', '-se8m0', '-se8m0-nearest', '-se8m0-rceil', '-se8m0-floor', '-se8m0-ceil', '-se8m0-even', '-sdq8'])}")
        if "absmean" not in spec:
            continue
        twin = re.sub(r"absmean(\d+(\.\d+)?)?", "absmax", spec)
        try:
            resolve_format(twin)
        except UsclError:
            continue
        q = next(st for st in gi.parse(spec).stages if isinstance(st, gi.Q))
        out.append((spec, _absmean_legal(q)))
    return out


def test_absmean_is_accepted_exactly_where_it_is_legal():
    wrong = []
    for spec, legal in _absmean_specs(300, 11):
        try:
            resolve_format(spec)
            accepted = True
        except UsclError:
            accepted = False
        if accepted != legal:
            wrong.append((spec, legal))
    assert not wrong, wrong[:5]


@pytest.mark.parametrize("data", ["heavy", "zeros"])
def test_absmean_compressors_agree_on_hard_inputs(data):
    """absmean formats element by element on heavy-tailed rows (Student t, 1.2 degrees of
    freedom) and on rows half zero with an all-zero row (empty and all-zero groups, ties
    among pruned blocks)."""
    rng = np.random.default_rng(31 if data == "heavy" else 32)
    differing = []
    for spec, legal in _absmean_specs(60, 12):
        row = int(rng.choice([256, 512]))
        if not legal or any(row % (g if isinstance(g := getattr(st, "group", 1), int) else 1)
                            for st in gi.parse(spec).stages):
            continue
        try:
            for st in resolve_format(spec).stages:
                st.check_row_length(row)
        except UsclError:
            continue
        if data == "heavy":
            x = rng.standard_t(1.2, (4, row)).astype(np.float32)
        else:
            x = rng.standard_normal((4, row)).astype(np.float32)
            x[:, : row // 2] = 0.0
            x[1] = 0.0
        ours = gi.compress(_with_uscl_constants(spec), x.astype(np.float64)[None])[0]
        theirs = np.asarray(compress(spec, x), dtype=np.float64)
        if np.sum(np.abs(ours - theirs) > 1e-5 * float(np.max(np.abs(x)))) > 2:
            differing.append((spec, row))
    assert not differing, differing
