"""Near misses on the command line: a mistyped or half-remembered name gets one stderr line
(exit 2) that names what the user most likely meant, computed from the real catalog, commands
and options. Expected names are derived here from the catalog files and the built commands,
never copied from uscl's messages."""

from __future__ import annotations

import re
import tomllib

import conftest  # noqa: F401 - the run_cli fixture
import pytest

FORMATS = conftest.REPO_ROOT / "formats"


def _catalog_files() -> dict[str, dict]:
    tables = (tomllib.loads(p.read_text(encoding="utf-8")) for p in sorted(FORMATS.glob("*.toml")))
    return {t["name"]: t for t in tables}


def _error(result) -> str:
    assert result.code == 2, (result.code, result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def _suggested(line: str) -> list[str]:
    """The quoted names after 'did you mean' in an error line."""
    assert "did you mean" in line, line
    return re.findall(r"'([^']+)'", line.split("did you mean", 1)[1])


@pytest.mark.parametrize(("typed", "meant"), [
    ("nvpf4", "nvfp4"), ("mxfp-4", "mxfp4"), ("nf-4", "nf4"), ("fp8_e4m3", "fp8-e4m3"),
    ("float16", "fp16"), ("bfloat16", "bf16"), ("float32", "fp32"),
])
def test_a_misspelled_catalog_name_suggests_the_catalog_name(run_cli, typed, meant):
    assert meant in _catalog_files()
    assert _suggested(_error(run_cli("rank", typed)))[:1] == [meant]


def test_an_fp_name_with_its_element_grid_suggests_the_format_of_that_grid(run_cli):
    # 'fp4e2m1' was answered with 'fp6-e2m3' (the closest string), a 6-bit format
    files = _catalog_files()
    grids = {n: (t["stages"][0].get("exponent_bits"), t["stages"][0].get("mantissa_bits"))
             for n, t in files.items() if len(t["stages"]) == 1}
    assert grids["fp4"] == (2, 1)
    assert _suggested(_error(run_cli("rank", "fp4e2m1"))) == ["fp4"]


@pytest.mark.parametrize("typed", ["fp8", "mxfp8", "fp6", "mxfp6", "float8"])
def test_a_name_short_of_several_formats_lists_them_all(run_cli, typed):
    # 'fp8' was answered with 'fp4', 'mxfp8' with 'mxfp4', 'fp6' with 'fp16': another width
    stem = typed.replace("float", "fp")
    variants = {n for n in _catalog_files() if n.startswith(f"{stem}-")}
    shortest = {n for n in variants if not any(n.startswith(f"{v}-") for v in variants)}
    assert len(shortest) == 2
    assert set(_suggested(_error(run_cli("rank", typed)))) == shortest


def test_case_is_ignored_in_format_names(run_cli):
    for typed in ("INT4", "Int4", "NVFP4"):
        upper = run_cli("rank", typed, "--json")
        lower = run_cli("rank", typed.lower(), "--json")
        assert upper.code == 0 and upper.stdout == lower.stdout


@pytest.mark.parametrize("typed", ["int4,nvfp4", "int4 nvfp4", "int4, nvfp4", "int4 , nvfp4"])
def test_formats_run_together_in_one_argument_are_given_apart(run_cli, typed):
    # 'int4,nvfp4' was answered "did you mean 'nvfp4'?", 'int4 nvfp4' with "write 'int4nvfp4'"
    line = _error(run_cli("rank", typed))
    assert line.endswith(": int4 nvfp4")
    assert "int4nvfp4" not in line


def test_a_trailing_comma_suggests_the_format_before_it(run_cli):
    assert _suggested(_error(run_cli("rank", "int4,"))) == ["int4"]
    assert _suggested(_error(run_cli("rank", "int4", "--act", "int8,"))) == ["int8"]


def test_a_misspelled_format_among_several_in_one_argument_is_named(run_cli):
    line = _error(run_cli("rank", "int4 nvpf4"))
    assert _suggested(line) == ["nvfp4"]
    assert "int4nvpf4" not in line


def test_a_shorthand_with_a_space_inside_still_says_how_to_write_it(run_cli):
    assert _error(run_cli("rank", "e2m1 -g32")).endswith("write 'e2m1-g32'")
    assert _error(run_cli("rank", "lut[-1, 0, 1]")).endswith("write 'lut[-1,0,1]'")


def _built_commands() -> dict[str, set[str]]:
    """Every command path and its options, built here through typer from each module's register."""
    import importlib

    import typer

    from gmse_cli.cli import COMMAND_MODULES

    found: dict[str, set[str]] = {}
    for module in set(COMMAND_MODULES.values()):
        app = typer.Typer()
        app.callback()(lambda: None)
        importlib.import_module(f"gmse_cli.cli.{module}").register(app)
        stack = [("uscl", typer.main.get_command(app))]
        while stack:
            path, command = stack.pop()
            stack.extend((f"{path} {n}", c) for n, c in (getattr(command, "commands", None) or {}).items())
            own = {o for p in command.params for o in getattr(p, "opts", ())}
            if own and path != "uscl":
                found[path] = found.get(path, set()) | own
    return found


@pytest.mark.parametrize(("typed", "meant"), [("RANK", "rank"), ("Predict", "predict"), ("GMSE", "gmse")])
def test_a_command_in_the_wrong_case_suggests_the_command(run_cli, typed, meant):
    # click compares as typed: 'RANK' got no suggestion at all
    assert f"uscl {meant}" in _built_commands() or any(p.startswith(f"uscl {meant} ") for p in _built_commands())
    line = _error(run_cli(typed, "int4"))
    assert re.search(rf"[Dd]id you mean '{meant}'\?", line), line


def test_a_subcommand_in_the_wrong_case_suggests_the_subcommand(run_cli):
    assert "uscl formats show" in _built_commands()
    assert "Did you mean 'show'?" in _error(run_cli("formats", "SHOW", "int4"))


@pytest.mark.parametrize(("argv", "option"), [
    (("gmse", "int4", "--params", "7B"), "--params"),
    (("rank", "int4", "--bits", "4"), "--bits"),
    (("rank", "int4", "--data", "x"), "--data"),
])
def test_an_option_of_other_commands_names_them(run_cli, argv, option):
    commands = _built_commands()
    here = f"uscl {argv[0]}"
    takers = sorted(p for p, opts in commands.items() if option in opts and p != here)
    assert takers and option not in commands[here]
    line = _error(run_cli(*argv))
    named = re.search(rf"{option} is an option of ([^)]*)\)", line)
    assert named, line
    assert named[1].split(", ") == takers
    assert "Possible options" not in line


@pytest.mark.parametrize(("typed", "symbol", "option"), [
    ("--N", "N", "--params"), ("--n", "N", "--params"), ("-N", "N", "--params"), ("--D", "D", "--tokens"),
])
def test_the_papers_symbols_name_their_options(run_cli, typed, symbol, option):
    # '--N 7B' got click's bare "No such option: --N"; mse's --tokens (its calibration text) is no D
    takers = ["uscl predict", "uscl rank"]
    assert all(option in _built_commands()[path] for path in takers)
    assert f"(the paper's {symbol} is {option})" in _error(run_cli("rank", "int4", typed, "7B"))
    line = _error(run_cli("gmse", "int4", typed, "7B"))
    assert f"(the paper's {symbol} is {option}, an option of {', '.join(takers)})" in line, line


def test_a_one_letter_option_no_help_names_gets_no_symbol_hint(run_cli):
    assert "paper" not in _error(run_cli("rank", "int4", "--x", "7B"))


def test_a_misspelled_option_still_gets_the_commands_own_options(run_cli):
    assert {"--rel-err", "--json"} <= _built_commands()["uscl rank"]
    assert "--rel-err" in _error(run_cli("rank", "int4", "--rel-eror", "0.01"))
    assert "--json" in _error(run_cli("rank", "int4", "--jsno"))


def test_a_family_a_user_starts_suggests_the_family(run_cli):
    from gmse_cli.spec import Family

    assert "quantization" in [f.value for f in Family]
    assert _suggested(_error(run_cli("rank", "int4", "--family", "quant")))[0] == "quantization"
    assert _suggested(_error(run_cli("formats", "--family", "quant")))[0] == "quantization"


@pytest.mark.parametrize("family", ["magic", "quant"])
def test_rank_and_formats_refuse_an_unknown_family_in_one_wording(run_cli, family):
    # rank said "--family 'magic' is not one of ...", formats "'magic' is not a family; one of ..."
    from gmse_cli.spec import Family

    names = ", ".join(f.value for f in Family)
    ranked = _error(run_cli("rank", "int4", "--family", family))
    listed = _error(run_cli("formats", "--family", family))
    assert ranked.startswith(f"error: Invalid value for '--family': '{family}' is not a family; one of {names}")
    assert ranked.removesuffix(" (see 'uscl rank --help')") == listed.removesuffix(" (see 'uscl formats --help')")


def test_a_misspelled_sort_column_suggests_the_column(run_cli):
    from gmse_cli.rank.results import RankRow

    assert "rho" in RankRow.model_fields
    line = _error(run_cli("rank", "int4", "--sort", "rhoo"))
    assert line.split("did you mean", 1)[1].startswith(" 'rho'?")


def test_shipped_law_names_are_read_in_any_case_and_a_near_miss_is_suggested(run_cli):
    shipped = sorted(p.stem for p in (conftest.REPO_ROOT / "gmse_cli" / "laws").glob("*.toml"))
    assert "paper-llama-c4" in shipped
    upper = run_cli("predict", "int4", "--law", "PAPER-LLAMA-C4", "--json")
    lower = run_cli("predict", "int4", "--law", "paper-llama-c4", "--json")
    assert upper.code == 0 and upper.stdout == lower.stdout
    assert _suggested(_error(run_cli("predict", "int4", "--law", "paper-lama-c4")))[0] == "paper-llama-c4"


@pytest.mark.parametrize(("argv", "options"), [
    (("rank", "int4", "7B"), ["--params", "--tokens"]),
    (("rank", "1e9"), ["--params", "--tokens"]),
    (("predict", "70M"), ["--params", "--tokens"]),
    (("rank", "int4", "100x"), ["--tokens"]),
])
def test_a_count_where_a_format_goes_names_the_option_it_belongs_to(run_cli, argv, options):
    # it was "unknown format '7b'; see `uscl formats`", as if a format were misspelled
    line = _error(run_cli(*argv))
    assert re.findall(r"--\w+", line) == options
    assert all(f"{o} {argv[-1]}" in line for o in options)


def test_other_choice_options_suggest_and_read_any_case(run_cli):
    from gmse_cli.fit.results import MODELS
    from gmse_cli.gmse.backends import backend_names

    assert "numba" in backend_names() and "unified" in MODELS
    assert _suggested(_error(run_cli("gmse", "int4", "--backend", "numbaa")))[0] == "numba"
    runs = conftest.SHARED_DATA / "quest_runs.json"
    assert _suggested(_error(run_cli("fit", str(runs), "--model", "unifed")))[0] == "unified"
    assert _suggested(_error(run_cli("train", "--preset", "tiny", "--launcher", "torchrn")))[0] == "torchrun"
    upper = run_cli("gmse", "int4", "--backend", "NUMPY", "--json")
    lower = run_cli("gmse", "int4", "--backend", "numpy", "--json")
    assert upper.code == 0 and upper.stdout == lower.stdout


def test_a_groups_own_option_is_named_among_the_commands_that_take_it(run_cli):
    commands = _built_commands()
    takers = sorted(p for p, opts in commands.items() if "--family" in opts)
    line = _error(run_cli("search", "--bits", "4", "--family", "quantization"))
    assert re.search(r"--family is an option of ([^)]*)\)", line)[1].split(", ") == takers


def test_a_folder_where_a_format_goes_is_named_a_folder(run_cli, tmp_path):
    line = _error(run_cli("rank", str(tmp_path)))
    assert str(tmp_path) in line and "folder" in line and "unknown format" not in line


def test_a_folder_named_like_a_format_does_not_shadow_it(run_cli, tmp_path, monkeypatch):
    (tmp_path / "int4").mkdir()
    monkeypatch.chdir(tmp_path)
    assert run_cli("rank", "int4", "--json").code == 0


def test_a_runs_file_where_a_format_goes_says_what_a_format_file_is(run_cli):
    runs = conftest.SHARED_DATA / "quest_runs.json"
    line = _error(run_cli("rank", str(runs)))
    assert str(runs) in line and "uscl fit" in line
