"""A SIGTERM that lands while uscl writes a file leaves the old file whole and no temporary file
behind, and the process still dies of SIGTERM (a plot was once rendered into its temporary file, so the
window is about a second long: `kill` then left `.p.png.XXXX.tmp` beside the plot). A search's
--out folder that fails before its commit (disk full, SIGTERM) keeps no staged file either."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _write_and_signal(tmp_path: Path, setup: str = "") -> subprocess.CompletedProcess:
    """A child process that writes ``law.toml`` atomically and sends itself SIGTERM mid-write."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        from gmse_cli.atomic import write_atomic
        {setup}
        def half_then_terminated(handle):
            handle.write(b"new half")
            handle.flush()
            os.kill(os.getpid(), signal.SIGTERM)
            handle.write(b" and the rest")
        write_atomic(sys.argv[1], half_then_terminated)
        print("survived")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-c", script, str(tmp_path / "law.toml")], env=env,
                          capture_output=True, text=True, timeout=60)


def test_sigterm_mid_write_leaves_the_old_file_and_no_temporary(tmp_path):
    (tmp_path / "law.toml").write_bytes(b"old law")
    res = _write_and_signal(tmp_path)
    assert res.returncode == -signal.SIGTERM, (res.returncode, res.stderr)
    assert "survived" not in res.stdout
    assert (tmp_path / "law.toml").read_bytes() == b"old law"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["law.toml"]


def test_a_program_that_handles_sigterm_itself_keeps_its_handler(tmp_path):
    # A library caller (or a launcher) with its own SIGTERM handler sees it called, as before.
    (tmp_path / "law.toml").write_bytes(b"old law")
    res = _write_and_signal(tmp_path, setup="signal.signal(signal.SIGTERM, lambda *a: print('handled'))")
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["handled", "survived"]
    assert (tmp_path / "law.toml").read_bytes() == b"new half and the rest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["law.toml"]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_a_search_folder_whose_commit_fails_keeps_the_previous_run_alone(tmp_path, monkeypatch):
    # `uscl search --out DIR` on a full disk: the staged frontier files were written, the
    # manifest (the commit) was not; 32 '.uscl-staged.*' files stayed in DIR.
    import errno

    from gmse_cli.search import outfolder

    outfolder.replace_files(tmp_path, {"00-a.toml": b"old a"})
    before = _snapshot(tmp_path)
    real = outfolder.write_atomic

    def full_at_the_manifest(path, data, **kwargs):
        if Path(path).name == outfolder.MANIFEST:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data, **kwargs)

    monkeypatch.setattr(outfolder, "write_atomic", full_at_the_manifest)
    with pytest.raises(OSError, match="No space left"):
        outfolder.replace_files(tmp_path, {"00-b.toml": b"new b", "01-c.toml": b"new c"})
    assert _snapshot(tmp_path) == before


def test_sigterm_between_staged_files_leaves_the_previous_run_alone(tmp_path):
    (tmp_path / "out").mkdir()
    script = textwrap.dedent("""
        import os, signal, sys
        from pathlib import Path
        from gmse_cli.search import outfolder
        folder = Path(sys.argv[1])
        outfolder.replace_files(folder, {"00-a.toml": b"old a"})
        real = outfolder.write_atomic
        def terminated_at_the_second(path, data, **kwargs):
            if Path(path).name.endswith("01-c.toml"):
                os.kill(os.getpid(), signal.SIGTERM)
            return real(path, data, **kwargs)
        outfolder.write_atomic = terminated_at_the_second
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        print(sorted(before), flush=True)
        outfolder.replace_files(folder, {"00-b.toml": b"new b", "01-c.toml": b"new c"})
        print("survived")
    """)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", script, str(tmp_path / "out")], env=env, capture_output=True,
                         text=True, timeout=60)
    assert res.returncode == -signal.SIGTERM, (res.returncode, res.stderr)
    assert "survived" not in res.stdout
    from gmse_cli.search.outfolder import MANIFEST

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == sorted([MANIFEST, "00-a.toml"])
    assert (tmp_path / "out" / "00-a.toml").read_bytes() == b"old a"
