"""Every test module that mentions torch is collected where torch is not installed (the core's
install plus the `dev` extra, e.g. on Python 3.12/3.13, which have no CPU torch wheel here): its
torch tests skip, the rest run. Before, tests/test_compress_metamorphic.py imported torch at
module level, and `pytest` on such an install stopped with "Interrupted: 1 error during
collection" before running any test."""

from __future__ import annotations

import subprocess
import sys

from conftest import REPO_ROOT

_BLOCKED = """
import importlib.abc, importlib.util, sys
GONE = {"torch", "torchao", "transformers", "bitsandbytes", "compressed_tensors"}
class Block(importlib.abc.MetaPathFinder):  # import fails as where the extras are not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in GONE:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
real_find_spec = importlib.util.find_spec  # ... and so does asking whether it is there
importlib.util.find_spec = lambda name, *a: None if name.split(".")[0] in GONE else real_find_spec(name, *a)
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", *sys.argv[1:]]))
"""


def test_modules_naming_torch_collect_without_it():
    files = sorted(
        str(p) for p in (REPO_ROOT / "tests").glob("test_*.py")
        if "torch" in p.read_text(encoding="utf-8") and p.name != "test_pyver_collect_without_torch.py"
    )
    assert files
    done = subprocess.run([sys.executable, "-c", _BLOCKED, *files], cwd=REPO_ROOT / "tests",
                          capture_output=True, text=True, timeout=600)
    errors = [line for line in done.stdout.splitlines() if line.startswith("ERROR")]
    assert done.returncode == 0 and not errors, (errors or done.stdout[-2000:])


def test_public_api_check_skips_the_training_backend_without_torch():
    """tests/test_api_checked.py imported gmse_cli.training (which imports torch) unguarded and
    failed, not skipped, on an install without the train extra."""
    node = "test_api_checked.py::test_every_exported_name_exists_and_is_documented[gmse_cli.training]"
    script = _BLOCKED.replace('"--collect-only", ', '"-rs", ')
    done = subprocess.run([sys.executable, "-c", script, node], cwd=REPO_ROOT / "tests",
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "SKIPPED [1]" in done.stdout, done.stdout[-2000:]
