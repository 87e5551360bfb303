"""A numba kernel cache file a crash left empty, cut short or damaged is a miss (compile again and
rewrite it), never a stopped command.

numba writes its index and data files without fsync, so a power cut can leave them empty or
short; it unpickled them unguarded, and every later process that compiled the kernel stopped:
an empty index gave pickle's EOFError, which click turns into "aborted" (exit 130, as if Ctrl-C).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import conftest  # noqa: F401  (the shared fixtures)
import pytest

REPO = Path(__file__).resolve().parents[1]

_KERNEL = """
from gmse_cli.kernel_cache import numba

@numba.njit(cache=True)
def triple(x):
    return 3 * x + 1
"""


def _run(folder: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{folder}", "NUMBA_CACHE_DIR": str(folder / "nb"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    code = "import crashkernel; print(crashkernel.triple(14))"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("file", ["index", "data"])
@pytest.mark.parametrize("damage", ["empty", "half", "garbage"])
def test_a_damaged_kernel_cache_file_is_compiled_again(tmp_path, file, damage):
    (tmp_path / "crashkernel.py").write_text(_KERNEL)
    first = _run(tmp_path)
    assert first.returncode == 0 and first.stdout.strip() == "43", first.stderr
    suffix = ".nbi" if file == "index" else ".nbc"
    cached = [p for p in (tmp_path / "nb").rglob(f"*{suffix}")]
    assert len(cached) == 1, cached
    raw = cached[0].read_bytes()
    cached[0].write_bytes({"empty": b"", "half": raw[: len(raw) // 2], "garbage": b"\x80\x05garbage" * 7}[damage])
    again = _run(tmp_path)
    assert again.returncode == 0 and again.stdout.strip() == "43", (again.returncode, again.stderr[-500:])
    # and the entry is whole again: a third process loads it
    assert cached[0].read_bytes() != b""
    third = _run(tmp_path)
    assert third.returncode == 0 and third.stdout.strip() == "43", third.stderr[-500:]
