"""The shipped catalog: every format file in ``formats/``, by name."""

from __future__ import annotations

from functools import cache

from gmse_cli.paths import catalog_dir
from gmse_cli.spec.format import Format
from gmse_cli.spec.formatfile import load_format_toml

__all__ = ["catalog", "catalog_names"]


@cache
def catalog() -> dict[str, Format]:
    """Every shipped format by name (``formats/*.toml``)."""
    formats: dict[str, Format] = {}
    for path in sorted(catalog_dir().glob("*.toml")):
        fmt = load_format_toml(path)
        assert fmt.name is not None
        formats[fmt.name] = fmt
    # Listed by family, then cost: the order a person scans the catalog in.
    order = sorted(formats.values(), key=lambda f: (f.family, f.bits_per_param(), f.name))
    return {f.name: f for f in order}


def catalog_names() -> list[str]:
    """The shipped format names, in catalog order."""
    return list(catalog())

