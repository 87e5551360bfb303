"""The figure's final geometry: titles and axis labels too long for their room wrapped, then the
layout frozen, so that labels placed afterwards never move the axes."""

from __future__ import annotations

__all__ = ["freeze_layout", "wrap_text"]


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


