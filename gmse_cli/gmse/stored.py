"""A stored GMSE (in the shipped table or the on-disk cache): its key and its record.

A GMSE is a constant of a format's stages at a row length, as long as the compressors that
apply them stay the same. So an entry is keyed by the SHA-256 of a canonical JSON of

- the stages (``model_dump(mode="json")``, sorted keys): a format's name and description do
  not enter it, so a renamed copy finds the same entry, and any edit of a stage misses it;
  a VQ codebook file enters by the SHA-256 of its bytes, not by its path;
- the row length;
- the ``ALGORITHM_VERSION`` of every compressor module the stages run (``grids`` and
  ``scalar`` for a scalar grid, ``sparsity``, ``rotate``, ``vq`` and ``grids`` for its scale
  formats) and the bank's :data:`~gmse_cli.gmse.bank.MEASURE_VERSION`: bumping one after
  changing what a compressor computes retires every entry it made.

The versions are read from the modules' source text, not by importing them: importing a
compressor loads numba and scipy, and a lookup in the table must not.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import Field

from gmse_cli.errors import DataError
from gmse_cli.frozen import Frozen
from gmse_cli.inputs import MAX_CODEBOOK_BYTES, read_binary_file
from gmse_cli.spec import VQ, Format

__all__ = ["ALGORITHM_MODULES", "StoredGmse", "algorithm_version", "algorithms_of", "gmse_key"]

ALGORITHM_MODULES: dict[str, str] = {
    "grids": "gmse_cli.compress.grids",
    "scalar": "gmse_cli.compress.scalar",
    "sparsity": "gmse_cli.compress.sparsity",
    "rotate": "gmse_cli.compress.rotate",
    "vq": "gmse_cli.compress.vq.store",
}
"""Compressor name -> the module that declares its ``ALGORITHM_VERSION``."""

_STAGE_ALGORITHMS = {
    "quantize": ("grids", "scalar"),
    "sparsify": ("sparsity",),
    "rotate": ("rotate",),
    "vq": ("vq", "grids"),  # grids: the VQ scale formats are fp casts
}
_VERSION_LINE = re.compile(r"^ALGORITHM_VERSION = (\d+)\b", re.MULTILINE)


@cache
def algorithm_version(name: str) -> int:
    """The ``ALGORITHM_VERSION`` of compressor ``name`` (a key of :data:`ALGORITHM_MODULES`)."""
    module_name = ALGORITHM_MODULES[name]
    module = sys.modules.get(module_name)
    if module is None:
        package_root = Path(__file__).resolve().parent.parent.parent
        relative = Path(*module_name.split("."))
        for path in (package_root / relative.with_suffix(".py"), package_root / relative / "__init__.py"):
            if path.is_file() and (match := _VERSION_LINE.search(path.read_text(encoding="utf-8"))):
                return int(match[1])
        from importlib import import_module  # no source to read (a zipped install): import it

        module = import_module(module_name)
    return int(module.ALGORITHM_VERSION)


def algorithms_of(fmt: Format) -> dict[str, int]:
    """The algorithm version of every compressor ``fmt`` runs."""
    names = sorted({name for stage in fmt.stages for name in _STAGE_ALGORITHMS[stage.kind]})
    return {name: algorithm_version(name) for name in names}


def _stage_spec(stage) -> dict:
    spec = stage.model_dump(mode="json")
    if isinstance(stage, VQ) and stage.codebook not in ("gaussian", "e8"):
        # a regular file only: a FIFO named like a codebook would be waited on for ever
        data = read_binary_file(stage.codebook, what="codebook file", error=DataError, limit=MAX_CODEBOOK_BYTES)
        spec["codebook"] = "sha256:" + hashlib.sha256(data).hexdigest()
    return spec


def _adds_clip_energy(fmt: Format, row_length: int) -> bool:
    """Whether ``fmt``'s GMSE at ``row_length`` comes from Monte Carlo with its clipping
    energy's exact mean (:mod:`gmse_cli.gmse.clipping`) rather than from quadrature."""
    from gmse_cli.gmse.clipping import measures_clip_energy
    from gmse_cli.gmse.exact import has_exact

    return measures_clip_energy(fmt, row_length) and not has_exact(fmt, row_length)


def gmse_key(fmt: Format, row_length: int) -> str | None:
    """The key of ``fmt``'s GMSE at ``row_length``, or None when it has none (an unreadable
    codebook file: computing it raises the error that says why).

    No seed, as no rel_err: a stored GMSE is the format's constant to a stated precision, and
    serves any seed as it serves any looser request (an entry keeps its seed as provenance).
    Another seed's estimate differs by about one standard error (nvfp4 at rows of 1024, rel_err
    1e-2: 0.0090463 vs 0.0090396, std_err 6.7e-6); keying by seed would leave the shipped table,
    measured at seed 0, serving seed 0 alone: ``rank --seed 1`` would recompute every sampled
    catalog format. ``--recompute`` (cache="refresh"/"off") draws the seed's own bank."""
    from gmse_cli.gmse.bank import MEASURE_VERSION

    try:
        stages = [_stage_spec(s) for s in fmt.stages]
    except (OSError, DataError):
        return None
    canonical = {
        "stages": stages,
        "row_length": row_length,
        "algorithms": algorithms_of(fmt),
        "bank": MEASURE_VERSION,
    }
    if _adds_clip_energy(fmt, row_length):
        canonical["clip_energy"] = 1  # estimates made before it, which missed rare clipping, are not served
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class StoredGmse(Frozen):
    """One GMSE as the table and the cache store it."""

    key: str = Field(description="gmse_key(format, row_length)")
    name: str = Field(description="the format's display name when it was computed (for people)")
    row_length: int
    # Finite and not negative: a damaged cache entry (inf, nan, -1) fails here and reads as a miss.
    gmse: float = Field(ge=0, allow_inf_nan=False)
    std_err: float = Field(ge=0, allow_inf_nan=False, description="0 for the exact method")
    method: Literal["exact", "monte-carlo"] = Field(description="how it was computed")
    samples: int = Field(ge=0, description="Gaussian elements used (0 for the exact method)")
    seed: int = Field(description="seed of the sample bank (unused by the exact method)")
    dof: int | None = Field(
        default=None, ge=1, description="degrees of freedom of std_err (Monte Carlo: rows or batches less the "
        "regression's columns); absent: taken from the sample count, as entries written before it was kept")
    algorithms: dict[str, int] = Field(description="compressor -> ALGORITHM_VERSION it was computed with")

    def serves(self, rel_err: float) -> bool:
        """Whether this entry is as precise as a request for ``rel_err`` asks."""
        return self.method == "exact" or self.std_err <= rel_err * self.gmse * (1 + 1e-9)
