"""Writing the PNG plots of every command (``--plot``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gmse_cli.errors import DataError

__all__ = ["save_figure"]


def save_figure(fig: Any, path: str | Path, *, dpi: float | None = 120) -> Path:
    """Write a matplotlib figure and close it; an unwritable path is one clean error.
    ``dpi=None``: matplotlib's default."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path, dpi=dpi)
    except OSError as exc:
        raise DataError(f"cannot write plot '{path}': {exc.strerror or exc}") from None
    finally:
        plt.close(fig)
    return Path(path)
