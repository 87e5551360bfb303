"""What a search reports: measured candidates, the frontier, catalog comparisons, and the
frontier written out as format TOML files."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from gmse_cli.atomic import check_output_path
from gmse_cli.errors import SpecError
from gmse_cli.frozen import Frozen
from gmse_cli.search.outfolder import replace_files
from gmse_cli.spec import Family, Format, format_to_toml


class StagePoint(Frozen):
    """One lossy stage of a measured candidate, measured alone (its capacity factor's input)."""

    family: Family
    name: str
    gmse: float
    std_err: float
    method: str = Field(description="what gave the value: table, cache, exact or monte-carlo")


class SearchPoint(Frozen):
    """A measured candidate (Gaussian objective: ``gmse`` is GMSE; checkpoint: real-weight MSE)."""

    name: str
    bits_per_param: float
    gmse: float = Field(description="the whole format's error (joint, all stages together)")
    gmse_std_err: float
    gmse_method: str = Field(description="what gave it: table, cache, exact or monte-carlo")
    rho: float = Field(description="factorized capacity: prod of the stage capacities")
    rho_std_err: float
    spec: Format
    stages: tuple[StagePoint, ...]
    source: Literal["search", "catalog"]
    fitted_gmse_recorded: bool = Field(
        default=True, description="whether the law records the stage GMSEs its curves were fitted at ([fitted_range.gmse]); "
                    "False: no capacity can be flagged as read beyond them, and beyond_fitted_gmse stays None")
    beyond_fitted_gmse: str | None = Field(
        default=None, description="why its capacity is read beyond the law's fitted stages (as in rank); None: within "
                                  "them, or not recorded (fitted_gmse_recorded)")


class CatalogComparison(Frozen):
    """A named catalog format against the best searched format at the same or fewer bits."""

    catalog: str
    catalog_bits: float
    catalog_rho: float
    best: str
    best_bits: float
    best_rho: float
    gain: float = Field(description="best_rho - catalog_rho")
    gain_relative: float | None = Field(description="best_rho / catalog_rho - 1 (None: the catalog format's rho is 0)")


class SearchResult(Frozen):
    """A format search: its budget, objective and law, the best format, and every candidate."""

    budget: float
    objective: Literal["gaussian", "checkpoint"]
    law: str
    best: SearchPoint
    frontier: tuple[SearchPoint, ...] = Field(description="Pareto frontier by bits, thinned by min_gain")
    comparisons: tuple[CatalogComparison, ...]
    candidates: int = Field(description="candidates within the budget")
    pruned_by_bound: int = Field(
        description="dropped unmeasured: capacity bound (rate-distortion, or the sparsity factor) below the frontier"
    )
    left_out_by_law: int = Field(
        default=0, description="candidates never measured: a family (sparsity, vq, ...) the law has no curve for"
    )
    stages_measured: int = Field(description="distinct stage formats measured in the cheap pass")
    refined: int = Field(description="candidates given the full estimate")
    seconds: float
    points: tuple[tuple[str, float, float], ...] = Field(
        description="(name, bits, rho) of every measured candidate (cheap-pass values unless refined)"
    )


def compare_catalog(entries, final, evaluate, level) -> list[CatalogComparison]:
    """Each catalog candidate (fully measured, even if pruned) against the best final entry
    at the same or fewer bits."""
    out = []
    final_sorted = sorted(final, key=lambda e: e.cand.bits_per_param)
    for entry in entries:
        if entry.cand.source != "catalog":
            continue
        if entry.level != level and not evaluate(entry, level):
            continue
        pool = [e for e in final_sorted if e.cand.bits_per_param <= entry.cand.bits_per_param + 1e-12]
        best = max(pool + [entry], key=lambda e: (e.rho, -e.cand.bits_per_param))
        out.append(
            CatalogComparison(
                catalog=entry.cand.name, catalog_bits=entry.cand.bits_per_param, catalog_rho=entry.rho,
                best=best.cand.name, best_bits=best.cand.bits_per_param, best_rho=best.rho,
                gain=best.rho - entry.rho, gain_relative=best.rho / entry.rho - 1 if entry.rho > 0 else None,
            )
        )
    out.sort(key=lambda c: (c.catalog_bits, c.catalog))
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else {"+": "_", ":": "of"}.get(ch, "-") for ch in name)


def check_frontier_dir(out_dir: str | Path) -> Path:
    """Raise :class:`SpecError` unless ``out_dir`` is (or can be made) a writable folder: run
    before the search, so a typo costs nothing."""
    return check_output_path(out_dir, what="frontier folder", error=SpecError, folder=True)


def write_frontier(result: SearchResult, out_dir: str | Path) -> list[Path]:
    """Write each frontier member as ``NN-<name>.toml`` (a format file every command reads).

    The folder then describes this search alone: the files an earlier ``write_frontier``
    wrote there and this one did not are removed (:mod:`gmse_cli.search.outfolder`)."""
    out_dir = check_frontier_dir(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"--out {out_dir}: cannot create it: {exc.strerror or exc}") from None
    files = {}
    for i, point in enumerate(result.frontier):
        spec = point.spec.model_copy(
            update={
                "description": (
                    f"uscl search --bits {result.budget:g}: {point.bits_per_param:.4f} bits/param, "
                    f"{'GMSE' if result.objective == 'gaussian' else 'real-weight MSE'} {point.gmse:.6g}, "
                    f"rho {point.rho:.4f} (law {result.law})"
                )
            }
        )
        files[f"{i:02d}-{_slug(point.name)}.toml"] = format_to_toml(spec).encode("utf-8")
    try:
        return replace_files(out_dir, files)
    except OSError as exc:
        raise SpecError(f"--out: cannot write {exc.filename or out_dir}: {exc.strerror or exc}") from None
