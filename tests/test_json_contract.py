"""What a program reading uscl's machine output relies on, across commands: stdout under --json is
one strict JSON document (no NaN/Infinity tokens, which are not JSON) in the versioned envelope or
nothing at all; an option that asks for JSON or CSV is never silently dropped; and the files a
command writes are named on stderr with --json as without it."""

from __future__ import annotations

import json

import conftest  # noqa: F401 - the shared fixtures (run_cli) and environment
import pytest


def _strict(text: str) -> dict:
    """``text`` parsed as JSON proper: Python's reader takes NaN and Infinity, JSON does not."""

    def refuse(token: str):
        raise AssertionError(f"{token} is not JSON")

    data = json.loads(text, parse_constant=refuse)
    assert isinstance(data, dict) and data["schema_version"] == 1 and isinstance(data["command"], str)
    return data


@pytest.mark.parametrize("argv", [
    ("formats", "--json", "show", "int4"),
    ("formats", "--csv", "show", "int4"),
    ("formats", "--family", "vq", "show", "int4"),
    ("formats", "--row-length", "128", "show", "int4"),
    ("formats", "--json", "export", "w4a16", "--to", "compressed-tensors"),
])
def test_a_listing_option_before_a_subcommand_is_refused_not_dropped(run_cli, argv):
    # `uscl formats --json show int4` printed TOML with exit 0: a program that asked for JSON
    # read TOML. The listing's options now refuse a subcommand in one line, naming the option.
    res = run_cli(*argv)
    assert res.code == 2
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    sub = next(a for a in argv if a in ("show", "export"))
    assert len(lines) == 1 and argv[1] in lines[0] and f"formats {sub}" in lines[0], res.stderr


def test_subcommands_and_the_listing_still_answer(run_cli):
    shown = run_cli("formats", "show", "int4")
    assert shown.code == 0 and shown.stdout.startswith('name = "int4"'), shown.stderr
    listed = _strict(run_cli("formats", "--family", "vq", "--json").stdout)
    assert listed["command"] == "formats" and listed["results"]
    assert all("vq" in r["family"].split("+") for r in listed["results"])


def test_fit_names_its_written_law_and_plot_on_stderr_under_json(run_cli, tmp_path, shared_data):
    # The README: "A written plot or law is named on stderr: wrote plot PATH, wrote law PATH",
    # and stderr carries notes "with --json too" -- rank, search and mse name their plots under
    # --json; fit alone went silent. stdout stays the one JSON document.
    runs = conftest.REPO_ROOT / "examples" / "cpu-law.jsonl"
    law, plot = tmp_path / "law.toml", tmp_path / "fit.png"
    res = run_cli("fit", str(runs), "--json", "--out", str(law), "--plot", str(plot))
    assert res.code == 0, res.stderr
    assert _strict(res.stdout)["command"] == "fit"
    assert law.is_file() and plot.is_file()
    wrote = [line for line in res.stderr.splitlines() if line.startswith("wrote ")]
    assert [w.split()[1] for w in wrote] == ["plot", "law"], res.stderr
    assert str(plot.name) in wrote[0] and str(law.name) in wrote[1]


def test_gmse_intervals_of_rank_and_predict_have_the_coverage_level_says(run_cli):
    # `level` is "coverage of every [low, high] interval" of a row, and --level "coverage of the
    # intervals"; gmse_low/high (the row's and each stage's) stayed the measurement's 95% under
    # --level 0.5. A Monte Carlo GMSE's interval is value -+ t_q(dof) * std_err: at 50% the half
    # width is t_0.75(dof) standard errors, 0.6745 (normal) to 0.6828 (30 degrees of freedom).
    from scipy.stats import norm, t

    fmt = ("int4-g7", "--row-length", "7")
    measured = _strict(run_cli("gmse", *fmt, "--json").stdout)["results"][0]
    assert measured["gmse_method"] in ("monte-carlo", "cache") and measured["gmse_std_err"] > 0
    se, g = measured["gmse_std_err"], measured["gmse"]
    res = run_cli("predict", *fmt, "--level", "0.5", "--json")
    row = _strict(res.stdout)["results"][0]
    assert row["level"] == 0.5 and row["gmse"] == g
    for item in (row, row["stages"][0]):
        low, high = item["gmse_low"], item["gmse_high"]
        assert high - g == pytest.approx(g - low, rel=1e-9)
        assert norm.ppf(0.75) * (1 - 1e-9) <= (high - g) / se <= t.ppf(0.75, 30)
    # the default level keeps the measurement's own 95% interval, as `uscl gmse` prints it
    ranked = _strict(run_cli("rank", fmt[0], *fmt[1:], "--json").stdout)["results"][0]
    assert (ranked["gmse_low"], ranked["gmse_high"]) == (measured["gmse_low"], measured["gmse_high"])
    assert (ranked["gmse_high"] - g) / se == pytest.approx(norm.ppf(0.975), rel=0.02)


def test_an_infinite_loss_is_null_and_the_document_strict_json(run_cli):
    # GMSE far above 1 (a grid scaled to 100 RMS) gives rho 0 and an infinite loss: the README's
    # one documented case of null; the rest of the document stays finite, strict JSON.
    res = run_cli("predict", "int2-rms100", "--json")
    assert res.code == 0, res.stderr
    row = _strict(res.stdout)["results"][0]
    assert row["gmse"] > 1 and row["rho"] == 0.0 and row["effective_params"] == 0.0
    for key in ("predicted_loss", "loss_low", "loss_high", "delta_loss_vs_bf16", "params_to_match",
                "memory_to_match_bytes", "params_term"):
        assert row[key] is None, key


def test_an_exact_real_weight_mse_has_null_effective_bits_in_strict_json(run_cli, tmp_path):
    # nf4 keeps 1.0 among its code values and scales each block by its absmax, so a tensor of
    # ones comes back exactly: MSE 0, infinitely many effective bits. JSON has no Infinity; the
    # document must still parse strictly, with the key null and the finite rest in place.
    np = pytest.importorskip("numpy")
    save_file = pytest.importorskip("safetensors.numpy").save_file
    path = tmp_path / "ones.safetensors"
    save_file({"a.weight": np.ones((64, 128), np.float32)}, str(path))
    res = run_cli("mse", str(path), "-f", "nf4", "-f", "int4", "--json")
    assert res.code == 0, res.stderr
    rows = {r["name"]: r for r in _strict(res.stdout)["results"]}
    assert rows["nf4"]["mse"] == 0.0 and rows["nf4"]["effective_bits"] is None
    import tomllib

    law = tomllib.loads((conftest.REPO_ROOT / "gmse_cli" / "laws" / "paper-llama-c4.toml").read_text())
    # no error: the capacity curve's value at GMSE 0, its L
    assert rows["nf4"]["rho"] == pytest.approx(law["families"]["quantization"]["L"]["value"], rel=1e-12)
    assert rows["int4"]["mse"] > 0 and isinstance(rows["int4"]["effective_bits"], float)
