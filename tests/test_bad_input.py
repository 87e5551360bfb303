"""Generated bad input for every command: exit 2, one stderr line naming the value, no traceback,
pre-existing outputs byte-identical, temporary files gone (the cases: tests/bad_inputs.py).

Bounded for the suite (a few dozen examples per property); ``benchmarks/bad_inputs.py`` runs
the same generators over a thousand cases and more.
"""

from __future__ import annotations

import importlib.util
import math
import random
import tempfile
from pathlib import Path

import bad_inputs
import pytest
from bad_inputs import Case, run_case
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

BOUNDED = settings(max_examples=12, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _assert_clean(case: Case) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        outcome = run_case(case, Path(tmp))
    assert outcome.clean, f"{case.args}: {outcome.why}\n{outcome.stderr}"


@pytest.mark.parametrize("kind", sorted(bad_inputs.GENERATORS))
@settings(BOUNDED, max_examples=20)
@given(seed=st.integers(0, 2**32 - 1))
def test_generated_bad_input_is_one_clean_line(kind, seed):
    if kind == "activations" and not all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
        # without the train extra every such case is the one line naming the extra, not the input
        pytest.skip("uscl mse --activations needs the train extra (torch, transformers)")
    _assert_clean(bad_inputs.GENERATORS[kind](random.Random(seed)))


# ---- properties over values hypothesis draws directly -----------------------------------

_NAME_CHARS = st.characters(codec="utf-8", exclude_characters="\x00")


@BOUNDED
@given(name=st.text(_NAME_CHARS, min_size=1, max_size=400))
def test_any_text_as_a_format_name_is_a_format_or_one_line(name, run_cli):
    res = run_cli("formats", "show", name)
    assert res.code in (0, 2), res.stderr
    assert "Traceback" not in res.stderr
    if res.code == 2:
        assert res.stderr.strip().count("\n") == 0


_NOT_A_NUMBER = st.one_of(st.booleans(), st.text(max_size=8), st.just(float("nan")), st.just(float("inf")),
                          st.lists(st.integers(), max_size=2))


@BOUNDED
@given(field=st.sampled_from(["bits", "group", "scale_constant"]), value=_NOT_A_NUMBER)
def test_a_format_field_of_the_wrong_type_names_the_field(field, value):
    from gmse_cli.tomlfile import dumps_toml

    stage = {"kind": "quantize", "grid": "int", "bits": 4, field: value}
    if isinstance(value, float):  # tomli-w writes nan and inf as TOML's own nan and inf
        text = dumps_toml({"stages": [dict(stage, **{field: 0})]}).replace(f"{field} = 0", f"{field} = {value}")
    else:
        text = dumps_toml({"stages": [stage]})
    _assert_clean(Case("format file", ["gmse", "{d}/f.toml"], {"f.toml": text.encode()}, (field,)))


@BOUNDED
@given(seed=st.one_of(st.integers(max_value=-1), st.integers(min_value=2**63)),
       command=st.sampled_from([["gmse", "int4"], ["rank", "int4"], ["predict", "int4"], ["search", "--bits", "4"],
                                ["fit", "{d}/good.jsonl"]]))
def test_a_seed_out_of_range_is_named(seed, command):
    _assert_clean(Case("option", [*command, "--seed", str(seed)], bad_inputs.base_files(), ("seed",)))


@BOUNDED
@given(value=st.one_of(st.integers(max_value=0), st.integers(min_value=(1 << 20) + 1)),
       command=st.sampled_from([["formats"], ["gmse", "int4"], ["predict", "int4"]]))
def test_a_row_length_out_of_range_is_named_before_any_allocation(value, command):
    _assert_clean(Case("option", [*command, "--row-length", str(value)], {}, ("row-length",)))


@BOUNDED
@given(value=st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(math.nan)),
       name=st.sampled_from(["alpha", "beta", "A", "B"]))
def test_fix_outside_a_laws_domain_is_named(value, name):
    case = Case("option", ["fit", "{d}/good.jsonl", "--fix", f"{name}={value!r}"], bad_inputs.base_files(), ("--fix",))
    _assert_clean(case)


@BOUNDED
@given(value=st.one_of(st.floats(max_value=0), st.just(math.inf), st.just(math.nan)))
def test_tokens_per_param_must_be_positive_and_finite(value):
    case = Case("option", ["train", "--dry-run", "--preset", "tiny", "--out", "{d}/runs.jsonl",
                           "--tokens-per-param", repr(value)], {}, ("tokens-per-param",))
    _assert_clean(case)


def test_no_arguments_prints_the_help(run_cli):
    res = run_cli()
    assert "Usage" in res.stdout and "formats" in res.stdout
    assert "error" not in res.stderr


def test_fit_with_a_bad_plot_path_writes_no_law(tmp_path):
    case = Case("output path", ["fit", "{d}/good.jsonl", "--out", "{d}/new-law.toml", "--plot", "{d}/nodir/x.png"],
                bad_inputs.base_files(), ("nodir",))
    outcome = run_case(case, tmp_path)
    assert outcome.clean, outcome.why
    assert not (tmp_path / "new-law.toml").exists()


def test_fit_whose_constants_no_law_holds_is_an_error_with_or_without_out(tmp_path, run_cli):
    # Loss rising with data: any fit of L = A/N^alpha + B/D^beta + E gives beta <= 0 or B = 0.
    runs = [dict(bad_inputs.GOOD_RUN, N=n, D=d, loss=2.0 + 1e3 / n ** 0.3 + 1e-3 * d ** 0.2)
            for n in (1e6, 3e6, 1e7) for d in (1e8, 1e9, 1e10)]
    path = tmp_path / "runs.jsonl"
    path.write_bytes(bad_inputs.jsonl_bytes(runs))
    for extra in ([], ["--out", str(tmp_path / "law.toml")]):
        res = run_cli("fit", str(path), *extra)
        assert res.code == 2 and "a scaling law needs" in res.stderr, res.stderr
        assert res.stderr.strip().count("\n") == 0, res.stderr
    assert not (tmp_path / "law.toml").exists()


def test_json_never_carries_nan(run_cli, tmp_path):
    path = tmp_path / "w.safetensors"
    path.write_bytes(bad_inputs.good_weights([float("nan")]))
    res = run_cli("mse", str(path), "-f", "int4", "--json")
    assert res.code == 2 and "layer.weight" in res.stderr and res.stdout == ""


def test_print_json_names_the_non_finite_value():
    from gmse_cli.cli.output import print_json
    from gmse_cli.errors import DataError

    with pytest.raises(DataError, match=r"result \[1\]\.rho is inf"):
        print_json([{"rho": 1.0}, {"rho": math.inf}])


def test_a_results_file_that_never_ends_is_not_read(tmp_path):
    import os

    from gmse_cli.errors import DataError
    from gmse_cli.runs import load_runs

    fifo = tmp_path / "runs.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_runs(fifo)
    with pytest.raises(DataError, match="not a regular file"):
        load_runs("/dev/zero")


# ---- the ground floor: one reader and one output check for every kind of file --------------


def test_read_text_file_refuses_what_it_cannot_read_whole(tmp_path, monkeypatch):
    import os

    from gmse_cli import inputs
    from gmse_cli.errors import DataError

    def read(path, **kw):
        return inputs.read_text_file(path, what="test file", error=DataError, **kw)

    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(DataError, match="not a regular file"):
        read(tmp_path / "fifo")  # returns at once: a FIFO is never opened for a blocking read
    (tmp_path / "u16").write_text("a = 1", encoding="utf-16")
    with pytest.raises(DataError, match="UTF-16 text; save it as UTF-8"):
        read(tmp_path / "u16")
    (tmp_path / "latin").write_bytes(b"a = 1\n# caf\xe9\n")
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        read(tmp_path / "latin")
    (tmp_path / "latin-bom").write_bytes(b"\xef\xbb\xbfa = 1\n# caf\xe9\n")  # the mark is no byte of the text
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe9 on line 2\)"):
        read(tmp_path / "latin-bom")
    (tmp_path / "bom").write_bytes(b"\xef\xbb\xbfa = 1\n")
    assert read(tmp_path / "bom") == "a = 1\n"
    (tmp_path / "big").write_bytes(b"x" * 2048)
    with pytest.raises(DataError, match="the limit is"):
        read(tmp_path / "big", limit=1024)
    assert read(tmp_path / "big") == "x" * 2048


def test_nesting_is_limited_and_recursion_never_escapes():
    import json
    import tomllib

    from gmse_cli.errors import DataError
    from gmse_cli.inputs import MAX_NESTING, parse_nested

    assert parse_nested(json.loads, "[" * MAX_NESTING + "]" * MAX_NESTING, where="x", error=DataError)
    for text in ("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1), "[" * 100_000 + "]" * 100_000):
        with pytest.raises(DataError, match="nests deeper than 64 levels"):
            parse_nested(json.loads, text, where="x", error=DataError)
    with pytest.raises(DataError, match="nests deeper"):
        parse_nested(tomllib.loads, "a = " + "[" * 5000 + "]" * 5000, where="x", error=DataError)


def test_names_that_cannot_be_paths_are_names():
    from gmse_cli.inputs import exists, is_file

    for name in ("x" * 5000, "a\x00b", "/" + "y" * 300 + "/z"):
        assert not is_file(name) and not exists(name)


def test_output_check_before_any_work(tmp_path, monkeypatch):
    import os
    import shutil

    from gmse_cli import atomic
    from gmse_cli.errors import DataError

    def check(path, **kw):
        return atomic.check_output_path(path, what="plot", error=DataError, **kw)

    os.mkfifo(tmp_path / "fifo")
    cases = {"/dev/null": "a device or a pipe", str(tmp_path / "fifo"): "a device or a pipe",
             str(tmp_path): "it is a folder", str(tmp_path / "no" / "x.png"): "does not exist",
             str(tmp_path / ("n" * 300 + ".png")): "file name too long"}
    for path, message in cases.items():
        with pytest.raises(DataError, match=message):
            check(path)
    assert check(tmp_path / "no" / "deeper", folder=True) == tmp_path / "no" / "deeper"
    assert not (tmp_path / "no").exists()  # checking makes nothing
    monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1 << 30, 1 << 30, 10))
    with pytest.raises(DataError, match="no space left on device"):
        check(tmp_path / "x.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo"]  # the write probe is gone


def test_an_atomic_write_never_replaces_a_device_or_leaves_a_temporary(tmp_path, monkeypatch):
    import errno
    import os

    from gmse_cli import atomic

    with pytest.raises(OSError):
        atomic.write_atomic("/dev/null", b"x")
    target = tmp_path / "law.toml"
    target.write_text("old")

    def fail(handle):
        handle.write(b"half")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(OSError, match="No space left"):
        atomic.write_atomic(target, fail)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["law.toml"]


@pytest.mark.parametrize("args, option", [
    (["train", "--preset", "tiny", "--format", "int4", "--checkpoint-dir", ""], "--checkpoint-dir"),
    (["train", "--preset", "tiny", "--format", "int4", "--models-dir", " "], "--models-dir"),
    (["train", ""], "SWEEP"),
    (["fit", ""], "FILES"),
    (["tokenizer", "train", "corpus.txt", "--out", ""], "--out"),
    (["formats", "export", "int4", "-o", ""], "--out"),
])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(run_cli, tmp_path, monkeypatch, args, option):
    # '' (an unset shell variable) became Path('.'): `train --checkpoint-dir ""` put every run's
    # checkpoints in the working folder, silently.
    monkeypatch.chdir(tmp_path)
    result = run_cli(*args)
    assert result.code == 2
    (line,) = result.stderr.strip().splitlines()
    assert option in line and "it is empty" in line
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_an_error_naming_a_huge_value_keeps_both_ends_of_its_line(run_cli):
    # The value was echoed whole: a 100,000-character format name made a 100,060-character line.
    name = "x" * 100_000
    res = run_cli("gmse", name)
    line = res.stderr.strip()
    assert res.code == 2 and len(line.splitlines()) == 1
    assert line.startswith("error: unknown format 'xxx") and line.endswith("see `uscl formats` or `uscl formats --help`")
    assert len(line) < 2100 and "characters left out" in line
