"""The plot of ``uscl search``: capacity against storage cost for every measured candidate, the
search's Pareto frontier, the catalog formats within the budget and the best format found.

Labels name the best format first, then the catalog's own Pareto frontier (drawn dashed, so the
gain of the search is the gap between the two steps), then other catalog formats where they
fit; the budget is a vertical line. The comparison table printed beside the plot lists every catalog format.
"""

from __future__ import annotations

from pathlib import Path

from gmse_cli import figures
from gmse_cli.search.results import SearchResult

__all__ = ["plot_search", "search_figure"]

_FRONTIER = "#0072B2"
_CATALOG = "#D55E00"


def search_figure(result: SearchResult, *, checkpoint: str | None = None):
    """The search's figure (a matplotlib Figure; :func:`plot_search` writes it). ``checkpoint``
    names the checkpoint of a real-weight search in the title."""
    from matplotlib.ticker import MaxNLocator

    with figures.house_style():
        fig, axes = figures.new_figure(7.0, 4.6)
        ax = axes[0][0]
        entries = []
        cand = ax.scatter([p[1] for p in result.points], [p[2] for p in result.points], s=5, color="0.78",
                          lw=0, zorder=1, label="candidates measured (first pass)")
        entries.append((cand, cand.get_label()))
        front = sorted(result.frontier, key=lambda p: p.bits_per_param)
        (step,) = ax.step([p.bits_per_param for p in front], [p.rho for p in front], where="post", color=_FRONTIER,
                          lw=1.3, marker="o", ms=3, zorder=3, label="Pareto frontier of the search")
        entries.append((step, step.get_label()))
        comps = result.comparisons
        on_front = _catalog_front(result)
        if on_front:
            (cstep,) = ax.step([c.catalog_bits for c in on_front], [c.catalog_rho for c in on_front], where="post",
                               color=_CATALOG, lw=1.0, ls="--", zorder=2, label="Pareto frontier of the catalog")
            entries.append((cstep, cstep.get_label()))
        if comps:
            cat = ax.scatter([c.catalog_bits for c in comps], [c.catalog_rho for c in comps], marker="x", s=26,
                             color=_CATALOG, lw=1.2, zorder=4, label="catalog formats")
            entries.append((cat, cat.get_label()))
        b = result.best
        best = ax.scatter([b.bits_per_param], [b.rho], marker="*", s=150, color=_FRONTIER, edgecolors="black",
                          lw=0.6, zorder=5, label=f"best: {b.name} ({b.bits_per_param:.3g} bits, ρ {b.rho:.3f})")
        entries.append((best, best.get_label()))
        budget = ax.axvline(result.budget, color="black", ls="--", lw=0.9, zorder=2,
                            label=f"budget: {result.budget:g} bits per parameter")
        entries.append((budget, budget.get_label()))

        bits = [p[1] for p in result.points] + [result.budget]
        ax.set_xlim(0, max(bits) * 1.04)
        # capacities above 1 (a law with L > 1) stay in view
        top = max([1.0, b.rho, *(p[2] for p in result.points), *(p.rho for p in front), *(c.catalog_rho for c in comps)])
        ax.set_ylim(0, 1.0 if top <= 1.0 else 1.05 * top)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=10, steps=[1, 2, 2.5, 5, 10]))
        ax.set_xlabel("storage cost (bits per parameter)")
        error = "Gaussian MSE" if result.objective == "gaussian" else "real-weight MSE"
        ax.set_ylabel(f"capacity ρ (law {result.law}, from the {error})")
        where = f"real weights of {checkpoint}" if checkpoint else (
            "real weights" if result.objective != "gaussian" else "Gaussian weights")
        fig.suptitle(f"uscl search --bits {result.budget:g}: {where}, law {result.law}")
        figures.figure_legend(fig, [("", entries)], rows=3)
        figures.freeze_layout(fig)

        labels = [figures.Label(b.bits_per_param, b.rho, b.name, color=_FRONTIER, priority=0, weight="bold")]
        labels += [figures.Label(c.catalog_bits, c.catalog_rho, c.catalog, color=_CATALOG, priority=1 if c in on_front else 2)
                   for c in comps]
        points = ([p.bits_per_param for p in front] + [c.catalog_bits for c in comps],
                  [p.rho for p in front] + [c.catalog_rho for c in comps])
        figures.place_labels(ax, labels, points=points)
    return fig


def _catalog_front(result: SearchResult) -> list:
    """The catalog formats no other catalog format beats on both bits and capacity."""
    comps = sorted(result.comparisons, key=lambda c: (c.catalog_bits, -c.catalog_rho))
    front, best = [], -1.0
    for c in comps:
        if c.catalog_rho > best:
            front.append(c)
            best = c.catalog_rho
    return front


def plot_search(result: SearchResult, path: str | Path, *, checkpoint: str | None = None) -> Path:
    """Write the search's figure as PNG, SVG or PDF (by ``path``'s extension)."""
    path = figures.check_plot_path(path)
    return figures.save_figure(search_figure(result, checkpoint=checkpoint), path)
