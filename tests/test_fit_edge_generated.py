"""Fits on generated run sets at the edges of what a law can identify.

The runs come from a known law written in this file (the tanh capacity curve, the Chinchilla
form); what is checked is what the fit says it cannot identify, never a number copied from it.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from gmse_cli import fit as F
from gmse_cli.fit.heldout import LOSSLESS_NOTE
from gmse_cli.gmse import gmse_of
from gmse_cli.law import load_law
from gmse_cli.runs import Run
from gmse_cli.spec import Family

TRUTH = {"A": 400.0, "alpha": 0.3, "B": 2000.0, "beta": 0.35, "E": 1.7}
SMALL_GRID = np.array([(a, al, b, be, e) for al, be, e, a, b in
                       itertools.product([0.2, 0.5], [0.2, 0.5], [0.0, 1.0], [4.0, 8.0], [4.0, 8.0])])


def _capacity(scheme: str, L: float, F_: float, C: float) -> float:
    g = gmse_of(scheme).gmse
    bits = math.inf if g == 0 else -math.log(g) / math.log(4.0)
    return L * math.tanh(F_ * bits) ** C


def _runs(rho: dict[str, float], sizes=(1e7, 4e7, 1.6e8), tpp=(10.0, 40.0, 160.0)) -> list[Run]:
    def loss(N: float, D: float, r: float) -> float:
        return TRUTH["A"] * (N * r) ** -TRUTH["alpha"] + TRUTH["B"] * D ** -TRUTH["beta"] + TRUTH["E"]
    return [Run(scheme=s, weights=s, N=N, D=N * t, loss=loss(N, N * t, r)) for s, r in rho.items() for N in sizes for t in tpp]


def test_a_held_out_scheme_with_only_gmse_0_stages_is_flagged():
    """sparse-0 prunes nothing (GMSE 0): under the law its capacity is the sparsity L whatever F and C,
    so a refit without its runs has no GMSE to predict it from. Its held-out entries (scheme and group)
    and the fit's notes say so; no scheme with a lossy stage of GMSE > 0 is flagged."""
    assert gmse_of("sparse-0").gmse == 0.0
    quant = {s: _capacity(s, 1.0, 0.41, 1.39) for s in ("bf16", "int4", "int2")}
    sparse = {s: _capacity(s, 1.0, 0.3, 0.5) for s in ("sparse-0", "sparse-50", "sparse-75")}
    res = F.fit(_runs(quant | sparse), model="unified", curve="tanh", starts=SMALL_GRID, profile=False,
                base_law=load_law(None))
    for report in (res.heldout_schemes, res.heldout_groups):
        flagged = {s for e in report.entries if LOSSLESS_NOTE in e.note for s in e.schemes}
        assert flagged == {"sparse-0"}
        assert all(e.refit == "cold" for e in report.entries)
    assert any("'sparse-0'" in note and "does not identify its capacity" in note for note in res.notes)


def _quantized_runs() -> list[Run]:
    return _runs({s: _capacity(s, 1.0, 0.41, 1.39) for s in ("bf16", "int8", "int4", "int3", "int2")})


def _law_file(tmp_path, L: float):
    """The shipped law with its quantization L replaced by ``L``."""
    from gmse_cli.paths import laws_dir

    text = (laws_dir() / "paper-llama-c4.toml").read_text()
    head, sep, tail = text.partition("[families.quantization.L]\nvalue = 1.0\n")
    assert sep
    path = tmp_path / f"L{L:g}.toml"
    path.write_text(f"{head}[families.quantization.L]\nvalue = {L!r}\n{tail}")
    return path


def test_a_law_files_L_is_at_most_the_capacity_ceiling(tmp_path, run_cli):
    """L = 2 is read; L = 2.5 and a percentage (98.5) are refused in one line naming the value, exit 2."""
    ok = run_cli("predict", "int4", "--law", str(_law_file(tmp_path, 2.0)), "--params", "1B", "--tokens", "20x")
    assert ok.code == 0, ok.stderr
    for L in (2.5, 98.5, 1e29):
        bad = run_cli("predict", "int4", "--law", str(_law_file(tmp_path, L)), "--params", "1B", "--tokens", "20x")
        assert bad.code == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
        assert f"L = {L:g} is above 2" in bad.stderr and "families.quantization" in bad.stderr


@pytest.mark.parametrize("shape", ["tanh", "erf"])
def test_a_fitted_law_is_read_back_or_refused_before_writing(tmp_path, run_cli, shape):
    """A fit whose L is above the ceiling (here held there) is refused by to_law, so nothing unreadable
    is written; one at the ceiling and a free fit are written, read back, and predict the closed form
    of their curve's shape."""
    from gmse_cli.errors import FitError
    from gmse_cli.law import save_law

    runs = _quantized_runs()
    held = F.fit(runs, model="unified", curve=shape, starts=SMALL_GRID, loso=False, profile=False,
                 fixed={"quantization.L": 2.5})
    try:
        held.to_law("too-high")
    except FitError as exc:
        assert "quantization.L = 2.5" in str(exc) and "ceiling" in str(exc)
    else:
        raise AssertionError("a law with L = 2.5 was built")
    for fixed in ({"quantization.L": 2.0}, {}):
        res = F.fit(runs, model="unified", curve=shape, starts=SMALL_GRID, loso=False, profile=False, fixed=fixed)
        path = tmp_path / "law.toml"
        save_law(res.to_law("back"), path)
        assert ('shape = "erf"' in path.read_text()) == (shape == "erf")  # tanh, the default, is left out
        out = run_cli("predict", "int4", "--law", str(path), "--params", "1B", "--tokens", "20x", "--json")
        assert out.code == 0, out.stderr
        got = json.loads(out.stdout)["results"][0]
        c = {k: v.value for k, v in res.constants.items()}
        g = gmse_of("int4").gmse
        s = {"tanh": math.tanh, "erf": math.erf}[shape]
        rho = c["quantization.L"] * s(c["quantization.F"] * -math.log(g) / math.log(4.0)) ** c["quantization.C"]
        N, D = 1e9, 2e10
        expected = c["A"] * (N * rho) ** -c["alpha"] + c["B"] * D ** -c["beta"] + c["E"]
        assert got["rho"] == pytest.approx(rho, rel=1e-12)
        assert got["predicted_loss"] == pytest.approx(expected, rel=1e-12)


def test_noiseless_runs_at_the_limit_of_their_digits_converge():
    """Runs generated from the law at GMSEs rounded to 5 digits (as a table prints them) fit with
    residuals near 3e-8 in log-loss: the fit is as good as the data's digits allow, and was refused
    as 'did not converge' because the objective's gradient, relative to an objective of 4e-14, was
    at the optimizer's rounding level."""
    def rounded_capacity(scheme: str) -> float:
        g = float(f"{gmse_of(scheme).gmse:.5g}")
        return math.tanh(0.41 * -math.log(g) / math.log(4.0)) ** 1.39

    runs = _runs({s: rounded_capacity(s) for s in ("bf16", "int8", "int4", "int3", "int2")})
    res = F.fit(runs, model="unified", curve="tanh", starts=SMALL_GRID, loso=False, profile=False)
    assert res.fit_error < 1e-6
    for key in ("alpha", "beta", "E"):
        assert res.constants[key].value == pytest.approx(TRUTH[key], rel=1e-3), key


def test_runs_that_all_have_one_loss_flag_the_exponents():
    """Every run at loss 3: no term of the law can change across them. The unified fit ended at
    alpha = 2.9e-17 and beta = 2.5e-15 with no flag (both > 0), and reported capacities that no
    run informs; an exponent whose term moves by under 1e-4 across the runs is now flagged."""
    sizes = (3e7, 6e7, 1.2e8, 2.4e8, 5e8)
    runs = [r.model_copy(update={"loss": 3.0}) for r in _runs(
        {s: 1.0 for s in ("bf16", "int8", "int4", "int3", "int2")}, sizes, (20.0, 50.0, 100.0))]
    res = F.fit(runs, model="unified", loso=False, profile=False)  # uscl fit's own starts: exponents end > 0
    spread_n = math.log(sizes[-1] / sizes[0]) + 1.0  # N's range, widened by the capacities' (at most e-fold)
    for key in ("alpha", "beta"):
        value = res.constants[key].value
        flag = res.constants[key].at_bound
        assert value * spread_n < 1e-4, (key, value)  # the fit does end there (else nothing to test)
        assert flag is not None and "does not fall with scale" in flag, key


def test_a_fit_without_quantization_holds_vq_from_the_base_law():
    """Sparsity-only runs fit no quantization curve: VQ, which the base law puts on its quantization
    curve, is held from the base law with quantization. It was written as 'copied from the
    quantization curve fitted here' (the curve held from the base a moment before) and left out of
    [meta] families_from_base."""
    base = load_law(None)
    sparse = {s: _capacity(s, 1.0, 0.3, 0.5) for s in ("sparse-0", "sparse-25", "sparse-50", "sparse-75")}
    res = F.fit(_runs(sparse), model="unified", starts=SMALL_GRID, profile=False, base_law=base)
    assert set(res.families) == {"sparsity"}
    law = res.to_law("mine", base=base)
    vq = law.families[Family.VQ]
    assert [getattr(vq, k).value for k in "LFC"] == [getattr(base.families[Family.VQ], k).value for k in "LFC"]
    assert all(getattr(vq, k).provenance.startswith("held from law 'paper-llama-c4' (no vq runs") for k in "LFC")
    assert "vq" in law.meta["families_from_base"] and "quantization" in law.meta["families_from_base"]
