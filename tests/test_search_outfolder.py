"""`uscl search --out DIR` run twice: the folder describes the latest run alone, a file uscl did
not write is never removed, and a crash at any step leaves one run's files whole.

Crashes are simulated by failing the k-th rename or removal the writer makes, for every k until
a run gets through; the invariant is checked on the folder as a crash left it, and again after
the next run, which must finish or discard the interrupted one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from gmse_cli.search.outfolder import MANIFEST, replace_files

OLD = {"00-a.toml": b"old a", "01-b.toml": b"old b", "02-c.toml": b"old c"}
NEW = {"00-a.toml": b"new a", "01-d.toml": b"new d"}


def _visible(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if not p.name.startswith(".")}


def test_second_run_replaces_the_first_and_keeps_other_files(tmp_path):
    (tmp_path / "notes.txt").write_bytes(b"mine")
    replace_files(tmp_path, OLD)
    assert _visible(tmp_path) == {**OLD, "notes.txt": b"mine"}
    (tmp_path / "02-c.toml").write_bytes(b"edited by hand")  # no longer what uscl wrote: kept
    paths = replace_files(tmp_path, NEW)
    assert [p.name for p in paths] == list(NEW)
    assert _visible(tmp_path) == {**NEW, "02-c.toml": b"edited by hand", "notes.txt": b"mine"}
    assert {p.name for p in tmp_path.iterdir()} == {*NEW, "02-c.toml", "notes.txt", MANIFEST}
    assert set(json.loads((tmp_path / MANIFEST).read_text())["files"]) == set(NEW)


def test_files_from_before_any_manifest_are_left(tmp_path):
    (tmp_path / "00-x.toml").write_bytes(b"an older uscl's file, or the user's")
    replace_files(tmp_path, NEW)
    assert _visible(tmp_path) == {**NEW, "00-x.toml": b"an older uscl's file, or the user's"}


class _Crash(BaseException):
    pass


def _crash_at(monkeypatch, k: int) -> None:
    """Fail the k-th rename or removal from now on (a crash there: nothing after it runs)."""
    count = [0]

    def step(real):
        def wrapped(*args, **kwargs):
            count[0] += 1
            if count[0] == k:
                raise _Crash
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(os, "replace", step(os.replace))
    monkeypatch.setattr(Path, "unlink", step(Path.unlink))


def test_a_crash_at_any_step_leaves_one_run_whole(tmp_path, monkeypatch):
    mine = {"notes.txt": b"mine"}
    for k in range(1, 100):
        folder = tmp_path / str(k)
        folder.mkdir()
        (folder / "notes.txt").write_bytes(b"mine")
        replace_files(folder, OLD)
        with monkeypatch.context() as m:
            _crash_at(m, k)
            try:
                replace_files(folder, NEW)
            except _Crash:
                crashed = True
            else:
                crashed = False
        seen = _visible(folder)
        staged = {p.name.removeprefix(".uscl-staged."): p.read_bytes() for p in folder.glob(".uscl-staged.*")}
        old_whole = all(seen.get(n) == b for n, b in OLD.items())
        new_whole = all({**seen, **staged}.get(n) == b for n, b in NEW.items())
        committed = set(json.loads((folder / MANIFEST).read_text())["files"]) == set(NEW)
        assert old_whole or (new_whole and committed), (k, seen, staged)
        # the next run finishes (or discards) the interrupted one, then writes its own
        replace_files(folder, NEW)
        assert _visible(folder) == {**NEW, **mine}, k
        assert not list(folder.glob(".uscl-staged.*"))
        if not crashed:
            break
    else:
        pytest.fail("the run never got through")
    assert k > 5  # every step of a run was interrupted once


def test_write_frontier_replaces_an_earlier_search(tmp_path):
    from gmse_cli.search import SearchSpace, search_formats, write_frontier

    # a small space (int grids of up to 4 bits, two scale groupings): a frontier of a few members
    space = SearchSpace(grids=("int",), max_element_bits=4, scale_rules=("rms",), groups=("row", 32),
                        scale_formats=("fp32",), sparsity=(), vq_dims=(), include_catalog=False)
    first = write_frontier(search_formats(4.5, space=space, rel_err=3e-2), tmp_path)
    (tmp_path / "keep.toml").write_text("# the user's\n")
    second = write_frontier(search_formats(2.5, space=space, rel_err=3e-2), tmp_path)
    assert len(first) > len(second) >= 1
    assert {p.name for p in tmp_path.glob("*.toml")} == {p.name for p in second} | {"keep.toml"}
