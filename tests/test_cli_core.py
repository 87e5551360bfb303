"""`uscl formats` and `uscl gmse` through the real entry point; the core without torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gmse_cli.spec import catalog, load_format_toml


def test_formats_lists_the_catalog(run_cli):
    res = run_cli("formats", "--json")
    assert res.code == 0 and res.stderr == ""
    rows = json.loads(res.stdout)["results"]
    assert {r["name"] for r in rows} == set(catalog())
    assert {"name", "family", "bits_per_param", "description"} <= set(rows[0])


def test_formats_family_filter(run_cli):
    rows = json.loads(run_cli("formats", "--family", "vq", "--json").stdout)["results"]
    assert rows and all(r["family"] == "vq" for r in rows)



def test_formats_leaves_out_what_does_not_fit_the_rows(run_cli):
    res = run_cli("formats", "--row-length", "96", "--json")
    names = {r["name"] for r in json.loads(res.stdout)["results"]}
    assert res.code == 0 and "int4" in names and "int4-g32" in names and "int4-g128" not in names
    assert "note: left out" in res.stderr and "do not divide rows of 96" in res.stderr
    for name in names:
        catalog()[name].check_row_length(96)  # every listed format fits (raises otherwise)
    assert "note" not in run_cli("formats", "--json").stderr

def test_formats_help_documents_the_grammar(run_cli):
    res = run_cli("formats", "--help")
    assert res.code == 0
    assert "Modifiers" in res.stdout and "2:4+int4" in res.stdout


def test_show_prints_toml_that_every_command_accepts(run_cli, tmp_path):
    res = run_cli("formats", "show", "e2m1-g32-absmax-se8m0")
    assert res.code == 0
    path = tmp_path / "mine.toml"
    path.write_text(res.stdout)
    out = json.loads(run_cli("gmse", str(path), "mxfp4", "--json", "--rel-err", "1e-2").stdout)["results"]
    # same spec, same shared bank -> the same estimate bit for bit
    assert out[0]["gmse"] == out[1]["gmse"]


def test_show_round_trips_a_multiline_description(run_cli, tmp_path):
    # `formats show` once wrote a raw newline inside a one-line TOML string, which uscl rejected.
    mine = tmp_path / "mine.toml"
    mine.write_text(
        'description = """two lines,\nwith "quotes" and a \\\\ backslash"""\n\n'
        '[[stages]]\nkind = "quantize"\ngrid = "fp"\nexponent_bits = 2\nmantissa_bits = 1\n'
    )
    res = run_cli("formats", "show", str(mine))
    assert res.code == 0 and res.stderr == ""
    shown = tmp_path / "shown.toml"
    shown.write_text(res.stdout)
    fmt = load_format_toml(shown)
    assert fmt == load_format_toml(mine)
    assert fmt.description == 'two lines,\nwith "quotes" and a \\ backslash'


def test_gmse_json_keys(run_cli):
    res = run_cli("gmse", "int4", "nvfp4", "--json", "--rel-err", "1e-2", "--recompute")
    assert res.code == 0
    rows = json.loads(res.stdout)["results"]
    keys = {"name", "bits_per_param", "gmse", "gmse_low", "gmse_high", "effective_bits", "gmse_method", "samples"}
    assert all(keys <= set(r) for r in rows)
    assert rows[0]["gmse_method"] == "exact" and rows[1]["gmse_method"] == "monte-carlo"
    assert rows[1]["gmse_low"] < rows[1]["gmse"] < rows[1]["gmse_high"]



def test_gmse_says_when_monte_carlo_stops_at_the_sample_cap(run_cli):
    # 16 batches of 2^17 elements cannot reach a relative standard error of 1e-6
    res = run_cli("gmse", "int4-g128", "--rel-err", "1e-6", "--max-samples", str(16 << 17), "--recompute", "--json")
    assert res.code == 0
    (row,) = json.loads(res.stdout)["results"]
    assert row["samples"] == 16 << 17 and row["gmse_std_err"] > 1e-6 * row["gmse"]
    assert "note: int4-g128: Monte Carlo stopped at --max-samples 2,097,152" in res.stderr
    assert "note" not in run_cli("gmse", "int4-g128", "--rel-err", "1e-2", "--recompute").stderr
    bad = run_cli("gmse", "int4-g128", "--max-samples", "0")
    assert bad.code == 2 and "--max-samples 0 must be a positive whole number" in bad.stderr

def test_gmse_table_and_vs(run_cli):
    res = run_cli("gmse", "fp4", "--monte-carlo", "--vs", "int4", "--rel-err", "1e-2")
    assert res.code == 0 and "Gaussian MSE" in res.stdout
    rows = json.loads(run_cli("gmse", "fp4", "--monte-carlo", "--vs", "int4", "--rel-err", "1e-2", "--json").stdout)["results"]
    vs = rows[0]["vs"]
    assert vs["b"] == "int4" and vs["difference_low"] <= vs["difference"] <= vs["difference_high"]
    # the paired difference agrees with the two estimates' difference (same samples)
    int4 = 0.011543
    assert abs(rows[0]["gmse"] - int4 - vs["difference"]) < 5 * vs["difference_std_err"] + 2e-4 * int4


@pytest.mark.parametrize(
    "args, message",
    [
        (["gmse", "inr4"], "did you mean 'int4'"),
        (["gmse", "int0"], "bits=0"),
        (["gmse", "int4-g100"], "does not divide the row length 4096"),
        (["gmse", "5:4"], "N=5 > M=4"),
        (["gmse", "sparse-120"], "outside [0, 1)"),
        (["gmse", "int4", "--rel-err", "0"], "--rel-err 0"),
        (["gmse", "int4", "--rel-err", "-1"], "must be a positive"),
        (["gmse"], "at least one format"),
        (["gmse", "missing.toml"], "cannot read format file"),
        (["formats", "show", "nope4"], "unknown format"),
        # typer's own parsing errors take the same single line
        (["predict", "int4", "--seed", "abc"], "'abc' is not a whole number"),
        # a real-valued option names what it could not read (a decimal comma, a word, nothing)
        (["search", "--bits", "4,25"], "'4,25' is not a number"),
        (["rank", "--rel-err", "abc"], "'abc' is not a number"),
        (["gmse", "int4", "--rel-err", ""], "'' is not a number"),
        (["gmse", "int4", "--bogus"], "No such option: --bogus"),
        (["nosuch"], "No such command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(run_cli, args, message):
    res = run_cli(*args)
    assert res.code == 2
    assert message in res.stderr
    assert res.stderr.strip().count("\n") == 0
    assert "Traceback" not in res.stderr


def test_malformed_toml_file(run_cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[stages]\nkind=")
    res = run_cli("gmse", str(bad))
    assert res.code == 2 and "malformed TOML" in res.stderr


def test_core_runs_without_torch(tmp_path):
    """Block every torch import, then use the core API and CLI end to end."""
    script = textwrap.dedent(
        """
        import importlib.abc, sys
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, Block())
        from gmse_cli import gmse_of, resolve_format
        assert gmse_of("2:4+int4", rel_err=1e-2).gmse > 0
        from gmse_cli.cli import main
        try:
            main(["gmse", "int4", "mxfp4", "--json", "--rel-err", "1e-2"])
        except SystemExit as exc:
            assert exc.code == 0, exc.code
        try:  # activations need torch: one line naming the extra
            main(["mse", ".", "--activations", "--data", "text.txt", "--format", "int4"])
        except SystemExit as exc:
            assert exc.code == 2, exc.code
        assert "torch" not in sys.modules
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["name"] == "int4"
    assert "measuring activations needs the [train] extra" in res.stderr


def test_public_api_exports_resolve_and_never_shadow_a_module():
    import pkgutil

    import gmse_cli

    modules = {m.name for m in pkgutil.iter_modules(gmse_cli.__path__)}
    assert not modules & set(gmse_cli.__all__)
    for name in gmse_cli.__all__:
        assert getattr(gmse_cli, name) is not None


@pytest.mark.parametrize("raised, code, said", [
    (RuntimeError("a bug"), None, None),
    (KeyboardInterrupt(), 130, "aborted\n"),
    (KeyboardInterrupt("stopped at step 7; checkpoint in runs/x"), 130, "aborted: stopped at step 7; checkpoint in runs/x\n"),
])
def test_unexpected_errors_keep_their_traceback_and_ctrl_c_aborts(monkeypatch, capsys, raised, code, said):
    # Only expected errors become one line: a bug propagates with its own traceback (exit 1
    # from the interpreter), Ctrl-C prints "aborted" (with where a stopped run's checkpoint
    # is) and exits 130.
    import typer

    from gmse_cli import cli

    class Failing:
        def main(self, **_):
            raise raised

    monkeypatch.setattr(typer.main, "get_command", lambda app: Failing())
    if code is None:
        with pytest.raises(RuntimeError, match="a bug"):
            cli.main(["gmse", "int4"])
    else:
        with pytest.raises(SystemExit) as exit_info:
            cli.main(["gmse", "int4"])
        assert exit_info.value.code == code
        assert capsys.readouterr().err == said


def test_gmse_reads_the_shipped_table_unless_told_to_recompute(run_cli):
    rows = json.loads(run_cli("gmse", "int4", "nvfp4", "lm3-g512", "--json").stdout)["results"]
    assert [r["gmse_method"] for r in rows[:2]] == ["table", "table"]
    assert rows[0]["gmse_std_err"] == 0 and rows[1]["gmse_std_err"] > 0 and rows[1]["samples"] > 0
    assert rows[2]["gmse_method"] in ("monte-carlo", "cache")
    fresh = json.loads(run_cli("gmse", "int4", "nvfp4", "--json", "--recompute").stdout)["results"]
    assert [r["gmse_method"] for r in fresh] == ["exact", "monte-carlo"]
    assert fresh[0]["gmse"] == rows[0]["gmse"]
    table = run_cli("gmse", "nvfp4", "int4").stdout
    assert "table" in table and "exact" in table  # int4's interval column says it is exact


_MODULES_AFTER = textwrap.dedent(
    """
    import json, sys
    from gmse_cli.cli import main
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        assert exc.code in (0, None), exc.code
    heavy = ("numba", "scipy.optimize", "matplotlib", "torch", "llvmlite")
    print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("numba", "matplotlib", "torch", "llvmlite")
                             or m == "scipy.optimize")), file=sys.stderr)
    """
)


@pytest.mark.parametrize("args", [["--help"], ["formats"], ["predict", "int4"], ["rank"], ["rank", "--act", "int8"],
                                  ["gmse", "mxfp4", "2:4+int4"]])
def test_answers_from_the_table_load_no_kernels(args, tmp_path):
    # The table answers these: neither numba (kernels) nor scipy.optimize nor matplotlib is
    # imported (each costs a large part of a second).
    res = subprocess.run([sys.executable, "-c", _MODULES_AFTER, *args], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "USCL_CACHE_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    loaded = json.loads(res.stderr.strip().splitlines()[-1])
    assert loaded == [], loaded


_COMMANDS_BUILT = textwrap.dedent(
    """
    import json, sys
    from gmse_cli.cli import COMMAND_MODULES, main
    try:
        main(sys.argv[1:])
    except SystemExit as exc:
        assert exc.code in (0, 2, None), exc.code  # 2: a mistyped name
    print(json.dumps(sorted(m for m in set(COMMAND_MODULES.values()) if f"gmse_cli.cli.{m}" in sys.modules)),
          file=sys.stderr)
    """
)


@pytest.mark.parametrize(("args", "built"), [(["predict", "int4"], {"rank"}), (["formats"], {"formats"}),
                                             (["tokenizer", "--help"], {"train"}), (["--version"], set()),
                                             (["--help"], set()), (["rnak"], set())])
def test_a_command_line_builds_only_the_command_it_names(args, built, tmp_path):
    res = subprocess.run([sys.executable, "-c", _COMMANDS_BUILT, *args], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1], env={**os.environ, "USCL_CACHE_DIR": str(tmp_path)})
    assert res.returncode == 0, res.stderr
    assert set(json.loads(res.stderr.strip().splitlines()[-1])) == built


def test_the_listing_names_every_command_the_modules_build():
    """`uscl --help` lists COMMANDS without building them: each entry must be a command its
    module registers at the top level, and every top-level command must be listed."""
    import importlib

    import typer

    from gmse_cli.cli import COMMANDS

    built = {}
    for module in dict.fromkeys(m for m, _ in COMMANDS.values()):
        app = typer.Typer()
        app.callback()(lambda: None)
        importlib.import_module(f"gmse_cli.cli.{module}").register(app)
        for name in typer.main.get_command(app).commands:
            built[name] = module
    assert built == {name: module for name, (module, _) in COMMANDS.items()}


def test_the_root_help_lists_every_command_and_option(run_cli):
    from gmse_cli.cli import COMMANDS

    res = run_cli("--help")
    assert res.code == 0, res.stderr
    text = " ".join(res.stdout.replace("│", " ").split())
    assert "Usage: uscl [OPTIONS] COMMAND [ARGS]..." in text
    assert "Unified scaling laws for compressed representations" in text
    assert "--version print the version and exit" in text and "--help Show this message and exit." in text
    for name, (_, summary) in COMMANDS.items():
        assert f"{name} {summary}" in text, name
    assert max(len(line) for line in res.stdout.splitlines()) <= 80  # piped: 80 columns
    alone = run_cli()
    assert alone.code == 2 and alone.stdout == res.stdout
