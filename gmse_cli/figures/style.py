"""The house style of every plot: rcParams, the colours and markers shared by all plots, and a
figure of its own (no pyplot)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

__all__ = ["FAMILY_COLORS", "PALETTE", "MARKERS", "FACTOR_SEP", "series_looks", "house_style", "new_figure"]

# One colour per law family, the same in every plot.
FAMILY_COLORS = {"quantization": "#0072B2", "sparsity": "#D55E00", "vq": "#009E73", "none": "#555555"}
# Okabe-Ito's colour-blind-safe qualitative palette (without its yellow, unreadable on white,
# and black, kept for reference lines), then matplotlib's tab10 extras; plots with more series than this combine colour and marker.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#8C564B",
           "#7F7F7F", "#BCBD22", "#9467BD")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
# A series told apart by two keys (colour and marker) has the label "key1 | key2" and one legend
# entry per key (see :func:`figure_legend`).
FACTOR_SEP = " | "


def series_looks(keys: Iterable[str], palette: Sequence[str] = PALETTE) -> dict[str, tuple[str, str]]:
    """(colour, marker) of each key, in order: a shape as well as a colour per series, so that
    greyscale tells them apart too. Past the palette's colours the shapes shift by one, so that no
    two series share both (up to ``len(palette) * len(MARKERS)`` of them)."""
    return {k: (palette[i % len(palette)], MARKERS[(i + i // len(palette)) % len(MARKERS)])
            for i, k in enumerate(keys)}


_STYLE = {
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "legend.title_fontsize": 7,
    "figure.titlesize": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.6,
    "lines.linewidth": 1.5,
    "savefig.dpi": 200,
    "pdf.fonttype": 42,  # embedded TrueType: text stays text in a paper's PDF
    "svg.fonttype": "none",
    "svg.hashsalt": "uscl",  # fixed clip-path ids: the same figure gives the same SVG bytes
}


@contextmanager
def house_style() -> Iterator[None]:
    """The plots' rcParams, for the duration of drawing or saving (never set globally)."""
    import matplotlib

    with matplotlib.rc_context(_STYLE):
        yield


def new_figure(width: float, height: float, *, nrows: int = 1, ncols: int = 1, **kwargs: Any):
    """``(figure, axes)`` sized in inches, with constrained layout and an Agg canvas of its own
    (no pyplot: nothing global is touched). Call inside :func:`house_style`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kwargs)

