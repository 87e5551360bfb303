"""Every file a `uscl` command writes, checked against the contract on generated cases.

The writers: fit --out and --plot, rank --plot, mse --plot, search --plot and --out (a folder),
formats export -o and import -o, tokenizer train --out, train --out, --checkpoint-dir and
--models-dir, and the GMSE cache under USCL_CACHE_DIR. For each:

- a bad output location (missing folder, a file where a folder should be, a folder, FIFO or
  symlink to a folder where a file should be, a name too long, a newline in a missing folder,
  a read-only folder, one of the command's inputs) is one `error:` line and exit 2, before the
  long work starts, and nothing on disk changes;
- a file the command would replace survives a command that then fails, and a write past the
  file size limit (RLIMIT_FSIZE, SIGXFSZ ignored: what a full disk looks like to a writer);
- every successful write goes through a temporary file renamed over the target (an audit hook
  sees every open and rename), so a crash leaves the old file or the new one;
- SIGKILL and SIGINT at random moments of a plot's write, and of a search folder's commit,
  leave the old or the new whole, and a rerun goes through;
- two processes writing one output at once both finish and leave one whole output.

tests/test_atomic_signals.py (SIGTERM) and tests/test_ctrl_c.py (Ctrl-C's message) are not
repeated here; training runs' own kills and full disks are tests/test_train_faults.py's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import resource
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="FIFOs, rlimits, signals and /sys: Linux")

REPO = Path(__file__).resolve().parents[1]
RUNS = REPO / "examples" / "cpu-law.jsonl"


# ----------------------------------------------------------------------------------------------
# inputs and the writers


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Small inputs for every writer, in a folder of their own."""
    import numpy as np
    from safetensors.numpy import save_file

    from gmse_cli.interop import export_format
    from gmse_cli.spec import format_to_toml, resolve_format

    folder = tmp_path_factory.mktemp("inputs")
    shutil.copyfile(RUNS, folder / "runs.jsonl")
    weights = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    save_file({"layers.0.mlp.weight": weights}, str(folder / "model.safetensors"))
    (folder / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog; " * 200, encoding="utf-8")
    (folder / "blank.txt").write_text(" \n\t\n" * 50, encoding="utf-8")
    (folder / "cfg.json").write_text(json.dumps(export_format(resolve_format("w4a16"), "compressed-tensors")))
    (folder / "broken.json").write_text("{not json")
    (folder / "int4.toml").write_text(format_to_toml(resolve_format("int4")))
    return folder


@dataclass(frozen=True)
class Writer:
    """One output option: the command line writing OUT, and what the option promises."""

    argv: Callable[[Path, str], list[str]]
    suffix: str  # of a file output; "" for a folder
    work: tuple[str, str]  # (module, name) of the long work that a bad location must not start
    folder: bool = False  # the output is a folder
    parents: bool = False  # missing parent folders are made
    input_as_output: str | None = None  # one of the inputs, named as the output: refused
    fails_later: Callable[[Path, str], list[str]] | None = None  # a valid OUT, input bad after the check


def _train(i: Path, *extra: str) -> list[str]:
    return ["train", "--preset", "tiny", "--format", "int4", "--tokens-per-param", "1", "--data",
            str(i / "corpus.txt"), "--tokenizer", "bpe:300", *extra]


def _fit(i: Path, model: str, *extra: str) -> list[str]:
    return ["fit", str(i / "runs.jsonl"), "--model", model, "--no-heldout", "--bootstrap", "0", *extra]


WRITERS: dict[str, Writer] = {
    "fit --out": Writer(
        # alpha and beta held: a fit twice as fast, and a law all the same
        lambda i, o: _fit(i, "unified", "--fix", "alpha=0.78", "--fix", "beta=0.67", "--out", o), ".toml",
        ("gmse_cli.fit", "fit"),
        input_as_output="runs.jsonl",
        fails_later=lambda i, o: _fit(i, "unified", "--where", "N>1e30", "--out", o)),
    "fit --plot": Writer(
        lambda i, o: _fit(i, "dense", "--plot", o), ".svg", ("gmse_cli.fit", "fit"),
        fails_later=lambda i, o: _fit(i, "dense", "--where", "N>1e30", "--plot", o)),
    "rank --plot": Writer(
        lambda i, o: ["rank", "int4", "nvfp4", "--plot", o], ".svg", ("gmse_cli.rank", "rank"),
        fails_later=lambda i, o: ["rank", "int4", "no-such-format", "--plot", o]),
    "mse --plot": Writer(
        lambda i, o: ["mse", str(i / "model.safetensors"), "-f", "int4", "--plot", o], ".svg",
        ("gmse_cli.realmse", "measure_mse"),
        fails_later=lambda i, o: ["mse", str(i / "model.safetensors"), "-f", "no-such-format", "--plot", o]),
    "search --plot": Writer(
        lambda i, o: ["search", "--bits", "4", "--plot", o], ".svg", ("gmse_cli.search", "search_formats"),
        fails_later=lambda i, o: ["search", "--bits", "0.1", "--plot", o]),
    "search --out": Writer(
        lambda i, o: ["search", "--bits", "4", "--out", o], "", ("gmse_cli.search", "search_formats"),
        folder=True, parents=True,
        fails_later=lambda i, o: ["search", "--bits", "0.1", "--out", o]),
    "formats export -o": Writer(
        lambda i, o: ["formats", "export", "w4a16", "--to", "compressed-tensors", "-o", o], ".json",
        ("gmse_cli.interop", "export_format"),
        fails_later=lambda i, o: ["formats", "export", "no-such-format", "--to", "compressed-tensors", "-o", o]),
    "formats import -o": Writer(
        lambda i, o: ["formats", "import", str(i / "cfg.json"), "-o", o], ".toml",
        ("gmse_cli.interop", "import_config"), input_as_output="cfg.json",
        fails_later=lambda i, o: ["formats", "import", str(i / "broken.json"), "-o", o]),
    "tokenizer train --out": Writer(
        lambda i, o: ["tokenizer", "train", str(i / "corpus.txt"), "--vocab-size", "300", "--out", o], ".json",
        ("gmse_cli.training.data", "train_bpe"), parents=True, input_as_output="corpus.txt",
        fails_later=lambda i, o: ["tokenizer", "train", str(i / "blank.txt"), "--vocab-size", "300", "--out", o]),
    "train --out": Writer(
        lambda i, o: _train(i, "--out", o), ".jsonl", ("gmse_cli.cli.train", "_run"), parents=True,
        input_as_output="corpus.txt",
        fails_later=lambda i, o: [*_train(i, "--out", o), "--dry-run"]),  # OUT holds no run records
    "train --checkpoint-dir": Writer(
        lambda i, o: _train(i, "--out", str(i / "unused.jsonl"), "--checkpoint-dir", o), "",
        ("gmse_cli.cli.train", "_run"), folder=True, parents=True),
    "train --models-dir": Writer(
        lambda i, o: _train(i, "--out", str(i / "unused.jsonl"), "--models-dir", o), "",
        ("gmse_cli.cli.train", "_run"), folder=True, parents=True),
}


class LongWorkStarted(Exception):
    """Raised in place of a command's long work: its output location was not checked first."""


@pytest.fixture
def no_long_work(monkeypatch):
    def refuse(module: str, name: str) -> None:
        import importlib

        def started(*args, **kwargs):
            raise LongWorkStarted(f"{module}.{name} ran before the output location was refused")

        monkeypatch.setattr(importlib.import_module(module), name, started)

    return refuse


# ----------------------------------------------------------------------------------------------
# bad output locations: one line, exit 2, before any long work, nothing on disk changed


def _read_only_folder(tmp_path: Path) -> Path | None:
    """A folder this process cannot create files in: a 0555 folder (not root), or /sys (root)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    try:
        fd = os.open("/sys/.uscl-write-probe", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    except OSError:
        return Path("/sys")
    os.close(fd)
    os.unlink("/sys/.uscl-write-probe")
    return None


def _bad_location(case: str, writer: Writer, tmp_path: Path, inputs: Path) -> str | None:
    """The output path of ``case`` for ``writer`` (made on disk as the case needs), or None
    where the case is no error for this writer."""
    s = writer.suffix
    (tmp_path / "a-file").write_text("a file")
    if case == "missing folder":
        return None if writer.parents else str(tmp_path / "missing" / f"out{s}")
    if case == "parent is a file":
        return str(tmp_path / "a-file" / f"out{s}")
    if case == "under a file, two deep":
        return str(tmp_path / "a-file" / "sub" / f"out{s}")
    if case == "wrong kind in place":  # a folder where a file goes, a file where a folder goes
        if writer.folder:
            return str(tmp_path / "a-file")
        (tmp_path / f"taken{s}").mkdir()
        return str(tmp_path / f"taken{s}")
    if case == "fifo":
        os.mkfifo(tmp_path / f"pipe{s}")
        return str(tmp_path / f"pipe{s}")
    if case == "symlink to a folder":
        if writer.folder:
            return None  # a link to a folder is a folder to write into
        (tmp_path / "real-folder").mkdir()
        (tmp_path / f"link{s}").symlink_to(tmp_path / "real-folder")
        return str(tmp_path / f"link{s}")
    if case == "through a dangling symlink":  # a link to an unmounted disk: no folder can be made
        (tmp_path / "dangling").symlink_to(tmp_path / "unmounted" / "runs")
        return str(tmp_path / "dangling" / f"out{s}")
    if case == "through a symlink loop":
        (tmp_path / "loop-a").symlink_to(tmp_path / "loop-b")
        (tmp_path / "loop-b").symlink_to(tmp_path / "loop-a")
        return str(tmp_path / "loop-a" / f"out{s}")
    if case == "name too long":
        return str(tmp_path / ("n" * 300 + s))
    if case == "newline in a missing folder":
        return None if writer.parents else str(tmp_path / "no\nsuch" / f"out{s}")
    if case == "read-only folder":
        folder = _read_only_folder(tmp_path)
        return None if folder is None else str(folder / f"out{s}")
    if case == "an input":
        if writer.input_as_output is None:
            return None
        return str(inputs / writer.input_as_output)
    raise AssertionError(case)


LOCATION_CASES = ["missing folder", "parent is a file", "under a file, two deep", "wrong kind in place", "fifo",
                  "symlink to a folder", "through a dangling symlink", "through a symlink loop", "name too long", "newline in a missing folder", "read-only folder",
                  "an input"]


def _listing(*folders: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry under ``folders``: its type and, for a regular file, its bytes."""
    seen = {}
    for folder in folders:
        for path in sorted(folder.rglob("*")):
            mode = path.lstat().st_mode
            seen[str(path)] = (stat.S_IFMT(mode), path.read_bytes() if stat.S_ISREG(mode) else None)
    return seen


@pytest.mark.parametrize("case", LOCATION_CASES)
@pytest.mark.parametrize("name", list(WRITERS))
def test_a_bad_output_location_is_one_line_before_any_work(name, case, tmp_path, inputs, run_cli, no_long_work):
    writer = WRITERS[name]
    out = _bad_location(case, writer, tmp_path, inputs)
    if out is None:
        pytest.skip(f"{case}: no error for {name}")
    no_long_work(*writer.work)
    before = _listing(tmp_path, inputs)
    res = run_cli(*writer.argv(inputs, out))
    assert res.code == 2, (res.code, res.stderr)
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert " ".join(Path(out).name.split()) in lines[0], (out, lines[0])  # names the value
    assert _listing(tmp_path, inputs) == before  # nothing made, removed or replaced


@pytest.mark.parametrize("name", [n for n, w in WRITERS.items() if w.fails_later is not None])
def test_an_output_in_place_survives_a_command_that_fails_after_the_check(name, tmp_path, inputs, run_cli):
    writer = WRITERS[name]
    out = tmp_path / f"out{writer.suffix}"
    if writer.folder:
        out.mkdir()
        (out / "00-mine.toml").write_text("a file of the user's")
    else:
        out.write_bytes(b"the previous output")
    before = _listing(tmp_path, inputs)
    res = run_cli(*writer.fails_later(inputs, str(out)))
    assert res.code == 2, (res.code, res.stderr)
    lines = res.stderr.splitlines()
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in res.stderr, res.stderr
    assert _listing(tmp_path, inputs) == before


@pytest.mark.parametrize("name", ["formats import -o", "tokenizer train --out", "formats export -o"])
def test_an_output_that_is_a_symlink_loop_is_replaced_not_a_traceback(name, tmp_path, inputs, run_cli):
    # Comparing the output with the inputs resolved the loop: RuntimeError('Symlink loop from ...').
    # Like a dangling link, the loop holds nothing: the new file takes its place.
    out = tmp_path / f"loop{WRITERS[name].suffix}"
    out.symlink_to(out)
    res = run_cli(*WRITERS[name].argv(inputs, str(out)))
    assert res.code == 0, res.stderr
    assert out.is_file() and not out.is_symlink()
    _parses(out)


@pytest.mark.parametrize("option", ["--out", "--checkpoint-dir", "--models-dir"])
def test_train_refuses_an_output_inside_its_corpus_folder(option, tmp_path, inputs, run_cli, no_long_work):
    # Every file under a corpus folder is read as text: the first run's results line, checkpoints
    # and kept model joined the corpus, and the next run failed ('runs.jsonl:1: no string field
    # 'text'') or trained on them. `tokenizer train --out` already refused this.
    no_long_work("gmse_cli.cli.train", "_run")
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    shutil.copyfile(inputs / "corpus.txt", corpus / "part-0.txt")
    target = {"--out": "runs.jsonl", "--checkpoint-dir": "ckpt", "--models-dir": "models"}[option]
    outputs = ["--out", str(tmp_path / "runs.jsonl")] if option != "--out" else []
    before = _listing(tmp_path)
    res = run_cli("train", "--preset", "tiny", "--format", "int4", "--tokens-per-param", "1", "--data", str(corpus),
                  "--tokenizer", "bpe:300", *outputs, option, str(corpus / target))
    assert res.code == 2, res.stderr
    assert res.stderr.startswith("error: ") and "inside the corpus folder" in res.stderr, res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert _listing(tmp_path) == before


def test_search_refuses_a_plot_named_as_its_out_folder_before_searching(tmp_path, run_cli, no_long_work):
    # The folder was made by the frontier's write, after a search of minutes, and the plot then
    # failed on it ('not a regular file'): the plot was lost. Each output must name another path.
    no_long_work("gmse_cli.search", "search_formats")
    out = str(tmp_path / "found.svg")
    res = run_cli("search", "--bits", "4", "--out", out, "--plot", out)
    assert res.code == 2
    assert res.stderr.startswith("error: cannot write plot") and len(res.stderr.splitlines()) == 1, res.stderr
    assert list(tmp_path.iterdir()) == []


def test_rank_refuses_an_empty_plot_path(run_cli, no_long_work):
    # `rank --plot "$PLOT"` with PLOT unset printed the table, drew nothing and exited 0; every
    # other --plot refuses '' (fit, mse, search).
    no_long_work("gmse_cli.rank", "rank")
    res = run_cli("rank", "int4", "--plot", "")
    assert res.code == 2 and res.stderr.startswith("error: plot path") and res.stdout == "", res


# ----------------------------------------------------------------------------------------------
# real writes: past the file size limit the old file stays; done, the file came by one rename


_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_events: list[tuple[str, tuple]] | None = None
_hooked = False


def _audit(event: str, args: tuple) -> None:
    if _events is not None and event in ("open", "os.rename"):
        _events.append((event, args))


@contextmanager
def recorded_writes() -> Iterator[list[tuple[str, tuple]]]:
    """The opens and renames (os.replace raises 'os.rename' too) made in the block."""
    global _events, _hooked
    if not _hooked:  # an audit hook cannot be removed: it records only inside this block
        sys.addaudithook(_audit)
        _hooked = True
    _events = []
    try:
        yield _events
    finally:
        _events = None


def _came_by_one_rename(events: list[tuple[str, tuple]], target: Path) -> None:
    """``target`` was never opened for writing; a temporary beside it, written, was renamed onto it."""
    def where(p) -> str:
        return os.path.abspath(os.fsdecode(p))

    written = {where(a[0]) for e, a in events
               if e == "open" and isinstance(a[0], str | bytes | os.PathLike) and a[2] & _WRITE_FLAGS}
    assert where(target) not in written, f"{target} was written in place"
    onto = [where(a[0]) for e, a in events if e == "os.rename" and where(a[1]) == where(target)]
    assert len(onto) == 1, onto
    temporary = Path(onto[0])
    assert temporary.parent == target.parent and temporary.name.startswith(f".{target.name}.")
    assert str(temporary) in written


@contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE on this process, SIGXFSZ ignored: a write past ``limit`` fails with EFBIG."""
    old_limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    old_handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, old_limit[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, old_limit)
        signal.signal(signal.SIGXFSZ, old_handler)


_FITS: dict[str, object] = {}


@pytest.fixture
def fit_once(monkeypatch):
    """The fit (seconds) computed once per model for this module: its output is what is tested."""
    import gmse_cli.fit

    real = gmse_cli.fit.fit

    def fit(runs, **kwargs):
        if kwargs["model"] not in _FITS:
            _FITS[kwargs["model"]] = real(runs, **kwargs)
        return _FITS[kwargs["model"]]

    monkeypatch.setattr(gmse_cli.fit, "fit", fit)


def _parses(path: Path) -> None:
    """The new output is whole: it parses as what it is."""
    import tomllib

    data = path.read_bytes()
    if path.suffix == ".svg":
        assert data.startswith(b"<?xml") and data.rstrip().endswith(b"</svg>")
    elif path.suffix == ".json":
        json.loads(data)
    elif path.suffix == ".toml":
        tomllib.loads(data.decode())
    else:
        raise AssertionError(path)


FILE_WRITERS = ["fit --out", "fit --plot", "rank --plot", "mse --plot", "formats export -o", "formats import -o",
                "tokenizer train --out"]


@pytest.mark.parametrize("name", FILE_WRITERS)
def test_past_the_size_limit_the_old_file_stays_and_a_real_write_is_one_rename(name, tmp_path, inputs, run_cli,
                                                                              fit_once):
    writer = WRITERS[name]
    out = tmp_path / f"out{writer.suffix}"
    old = b"the previous output"
    out.write_bytes(old)
    with recorded_writes() as events:  # first: any kernel it needs is compiled and cached
        res = run_cli(*writer.argv(inputs, str(out)))
    assert res.code == 0, res.stderr
    _came_by_one_rename(events, out)
    _parses(out)
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]
    out.write_bytes(old)
    with file_size_limit(len(old) + 16):  # every new output is larger
        res = run_cli(*writer.argv(inputs, str(out)))
    assert res.code == 2, (res.code, res.stderr)
    last = res.stderr.splitlines()[-1]
    assert last.startswith("error: ") and out.name in last and "too large" in last.lower(), res.stderr
    assert "Traceback" not in res.stderr
    assert out.read_bytes() == old
    assert sorted(p.name for p in tmp_path.iterdir()) == [out.name]  # no temporary left


def test_the_gmse_cache_past_the_size_limit_costs_the_entry_not_the_answer(_private_gmse_cache, run_cli):
    # Cached GMSEs only save time: a full disk leaves no entry (nor a temporary) and the same answer.
    argv = ["gmse", "int5-g64-rms", "--rel-err", "0.05", "--recompute", "--json"]
    before = set(_private_gmse_cache.iterdir())
    with recorded_writes() as events:
        res = run_cli(*argv)
    assert res.code == 0, res.stderr
    (entry,) = set(_private_gmse_cache.iterdir()) - before
    _came_by_one_rename(events, entry)
    entry.unlink()
    with file_size_limit(16):
        limited = run_cli(*argv)
    assert limited.code == 0, limited.stderr
    assert set(_private_gmse_cache.iterdir()) == before
    assert limited.stdout == res.stdout  # same seed, same estimate


def test_a_search_folder_past_the_size_limit_keeps_the_previous_run(tmp_path):
    from gmse_cli.search import outfolder

    outfolder.replace_files(tmp_path, {"00-a.toml": b"old a"})
    before = _listing(tmp_path)
    with file_size_limit(8), pytest.raises(OSError) as info:
        outfolder.replace_files(tmp_path, {"00-b.toml": b"new b, longer than the limit"})
    assert info.value.errno == errno.EFBIG
    assert _listing(tmp_path) == before


@pytest.mark.parametrize("failure", [OSError(errno.EFBIG, "File too large"),
                                     OSError(errno.ENOSPC, "No space left on device", "/cache/kernel.nbi")])
def test_a_full_disk_in_a_write_uscl_does_not_wrap_is_one_line(failure, monkeypatch, run_cli):
    # numba saving a newly compiled kernel to its cache on a full disk raised out of the command
    # as a traceback (exit 1), e.g. from `uscl mse` on a machine whose kernel cache was cold.
    import gmse_cli.interop

    def full(*args, **kwargs):
        raise failure

    monkeypatch.setattr(gmse_cli.interop, "export_format", full)
    res = run_cli("formats", "export", "w4a16", "--to", "compressed-tensors")
    assert res.code == 2
    assert res.stderr.startswith("error: ") and len(res.stderr.splitlines()) == 1, res.stderr
    assert failure.strerror.lower() in res.stderr
    if failure.filename:
        assert failure.filename in res.stderr


def test_a_kernel_cache_write_past_the_size_limit_is_one_line(tmp_path):
    # The same through numba itself: a kernel compiled under the limit (its cache write fails).
    (tmp_path / "kernel.py").write_text(textwrap.dedent("""
        import resource, signal, sys
        import numba
        import gmse_cli.interop
        from gmse_cli.cli import main

        @numba.njit(cache=True)
        def plus_one(x):
            return x + 1

        real = gmse_cli.interop.export_format

        def export_after_a_kernel(*args, **kwargs):
            plus_one(1)  # compiled now; numba saves it to NUMBA_CACHE_DIR
            return real(*args, **kwargs)

        gmse_cli.interop.export_format = export_after_a_kernel
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64, 64))
        main(["formats", "export", "w4a16", "--to", "compressed-tensors"])
    """))
    env = dict(os.environ, PYTHONPATH=str(REPO), NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    res = subprocess.run([sys.executable, str(tmp_path / "kernel.py")], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and "too large" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.splitlines()) == 1, res.stderr


# ----------------------------------------------------------------------------------------------
# signals at random moments of a write; two writers at once


def _uscl(*argv: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "gmse_cli", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def _temporaries(folder: Path, target: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(f".{target.name}."))


_RANK_PLOT = ["rank", "int4", "nvfp4", "--plot"]


@pytest.fixture(scope="module")
def rank_plot(tmp_path_factory) -> bytes:
    """The plot `uscl rank int4 nvfp4` draws (the same bytes every time)."""
    path = tmp_path_factory.mktemp("reference") / "rank.svg"
    child = _uscl(*_RANK_PLOT, str(path))
    _, err = child.communicate(timeout=120)
    assert child.returncode == 0, err
    return path.read_bytes()


@pytest.mark.parametrize("sig, seed", [(signal.SIGKILL, 1), (signal.SIGKILL, 2), (signal.SIGINT, 3)])
def test_a_signal_while_the_plot_is_written_leaves_the_old_or_the_new(sig, seed, tmp_path, run_cli, rank_plot):
    argv = _RANK_PLOT
    folder = tmp_path / "out"
    folder.mkdir()
    out = folder / "rank.svg"
    old = b"the previous plot"
    out.write_bytes(old)
    child = _uscl(*argv, str(out))
    deadline = time.monotonic() + 60
    while not _temporaries(folder, out) and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)  # the plot is being rendered into its temporary file
    time.sleep(random.Random(seed).uniform(0.0, 0.25))
    child.send_signal(sig)
    _, err = child.communicate(timeout=60)
    assert out.read_bytes() in (old, rank_plot)
    if sig == signal.SIGINT:  # the write unwinds: no temporary is left
        assert child.returncode in (0, 130), err
        if child.returncode == 130:
            assert err.strip().splitlines() == ["aborted"], err
        assert _temporaries(folder, out) == []
        return
    left = _temporaries(folder, out)
    rerun = run_cli(*argv, str(out))  # a killed write's temporary does not stop the next
    assert rerun.code == 0, rerun.stderr
    assert out.read_bytes() == rank_plot
    assert _temporaries(folder, out) == left


_REPLACE_FOREVER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from gmse_cli.search import outfolder

    folder = Path(sys.argv[1])
    runs = [{f"{i:02d}-{tag}.toml": f"{tag} {i}\\n".encode() * 200 for i in range(6)} for tag in "ab"]
    print("ready", flush=True)
    sys.stdin.readline()  # go: writers started together overlap
    for n in range(int(sys.argv[2])):
        outfolder.replace_files(folder, runs[n % 2])
""")


def _runs_of(tag: str) -> dict[str, bytes]:
    return {f"{i:02d}-{tag}.toml": f"{tag} {i}\n".encode() * 200 for i in range(6)}


def _check_one_run(folder: Path, user_files: dict[str, bytes]) -> None:
    """The folder holds exactly one run's files, as its manifest names them, and the user's."""
    from gmse_cli.search.outfolder import MANIFEST

    manifest = json.loads((folder / MANIFEST).read_text())
    assert set(manifest) == {"files"}, manifest
    names = {p.name for p in folder.iterdir()}
    assert names == {MANIFEST, *manifest["files"], *user_files}, names
    for name, digest in manifest["files"].items():
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == digest
    for name, data in user_files.items():
        assert (folder / name).read_bytes() == data


def _start(script: str, *argv: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-c", script, *argv], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _go(*children: subprocess.Popen) -> None:
    """Wait until every child is ready, then let them all start."""
    for child in children:
        assert child.stdout.readline() == "ready\n"
    for child in children:
        child.stdin.write("go\n")
        child.stdin.flush()


@pytest.mark.parametrize("sig, seed", [(signal.SIGKILL, 5), (signal.SIGKILL, 6), (signal.SIGKILL, 9),
                                       (signal.SIGINT, 7), (signal.SIGINT, 8)])
def test_a_signal_during_search_out_commits_leaves_a_whole_run(sig, seed, tmp_path):
    from gmse_cli.search import outfolder

    mine = {"notes.toml": b"the user's own file"}
    for name, data in mine.items():
        (tmp_path / name).write_bytes(data)
    child = _start(_REPLACE_FOREVER, str(tmp_path), "1000000")
    _go(child)
    time.sleep(random.Random(seed).uniform(0.02, 0.3))
    child.send_signal(sig)
    child.communicate(timeout=60)
    for path in tmp_path.iterdir():  # every run file, in place or staged, is whole
        name = path.name.removeprefix(".uscl-staged.")
        if name.endswith(".toml") and name not in mine:
            tag = name.split("-")[1][0]
            assert path.read_bytes() == _runs_of(tag)[name]
    outfolder.replace_files(tmp_path, _runs_of("a"))  # the next run finishes or drops what was left
    _check_one_run(tmp_path, mine)
    assert set(json.loads((tmp_path / outfolder.MANIFEST).read_text())["files"]) == set(_runs_of("a"))


def test_the_next_search_removes_the_partial_files_a_killed_one_left(tmp_path):
    # A SIGKILL inside write_atomic leaves its temporary ('..uscl-staged.04-a.toml.XXXX.tmp',
    # '..uscl-search.json.XXXX.tmp'); the next search removed staged files, never these.
    from gmse_cli.search import outfolder

    outfolder.replace_files(tmp_path, _runs_of("a"))
    (tmp_path / "..uscl-staged.00-b.toml.k1ll3d.tmp").write_bytes(b"b 0\n")
    (tmp_path / f".{outfolder.MANIFEST}.k1ll3d.tmp").write_bytes(b'{"fil')
    outfolder.replace_files(tmp_path, _runs_of("b"))
    _check_one_run(tmp_path, {})


_REPLACE_ONCE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from gmse_cli.search import outfolder

    print("ready", flush=True)
    outfolder.replace_files(Path(sys.argv[1]), {f"{i:02d}-b.toml": f"b {i}\\n".encode() * 200 for i in range(6)})
""")


def test_a_search_writing_a_folder_another_is_writing_waits_its_turn(tmp_path, monkeypatch):
    # Without a lock the second search's clean-up deleted the file the first had staged: the
    # folder ended with both searches' files beside one manifest, or one search failed after all
    # its work ('No such file or directory: .uscl-staged.02-a.toml').
    from gmse_cli.search import outfolder

    mine = {"notes.toml": b"the user's own file"}
    (tmp_path / "notes.toml").write_bytes(mine["notes.toml"])
    real = outfolder.write_atomic
    second: list[subprocess.Popen] = []

    def first_staged_then_a_second_search(path, data, **kwargs):
        real(path, data, **kwargs)
        if not second:  # the second search starts while the first has staged one file
            second.append(_start(_REPLACE_ONCE, str(tmp_path)))
            assert second[0].stdout.readline() == "ready\n"
            time.sleep(0.3)

    monkeypatch.setattr(outfolder, "write_atomic", first_staged_then_a_second_search)
    outfolder.replace_files(tmp_path, _runs_of("a"))
    _, err = second[0].communicate(timeout=60)
    assert second[0].returncode == 0, err
    _check_one_run(tmp_path, mine)
    assert set(json.loads((tmp_path / outfolder.MANIFEST).read_text())["files"]) == set(_runs_of("b"))


def test_two_exports_to_one_file_at_once_leave_one_whole_file(tmp_path, run_cli):
    out = tmp_path / "config.json"
    argv = ["formats", "export", "w4a16", "--to", "compressed-tensors", "-o"]
    children = [_uscl(*argv, str(out)) for _ in range(2)]
    for child in children:
        _, err = child.communicate(timeout=120)
        assert child.returncode == 0, err
    expected = run_cli("formats", "export", "w4a16", "--to", "compressed-tensors").stdout
    assert out.read_text() == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_every_formats_export_example_in_its_help_runs(tmp_path, monkeypatch, run_cli):
    # `uscl formats export --help` showed 'uscl formats export int4-g128 --to torchao', which
    # fails: torchao holds no midrise int4 grid (uscl's int4); aint4-g128 is its int4 with zero points.
    import shlex

    from gmse_cli.cli import _cli

    export = _cli(["formats"]).commands["formats"].commands["export"]
    # a long example goes on over lines ending in a shell continuation: the shell reads one line
    text = re.sub(r" \\\n\s*", " ", export.epilog)
    examples = [line.strip() for line in text.splitlines() if line.strip().startswith("uscl ")]
    assert len(examples) >= 2
    monkeypatch.chdir(tmp_path)
    for example in examples:
        res = run_cli(*shlex.split(example)[1:])
        assert res.code == 0, (example, res.stderr)
    assert json.loads((tmp_path / "quantization_config.json").read_text())  # the one with --out


# ----------------------------------------------------------------------------------------------
# training's own writers past the file size limit: one clear error, nothing partial left


_TEXT = [f"the quick brown fox jumps over the lazy dog {i}; " * 20 for i in range(40)]


def test_a_checkpoint_or_kept_model_past_the_size_limit_is_one_clear_error(tmp_path):
    # safetensors reports a full disk as its own SafetensorError, not OSError: `uscl train`
    # ended in a traceback at its first checkpoint instead of 'cannot write checkpoint ...'.
    import torch

    from gmse_cli.errors import TrainError
    from gmse_cli.training.checkpoint import save_final_model

    folder = tmp_path / "models" / "run"
    weights = {"w": torch.zeros(64, 1024)}  # 256 KiB
    with file_size_limit(64 * 1024), pytest.raises(TrainError, match="final model .*File too large"):
        save_final_model(folder, model_state=weights, config_json={}, uscl_meta={})
    assert list((tmp_path / "models").iterdir()) == []  # no folder, no staging left
    save_final_model(folder, model_state=weights, config_json={}, uscl_meta={})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "uscl.json"]


def test_the_tokenizer_and_token_caches_past_the_size_limit_are_one_clear_error(tmp_path, monkeypatch):
    # The tokenizer cache's write raised OSError out of `uscl train` (a traceback); the token
    # cache's came out unnamed.
    from gmse_cli.errors import DataError
    from gmse_cli.training.data.cache import write_entry
    from gmse_cli.training.data.tokenizer import load_tokenizer

    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    with file_size_limit(256), pytest.raises(DataError, match="tokenizer cache .*File too large"):
        load_tokenizer("bpe:300", train_texts=lambda: iter(_TEXT), corpus_tag="writers")
    tok = load_tokenizer("bpe:300", train_texts=lambda: iter(_TEXT), corpus_tag="writers")
    entry = tmp_path / "cache" / "tokens" / "entry"
    pieces = [(text, True) for text in _TEXT]
    with file_size_limit(256), pytest.raises(DataError, match="token cache .*File too large"):
        write_entry(entry, train=pieces, val=pieces[:2], tok=tok, tokenizer="bpe:300", source="text",
                    data_sha256=None, val_fraction=None)
    assert list(entry.parent.iterdir()) == []  # no entry, no staging left


@pytest.mark.parametrize("name", ["formats import -o", "tokenizer train --out", "formats export -o"])
def test_an_output_that_is_a_link_to_a_file_writes_the_file_and_keeps_the_link(name, tmp_path, inputs, run_cli):
    # The rename replaced the link itself with a new file, and the file it named kept the old
    # contents: a linked dotfile or shared results file silently went stale.
    target = tmp_path / "elsewhere" / f"real{WRITERS[name].suffix}"
    target.parent.mkdir()
    target.write_bytes(b"the previous output")
    out = tmp_path / f"link{WRITERS[name].suffix}"
    out.symlink_to(target)
    res = run_cli(*WRITERS[name].argv(inputs, str(out)))
    assert res.code == 0, res.stderr
    assert out.is_symlink() and out.resolve() == target.resolve()
    assert target.read_bytes() != b"the previous output"
    _parses(target)
