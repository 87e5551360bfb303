"""A Ctrl-C that lands where Python cannot raise it (a weakref callback, a ``__del__``, a ctypes
callback: numba's type cache and llvmlite's object cache run such code while kernels compile)
still stops the command with the one line 'aborted' and exit 130. Measured before the fix:
`uscl gmse lm3-g128 e3m2-g32-se4m3 --rel-err 1e-3` on fresh caches, SIGINT 7.2-7.5 s in (during
the compile), printed "Exception ignored in: <function _on_type_disposal ...>" (or "... on calling
ctypes callback function: ExecutionEngine._raw_object_cache_notify") with a KeyboardInterrupt
traceback, then ran on for 20 s and exited 0 with its full output.

The child sends itself SIGINT inside a weakref callback, so the test is deterministic."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

_CHILD = """
import os, signal, sys, time, weakref
import gmse_cli.spec
from gmse_cli.cli import run

real_catalog = gmse_cli.spec.catalog

class Type:
    pass

def disposed(ref):  # as numba's _on_type_disposal: Python ignores what it raises
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(10_000))  # the KeyboardInterrupt is raised here, inside the callback

def catalog_while_ctrl_c():
    kept = Type()
    ref = weakref.ref(kept, disposed)
    del kept  # the callback runs now
    time.sleep(0.5)
    print("ran on", file=sys.stderr)
    return real_catalog()

gmse_cli.spec.catalog = catalog_while_ctrl_c
sys.argv = ["uscl", "formats"]
run()
"""


def test_ctrl_c_inside_a_weakref_callback_stops_the_command():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", _CHILD], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
    assert (child.returncode, child.stderr, child.stdout) == (130, "aborted\n", "")


def test_other_unraisable_exceptions_are_still_reported():
    script = _CHILD.replace("os.kill(os.getpid(), signal.SIGINT)", "raise ValueError('in a callback')")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0 and "ValueError: in a callback" in child.stderr and "ran on" in child.stderr
