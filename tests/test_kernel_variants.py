"""Kernels a factory makes per grid (a closure over the grid code) each carry a name of their
own. They all had one name: numba names a compiled function by its qualified name and a counter
of the process that compiled it, so two processes that each compiled one grid first cached two
different functions under the same symbol. A third process that loaded both from the cache ran
the first one's code for the second: after ``uscl search`` loaded the int4 kernels, every aint4
format was rounded on the wrong grid (aint4-g32 off the reference by 0.19, with no error)."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Quantize one format on the kernel path and compare with the numpy reference.
_CHECK = """
import sys
import numpy as np
from gmse_cli.compress.scalar import quantize, quantize_reference
from gmse_cli.spec import Quantize, resolve_format
x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
for name in sys.argv[1:]:
    stage = next(s for s in resolve_format(name).stages if isinstance(s, Quantize))
    print(name, float(np.abs(quantize(stage, x) - quantize_reference(stage, x)).max()))
"""


def _run(cache: Path, *names: str) -> dict[str, float]:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    res = subprocess.run([sys.executable, "-c", _CHECK, *names], capture_output=True, text=True, env=env,
                         timeout=600, cwd=REPO)
    assert res.returncode == 0, res.stderr
    return {name: float(err) for name, err in (line.split() for line in res.stdout.splitlines())}


def _merge_caches(into: Path, other: Path) -> None:
    """Add ``other``'s cached kernels to ``into``'s, as a shared cache gets them from two
    processes: each index keeps its entries, the other's data files numbered after them."""
    for index in other.rglob("*.nbi"):
        target = into / index.relative_to(other)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            for path in index.parent.glob(index.name.removesuffix(".nbi") + ".*nbc"):
                (target.parent / path.name).write_bytes(path.read_bytes())
            target.write_bytes(index.read_bytes())
            continue
        with open(target, "rb") as fh:
            version, (stamp, entries) = pickle.load(fh), pickle.loads(fh.read())
        with open(index, "rb") as fh:
            pickle.load(fh)
            other_stamp, others = pickle.loads(fh.read())
        assert other_stamp == stamp
        stem = target.name.removesuffix("nbi")
        for key, name in others.items():
            if key in entries:
                continue
            number = len(entries) + 1
            entries[key] = f"{stem}{number}.nbc"
            (target.parent / entries[key]).write_bytes((index.parent / name).read_bytes())
        with open(target, "wb") as fh:
            pickle.dump(version, fh, protocol=-1)
            fh.write(pickle.dumps((stamp, entries), protocol=-1))


@pytest.fixture(scope="module")
def compiled_alone(tmp_path_factory):
    """``compiled_alone(name)``: a numba cache where a process on an empty cache compiled
    ``name``'s kernels only, made once per format (int4-g32 is in two pairs)."""
    made: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in made:
            cache = tmp_path_factory.mktemp("alone")
            assert _run(cache, name) == {name: 0.0}
            made[name] = cache
        return made[name]

    return get


# int vs aint and fp (the rounding callee), the mse search on two grids (its own callee and the
# searching group pass), a lookup table vs int: each pair fails with `variant` disabled
@pytest.mark.parametrize("pair", [("int4-g32", "aint4-g32"), ("aint4-tensor", "fp4-tensor"),
                                  ("int4-g32-mse", "e2m1-g32-mse"), ("nf4-g32", "int4-g32")])
def test_kernels_of_two_grids_cached_by_two_processes_load_together(tmp_path, pair, compiled_alone):
    first, second = pair
    # two processes on empty caches, each compiling one grid: the same per-process counters
    shutil.copytree(compiled_alone(first), tmp_path / "a")
    _merge_caches(tmp_path / "a", compiled_alone(second))
    # a third loads both from the one cache: each must run its own grid's code
    assert _run(tmp_path / "a", first, second) == {first: 0.0, second: 0.0}
