"""Text labels beside data points that never overlap: adjustText first, then the nearest clear
spot, most important labels first; what has no place is left out (the command's table lists
everything)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Label", "place_labels"]


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


