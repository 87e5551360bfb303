"""Corners of the command line left by earlier reviews.

Before: ``uscl mse ... --csv`` wrote a format file's description (or any name read from a file)
with its escape bytes raw; ``NUMBA_NUM_THREADS=abc uscl --version`` (and ``uscl rank --help``)
refused to answer; ``OMP_NUM_THREADS=x`` let libgomp print its own "Invalid value" line and
drop the setting; ``fit([])`` said "all 0 runs quantize activations", and ``uscl fit`` of an
empty runs file blamed --where; the library's refusals named CLI options
(``gmse_of(rel_err=0)``: "--rel-err 0 must be ...").
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys

import conftest  # noqa: F401  (the suite's fixtures: run_cli, private caches)
import pytest

from gmse_cli import __version__
from gmse_cli.errors import FitError, SpecError

ESC = "\x1b"


# --- CSV carries no raw control character ------------------------------------------------------

def _printed_csv(capsys, items):
    from gmse_cli.cli.output import print_csv

    capsys.readouterr()
    print_csv(items, command="formats")
    return capsys.readouterr().out


def test_csv_cells_and_columns_escape_control_characters(capsys):
    out = _printed_csv(capsys, [{"name": f"layer{ESC}[2J.weight", f"odd{ESC}key": 1, "note": "a\rb"}])
    assert ESC not in out and "\r" not in out
    header, row = list(csv.reader(io.StringIO(out)))
    assert header == ["name", "odd\\x1bkey", "note"]
    assert row == ["layer\\x1b[2J.weight", "1", "a\\rb"]


def test_csv_of_ordinary_names_is_what_the_csv_module_writes(capsys):
    items = [{"name": "int4-g128", "description": 'a "quoted", comma\nand a second line', "bits": 4.125, "x": None},
             {"name": "naïve µ", "description": "tab\there", "bits": 8, "x": True}]
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(["name", "description", "bits", "x"])
    writer.writerows([["int4-g128", 'a "quoted", comma\nand a second line', 4.125, ""], ["naïve µ", "tab\there", 8, True]])
    assert _printed_csv(capsys, items) == expected.getvalue()


def test_mse_csv_escapes_a_format_files_description(tmp_path, run_cli):
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    model = tmp_path / "m.safetensors"
    save_file({f"layer{ESC}[2J.weight": rng.standard_normal((8, 256)).astype(np.float32)}, str(model))
    fmt = tmp_path / "odd.toml"
    fmt.write_text('name = "odd"\ndescription = "odd\\u001b[2Jdesc"\n[[stages]]\nkind = "quantize"\n'
                   'grid = "int"\nbits = 4\n')
    result = run_cli("mse", str(model), "-f", str(fmt), "--csv")
    assert result.code == 0, result.stderr
    assert ESC not in result.stdout
    (row,) = csv.DictReader(io.StringIO(result.stdout))
    assert row["spec.description"] == "odd\\x1b[2Jdesc"


# --- thread settings: --help and --version always answer; commands refuse in one line ----------

@pytest.mark.parametrize("value", ["abc", "0", "999999"])
@pytest.mark.parametrize("args", [["--version"], ["--help"], ["rank", "--help"], ["formats", "--help"],
                                  ["formats", "show", "--help"], ["tokenizer", "train", "--help"]])
def test_help_and_version_answer_whatever_numba_num_threads_holds(monkeypatch, run_cli, value, args):
    monkeypatch.setenv("NUMBA_NUM_THREADS", value)
    result = run_cli(*args)
    assert result.code == 0 and result.stderr == ""
    assert (f"uscl {__version__}" if args == ["--version"] else "Usage: uscl") in result.stdout


@pytest.mark.parametrize("variable, value", [("NUMBA_NUM_THREADS", "abc"), ("NUMBA_NUM_THREADS", "0"),
                                             ("OMP_NUM_THREADS", "x"), ("OMP_NUM_THREADS", "4,0")])
@pytest.mark.parametrize("args", [["rank"], ["formats"], ["formats", "show", "int4"], ["gmse", "int4"]])
def test_a_command_refuses_a_bad_thread_setting_in_one_line(monkeypatch, run_cli, variable, value, args):
    monkeypatch.setenv(variable, value)
    result = run_cli(*args)
    assert result.code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"{variable}={value!r}" in result.stderr


# What GNU OpenMP itself reads, asked of it. One parallel numba kernel finds the libgomp numba
# runs on; libgomp parses OMP_NUM_THREADS when it is loaded (and prints its "Invalid value"
# line then), so each value is then asked of that library loaded alone, 30x faster than
# compiling a kernel per value (the two agree on every value below).
_OMP_VALUES = ["x", "", " ", "0", "-4", "4,0", "4,", "1e3", "99999999999999999999999",
               "4", " 4 ", "+4", "04", "4,2", "4 ,2", "4, 2"]
_PROBE = """
import numba
from numba import njit, prange
@njit(parallel=True)
def f(n):
    s = 0
    for i in prange(n):
        s += i
    return s
f(10)
print(numba.threading_layer())
print(next((line.split()[-1] for line in open("/proc/self/maps") if "libgomp" in line), ""))
"""


def test_omp_num_threads_is_refused_exactly_where_libgomp_refuses_it():
    from gmse_cli.threads import check_thread_setting

    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS")}
    probe = subprocess.run([sys.executable, "-c", _PROBE], env={**base, "OMP_NUM_THREADS": "x"},
                           capture_output=True, text=True, timeout=120)
    layer, _, libgomp = probe.stdout.strip().partition("\n")
    if layer != "omp" or not libgomp:
        pytest.skip(f"numba's threading layer here is {layer or probe.stderr[-200:]!r}, not libgomp")
    # The kernel's own run under a bad value: libgomp said so.
    assert "Invalid value for environment variable OMP_NUM_THREADS" in probe.stderr
    compared = 0
    for value in _OMP_VALUES:
        loaded = subprocess.run([sys.executable, "-c", "import ctypes, sys; ctypes.CDLL(sys.argv[1])", libgomp],
                                env={**base, "OMP_NUM_THREADS": value}, capture_output=True, text=True,
                                timeout=60)
        assert loaded.returncode == 0, loaded.stderr
        libgomp_refuses = "Invalid value for environment variable OMP_NUM_THREADS" in loaded.stderr
        os.environ["OMP_NUM_THREADS"] = value
        try:
            check_thread_setting()
            refused = False
        except SpecError as exc:
            refused = True
            assert f"OMP_NUM_THREADS={value!r}" in str(exc)
        finally:
            del os.environ["OMP_NUM_THREADS"]
        assert refused == libgomp_refuses, value
        compared += 1
    assert compared == len(_OMP_VALUES)


# --- no runs ----------------------------------------------------------------------------------

@pytest.mark.parametrize("model", ["dense", "decoupled", "unified", "capacity", "kumar"])
def test_fit_of_no_runs_says_so(model):
    from gmse_cli.fit import fit

    with pytest.raises(FitError, match=r"^fit got no runs \(an empty list\)") as err:
        fit([], model=model)
    assert "quantize" not in str(err.value)


@pytest.mark.parametrize("name, text", [("runs.jsonl", ""), ("runs.json", "[]")])
def test_uscl_fit_of_a_file_without_runs_names_the_file_not_where(tmp_path, run_cli, name, text):
    path = tmp_path / name
    path.write_text(text)
    result = run_cli("fit", str(path))
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert f"no runs to fit in {path}" in result.stderr and "--where" not in result.stderr


def test_uscl_fit_of_only_skipped_runs_says_how_many(tmp_path, run_cli):
    record = {"schema_version": 1, "run_key": "f693e0de9db453ae", "name": "r", "status": "diverged",
              "weights": "int3", "activations": "int3", "params": 106816, "tokens": 854016,
              "tokens_per_param": 8.0, "val_loss": 3.85, "seed": 0, "uscl_version": "0.1.0"}
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(record) + "\n" + json.dumps({**record, "run_key": "1" * 16}) + "\n")
    result = run_cli("fit", str(path))
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert "no runs to fit" in result.stderr and "2 skipped" in result.stderr and "diverged" in result.stderr


# --- the library names its parameters, the command line its options ----------------------------

def test_library_refusals_name_the_parameter():
    import gmse_cli
    from gmse_cli.fit import fit

    cases = [(lambda: gmse_cli.gmse_of("int4", rel_err=0), "rel_err=0 must be a positive number"),
             (lambda: gmse_cli.gmse_of("int4", rel_err=2), "rel_err=2 must be below 1"),
             (lambda: gmse_cli.gmse_of("int4", row_length=0), "row_length=0 must be a whole number"),
             (lambda: gmse_cli.estimate_gmse(["int4"], max_samples=0), "max_samples=0 must be a positive whole"),
             (lambda: gmse_cli.SampleBank(row_length=-1), "row_length=-1 must be"),
             (lambda: fit([], huber_delta=0), "huber_delta=0 must be a positive number"),
             (lambda: fit([], bootstrap=-1), "bootstrap=-1 must be a whole number")]
    for call, message in cases:
        with pytest.raises(Exception, match="^" + message) as err:
            call()
        assert "--" not in str(err.value)


@pytest.mark.parametrize("args, message", [
    (["gmse", "int4", "--rel-err", "0"], "--rel-err 0.0 must be a positive number"),
    (["gmse", "int4", "--rel-err", "2"], "--rel-err 2.0 must be below 1"),
    (["gmse", "int4", "--max-samples", "0"], "--max-samples 0 must be a positive whole number"),
    (["rank", "--rel-err", "0"], "--rel-err 0.0 must be a positive number"),
    (["predict", "int4", "--rel-err", "0"], "--rel-err 0.0 must be a positive number"),
    (["search", "--bits", "4", "--rel-err", "1.5"], "--rel-err 1.5 must be in (0, 1)"),
])
def test_the_command_line_still_names_the_option(run_cli, args, message):
    result = run_cli(*args)
    assert result.code == 2 and result.stderr.count("\n") == 1
    assert f"error: {message}" in result.stderr and "rel_err=" not in result.stderr
