"""The fit plot's weight formats keep apart in greyscale: each has a marker shape as well as a
colour (the same rule as the mse plot's, figures.series_looks), and the legend shows the shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

CPU_RUNS = Path(__file__).parents[1] / "examples" / "cpu-law.jsonl"


@pytest.fixture(scope="module")
def figure():
    from gmse_cli.fit import fit, fit_figure
    from gmse_cli.law import load_law
    from gmse_cli.runs import load_runs

    result = fit(load_runs([CPU_RUNS]), model="unified", base_law=load_law(None), loso=False, profile=False)
    return fit_figure(result)


def _path(marker_path) -> tuple:
    return tuple(np.round(marker_path.vertices.ravel(), 3))


def test_weight_formats_differ_in_marker_shape(figure):
    from matplotlib.collections import PathCollection

    shapes: dict[str, set] = {}
    for c in figure.axes[0].collections:
        if isinstance(c, PathCollection) and len(c.get_offsets()):
            group = c.get_label().split(" | ")[0]
            shapes.setdefault(group, set()).add(_path(c.get_paths()[0]))
    # int2, int3, int4, 2:4+int4 and fp32: one shape each, the same across what was compressed
    assert len(shapes) == 5
    assert all(len(s) == 1 for s in shapes.values())
    assert len({next(iter(s)) for s in shapes.values()}) == len(shapes)


def test_the_legend_shows_each_format_shape(figure):
    from matplotlib.markers import MarkerStyle

    from gmse_cli.figures import MARKERS

    (legend,) = figure.legends
    formats = {"int2", "int3", "int4", "2:4+int4", "fp32"}
    marks = {t.get_text(): h.get_marker() for t, h in zip(legend.get_texts(), legend.legend_handles, strict=True)
             if t.get_text() in formats}
    assert set(marks) == formats
    assert len(set(marks.values())) == len(formats) and set(marks.values()) <= set(MARKERS)
    # and the panel's points use the shape the legend shows for their format
    by_label = {c.get_label().split(" | ")[0]: _path(c.get_paths()[0]) for c in figure.axes[0].collections
                if c.get_label().split(" | ")[0] in formats}
    for name, marker in marks.items():
        style = MarkerStyle(marker)
        expected = _path(style.get_path().transformed(style.get_transform()))
        assert by_label[name] == expected


def test_what_was_compressed_is_told_by_fill_and_edge(figure):
    from matplotlib.colors import to_rgba

    looks = {}
    for c in figure.axes[0].collections:
        label = c.get_label()
        if " | " in label:
            kind = label.split(" | ")[1]
            looks.setdefault(kind, set()).add((tuple(np.round(c.get_edgecolor()[0][:3], 3)),
                                               tuple(np.round(c.get_facecolor()[0][:3], 3))))
    black = tuple(np.round(to_rgba("black")[:3], 3))
    assert all(e == black for e, _ in looks["weights and activations"])
    assert all(e == black for e, _ in looks["weights and activations, Hadamard-rotated"])
    assert all(e != black for e, _ in looks["weights only"])
    # rotated: a pale fill (the colour mixed with white), never darker than 0.7 in any channel
    assert all(min(f) >= 0.7 for _, f in looks["weights and activations, Hadamard-rotated"])
