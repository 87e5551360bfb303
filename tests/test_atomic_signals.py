"""A SIGTERM that lands while uscl writes a file leaves the old file whole and no temporary file
behind, and the process still dies of SIGTERM (a plot is rendered into its temporary file, so the
window is about a second long: `kill` then left `.p.png.XXXX.tmp` beside the plot)."""

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
