"""The ranking plot: (a) capacity against Gaussian MSE on each family's curve, (b) capacity
against storage cost with the Pareto frontier.

Formats are told apart by family (colour and marker, the same in both panels); a hollow marker
is a capacity no fitted run backs (a family none of the law's runs had, or a noisier stage than
any of them: ``beyond_fitted_gmse``). Labels name the Pareto frontier first and the other
formats only where they fit (all of them for a short list).
Families whose curves have the same constants share one curve. With one activation format for
every row (``rank --act``), it is named once in the title and the curves are drawn times its
capacity, so the points still lie on them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gmse_cli import figures
from gmse_cli.counts import si
from gmse_cli.figures import check_plot_path
from gmse_cli.law import Law, sample_law
from gmse_cli.rank.evaluate import resolve_law
from gmse_cli.rank.results import RankRow
from gmse_cli.spec import Family

__all__ = ["check_plot_path", "plot_rank", "rank_figure"]

_GMSE_FLOOR = 1e-5  # near-lossless casts (fp32: GMSE ~ 1e-19) are drawn at this edge
_ALL_LABELS = 16  # up to this many formats, every one is labelled (where it fits)

# How each kind of format is drawn: (legend label, colour, marker).
_KINDS = {
    "quantization": ("quantization formats", figures.FAMILY_COLORS["quantization"], "o"),
    "vq": ("vector quantization", figures.FAMILY_COLORS["vq"], "^"),
    "sparsity": ("sparsity", figures.FAMILY_COLORS["sparsity"], "s"),
    "composite": ("composite (product of stage capacities)", "black", "D"),
    "none": ("lossless", figures.FAMILY_COLORS["none"], "P"),
}
_EXTRAPOLATED = "hollow: capacity read beyond the law's fitted runs"


def _kind(row: RankRow) -> str:
    return "composite" if "+" in row.family else row.family


def _grouped(rows: Sequence[RankRow], xy) -> list[tuple[float, float, list[RankRow]]]:
    """Rows at the same point (3 significant digits) as one label, in the rows' order."""
    groups: dict[tuple[float, float], list[RankRow]] = {}
    where: dict[tuple[float, float], tuple[float, float]] = {}
    for r in rows:
        x, y = xy(r)
        key = (float(f"{x:.3g}"), float(f"{y:.3g}"))
        groups.setdefault(key, []).append(r)
        where.setdefault(key, (x, y))
    return [(*where[k], g) for k, g in groups.items()]


def _activation_factor(rows: Sequence[RankRow], law: Law) -> tuple[str | None, float]:
    """The activation format every row shares (None if they differ or have none) and its
    capacity: the factor between each weight curve and its rows' points."""
    acts = {r.activations for r in rows}
    if len(acts) != 1 or None in acts:
        return None, 1.0
    from gmse_cli.errors import UsclError
    from gmse_cli.spec import resolve_format

    (name,) = acts
    try:
        families = resolve_format(name).families
    except UsclError:
        families = ()
    lossy = [f for f in families if f is not Family.NONE]
    if len(lossy) != 1 or rows[0].act_gmse is None:
        return name, 1.0  # a composite activation format: its stages' GMSEs are not in the rows
    return name, float(law.rho(lossy[0], rows[0].act_gmse))


def _label(group: Sequence[RankRow], act: str | None) -> str:
    """The rows' names; the activation format every row shares is in the title, not here."""
    names = []
    for r in group:
        suffix = f" A:{r.activations}"
        if act and r.name.startswith("W:") and r.name.endswith(suffix):
            names.append(r.name[2 : -len(suffix)])
        else:
            names.append(r.name)
    return ", ".join(names)


def rank_figure(rows: Sequence[RankRow], *, law: Law | str | Path | None = None):
    """The two-panel ranking figure (a matplotlib Figure; :func:`plot_rank` writes it)."""
    law = resolve_law(law)
    rows = list(rows)
    act, act_rho = _activation_factor(rows, law)
    with figures.house_style():
        fig, axes = figures.new_figure(7.0, 4.0, ncols=2)
        ax_g, ax_b = axes[0]
        handles: dict[str, object] = {}
        _curves(ax_g, rows, law, act, act_rho, handles)
        for kind, (label, color, marker) in _KINDS.items():
            for hollow in (False, True):  # hollow: no fitted run backs the capacity (beyond_fitted_gmse)
                sel = [r for r in rows if _kind(r) == kind and bool(r.beyond_fitted_gmse) is hollow]
                if not sel:
                    continue
                style = {"marker": marker, "s": 22, "zorder": 3, "label": label}
                style |= ({"facecolors": "none", "edgecolors": color, "linewidths": 0.9} if hollow
                          else {"color": color, "edgecolors": "white", "linewidths": 0.4})
                drawn = ax_g.scatter([max(r.gmse, _GMSE_FLOOR) for r in sel], [r.rho for r in sel], **style)
                handles.setdefault(label, drawn)
                ax_b.scatter([r.bits_per_param for r in sel], [r.rho for r in sel], **style)
        if any(r.beyond_fitted_gmse for r in rows):
            from matplotlib.lines import Line2D

            # A legend key only, drawn on no axes.
            handles[_EXTRAPOLATED] = Line2D([], [], marker="o", linestyle="none", markersize=4.7,
                                            markerfacecolor="none", markeredgecolor="0.35", markeredgewidth=0.9)
        _storage_panel(ax_b, rows, handles)

        ax_g.set_xscale("log")
        ax_g.set_xlim(_GMSE_FLOOR / 1.6, 1.6)
        ax_g.set_xlabel(f"Gaussian MSE of the weights (log scale; < {_GMSE_FLOOR:g} drawn at {_GMSE_FLOOR:g})")
        ax_g.set_title("(a) capacity against Gaussian MSE")
        ax_b.set_title("(b) capacity against storage cost")
        # room for the labels of formats at rho = 1, and for capacities above 1 (a law with L > 1)
        top = max([1.0, *(max(r.rho, r.rho_high) for r in rows), *(max(line.get_ydata()) for line in ax_g.lines)])
        for ax in (ax_g, ax_b):
            ax.set_ylim(0, 1.1 * top)
            ax.set_ylabel("capacity ρ (effective / actual parameters)")
        n, d = (rows[0].params, rows[0].tokens) if rows else (0.0, 0.0)
        title = f"{len(rows)} format{'s' if len(rows) != 1 else ''} under law {law.name}: N = {si(n)} parameters, D = {si(d)} tokens"
        if act:
            title += f"\nactivations {act} on every format: ρ = ρ(weights) × ρ({act})"
        fig.suptitle(title)
        figures.figure_legend(fig, _sections(handles))
        figures.freeze_layout(fig)

        front = [r for r in rows if r.pareto]
        every = len(rows) <= _ALL_LABELS
        g_xy = lambda r: (max(r.gmse, _GMSE_FLOOR), r.rho)  # noqa: E731
        b_xy = lambda r: (r.bits_per_param, r.rho)  # noqa: E731
        for ax, xy in ((ax_g, g_xy), (ax_b, b_xy)):
            labels = [
                figures.Label(x, y, _label(g, act), priority=0 if any(r.pareto for r in g) else 1)
                for x, y, g in _grouped(rows if every else front, xy)
            ]
            points = ([xy(r)[0] for r in rows], [xy(r)[1] for r in rows])
            figures.place_labels(ax, labels, points=points)
    return fig


def _sections(handles: dict) -> list:
    """The legend: the kinds of format, then the curves, then panel (b)'s lines."""
    kinds = {label for label, _, _ in _KINDS.values()} | {_EXTRAPOLATED}
    panel_b = ("Pareto frontier",)
    sections = [
        ("formats", [(h, k) for k, h in handles.items() if k in kinds]),
        ("law", [(h, k) for k, h in handles.items() if k not in kinds and k not in panel_b and "interval" not in k]),
        ("panel (b)", [(h, k) for k, h in handles.items() if k in panel_b or "interval" in k]),
    ]
    return [s for s in sections if s[1]]


def _curves(ax, rows, law: Law, act: str | None, act_rho: float, handles: dict) -> None:
    """Each family's curve (times the shared activation factor) and its 95% band; families
    with the same constants share one curve."""
    shown = {Family(f) for r in rows for f in r.family.split("+") if f != Family.NONE.value}
    shared: dict[tuple[float, float, float, str], list[Family]] = {}
    for family, curve in sorted(law.families.items()):
        if family in shown:
            shared.setdefault((curve.L.value, curve.F.value, curve.C.value, curve.shape), []).append(family)
    grid = np.logspace(math.log10(_GMSE_FLOOR / 1.6), math.log10(0.9999), 300)
    samples = sample_law(law, draws=1000, rng=0)
    band_label = "95% band of the law's draws"
    times = f" × ρ({act}) = {act_rho:.3f}" if act and act_rho != 1.0 else ""
    for (L, F, C, shape), families in shared.items():
        color = figures.FAMILY_COLORS.get(families[0].value, "gray") if len(families) == 1 else figures.FAMILY_COLORS["quantization"]
        band = np.array([samples.rho(families[0], g) for g in grid]) * act_rho  # (grid, draws)
        lo, hi = np.quantile(band, [0.025, 0.975], axis=1)
        fill = ax.fill_between(grid, lo, hi, color="0.5", alpha=0.15, linewidth=0, label=band_label)
        handles.setdefault(band_label, fill)
        names = " and ".join(f.value for f in families)
        label = f"{names} curve{'' if shape == 'tanh' else f' ({shape})'}: L {L:.3g}, F {F:.3g}, C {C:.3g}{times}"
        (line,) = ax.plot(grid, law.rho(families[0], grid) * act_rho, color=color, lw=1.3, label=label, zorder=2)
        handles[label] = line


def _storage_panel(ax, rows, handles: dict) -> None:
    """Panel (b): the rho intervals, the Pareto frontier, and bits on an axis with enough ticks."""
    if not rows:
        return
    level = rows[0].level
    bar = ax.errorbar([r.bits_per_param for r in rows], [r.rho for r in rows],
                      yerr=[[r.rho - r.rho_low for r in rows], [r.rho_high - r.rho for r in rows]],
                      fmt="none", ecolor="0.6", elinewidth=0.7, capsize=0, zorder=1,
                      label=f"{level:.0%} interval of ρ")
    handles[bar.get_label()] = bar
    front = sorted((r for r in rows if r.pareto), key=lambda r: r.bits_per_param)
    if front:
        (step,) = ax.step([r.bits_per_param for r in front], [r.rho for r in front], where="post",
                          color="#CC79A7", lw=1.4, zorder=2, label="Pareto frontier")
        handles["Pareto frontier"] = step
    bits_axis(ax, [r.bits_per_param for r in rows])
    ax.set_xlabel("storage cost (bits per parameter" + (", log scale)" if ax.get_xscale() == "log" else ")"))


def bits_axis(ax, bits: Sequence[float]) -> None:
    """A bits-per-parameter axis with at least three labelled ticks: log2 over a wide range,
    linear over a narrow one."""
    from matplotlib.ticker import FixedLocator, MaxNLocator, NullLocator, StrMethodFormatter

    lo, hi = min(bits), max(bits)
    nice = (0.125, 0.25, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
    if hi / lo >= 3:
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo / 1.15, hi * 1.15)
        ticks = [v for v in nice if lo / 1.15 <= v <= hi * 1.15]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_minor_locator(NullLocator())
    else:
        pad = max((hi - lo) * 0.08, 0.1)
        ax.set_xlim(lo - pad, hi + pad)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=6, min_n_ticks=3))
    ax.xaxis.set_major_formatter(StrMethodFormatter("{x:g}"))


def plot_rank(rows: Sequence[RankRow], path: str | Path, *, law: Law | str | Path | None = None) -> Path:
    """Write the two-panel ranking figure as PNG, SVG or PDF (by ``path``'s extension)."""
    path = check_plot_path(path)
    return figures.save_figure(rank_figure(rows, law=law), path)
