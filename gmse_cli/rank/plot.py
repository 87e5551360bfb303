"""The ranking plot: capacity against GMSE with each family's curve, and against storage cost
with the Pareto frontier. Paths are checked before any GMSE is computed."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gmse_cli.errors import DataError
from gmse_cli.figures import save_figure
from gmse_cli.law import Law, sample_law
from gmse_cli.rank.evaluate import resolve_law
from gmse_cli.rank.pareto import pareto_front
from gmse_cli.rank.results import RankRow
from gmse_cli.spec import Family

__all__ = ["check_plot_path", "plot_rank"]

def check_plot_path(path: str | Path) -> Path:
    """Raise :class:`DataError` unless ``path`` is a writable .png/.pdf/.svg file path.

    Checked before any GMSE is computed, so a typo costs nothing.
    """
    import os

    path = Path(path)
    if path.suffix.lower() not in (".png", ".pdf", ".svg"):
        raise DataError(f"plot path '{path}' must end in .png, .pdf or .svg")
    parent = path.parent
    if not parent.is_dir():
        raise DataError(f"cannot write plot '{path}': folder '{parent}' does not exist")
    if path.is_dir():
        raise DataError(f"cannot write plot '{path}': it is a folder (name a file)")
    if not os.access(path if path.exists() else parent, os.W_OK):
        raise DataError(f"cannot write plot '{path}': permission denied (choose another path)")
    return path


def _coincident(rows: Sequence[RankRow], xy) -> dict[tuple[float, float], list[RankRow]]:
    """Rows grouped by their point, to 3 significant digits, so one label names them all."""
    groups: dict[tuple[float, float], list[RankRow]] = {}
    for r in rows:
        x, y = xy(r)
        groups.setdefault((float(f"{x:.3g}"), float(f"{y:.3g}")), []).append(r)
    return groups


def plot_rank(rows: Sequence[RankRow], path: str | Path, *, law: Law | str | Path | None = None) -> Path:
    """Two panels: (a) rho against GMSE with each family's fitted curve (and its 95% band of
    the constants' draws) and every row as a labelled point; (b) rho against bits per
    parameter with the Pareto frontier. Written with matplotlib's Agg backend."""
    path = check_plot_path(path)
    law = resolve_law(law)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {Family.QUANTIZATION: "tab:blue", Family.SPARSITY: "tab:orange", Family.VQ: "tab:green"}
    fig, (ax_g, ax_b) = plt.subplots(1, 2, figsize=(15, 6.5), dpi=110)

    # Near-lossless casts (fp32: GMSE ~ 1e-19) would stretch the axis over the flat part of
    # every curve; they are drawn at its left edge instead.
    g_lo = 1e-5
    grid = np.logspace(math.log10(g_lo), 0, 300)
    samples = sample_law(law, draws=1000, rng=0)
    shown = {Family(f) for r in rows for f in r.family.split("+") if f != Family.NONE.value}
    for family, curve in sorted(law.families.items()):
        if family not in shown:
            continue
        color = colors.get(family, "tab:gray")
        band = np.array([samples.rho(family, g) for g in grid])  # (grid, draws)
        lo, hi = np.quantile(band, [0.025, 0.975], axis=1)
        ax_g.fill_between(grid, lo, hi, color=color, alpha=0.07, linewidth=0)
        ax_g.plot(grid, curve.rho(grid), color=color, linestyle="--" if family is Family.VQ else "-", label=f"{family} curve (L={curve.L.value:.3g}, "
                  f"F={curve.F.value:.3g}, C={curve.C.value:.3g}); band: 95% of constants' draws")
    for (x, y), group in _coincident(rows, lambda r: (max(r.gmse, g_lo), r.rho)).items():
        r = group[0]
        single = r.activations is None and "+" not in r.family and r.family != Family.NONE.value
        color = colors.get(Family(r.family), "tab:gray") if single else "black"
        ax_g.scatter([x], [y], marker="o" if single else "D", s=18, zorder=3,
                     color=color, facecolors=color if single else "none")
        ax_g.annotate(", ".join(g.name for g in group), (x, y), fontsize=6, xytext=(3, 2),
                      textcoords="offset points")
    ax_g.scatter([], [], marker="D", facecolors="none", color="black", label="composite / W x A (factorized rho)")
    ax_g.set_xscale("log")
    ax_g.set_xlim(g_lo / 1.5, 1.5)
    ax_g.set_xlabel(f"GMSE of the whole weight pipeline (below {g_lo:g}: drawn at the edge)")
    ax_g.set_ylabel("capacity rho")
    ax_g.set_title(f"(a) capacity against Gaussian MSE - law {law.name}")
    ax_g.set_ylim(0, 1.05)
    ax_g.legend(fontsize=7, loc="lower left")
    ax_g.grid(alpha=0.3)

    front = pareto_front(rows)
    for r in rows:
        ax_b.errorbar([r.bits_per_param], [r.rho], yerr=[[r.rho - r.rho_low], [r.rho_high - r.rho]],
                      fmt="none", color="tab:gray", alpha=0.25, elinewidth=0.6, capsize=0)
    for (x, y), group in _coincident(rows, lambda r: (r.bits_per_param, r.rho)).items():
        on = any(g.pareto for g in group)
        ax_b.scatter([x], [y], s=18, zorder=3, color="tab:red" if on else "tab:gray")
        ax_b.annotate(", ".join(g.name for g in group), (x, y), fontsize=6, xytext=(3, 2),
                      textcoords="offset points")
    if front:
        xs = [r.bits_per_param for r in front]
        ys = [r.rho for r in front]
        ax_b.step(xs, ys, where="post", color="tab:red", label="Pareto frontier")
    ax_b.errorbar([], [], yerr=[], fmt="none", color="tab:gray", alpha=0.4, label=f"{rows[0].level:.0%} interval of rho" if rows else None)
    ax_b.set_xscale("log", base=2)
    ax_b.set_xlabel("bits per parameter")
    ax_b.set_ylabel("capacity rho")
    ax_b.set_title("(b) capacity against storage cost")
    ax_b.set_ylim(0, 1.05)
    ax_b.legend(fontsize=7, loc="lower right")
    ax_b.grid(alpha=0.3)
    # fixed margins: tight_layout would measure every label (seconds with a whole catalog)
    fig.subplots_adjust(left=0.05, right=0.98, bottom=0.09, top=0.93, wspace=0.15)
    save_figure(fig, path, dpi=None)
    return path
