"""One legend for the whole figure, outside the axes, in sections under bold headings; long
labels wrap rather than run past the figure's edges."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from gmse_cli.figures.layout import wrap_text

__all__ = ["section_handle", "figure_legend"]


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


