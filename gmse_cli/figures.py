"""One writer for every plot (``--plot``): the house style, labels that never overlap, legends
that name every series, and the file written as PNG, SVG or PDF by its extension.

A plot is drawn in three steps: :func:`new_figure` (constrained layout, no pyplot, so a
notebook's backend and figure list are left alone), the plot's artists and legends, then
:func:`freeze_layout` before :func:`place_labels`: labels are placed in the final geometry and
never move the axes. Label placement uses adjustText; what it cannot place without touching
another label or the frame is left out, most important labels first, so the figure never
shows a pile of text (the command's table lists everything).
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gmse_cli.atomic import check_output_path, write_atomic
from gmse_cli.counts import si
from gmse_cli.errors import DataError

__all__ = [
    "PLOT_SUFFIXES",
    "FAMILY_COLORS",
    "PALETTE",
    "MARKERS",
    "FACTOR_SEP",
    "Label",
    "check_plot_path",
    "house_style",
    "new_figure",
    "freeze_layout",
    "place_labels",
    "section_handle",
    "figure_legend",
    "wrap_text",
    "save_figure",
    "log_axis",
]

PLOT_SUFFIXES = (".png", ".svg", ".pdf")

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


def freeze_layout(fig) -> None:
    """Lay the figure out once and keep it: labels placed afterwards cannot move the axes.
    A title wider than its column of the figure (the suptitle: than the figure) is wrapped
    first, and an axis label longer than its axes, so that no title runs into its neighbour or
    past the figure's edge."""
    fig.canvas.draw()
    for _ in range(3):  # a wrapped title takes height from its axes, whose label may then need wrapping
        if not (_wrap_titles(fig) | _wrap_axis_labels(fig)):
            break
        fig.canvas.draw()
    fig.set_layout_engine("none")


def _wrap_axis_labels(fig) -> bool:
    """Wrap each axis label over 10% longer than its axes (a y label far taller than the panel ran
    past the panel's title and out of the figure's top); True if any was."""
    renderer = fig.canvas.get_renderer()
    changed = False
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.get_window_extent(renderer)
        for label, room, along in ((ax.xaxis.label, box.width, "width"), (ax.yaxis.label, box.height, "height")):
            text, length = label.get_text(), getattr(label.get_window_extent(renderer), along)
            if not text or length <= 1.1 * room:  # a label a little longer than its axes harms nothing
                continue
            longest = max(len(line) for line in text.split("\n"))
            whole = text.replace("log scale", "log\0scale")  # "log scale" stays on one line
            label.set_text(wrap_text(whole, max(12, int(longest * 0.97 * room / length))).replace("\0", " "))
            changed = True
    return changed


def _wrap_titles(fig) -> bool:
    """Wrap the lines of each title too wide for its room; True if any was."""
    renderer = fig.canvas.get_renderer()
    suptitle = fig.get_suptitle()
    titles = [(t, fig.bbox.width) for t in fig.texts if suptitle and t.get_text() == suptitle][:1]
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if ax.get_visible() and spec is not None:
            # centred on the axes, within the axes' column of the figure
            ncols, centre = spec.get_gridspec().ncols, ax.get_window_extent(renderer).intervalx.mean()
            left, right = (fig.bbox.width * c / ncols for c in (spec.colspan.start, spec.colspan.stop))
            titles.append((ax.title, 2 * min(centre - left, right - centre)))
    changed = False
    for title, room in titles:
        text = title.get_text()
        width = title.get_window_extent(renderer).width
        if not text or width <= 0.97 * room:
            continue
        longest = max(len(line) for line in text.split("\n"))
        title.set_text(wrap_text(text, max(12, int(longest * 0.97 * room / width))))
        changed = True
    return changed


@dataclass(frozen=True)
class Label:
    """A text to place near the data point ``(x, y)``; ``priority`` 0 is placed first, and a
    label of priority 2 or more is optional: shown only where it covers no data point."""

    x: float
    y: float
    text: str
    color: str = "black"
    priority: int = 1
    weight: str = "normal"


def place_labels(ax, labels: Sequence[Label], *, points: tuple[Sequence[float], Sequence[float]] = ((), ()),
                 fontsize: float = 7.0, iterations: int = 400) -> list:
    """Put each label near its point, clear of the other labels, of ``points`` and of the frame.

    adjustText moves the labels apart (deterministically: an iteration limit, not a time
    limit). Then, most important first (lowest ``priority``, then the order given), a label
    that touches a kept label, crosses the axes' edge or covers a data point moves to the
    nearest clear spot around its point. Without one, a label of priority 0 or 1 keeps a
    place that touches no other label (covering a point if it must) and an optional label
    (priority 2 and up) is left out, as is any label with no place at all. A label away from
    its point gets a thin leader line. Call after :func:`freeze_layout`; returns the texts kept.
    """
    import numpy as np
    from adjustText import adjust_text

    if not labels:
        return []
    order = sorted(range(len(labels)), key=lambda i: labels[i].priority)
    labels = [labels[i] for i in order]
    # A light backing keeps a label legible where it crosses a line or a grid line.
    backing = {"boxstyle": "square,pad=0.05", "facecolor": "white", "edgecolor": "none", "alpha": 0.8}
    texts = [ax.text(lab.x, lab.y, lab.text, fontsize=fontsize, color=lab.color, fontweight=lab.weight,
                     ha="left", va="bottom", bbox=backing, zorder=6) for lab in labels]
    for t in texts:
        t.set_in_layout(False)
    px = np.concatenate([np.asarray(points[0], float), [lab.x for lab in labels]])
    py = np.concatenate([np.asarray(points[1], float), [lab.y for lab in labels]])
    adjust_text(texts, x=px, y=py, ax=ax, avoid_self=False, iter_lim=iterations, time_lim=None,
                ensure_inside_axes=True, expand=(1.15, 1.4), force_text=(0.2, 0.4),
                force_static=(0.15, 0.3), force_pull=(0.02, 0.02), max_move=(8, 8))
    renderer = ax.figure.canvas.get_renderer()
    pad = ax.figure.dpi / 72  # one point of air around every label
    frame = ax.get_window_extent(renderer)
    dots = ax.transData.transform(np.column_stack([px, py])) if len(px) else np.empty((0, 2))
    kept: list = []
    boxes: list = []

    def fits(box) -> bool:
        inside = box.x0 >= frame.x0 and box.x1 <= frame.x1 and box.y0 >= frame.y0 and box.y1 <= frame.y1
        return inside and not any(box.overlaps(b) for b in boxes)

    for lab, t in zip(labels, texts, strict=True):
        box = t.get_window_extent(renderer).padded(pad)
        if not fits(box) or _covers(box, dots):
            # a clear spot near the point; else, for a label that must be shown, where adjustText
            # put it if that fits, or the first spot that fits (optional labels never cover data)
            where = (t.get_position(), t.get_ha(), t.get_va())
            fitted = fits(box)
            box = _nearby(ax, t, lab, renderer, pad, fits, dots, strict=True)
            if box is None and lab.priority < 2:
                if fitted:
                    t.set_position(where[0])
                    t.set_ha(where[1])
                    t.set_va(where[2])
                    box = t.get_window_extent(renderer).padded(pad)
                else:
                    box = _nearby(ax, t, lab, renderer, pad, fits, dots)
        if box is None:
            t.remove()
            continue
        kept.append(t)
        boxes.append(box)
        _leader(ax, t, box, lab)
    return kept


# Places tried around a point when adjustText left its label touching another or the frame:
# (horizontal, vertical alignment, offset in points), nearest first.
_SPOTS = tuple(
    (ha, va, dx * k, dy * k)
    for k in (1, 2.5, 4.5)
    for ha, va, dx, dy in (("left", "bottom", 3, 3), ("right", "bottom", -3, 3), ("left", "top", 3, -3),
                           ("right", "top", -3, -3), ("center", "bottom", 0, 5), ("center", "top", 0, -5),
                           ("left", "center", 5, 0), ("right", "center", -5, 0))
)


def _covers(box, dots) -> bool:
    import numpy as np

    return bool(np.any((dots[:, 0] > box.x0) & (dots[:, 0] < box.x1) & (dots[:, 1] > box.y0) & (dots[:, 1] < box.y1)))


def _nearby(ax, text, label: Label, renderer, pad: float, fits, dots, *, strict: bool = False):
    """The first spot around the label's point where it fits, preferring spots that cover no
    data point (``strict``: only those); None if there is none."""
    import numpy as np

    scale = ax.figure.dpi / 72
    target = ax.transData.transform((label.x, label.y))
    to_data = ax.transData.inverted()
    fallback = None
    for ha, va, dx, dy in _SPOTS:
        text.set_position(to_data.transform(target + np.array([dx, dy]) * scale))
        text.set_ha(ha)
        text.set_va(va)
        box = text.get_window_extent(renderer).padded(pad)
        if not fits(box):
            continue
        if not _covers(box, dots):
            return box
        if fallback is None and not strict:
            fallback = (ha, va, dx, dy, box)
    if fallback is None:
        return None
    ha, va, dx, dy, box = fallback
    text.set_position(to_data.transform(target + np.array([dx, dy]) * scale))
    text.set_ha(ha)
    text.set_va(va)
    return box


def _leader(ax, text, box, label: Label) -> None:
    """A thin line from the label's nearest edge to its point, when the label moved away."""
    import numpy as np

    target = ax.transData.transform((label.x, label.y))
    nearest = np.array([min(max(target[0], box.x0), box.x1), min(max(target[1], box.y0), box.y1)])
    if np.hypot(*(nearest - target)) < 6 * ax.figure.dpi / 72:
        return
    start = ax.transData.inverted().transform(nearest)
    line = ax.annotate("", xy=(label.x, label.y), xytext=tuple(start), xycoords="data", textcoords="data",
                       arrowprops={"arrowstyle": "-", "color": "0.55", "lw": 0.5, "shrinkA": 0, "shrinkB": 2})
    line.set_in_layout(False)


def section_handle():
    """An invisible legend handle: its entry reads as a heading over the entries below it."""
    from matplotlib.patches import Rectangle

    return Rectangle((0, 0), 0, 0, fill=False, edgecolor="none", visible=False)


def figure_legend(fig, sections: Sequence[tuple[str, Sequence[tuple[Any, str]]]], *,
                  loc: str = "outside lower center", rows: int = 5):
    """One legend for the whole figure, outside the axes (so it never covers data or labels):
    each ``(heading, [(handle, label), ...])`` section fills its own columns of at most
    ``rows`` lines, under its heading in bold (an empty heading: none). A legend wider than
    the figure (long labels: a law's constants times an activation's capacity) takes more
    lines per column, then breaks its longest labels over two or more lines (at ": " and ", "
    first; each further line an entry of its own, under its label), and only then a smaller
    font, so that nothing is cut at the figure's edges and the text keeps the house style's
    7 pt wherever wrapping can make it fit."""
    planned = rows  # the lines the figure's height was chosen for
    widest = max((len(label) for _, entries in sections for _, label in entries), default=0)
    widths = [None, *sorted({max(24, int(widest * f)) for f in (0.8, 0.65, 0.5, 0.4)} - {widest}, reverse=True)]
    attempts = []
    for width in widths:
        wrapped = _wrapped(sections, width)
        longest = max(sum(map(len, groups)) + bool(heading) for heading, groups in wrapped)
        tallest = max((len(g) + bool(heading) for heading, groups in wrapped for g in groups), default=1)
        lowest = max(2, tallest, min(planned, longest))
        attempts += [(wrapped, n, None) for n in range(lowest, max(lowest, longest) + 1)]
    # last resorts: the narrowest legend in a smaller font
    attempts += [(attempts[-1][0], attempts[-1][1], "small"), (attempts[-1][0], attempts[-1][1], "x-small")]
    for wrapped, lines, fontsize in attempts[:-1]:
        legend = _legend(fig, wrapped, loc, lines, fontsize)
        if _fits_width(fig, legend):
            _make_room(fig, legend, lines, planned)
            return legend
        legend.remove()
    wrapped, lines, fontsize = attempts[-1]
    legend = _legend(fig, wrapped, loc, lines, fontsize)
    _make_room(fig, legend, lines, planned)
    return legend


def wrap_text(text: str, width: int) -> str:
    """``text`` in lines of at most ``width`` characters where it can be: broken after ": ",
    then ", " (a constant stays with its value) where the line so broken is at least half
    full, else at the last space that fits."""
    lines: list[str] = []
    for line in text.split("\n"):
        while len(line) > width:
            cut = None
            for sep in (": ", ", ", " "):
                spots = [i + len(sep) - 1 for i in range(len(line)) if line.startswith(sep, i)
                         and (sep == " " or i + 1 >= width / 2) and i + len(sep) - 1 <= width]
                if spots:
                    cut = spots[-1]
                    break
            if cut is None:  # one word longer than the width: left whole
                cut = line.find(" ")
                if cut < 0:
                    break
            lines.append(line[:cut].rstrip())
            line = line[cut:].lstrip()
        lines.append(line)
    return "\n".join(lines)


def _wrapped(sections, width: int | None):
    """The sections with each entry as a group of legend lines: a label longer than ``width``
    broken into lines, those after its first as entries of their own with no handle (None:
    every label on one line)."""
    out = []
    for heading, entries in sections:
        groups = []
        for handle, label in entries:
            first, *rest = (wrap_text(label, width) if width else label).split("\n")
            groups.append([(handle, first), *((section_handle(), line) for line in rest)])
        out.append((heading, groups))
    return out


def _make_room(fig, legend, lines: int, planned: int) -> None:
    """A legend of more lines than the figure was sized for makes the figure taller by the
    extra lines, so that the axes keep their height (else the layout collapses under it)."""
    if lines <= planned:
        return
    height = legend.get_window_extent(fig.canvas.get_renderer()).height / fig.dpi
    fig.set_figheight(fig.get_figheight() + height * (lines - planned) / lines)


def _legend(fig, sections, loc: str, rows: int, fontsize):
    """``sections`` as :func:`_wrapped` gives them: a group's lines stay in one column."""
    handles: list = []
    labels: list[str] = []
    for heading, groups in sections:
        columns: list[list] = [[]]
        for group in groups:
            if columns[-1] and len(columns[-1]) + len(group) > (rows - 1 if heading else rows):
                columns.append([])
            columns[-1] += group
        for i, lines in enumerate(columns):
            column = [(section_handle(), heading if i == 0 else "")] if heading else []
            column += lines
            column += [(section_handle(), "")] * (rows - len(column))
            handles += [h for h, _ in column]
            labels += [label for _, label in column]
    # matplotlib fills a legend column by column, so equal columns keep each section together
    legend = fig.legend(handles, labels, loc=loc, ncols=len(handles) // rows, frameon=False,
                        handlelength=1.8, columnspacing=1.6, fontsize=fontsize)
    headings = {heading for heading, _ in sections if heading}
    for text in legend.get_texts():
        if text.get_text() in headings:
            text.set_fontweight("bold")
    return legend


def _fits_width(fig, legend) -> bool:
    return legend.get_window_extent(fig.canvas.get_renderer()).width <= 0.99 * fig.bbox.width


_NICE = (1.0, 2.0, 5.0)
_NICE_DENSE = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
_NICE_FINE = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)  # data within 2x


def log_axis(ax, values: Sequence[float], *, axis: str = "x") -> None:
    """A log-scaled axis over ``values`` whose ticks a reader can read: 1-2-5 (1, 1.5, 2, 3, 4,
    5, 6, 8 over a range of less than a decade; steps of 0.1-0.2 within a factor of 2) within
    the data, at least two labelled, as plain numbers with k / M / B, and no unlabelled minor ticks (matplotlib's default labels
    decades only: one label or none on data within a decade)."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    finite = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return
    lo, hi = min(finite) / 1.15, max(finite) * 1.15
    for nice in (_NICE, _NICE_DENSE, _NICE_FINE):
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in nice if lo <= m * 10.0**k <= hi]
        if len(ticks) >= 3:
            break
    if len(ticks) < 2:  # a very narrow range: its two ends
        ticks = [min(finite), max(finite)]
    if len(ticks) > 8:  # many decades: decades only
        ticks = [t for t in ticks if math.isclose(t, 10.0 ** round(math.log10(t)))] or ticks[::3]
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)
    target.set_major_locator(FixedLocator(ticks))
    target.set_minor_locator(NullLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: si(v)))


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
