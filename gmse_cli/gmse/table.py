"""The shipped GMSE table: every catalog format and every stage of its composites, computed
once by uscl at high precision and shipped as package data (``gmse_cli/gmse/table.json``).

The catalog's GMSEs are constants of the formats, like the constants of a law, so the main
job reads them instead of running Monte Carlo. Each entry carries its key
(:func:`~gmse_cli.gmse.stored.gmse_key`: stages, row length, compressor algorithm versions),
so an edited or new format, another row length or a changed compressor never reads a stale
value; the file's provenance says how it was made. ``python examples/regenerate_gmse_table.py``
rebuilds it (:func:`build_table`, then :func:`write_table`).
"""

from __future__ import annotations

from datetime import date
from functools import cache
from pathlib import Path

from pydantic import Field

from gmse_cli.atomic import write_text_atomic
from gmse_cli.frozen import Frozen
from gmse_cli.gmse.stored import StoredGmse, algorithm_version, algorithms_of, gmse_key
from gmse_cli.spec import DEFAULT_ROW_LENGTH, Format

__all__ = ["TablePlan", "GmseTable", "table_path", "shipped_table", "table_entry", "build_table", "write_table"]


class TablePlan(Frozen):
    """How a table is computed (its provenance, with the versions it was computed under)."""

    command: str = Field(description="the command that wrote the file")
    seed: int
    row_length: int
    rel_err: float = Field(description="target relative standard error of the Monte Carlo entries")
    max_samples: int = Field(description="Gaussian elements per format at most")
    generator: str = Field(description="the sample bank's generator")
    uscl_version: str
    algorithms: dict[str, int] = Field(description="every compressor's ALGORITHM_VERSION")
    date: str


class GmseTable(Frozen):
    provenance: TablePlan
    entries: tuple[StoredGmse, ...]


def table_path() -> Path:
    """Where the shipped table lives (package data)."""
    return Path(__file__).resolve().parent / "table.json"


@cache
def shipped_table() -> dict[str, StoredGmse]:
    """The shipped entries by key (empty when the file is missing: everything is computed)."""
    try:
        table = GmseTable.model_validate_json(table_path().read_bytes())
    except OSError:
        return {}
    return {e.key: e for e in table.entries}


def table_entry(fmt: Format, row_length: int) -> StoredGmse | None:
    """The shipped entry of ``fmt`` at ``row_length``, or None."""
    key = gmse_key(fmt, row_length)
    return shipped_table().get(key) if key is not None else None


def _table_formats() -> list[Format]:
    """Every catalog format and every stage of its composites, each once (by key)."""
    from gmse_cli.spec import catalog

    out: dict[tuple, Format] = {}
    for fmt in catalog().values():
        for part in (fmt, *(f for _, f in fmt.stage_formats())):
            out.setdefault(part.stages, part)
    return list(out.values())


def build_table(
    *,
    rel_err: float = 1e-4,
    seed: int = 0,
    row_length: int = DEFAULT_ROW_LENGTH,
    max_samples: int = 1 << 31,
    command: str = "",
    progress: bool = False,
) -> GmseTable:
    """Compute the table: exact quadrature where it exists, otherwise Monte Carlo on one bank
    to ``rel_err`` (at most ``max_samples`` Gaussian elements per format; the bank keeps 256
    MB of them and draws the rest again as needed)."""
    from gmse_cli import __version__
    from gmse_cli.gmse.engine import estimate_gmse
    from gmse_cli.gmse.stored import ALGORITHM_MODULES

    formats = _table_formats()
    estimates = estimate_gmse(
        formats, rel_err=rel_err, seed=seed, row_length=row_length, max_samples=max_samples, progress=progress
    )
    entries = []
    for fmt, est in zip(formats, estimates, strict=True):
        key = gmse_key(fmt, row_length)
        assert key is not None  # catalog formats name no codebook files
        entries.append(StoredGmse(
            key=key, name=fmt.display_name, row_length=row_length, gmse=est.gmse, std_err=est.std_err,
            method=est.method, samples=est.samples, seed=seed, algorithms=algorithms_of(fmt),
        ))
    plan = TablePlan(
        command=command, seed=seed, row_length=row_length, rel_err=rel_err, max_samples=max_samples,
        generator="Philox4x32-10 + Box-Muller (gmse_cli.gmse.philox)", uscl_version=__version__,
        algorithms={name: algorithm_version(name) for name in ALGORITHM_MODULES},
        date=date.today().isoformat(),
    )
    return GmseTable(provenance=plan, entries=tuple(entries))


def write_table(table: GmseTable, path: str | Path | None = None) -> Path:
    """Write ``table`` as JSON (default: the shipped file), atomically."""
    path = Path(path) if path is not None else table_path()
    write_text_atomic(path, table.model_dump_json(indent=1) + "\n")
    shipped_table.cache_clear()
    return path
