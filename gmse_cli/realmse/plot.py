"""The plot of ``uscl mse``: each layer's real-weight (or activation) MSE as a multiple of its GMSE.

A dot plot with one row per layer in model order (``layer.2`` before ``layer.10``) and one
marker per format (a colour and a shape each, so greyscale tells them apart too; open after
a Hadamard rotation), so every layer is named and every format is compared on one scale; the line at 1 is where weights compress like Gaussians (the GMSE differs by row length, the ratio
does not need a line per format). A model with more layers than fit as rows gets one row per
kind of layer (the block number replaced by ``*``): the parameter-weighted ratio over its
blocks, with a bar over their range.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gmse_cli import figures
from gmse_cli.realmse.layers import layer_kind, model_order
from gmse_cli.realmse.report import FormatMse

__all__ = ["plot_mse", "mse_figure"]

_MAX_ROWS = 48  # above this many layers, one row per kind of layer


def _short_names(names: Sequence[str]) -> dict[str, str]:
    """Names without the dotted prefix they all share and without ``.weight``."""
    parts = [n.split(".") for n in names]
    common = 0
    while all(len(p) > common + 1 and p[common] == parts[0][common] for p in parts):
        common += 1
    return {n: ".".join(p[common:]).removesuffix(".weight") for n, p in zip(names, parts, strict=True)}


def mse_figure(results: Sequence[FormatMse], *, checkpoint: str = "", tensors: str = "weight"):
    """The per-layer figure (a matplotlib Figure; :func:`plot_mse` writes it); ``tensors`` is
    "weight" or "activation", what the MSEs were measured on."""
    names = sorted({layer.name for r in results for layer in r.layers}, key=model_order)
    grouped = len(names) > _MAX_ROWS
    keys = [layer_kind(n) for n in names] if grouped else names
    rows = list(dict.fromkeys(keys))
    row_of = dict(zip(names, (rows.index(k) for k in keys), strict=True))
    short = _short_names(rows)
    base = list(dict.fromkeys(_base(r) for r in results))
    looks = figures.series_looks(base)  # a colour and a shape per format
    color = {b: c for b, (c, _) in looks.items()}
    marker = {b: m for b, (_, m) in looks.items()}

    with figures.house_style():
        fig, axes = figures.new_figure(7.0, 1.8 + 0.17 * len(rows))
        ax = axes[0][0]
        entries = []
        seen: list[float] = []
        width = 0.7 / max(len(results), 1)
        for i, r in enumerate(results):
            offset = (i - (len(results) - 1) / 2) * width
            ratios: dict[int, list[tuple[float, int]]] = {}
            for layer in r.layers:
                ratio = layer.mse / layer.gmse if layer.gmse > 0 else np.nan
                ratios.setdefault(row_of[layer.name], []).append((ratio, layer.params))
            ys = sorted(ratios)
            xs = [np.average([v for v, _ in ratios[y]], weights=[p for _, p in ratios[y]]) for y in ys]
            b = _base(r)
            seen += xs
            style = {"color": color[b], "marker": marker[b], "ms": 4.2, "ls": "none",
                     "mfc": "white" if r.hadamard else color[b], "mew": 1.0}
            label = f"{r.format}: {r.ratio:.2f}× GMSE overall"
            if grouped:
                lo = [min(v for v, _ in ratios[y]) for y in ys]
                hi = [max(v for v, _ in ratios[y]) for y in ys]
                seen += lo + hi
                bars = ax.errorbar(xs, np.array(ys) + offset, xerr=[np.subtract(xs, lo), np.subtract(hi, xs)],
                                   elinewidth=0.8, capsize=0, zorder=3, label=label, **style)
                entries.append((bars, label))
            else:
                (line,) = ax.plot(xs, np.array(ys) + offset, zorder=3, label=label, **style)
                entries.append((line, label))
        ref = ax.axvline(1.0, color="black", lw=0.9, ls="--", zorder=1, label=f"MSE = GMSE (Gaussian {tensors}s)")
        if not grouped:
            _shade_blocks(ax, rows)
        ax.set_yticks(range(len(rows)), [short[k] for k in rows])
        ax.set_ylim(len(rows) - 0.5, -0.5)
        ax.tick_params(axis="y", length=0)
        ax.grid(axis="y", alpha=0)
        _ratio_axis(ax, seen)
        ax.set_xlabel(f"real-{tensors} MSE / GMSE of the same format (log scale)")
        ax.set_ylabel("kind of layer (in model order)" if grouped else "layer (in model order)")
        first = results[0] if results else None
        what = f"{len(names)} layers" + (f" in {len(rows)} kinds (bars: range over blocks)" if grouped else "")
        if first is not None:
            what += f", {first.params:,} parameters"
            if first.sample < 1:
                what += f", {first.sample:.1%} of rows sampled"
        fig.suptitle(f"uscl mse: {checkpoint}\n{what}" if checkpoint else what)
        figures.figure_legend(fig, [("formats", entries), ("reference", [(ref, ref.get_label())])], rows=4)
        figures.freeze_layout(fig)
    return fig


def _shade_blocks(ax, rows: Sequence[str]) -> None:
    """Every other transformer block on a light band, so a row is easy to follow."""
    block = None
    shade = False
    for y, name in enumerate(rows):
        found = re.search(r"(?:^|\.)(\d+)(?:\.|$)", name)
        here = found.group(1) if found else None
        if here != block:
            block, shade = here, not shade
        if shade and here is not None:
            ax.axhspan(y - 0.5, y + 0.5, color="0.93", lw=0, zorder=0)


def _base(r: FormatMse) -> str:
    """The format without the Hadamard rotation ``--hadamard`` put in front of it."""
    return r.format.split("+", 1)[1] if r.hadamard else r.format


def _ratio_axis(ax, values: Sequence[float]) -> None:
    """Log-scaled ratios with plain-number ticks, at least two labelled, 1 always in view
    (matplotlib's log ticks label at most one value on ratios near 1, the common case)."""
    finite = [v for v in values if np.isfinite(v) and v > 0]
    figures.log_axis(ax, [*finite, 0.9, 1.1], axis="x")


def plot_mse(results: Sequence[FormatMse], path: str | Path, *, checkpoint: str = "", tensors: str = "weight") -> Path:
    """Write the per-layer figure as PNG, SVG or PDF (by ``path``'s extension); ``checkpoint``
    names the model in the title, ``tensors`` says what was measured ("weight", "activation")."""
    path = figures.check_plot_path(path)
    return figures.save_figure(mse_figure(results, checkpoint=checkpoint, tensors=tensors), path)
