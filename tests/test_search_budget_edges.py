"""A budget a hair below a format's bits leaves that format out (found by an independent review).

The pool admitted every candidate within 1e-12 of the budget, so `uscl search --bits
1.0019531249999` reported `1:4+lm2-mse-row-se8m0` at 1.001953125 bits, over its budget. The
format's own cost (the one reported) now decides, exactly; a budget typed at that cost keeps it.
A budget below the whole space was named rounded (`--bits 0.128906249` read "--bits 0.128906")
beside the cheapest format's rounded cost ("--bits 0.1289 is below every format ...; the cheapest
is vq8-b0.125-row-sbf16 at 0.1289"): both are now spelled in full.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gmse_cli.search.space import SearchSpace, build_pool

# Costs from the README's bit rules: element bits (times the density) + scale bits / group + mask.
LM4_G32_E4M3 = 4 + 8 / 32  # lm4-mse-g32-se4m3
ONE_FOUR_LM2_ROW_E8M0 = math.log2(4) / 4 + 0.25 * 2 + 8 / 4096  # 1:4+lm2-rms-row-se8m0


def _names_and_bits(budget: float) -> dict[str, float]:
    pool = build_pool(budget, SearchSpace(), [4096], [1.0])
    out = {c.name: c.bits_per_param for c in pool.singles}
    near = np.nonzero(pool.pair_bits > budget - 1e-3)[0]  # the pairs that could sit at the budget
    out.update({(c := pool.pair(int(i))).name: c.bits_per_param for i in near})
    return out


@pytest.mark.parametrize("exact, name", [(LM4_G32_E4M3, "lm4-mse-g32-se4m3"),
                                         (ONE_FOUR_LM2_ROW_E8M0, "1:4+lm2-rms-row-se8m0")])
def test_a_budget_just_below_a_format_leaves_it_out(exact, name):
    at = _names_and_bits(exact)
    assert at[name] == exact
    for budget in (exact - 1e-13, math.nextafter(exact, 0.0)):
        below = _names_and_bits(budget)
        assert name not in below
        assert max(below.values()) <= budget


@pytest.mark.parametrize("typed", ["0.128906249", "0.1289"])
def test_a_budget_below_the_space_is_named_as_typed(run_cli, typed):
    # the cheapest format: 1 bit per 8-dim codeword + a bf16 scale per 4096-entry row
    cheapest = 1 / 8 + 16 / 4096
    res = run_cli("search", "--bits", typed)
    assert res.code == 2 and len(res.stderr.strip().splitlines()) == 1
    assert f"--bits {typed} is below every format" in res.stderr
    assert f"vq8-b0.125-row-sbf16 at {cheapest!r}" in res.stderr


def test_a_tensor_wide_scale_is_measured_on_the_engines_tensors():
    """NVFP4-style formats (e4m3 group scales under one fp32 scale from the tensor's largest group)
    are measured by the search as the GMSE engine defines them: on tensors of
    max(1, 131072 // row length) rows, not on every sampled row at once. The search compressed
    all rows together and reported int6-absmax-g32-se4m3 at 0.000532 +- 1.3e-6 against the
    engine's 0.000537, cached under the engine's key."""
    import numpy as np

    from gmse_cli.compress import compress
    from gmse_cli.gmse import SampleBank
    from gmse_cli.search.evaluate import GaussianEvaluator
    from gmse_cli.spec import resolve_format

    fmt = resolve_format("int6-absmax-g32-se4m3")
    assert not fmt.rows_independent
    evaluator = GaussianEvaluator(seed=3, rel_err=0.5, row_length=4096, level_rows=(4, 16, 64), max_rows=1024,
                                  cache="off")
    value, psi = evaluator.measure(fmt, 2)
    bank = SampleBank(seed=3, row_length=4096)
    per = 131072 // 4096
    x = np.concatenate([bank.batch(i)[0] for i in range(2)]).astype(np.float64)
    assert bank.rows_per_batch == per and len(psi) == 64
    q = np.concatenate([compress(fmt, x[i:i + per].astype(np.float32)) for i in (0, per)]).astype(np.float64)
    assert value == pytest.approx(((x - q) ** 2).sum() / (x ** 2).sum(), rel=1e-9)
    # its final value is measured on the engine's minimum of 32 tensors (2 gave standard errors
    # from one degree of freedom: tests/test_expert_search_tensor_units.py), and its standard
    # error takes the tensors as units: the ratio estimator's delta method over tensor totals,
    # written out
    g, se = evaluator.final(fmt, (value, psi))
    t = 32
    x = np.concatenate([bank.batch(i)[0] for i in range(t)]).astype(np.float64)
    q = np.concatenate([compress(fmt, x[i:i + per].astype(np.float32)) for i in range(0, t * per, per)])
    q = q.astype(np.float64)
    e = ((x - q) ** 2).reshape(t, per, -1).sum(axis=(1, 2))
    n = (x ** 2).reshape(t, per, -1).sum(axis=(1, 2))
    assert g == pytest.approx(e.sum() / n.sum(), rel=1e-9)
    assert se == pytest.approx(np.sqrt((((e - g * n) / n.sum()) ** 2).sum() * t / (t - 1)), rel=1e-6)


def test_a_scale_rule_the_search_does_not_enumerate_is_refused():
    # absmean (and none) have no name in the enumeration: such a space gave no scalar candidate silently
    import pydantic

    from gmse_cli.spec import ScaleRule

    with pytest.raises(pydantic.ValidationError, match="absmean is not searched"):
        SearchSpace(scale_rules=(ScaleRule.ABSMEAN,))
    assert SearchSpace(scale_rules=("rms", "mse")).scale_rules == (ScaleRule.RMS, ScaleRule.MSE)
