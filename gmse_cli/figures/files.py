"""A plot's file: the path checked before any work, the figure written as PNG, SVG or PDF by its
extension, atomically and without a creation date (the same figure gives the same bytes)."""

from __future__ import annotations

import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from gmse_cli.atomic import check_output_path, write_atomic
from gmse_cli.errors import DataError
from gmse_cli.figures.style import house_style

__all__ = ["PLOT_SUFFIXES", "check_plot_path", "save_figure"]

PLOT_SUFFIXES = (".png", ".svg", ".pdf")

# No creation date in the file: the same figure gives the same SVG and PDF bytes.
_UNDATED = {"svg": {"Date": None}, "pdf": {"CreationDate": None}, "png": None}


def check_plot_path(path: str | Path, *, inputs: Iterable[str | Path] = ()) -> Path:
    """Raise :class:`DataError` unless ``path`` is a writable .png/.svg/.pdf file path, none of
    the command's ``inputs``.

    Called before any work, so a typo costs nothing.
    """
    path = Path(path)
    if path.suffix.lower() not in PLOT_SUFFIXES:
        raise DataError(f"plot path '{path}' must end in .png, .svg or .pdf (the file type follows the extension)")
    return check_output_path(path, what="plot", error=DataError, inputs=inputs)


def save_figure(fig: Any, path: str | Path) -> Path:
    """Write ``fig`` as PNG, SVG or PDF by the file's extension; an unwritable path is one clean
    error. (The extension was checked by :func:`check_plot_path` before any work.)"""
    path = Path(path)
    kind = path.suffix.lower().lstrip(".")
    if f".{kind}" not in PLOT_SUFFIXES:
        raise DataError(f"plot path '{path}' must end in .png, .svg or .pdf")
    # Rendered in memory, then written atomically: a full disk never leaves a truncated plot
    # behind, and a failed write is an OSError of ours. Rendered straight into the file, the PDF
    # writer met EFBIG, then failed again closing its zlib stream: a zlib.error traceback.
    buffer = io.BytesIO()
    with house_style():
        fig.savefig(buffer, format=kind, metadata=_UNDATED[kind])
    try:
        write_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise DataError(f"cannot write plot '{path}': {exc.strerror or exc}") from None
    return path
