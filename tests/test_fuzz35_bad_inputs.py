"""Bad inputs found by the fuzz35 round, each one error line (exit 2) that names the value:

- ``NUMBA_NUM_THREADS`` numba cannot start a pool with: 0 was a ValueError traceback at the
  first parallel kernel, 'x' and '' a warning carrying numba's own traceback (exit 0), 99999 a
  segmentation fault;
- a FIFO named as a format file's VQ codebook (``codebook = "cb.npy"``): gmse, rank and
  predict waited on it for ever (hashing the codebook for the GMSE's cache key read it);
- a law, format or sweep file refused as a pipe or as too large said 'cannot read law file X:'
  twice (LawError and SpecError are ValueErrors, so the refusal was wrapped again);
- ``fit``: a runs file's warnings and duplicate notes printed before a bad ``--where``,
  ``--law`` or ``--exclude-worst`` was found made two or more stderr lines;
- a FIFO left in the cache (a GMSE, a remembered constant, a codebook record or its array)
  was waited on for ever, where any other damaged entry is recomputed;
- a real-valued option read '3_0' as 30 (``search --bits 3_0`` searched at 30 bits) and
  refused another script's digits with a message naming no value;
- a quantize stage's ``group`` written as text other than ASCII digits ('３２', '3_2', '32.0',
  '+32') read as 32, where a vq stage's group refuses them.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GOOD = {"weights": "int4", "N": 1e6, "D": 1e8, "loss": 3.5}
VQ_FILE = '[[stages]]\nkind = "vq"\ndim = 2\nbits = 2\ncodebook = "cb.npy"\n'


def _uscl(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environ = dict(os.environ, PYTHONPATH=str(REPO), USCL_CACHE_DIR=str(cwd / "cache"))
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "gmse_cli", *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, stdin=subprocess.DEVNULL, timeout=timeout)


def _one_error(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("value", ["0", "x", "", "99999", "-1"])
def test_a_numba_thread_count_numba_cannot_use_is_one_error_line(tmp_path, value):
    # a Monte Carlo GMSE runs numba's parallel kernels
    res = _uscl("gmse", "int4-g32", "--recompute", "--rel-err", "0.3", cwd=tmp_path, env={"NUMBA_NUM_THREADS": value})
    assert res.returncode == 2, res.stderr
    assert f"NUMBA_NUM_THREADS={value!r}" in _one_error(res.stderr)


def test_a_usable_numba_thread_count_is_taken(tmp_path):
    res = _uscl("formats", "show", "int4", cwd=tmp_path, env={"NUMBA_NUM_THREADS": " 2"})
    assert res.returncode == 0 and res.stderr == "", res.stderr


@pytest.mark.parametrize("command", [["gmse", "f.toml", "--rel-err", "0.3"], ["rank", "f.toml"], ["predict", "f.toml"]])
def test_a_fifo_named_as_a_codebook_is_refused_not_waited_on(tmp_path, command):
    (tmp_path / "f.toml").write_text(VQ_FILE)
    os.mkfifo(tmp_path / "cb.npy")
    res = _uscl(*command, cwd=tmp_path, timeout=300)  # it hung (TimeoutExpired); 300 s leaves room for a cold numba compile on a loaded CI machine
    assert res.returncode == 2
    line = _one_error(res.stderr)
    assert "cb.npy" in line and "not a regular file" in line


@pytest.mark.parametrize("special, reason", [("fifo", "not a regular file (a pipe or a device)"), ("folder", "it is a folder")])
def test_a_codebook_that_is_no_regular_file_is_refused_as_its_format_file_loads(tmp_path, special, reason):
    # before any work: found only when the GMSE read the codebook, the refusal came after the
    # GMSE's first progress line whenever getting there took over 0.5 s (two lines on stderr)
    from gmse_cli.errors import SpecError
    from gmse_cli.spec.formatfile import load_format_toml

    (tmp_path / "f.toml").write_text(VQ_FILE)
    os.mkfifo(tmp_path / "cb.npy") if special == "fifo" else (tmp_path / "cb.npy").mkdir()
    with pytest.raises(SpecError) as refused:
        load_format_toml(tmp_path / "f.toml")
    assert str(refused.value) == f"cannot read codebook file {tmp_path / 'cb.npy'}: {reason}"


def test_a_folder_named_as_a_codebook_is_one_error_line(run_cli, tmp_path):
    (tmp_path / "f.toml").write_text(VQ_FILE)
    (tmp_path / "cb.npy").mkdir()
    res = run_cli("gmse", str(tmp_path / "f.toml"), "--rel-err", "0.3")
    assert res.code == 2
    assert _one_error(res.stderr) == f"error: cannot read codebook file {tmp_path / 'cb.npy'}: it is a folder"


@pytest.mark.parametrize("command, what", [(["predict", "int4", "--law"], "law file"), (["gmse"], "format file"),
                                           (["train", "--dry-run"], "sweep file")])
def test_a_refused_input_file_is_named_once(run_cli, tmp_path, command, what):
    fifo = tmp_path / "in.toml"
    os.mkfifo(fifo)
    res = run_cli(*command, str(fifo))
    assert res.code == 2
    assert _one_error(res.stderr) == f"error: cannot read {what} {fifo}: not a regular file (a pipe or a device)"
    big = tmp_path / "big.toml"
    big.write_bytes(b"#" * (17 << 20) + b"\n")
    res = run_cli(*command, str(big))
    assert res.code == 2
    assert _one_error(res.stderr) == f"error: {what} {big} is 17.0 MiB; the limit is 16 MiB"


def _runs(path: Path, extra: list[dict]) -> Path:
    grid = [dict(GOOD, N=n, D=d, loss=3 + 1e3 / n ** 0.3 + 1e3 / d ** 0.3) for n in (1e6, 3e6, 1e7) for d in (1e8, 1e9, 1e10)]
    path.write_text("".join(json.dumps(r) + "\n" for r in [*grid, *extra]))
    return path


@pytest.mark.parametrize("extra", [[dict(GOOD, N=1e6, D=1e8, loss=3 + 1e3 / 1e6 ** 0.3 + 1e3 / 1e8 ** 0.3)],
                                   [dict(GOOD, loss=float("nan"))]], ids=["duplicate", "diverged"])
@pytest.mark.parametrize("options, needle", [(["--where", "garbage"], "garbage"), (["--where", "nosuch>5"], "nosuch"),
                                             (["--exclude-worst", "99"], "99"),
                                             (["--model", "unified", "--law", "nosuchlaw"], "nosuchlaw")])
def test_fit_notes_on_the_runs_do_not_precede_an_error(run_cli, tmp_path, extra, options, needle):
    runs = _runs(tmp_path / "r.jsonl", extra)
    res = run_cli("fit", str(runs), "--out", str(tmp_path / "law.toml"), *options)
    assert res.code == 2
    assert needle in _one_error(res.stderr)
    assert not (tmp_path / "law.toml").exists()


def test_fit_still_notes_a_duplicate_and_a_skipped_run_when_it_fits(run_cli, tmp_path):
    dup = dict(GOOD, N=1e6, D=1e8, loss=3 + 1e3 / 1e6 ** 0.3 + 1e3 / 1e8 ** 0.3)
    runs = _runs(tmp_path / "r.jsonl", [dup, dict(GOOD, loss=float("nan"))])
    res = run_cli("fit", str(runs), "--json")
    assert res.code == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines == [f"warning: {runs}:11: skipping diverged run (loss = nan)",
                     f"note: 1 exact duplicate run fitted once (the first: {runs}:10, a copy of {runs}:1)"]
    assert json.loads(res.stdout)["results"][0]["duplicates_dropped"] == 1


@pytest.mark.parametrize("group", ['"３２"', '"٣٢"', '"3_2"', '"32.0"', '"+32"', '"1e1"'])
def test_a_quantize_group_in_text_is_ascii_digits_or_a_name(run_cli, tmp_path, group):
    spec = tmp_path / "f.toml"
    spec.write_text(f'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\ngroup = {group}\n', encoding="utf-8")
    res = run_cli("formats", "show", str(spec))
    assert res.code == 2
    assert f"group '{group.strip(chr(34))}'" in _one_error(res.stderr)


@pytest.mark.parametrize("group", ['"32"', '" 32 "', "32"])
def test_a_quantize_group_of_ascii_digits_still_reads_as_a_number(run_cli, tmp_path, group):
    spec = tmp_path / "f.toml"
    spec.write_text(f'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\ngroup = {group}\n')
    res = run_cli("formats", "show", str(spec))
    assert res.code == 0, res.stderr
    assert "group = 32\n" in res.stdout


class Hung(BaseException):
    """Raised into a read that waits on a FIFO (no OSError, which the cache readers catch)."""


@contextmanager
def _no_hang(seconds: int = 20) -> Iterator[None]:
    """A read that waits on a FIFO fails the test instead of hanging it."""

    def stop(*_):
        raise Hung(f"still waiting after {seconds} s")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_a_fifo_in_the_gmse_cache_is_a_damaged_entry():
    from gmse_cli.gmse.cache import gmse_cache_dir, read_cached

    key = "f" * 64
    os.mkfifo(gmse_cache_dir() / f"{key}.json")
    with _no_hang():
        assert read_cached(key) is None


def test_a_fifo_in_the_memo_cache_is_recomputed():
    from gmse_cli.memo import memo_dir, remembered

    key = "fuzz35 fifo entry"
    os.mkfifo(memo_dir("fuzz35") / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json")
    with _no_hang():
        assert remembered("fuzz35", key, lambda: 2.5) == 2.5


@pytest.mark.parametrize("fifo", ["json", "npy"])
def test_a_fifo_in_the_codebook_cache_is_a_damaged_entry(tmp_path, fifo):
    import numpy as np

    from gmse_cli.compress.vq.store import CodebookInfo, load_codebook

    info = CodebookInfo(kind="gaussian", dim=2, index_bits=2, codewords=4, scale_constant=1.0, mse=0.1,
                        mse_samples=100, algorithm_version=1)
    (tmp_path / "book.json").write_text(info.model_dump_json())
    np.save(tmp_path / "book.npy", np.zeros((4, 2), np.float32))
    (tmp_path / f"book.{fifo}").unlink()
    os.mkfifo(tmp_path / f"book.{fifo}")
    with _no_hang():
        assert load_codebook("book", True, tmp_path) is None


@pytest.mark.parametrize("args, value", [(["search", "--bits"], "3_0"), (["gmse", "int4", "--rel-err"], "0.0_5"),
                                         (["gmse", "int4", "--rel-err"], "\u0660.05"), (["search", "--bits"], "\u0664"),
                                         (["predict", "int4", "--rel-err"], "\uff10.05")])
def test_a_real_option_takes_ascii_digits_without_underscores(run_cli, args, value):
    # '3_0' was read as 30 (a search at 30 bits); another script's digits failed naming no value
    res = run_cli(*args, value, "--json")
    assert res.code == 2
    assert repr(value) in _one_error(res.stderr)


def test_a_real_option_still_takes_a_sign_blanks_and_an_exponent(run_cli):
    res = run_cli("gmse", "int4", "--rel-err", " +5e-2 ", "--json")
    assert res.code == 0, res.stderr
