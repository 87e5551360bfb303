"""Bad input exits 2 even when stderr's reader is gone (``uscl ... 2>&1 | head -0``, a log
collector that died): the error line cannot be written, but the exit code is the error's.

Before: rich caught the BrokenPipeError of the error line and exited 1, the code of a bug.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import REPO_ROOT


@pytest.mark.parametrize("args", [
    ["rank", "--params", "xx"],  # the command's own error (UsclError)
    ["rank", "--no-such-option"],  # a usage error
    ["search", "--bits", "65"],  # a validator's
], ids=lambda a: " ".join(a))
def test_bad_input_exits_2_with_stderr_closed(tmp_path, args):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "USCL_CACHE_DIR": str(tmp_path / "cache")}
    child = subprocess.Popen([sys.executable, "-m", "gmse_cli", *args], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    child.stderr.close()  # the reader is gone before the error line
    out = child.stdout.read()
    assert (child.wait(timeout=120), out) == (2, b"")
