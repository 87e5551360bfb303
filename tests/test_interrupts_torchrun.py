"""`uscl train --launcher torchrun` interrupted by a SIGINT to the uscl process alone (`kill -INT
PID`, as a supervisor or script sends it) passes it on to torchrun and waits for it. Measured
before the fix (tiny-50k int4, --nproc-per-node 2 on CPU, SIGINT 30 s in): uscl printed 'aborted'
and exited 130 at once, while both workers, orphaned, trained on and recorded the run 15 s later
(subprocess.call SIGKILLs its child on a KeyboardInterrupt, so torchrun never told them).

A SIGTERM to uscl alone, or one that follows a SIGINT within torchrun's 3 s grace period, reaches
torchrun too before uscl dies of it. A stand-in for torchrun stops on the signal after 0.3 s and
leaves a file saying so."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _agent(signum: int, exit_code: int, *, ignore_sigint: bool = False) -> str:
    """A stand-in for torchrun: on ``signum`` it stops its workers (0.3 s), says so in the file
    its first argument names, and exits ``exit_code``."""
    return f"""
import pathlib, signal, sys, time
def stop(signum, frame):
    time.sleep(0.3)
    pathlib.Path(sys.argv[1]).write_text("stopped")
    sys.exit({exit_code})
signal.signal({int(signum)}, stop)
{"signal.signal(signal.SIGINT, signal.SIG_IGN)" if ignore_sigint else ""}
print("ready", flush=True)
time.sleep(60)
"""


_LAUNCHER = """
import sys
from gmse_cli.training.launch import call_passing_interrupts
try:
    call_passing_interrupts([sys.executable, "-c", sys.argv[1], sys.argv[2]])
except KeyboardInterrupt:
    sys.exit(130)
sys.exit(0)
"""


@contextlib.contextmanager
def _launched(agent: str, marker: Path) -> Iterator[subprocess.Popen]:
    """uscl's torchrun launcher running ``agent``, once the agent is ready; killed if left."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, agent, str(marker)], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert launcher.stdout.readline() == "ready\n"
        yield launcher
    finally:
        launcher.stdout.close()
        with contextlib.suppress(ProcessLookupError):  # the agent, if it was left behind
            os.killpg(launcher.pid, signal.SIGKILL)
        if launcher.poll() is None:
            launcher.wait()


def test_sigint_to_the_launcher_alone_reaches_torchrun_and_is_waited_for(tmp_path):
    marker = tmp_path / "stopped"
    with _launched(_agent(signal.SIGINT, 130), marker) as launcher:
        os.kill(launcher.pid, signal.SIGINT)  # the launcher alone, not its process group
        assert launcher.wait(timeout=30) == 130
        assert marker.read_text() == "stopped"  # the agent got SIGINT, and the launcher outlived it


def test_sigterm_to_the_launcher_alone_reaches_torchrun_before_the_launcher_dies(tmp_path):
    # Before: uscl died of the SIGTERM at once; torchrun and its workers trained on unattended.
    marker = tmp_path / "stopped"
    with _launched(_agent(signal.SIGTERM, 143), marker) as launcher:
        os.kill(launcher.pid, signal.SIGTERM)  # the launcher alone
        assert launcher.wait(timeout=30) == -signal.SIGTERM  # still dies of the signal, as its default
        assert marker.read_text() == "stopped"  # after the agent got it and stopped


def test_sigterm_while_waiting_out_a_sigint_still_reaches_torchrun(tmp_path):
    # A supervisor's SIGINT, then its SIGTERM within torchrun's grace period (3 s). Before: the
    # SIGTERM handler was gone by then, so uscl died at once and torchrun (and its workers)
    # never heard of it and trained on. The agent ignores SIGINT: a slow machine's late one
    # changes nothing.
    marker = tmp_path / "stopped"
    with _launched(_agent(signal.SIGTERM, 143, ignore_sigint=True), marker) as launcher:
        os.kill(launcher.pid, signal.SIGINT)  # the launcher alone
        time.sleep(0.5)  # inside the grace period: the launcher waits for the agent
        os.kill(launcher.pid, signal.SIGTERM)
        assert launcher.wait(timeout=30) == -signal.SIGTERM
        assert marker.read_text() == "stopped"  # the agent got SIGTERM before the launcher died
