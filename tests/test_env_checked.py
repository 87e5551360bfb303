"""The command line under the environments real users run it in: a closed stdout (`uscl rank >&-`
was an AttributeError traceback), a stdout that cannot encode every character
(PYTHONIOENCODING=ascii, a Latin-1 locale: `predict vq4-b2`'s '±' and a cut '…' in `mse --help`
were UnicodeEncodeError tracebacks), file names that are not UTF-8 (`fit` on such a runs file
was a pydantic traceback, `fit --out` to such a name a UnicodeEncodeError, and a strict UTF-8
stdout could not print one), and cache settings ('~' left unexpanded made a folder named '~'
in the working directory; no $HOME and no passwd entry was a RuntimeError traceback)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "examples" / "cpu-law.jsonl"
NOT_UTF8 = b"\xff"


def _uscl(*args, cwd: Path, env: dict | None = None, close_stdout: bool = False) -> subprocess.CompletedProcess:
    """``uscl ARGS`` as a user's shell runs it: its own process, the environment given."""
    environ = dict(os.environ, PYTHONPATH=str(REPO), USCL_CACHE_DIR=str(cwd / "cache"))
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "gmse_cli", *args], cwd=cwd, env=environ, capture_output=not close_stdout,
                          stdin=subprocess.DEVNULL, timeout=120,
                          **({"stderr": subprocess.PIPE, "preexec_fn": lambda: os.close(1)} if close_stdout else {}))


@pytest.mark.parametrize("args, code", [(["formats"], 0), (["gmse", "int4", "--json"], 0), (["rank", "--bogus"], 2)])
def test_a_closed_stdout_is_no_traceback(tmp_path, args, code):
    res = _uscl(*args, cwd=tmp_path, close_stdout=True)
    err = res.stderr.decode()
    assert res.returncode == code and "Traceback" not in err, err
    assert len(err.splitlines()) == (1 if code else 0)  # an error still says so, on its one line


def test_an_ascii_stdout_spells_the_tables_symbols_and_cut_help_cells(tmp_path):
    ascii_out = {"PYTHONIOENCODING": "ascii"}
    predicted = _uscl("predict", "vq4-b2", cwd=tmp_path, env=ascii_out)  # a GMSE with its interval: value +/- half-width
    assert predicted.returncode == 0, predicted.stderr.decode()
    assert "+/-" in predicted.stdout.decode("ascii")
    helped = _uscl("mse", "--help", cwd=tmp_path, env=ascii_out)  # an option's name cut at 80 columns
    assert helped.returncode == 0, helped.stderr.decode()
    helped.stdout.decode("ascii")


def test_an_ascii_stdout_writes_a_non_ascii_name_that_toml_reads_back(tmp_path):
    spec = (REPO / "formats" / "int4.toml").read_text().replace('name = "int4"', 'name = "gr\u00f6\u00dfe \u00b1"')
    (tmp_path / "mine.toml").write_text(spec, encoding="utf-8")
    shown = _uscl("formats", "show", "mine.toml", cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert shown.returncode == 0, shown.stderr.decode()
    assert tomllib.loads(shown.stdout.decode("ascii"))["name"] == "gr\u00f6\u00dfe \u00b1"
    ranked = _uscl("rank", "mine.toml", cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert ranked.returncode == 0 and "gr\\u00f6\\u00dfe" in ranked.stdout.decode("ascii"), ranked.stderr.decode()


def test_fit_on_and_to_files_whose_names_are_not_utf8(tmp_path):
    runs = os.fsdecode(b"runs" + NOT_UTF8 + b".jsonl")
    law = os.fsdecode(b"law" + NOT_UTF8 + b".toml")
    (tmp_path / runs).write_bytes(RUNS.read_bytes())
    fitted = _uscl("fit", runs, "--out", law, "--json", cwd=tmp_path)
    assert fitted.returncode == 0, fitted.stderr.decode()
    result = json.loads(fitted.stdout)["results"][0]
    assert result["data_files"] == ["runs\\xff.jsonl"]  # the name's bytes, shown as Python escapes them
    written = tomllib.loads((tmp_path / law).read_text(encoding="utf-8"))
    assert written["name"] == "law\\xff"
    predicted = _uscl("predict", "int4", "--law", law, "--json", cwd=tmp_path)
    assert predicted.returncode == 0, predicted.stderr.decode()
    json.loads(predicted.stdout)


def test_a_strict_utf8_stdout_prints_a_name_that_is_not_utf8(tmp_path):
    """A UTF-8 locale other than C.UTF-8 (en_US.UTF-8) writes stdout strictly; PYTHONIOENCODING
    stands for it here. The name comes out as the bytes it was, as `ls` shows it."""
    pytest.importorskip("tokenizers")  # tokenizer training is the [train] extra's
    (tmp_path / "corpus.txt").write_text("def f(x):\n    return x + 1\n" * 200)
    out = os.fsdecode(b"tok" + NOT_UTF8 + b".json")
    res = _uscl("tokenizer", "train", "corpus.txt", "--out", out, cwd=tmp_path, env={"PYTHONIOENCODING": "utf-8"})
    assert res.returncode == 0, res.stderr.decode()
    assert b"tok\xff.json" in res.stdout
    assert (tmp_path / out).is_file()


def test_a_cache_setting_with_tilde_is_the_home_folder(tmp_path):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    res = _uscl("gmse", "int5-g16", cwd=work, env={"HOME": str(home), "USCL_CACHE_DIR": "~/uscl-cache"})
    assert res.returncode == 0, res.stderr.decode()
    assert not (work / "~").exists()
    assert list((home / "uscl-cache" / "gmse").glob("*.json"))  # the computed GMSE, cached there


@pytest.mark.parametrize("setting", [None, "~/uscl-cache"])
def test_no_home_folder_is_a_cache_error(monkeypatch, setting):
    import pwd

    from gmse_cli.errors import CacheError
    from gmse_cli.paths import cache_dir

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)  # else the cache needs no home
    monkeypatch.setattr(pwd, "getpwuid", no_entry)  # a container's user id, in no passwd file
    if setting is None:
        monkeypatch.delenv("USCL_CACHE_DIR", raising=False)
    else:
        monkeypatch.setenv("USCL_CACHE_DIR", setting)
    with pytest.raises(CacheError, match="USCL_CACHE_DIR"):
        cache_dir()


@pytest.mark.parametrize("args", [
    ["fit", "~/runs.json"],
    ["train", "~/sweep.toml", "--dry-run"],
    ["train", "train/cpu-law.toml", "--data", "~/corpus", "--dry-run"],
    ["mse", "~/model", "-f", "int4"],
    ["gmse", "~/format.toml"],
    ["tokenizer", "train", "~/corpus.txt", "--vocab-size", "300", "--out", "tok.json"],
])
def test_a_tilde_argument_without_a_home_folder_is_one_line(monkeypatch, run_cli, args):
    """pathlib raises RuntimeError expanding '~' with no $HOME and no passwd entry: `fit ~/runs.json`
    and `train ~/sweep.toml` were tracebacks, exit 1."""
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    monkeypatch.chdir(REPO)
    res = run_cli(*args)
    assert res.code == 2 and "Traceback" not in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "~/" in res.stderr, res.stderr
    assert "home folder" in res.stderr, res.stderr  # the reason, not 'does not exist'


@pytest.mark.parametrize("args, written", [
    (["fit", str(RUNS), "--out=~/law.toml"], "law.toml"),
    (["fit", str(RUNS), "--plot=~/fit.png"], "fit.png"),
    (["formats", "export", "w4a16", "--to", "compressed-tensors", "--out=~/int4.json"], "int4.json"),
    (["rank", "int4", "nvfp4", "--plot=~/rank.svg"], "rank.svg"),
])
def test_an_output_path_with_tilde_is_in_the_home_folder(tmp_path, args, written):
    """'--out=~/law.toml' is not expanded by the shell (a '~' after '='): inputs were read from the home
    folder, outputs went to a folder named '~' in the working directory."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    res = _uscl(*args, cwd=work, env={"HOME": str(home)})
    assert res.returncode == 0, res.stderr.decode()
    assert not (work / "~").exists()
    assert (home / written).exists()


def test_an_output_tilde_without_a_home_folder_is_one_line(monkeypatch, run_cli):
    import pwd

    def no_entry(uid):
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    res = run_cli("fit", str(RUNS), "--out", "~/law.toml")
    assert res.code == 2 and "Traceback" not in res.stderr, res.stderr
    assert res.stderr.strip().startswith("error: cannot write law file '~/law.toml'"), res.stderr


def test_an_input_path_with_tilde_is_read_from_the_home_folder(tmp_path, monkeypatch, run_cli):
    """'--law=~/mine.toml' (no shell expands a '~' after '=') was "No such file or directory",
    as was a quoted '~/fmt.toml' format file, while outputs expanded theirs."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.toml").write_bytes((REPO / "gmse_cli" / "laws" / "paper-llama-c4.toml").read_bytes())
    (tmp_path / "fmt.toml").write_bytes((REPO / "formats" / "int4.toml").read_bytes())
    for args in (["rank", "int4", "--law=~/mine.toml"], ["predict", "int4", "--law", "~/mine.toml"], ["gmse", "~/fmt.toml"]):
        res = run_cli(*args)
        assert res.code == 0, (args, res.stderr)
    assert not (tmp_path / "~").exists()


def test_an_output_with_tilde_may_not_replace_an_input_with_tilde(tmp_path, monkeypatch, run_cli):
    """'fit --law=~/base.toml --out=~/base.toml' compared the expanded output with the unexpanded
    input name, so the check that an output never replaces an input let it through."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    base = tmp_path / "base.toml"
    base.write_bytes((REPO / "gmse_cli" / "laws" / "paper-llama-c4.toml").read_bytes())
    before = base.read_bytes()
    res = run_cli("fit", str(RUNS), "--bootstrap", "0", "--law=~/base.toml", "--out=~/base.toml")
    assert res.code == 2 and "which this command reads" in res.stderr, res.stderr
    assert base.read_bytes() == before
