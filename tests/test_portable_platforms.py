"""The core commands run where POSIX-only parts of Python are missing (Windows).

Linux is simulated into Windows's Python (3.11/3.12) by a ``sitecustomize`` loaded before
uscl: no ``fcntl``/``termios``/``resource``/``pwd``/``grp``, no ``os.O_NONBLOCK``,
``os.O_CLOEXEC``, ``os.fchmod``, ``os.fork``, no ``signal.SIGPIPE``/``SIGKILL``/``SIGHUP``, and
``os.open`` of a folder fails with EACCES, as on Windows. Before: every command was an
AttributeError traceback at import (``signal.SIGPIPE``), every input read one (``os.O_NONBLOCK``),
every write one (``os.fchmod``); ``fit`` an ImportError (``fcntl``, through the runs reader).
Locks degrade to none (README), answers are the same as on Linux.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import conftest  # noqa: F401  (the shared fixtures)

REPO = Path(__file__).resolve().parents[1]

WINDOWS_LIKE = """
import errno, os, signal, stat, sys
for name in ("fcntl", "termios", "resource", "pwd", "grp"):
    sys.modules[name] = None
for name in ("O_NONBLOCK", "O_CLOEXEC", "O_NOFOLLOW", "O_DIRECTORY", "fchmod", "fork", "getuid", "geteuid",
             "killpg", "setsid", "getpgid", "sched_getaffinity", "fchown", "chown"):
    if hasattr(os, name):
        delattr(os, name)
for name in ("SIGPIPE", "SIGKILL", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGALRM", "SIGCHLD", "SIGQUIT"):
    if hasattr(signal, name):
        delattr(signal, name)
_open = os.open
def _open_no_folders(path, flags, mode=0o777, *, dir_fd=None):
    try:
        folder = stat.S_ISDIR(os.stat(path).st_mode)
    except (OSError, ValueError, TypeError):
        folder = False
    if folder:
        raise PermissionError(errno.EACCES, "Permission denied", str(path))
    return _open(path, flags, mode, dir_fd=dir_fd)
os.open = _open_no_folders
"""


def _env(tmp_path: Path, *, windows: bool) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(WINDOWS_LIKE)
    env = dict(os.environ, USCL_CACHE_DIR=str(tmp_path / ("cache-win" if windows else "cache")),
               PYTHONDONTWRITEBYTECODE="1", COLUMNS="200")
    env["PYTHONPATH"] = os.pathsep.join([str(site)] * windows + [str(REPO)])
    return env


def _uscl(tmp_path: Path, *args: str, windows: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gmse_cli", *args], cwd=tmp_path, env=_env(tmp_path, windows=windows),
                          capture_output=True, text=True, timeout=300)


def test_the_simulation_takes_effect(tmp_path):
    probe = "import os, signal; print(hasattr(os, 'O_NONBLOCK'), hasattr(signal, 'SIGPIPE'))"
    done = subprocess.run([sys.executable, "-c", probe], env=_env(tmp_path, windows=True), capture_output=True,
                          text=True, timeout=60)
    assert done.stdout.split() == ["False", "False"]


def test_core_commands_answer_as_on_linux(tmp_path):
    for args in (["rank", "--json"], ["gmse", "int4", "nvfp4", "--json"], ["predict", "int4", "--json"]):
        linux, windows = _uscl(tmp_path, *args, windows=False), _uscl(tmp_path, *args)
        assert linux.returncode == 0, linux.stderr
        assert windows.returncode == 0, windows.stderr
        assert "Traceback" not in windows.stderr
        assert json.loads(windows.stdout) == json.loads(linux.stdout)


def test_fit_reads_runs_and_writes_its_law(tmp_path):
    runs = REPO / "examples" / "cpu-law.jsonl"
    windows = _uscl(tmp_path, "fit", str(runs), "--out", "law.toml")
    assert windows.returncode == 0, windows.stderr
    law = (tmp_path / "law.toml").read_text()
    assert "alpha" in law
    again = _uscl(tmp_path, "predict", "int4", "--law", "law.toml", "--json")
    assert again.returncode == 0, again.stderr
    (tmp_path / "linux").mkdir()
    linux = _uscl(tmp_path, "fit", str(runs), "--out", "linux/law.toml", windows=False)
    assert linux.returncode == 0, linux.stderr
    assert law == (tmp_path / "linux" / "law.toml").read_text()


def test_writes_and_locks_degrade_to_none(tmp_path):
    script = textwrap.dedent("""
        import os, stat, sys
        from pathlib import Path
        from gmse_cli.atomic import write_atomic
        from gmse_cli.kernel_cache import index_lock
        from gmse_cli.search.outfolder import MANIFEST, replace_files
        folder = Path(sys.argv[1])
        write_atomic(folder / "a.txt", b"one", mode=0o640)
        write_atomic(folder / "a.txt", b"two")
        print(stat.S_IMODE(os.stat(folder / "a.txt").st_mode) == 0o640, (folder / "a.txt").read_bytes() == b"two")
        with index_lock(str(folder / "k.nbi"), exclusive=True):
            pass
        out = folder / "out"
        out.mkdir()
        replace_files(out, {"00-a.toml": b"x"})
        replace_files(out, {"00-b.toml": b"y"})
        print(sorted(p.name for p in out.iterdir()) == sorted(["00-b.toml", MANIFEST]))
    """)
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], env=_env(tmp_path, windows=True),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]
    assert not (tmp_path / "k.nbi.lock").exists()  # no lock taken, so no lock file made
