"""One writer for every plot (``--plot``): the house style, labels that never overlap, legends
that name every series, and the file written as PNG, SVG or PDF by its extension. Each plot
itself lives with its command's library (rank, fit, realmse, search: ``plot.py``).

A plot is drawn in three steps: :func:`new_figure` (constrained layout, no pyplot, so a
notebook's backend and figure list are left alone), the plot's artists and legends, then
:func:`freeze_layout` before :func:`place_labels`: labels are placed in the final geometry and
never move the axes. Label placement uses adjustText; what it cannot place without touching
another label or the frame is left out, most important labels first, so the figure never
shows a pile of text (the command's table lists everything).

One module per concept:

- :mod:`.style`   rcParams, colours and markers (:func:`series_looks`), :func:`new_figure`
- :mod:`.layout`  :func:`freeze_layout` (titles and axis labels wrapped first), :func:`wrap_text`
- :mod:`.labels`  :class:`Label`, :func:`place_labels`
- :mod:`.legend`  :func:`figure_legend` and its section headings
- :mod:`.ticks`   :func:`log_axis`
- :mod:`.files`   :func:`check_plot_path`, :func:`save_figure`
"""

from __future__ import annotations

from gmse_cli.figures.files import PLOT_SUFFIXES, check_plot_path, save_figure
from gmse_cli.figures.labels import Label, place_labels
from gmse_cli.figures.layout import freeze_layout, wrap_text
from gmse_cli.figures.legend import figure_legend, section_handle
from gmse_cli.figures.style import (
    FACTOR_SEP,
    FAMILY_COLORS,
    MARKERS,
    PALETTE,
    house_style,
    new_figure,
    series_looks,
)
from gmse_cli.figures.ticks import log_axis

__all__ = [
    "PLOT_SUFFIXES",
    "FAMILY_COLORS",
    "PALETTE",
    "MARKERS",
    "FACTOR_SEP",
    "series_looks",
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
