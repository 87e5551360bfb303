"""The shipped catalog: every format file in ``formats/``, by name."""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path

from gmse_cli.errors import SpecError
from gmse_cli.inputs import is_file
from gmse_cli.paths import catalog_dir
from gmse_cli.spec.format import Format
from gmse_cli.spec.formatfile import format_from_table, load_format_toml
from gmse_cli.tomlfile import read_tomls

__all__ = ["catalog", "catalog_names", "catalog_format"]


@cache
def catalog() -> dict[str, Format]:
    """Every shipped format by name (``formats/*.toml``)."""
    formats: dict[str, Format] = {}
    sources: dict[str, Path] = {}
    paths = sorted(catalog_dir().glob("*.toml"))
    for path, table in zip(paths, read_tomls(paths, what="format file", error=SpecError), strict=True):
        fmt = format_from_table(table, path)
        assert fmt.name is not None
        if fmt.name in sources:
            # the later file would silently redefine the name (and a one-file lookup disagree)
            raise SpecError(f"format files {sources[fmt.name]} and {path} both hold '{fmt.name}' (rename one)")
        formats[fmt.name], sources[fmt.name] = fmt, path
    # Listed by family, then cost: the order a person scans the catalog in.
    order = sorted(formats.values(), key=lambda f: (f.family, f.bits_per_param(), f.name))
    return {f.name: f for f in order}


def catalog_format(name: str) -> Format | None:
    """The shipped format called ``name``, or None: its own file (``2:4`` lives in ``2of4.toml``)
    when that file holds it, so one lookup does not parse all 72 files; else the whole catalog."""
    if catalog.cache_info().currsize == 0 and "/" not in name:
        fmt = _own_file(catalog_dir(), name)
        if fmt is not None:
            return fmt
    return catalog().get(name)


@lru_cache(maxsize=1024)
def _own_file(folder: Path, name: str) -> Format | None:
    """The format in ``name``'s own file of the catalog ``folder``, if that file holds it: parsed once
    per name, as :func:`catalog` parses the whole catalog once (a runs file names one format per run,
    and re-reading its file for each of a million runs took 1.7 ms a run)."""
    path = folder / f"{name.replace(':', 'of')}.toml"
    if is_file(path):  # (a 300-character name is no file, not an OSError)
        fmt = load_format_toml(path)
        if fmt.name == name:
            return fmt
    return None


def catalog_names() -> list[str]:
    """The shipped format names, in catalog order."""
    return list(catalog())

