"""Format files: a :class:`~gmse_cli.spec.format.Format` as TOML, read and written.

::

    name = "nvfp4"                 # optional; defaults to the file's stem
    description = "..."            # optional

    [[stages]]                     # one table per stage, in order (schema: gmse_cli.spec.stages)
    kind = "quantize"
    grid = "fp"
    ...
"""

from __future__ import annotations

import os
from pathlib import Path

from gmse_cli.errors import SpecError, described
from gmse_cli.inputs import refuse_unreadable_kind
from gmse_cli.spec.format import Format, validate_format
from gmse_cli.spec.stages import is_codebook_file
from gmse_cli.tomlfile import dumps_toml, read_toml

__all__ = ["load_format_toml", "format_from_table", "format_to_toml"]


def load_format_toml(path: str | Path) -> Format:
    """Load one format from a TOML file (the schema of :class:`Format`)."""
    if not isinstance(path, str | Path):
        raise SpecError(f"a format file is a path, not {described(path)}")
    path = Path(path)
    return format_from_table(read_toml(path, what="format file", error=SpecError), path)


def format_from_table(data: dict, path: Path) -> Format:
    """The format a format file's top-level table ``data`` describes (named after the file
    unless it says its name)."""
    data.setdefault("name", path.stem)
    _codebooks_beside(data, path.parent)
    return validate_format(data, source=str(path))


def _codebooks_beside(data: dict, folder: Path) -> None:
    """A relative codebook path in a format file names a file beside it (as an import in a
    config does), not one in whatever folder the command runs from; made absolute, so that the
    spec ``uscl formats show`` prints still names it wherever it is saved."""
    stages = data.get("stages")
    if not isinstance(stages, list):
        return  # validation names what is wrong
    for stage in stages:
        codebook = stage.get("codebook") if isinstance(stage, dict) else None
        if is_codebook_file(codebook) and not Path(codebook).is_absolute():
            stage["codebook"] = str(folder.resolve() / codebook)
        if is_codebook_file(codebook):
            _check_not_special(Path(stage["codebook"]))


def _check_not_special(path: Path) -> None:
    """Refuse a codebook path that is a folder, a FIFO or a device as the file is loaded, before
    any work: found only when the codebook was read, the refusal came after a progress line
    (and a FIFO, before reads were guarded, was waited on for ever). A missing file is left to
    the reader, which names it the same way."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    refuse_unreadable_kind(path, mode, what="codebook file", error=SpecError)


def format_to_toml(fmt: Format) -> str:
    """Render a format as TOML that :func:`load_format_toml` reads back to an equal model.

    Every stage field is written, defaults included (the full spec); unset ones (None) and an
    empty description are left out.
    """
    if not isinstance(fmt, Format):
        raise SpecError(f"format_to_toml takes a Format (resolve_format gives one), not {described(fmt)}")
    data = fmt.model_dump(mode="json", exclude_none=True)
    if not data.get("description"):
        data.pop("description", None)
    return dumps_toml(data)
