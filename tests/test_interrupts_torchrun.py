"""`uscl train --launcher torchrun` interrupted by a SIGINT to the uscl process alone (`kill -INT
PID`, as a supervisor or script sends it) passes it on to torchrun and waits for it. Measured
before the fix (tiny-50k int4, --nproc-per-node 2 on CPU, SIGINT 30 s in): uscl printed 'aborted'
and exited 130 at once, while both workers, orphaned, trained on and recorded the run 15 s later
(subprocess.call SIGKILLs its child on a KeyboardInterrupt, so torchrun never told them).

A stand-in for torchrun stops on SIGINT after 0.3 s and leaves a file saying so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

_AGENT = """
import pathlib, signal, sys, time
def stop(signum, frame):
    time.sleep(0.3)  # workers writing their checkpoints
    pathlib.Path(sys.argv[1]).write_text("stopped")
    sys.exit(130)
signal.signal(signal.SIGINT, stop)
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


def test_sigint_to_the_launcher_alone_reaches_torchrun_and_is_waited_for(tmp_path):
    marker = tmp_path / "stopped"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, _AGENT, str(marker)], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert launcher.stdout.readline() == "ready\n"
        os.kill(launcher.pid, signal.SIGINT)  # the launcher alone, not its process group
        assert launcher.wait(timeout=30) == 130
        assert marker.read_text() == "stopped"  # the agent got SIGINT, and the launcher outlived it
    finally:
        launcher.stdout.close()
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()


_TERM_AGENT = """
import pathlib, signal, sys, time
def stop(signum, frame):
    time.sleep(0.3)  # workers stopping
    pathlib.Path(sys.argv[1]).write_text("terminated")
    sys.exit(143)
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
time.sleep(60)
"""


def test_sigterm_to_the_launcher_alone_reaches_torchrun_before_the_launcher_dies(tmp_path):
    # Before: uscl died of the SIGTERM at once; torchrun and its workers trained on unattended.
    marker = tmp_path / "terminated"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launcher = subprocess.Popen([sys.executable, "-c", _LAUNCHER, _TERM_AGENT, str(marker)], env=env,
                                stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert launcher.stdout.readline() == "ready\n"
        os.kill(launcher.pid, signal.SIGTERM)  # the launcher alone
        assert launcher.wait(timeout=30) == -signal.SIGTERM  # still dies of the signal, as its default
        assert marker.read_text() == "terminated"  # after the agent got it and stopped
    finally:
        launcher.stdout.close()
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
