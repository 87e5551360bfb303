"""The fit's plot: (a) predicted against observed loss for every run, (b) capacity against GMSE
with the capacity curves and each scheme's own (decoupled) capacity, and, when the fit reports
drift, (c), (d) each run's implied capacity against N and D/N.

Schemes are told apart by two keys rather than one colour each: the weight format with its
rotation left out (int4, fp4, 2:4+int4, ...; in order of bits) is a colour and a marker shape
(as in every plot: :func:`figures.series_looks`, so greyscale keeps it), and the marker's fill
and edge say what was compressed: a black edge that activations were compressed too, a pale
fill that the scheme was Hadamard-rotated. Both panels use the same keys, so one legend reads for both and
no point needs a text label. Curves held at a base law are drawn grey and dashed (a dash pattern per family), and say so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gmse_cli import figures
from gmse_cli.fit.results import FamilyFit, FitResult, SchemeCapacity
from gmse_cli.law import capacity
from gmse_cli.runs import Run

__all__ = ["plot_fit", "fit_figure", "plot_panels", "scheme_keys"]

_FAMILY_STYLE = {"quantization": "-", "sparsity": "--", "vq": ":"}
# Held curves are grey; their dashes still tell the families apart (in greyscale too).
_HELD_STYLE = {"quantization": (0, (5, 2)), "sparsity": (0, (1.5, 1.5)), "vq": (0, (5, 1.5, 1.5, 1.5))}
DRIFT_REFERENCE = "implied ρ = the law's ρ (no drift)"


def _strip_rotation(fmt: str) -> tuple[str, bool]:
    """``had128+int4`` -> (``int4``, True): the format without its Hadamard stages."""
    parts = fmt.split("+")
    kept = [p for p in parts if not p.startswith("had")]
    return "+".join(kept) or fmt, len(kept) < len(parts)


def scheme_keys(scheme: str, weights: str | None = None, activations: str | None = None) -> tuple[str, str]:
    """(colour key, marker key) of a scheme: its weight format without rotations, and what it
    compresses (``weights only`` / ``weights and activations``, ``, Hadamard-rotated``)."""
    if weights is None:
        if scheme.startswith("W:") and " A:" in scheme:
            weights, activations = scheme[2:].split(" A:", 1)
        else:
            weights = scheme
    group, rotated = _strip_rotation(weights)
    kind = "weights and activations" if activations else "weights only"
    return group, kind + (", Hadamard-rotated" if rotated else "")


def _group_order(groups: set[str]) -> list[str]:
    """Weight formats in order of bits per parameter (names the catalog cannot read last)."""
    from gmse_cli.errors import UsclError
    from gmse_cli.spec import resolve_format

    def bits(name: str) -> float:
        try:
            return resolve_format(name).bits_per_param()
        except UsclError:
            return float("inf")

    return sorted(groups, key=lambda g: (bits(g), g))


def _marker(kind: str, color: str, shape: str = "o") -> dict:
    """Scatter keywords: the weight format's ``color`` and ``shape``; a black edge when the
    activations were compressed too, a pale fill (the colour mixed with white) when rotated."""
    from matplotlib.colors import to_rgb

    activations = kind.startswith("weights and activations")
    if kind.endswith("Hadamard-rotated"):
        pale = tuple(0.7 + 0.3 * c for c in to_rgb(color))
        return {"marker": shape, "facecolors": [pale], "edgecolors": "black" if activations else color,
                "linewidths": 1.0 if activations else 1.1}
    if activations:
        return {"marker": shape, "color": color, "edgecolors": "black", "linewidths": 1.0}
    return {"marker": shape, "color": color, "edgecolors": "white", "linewidths": 0.4}


def fit_figure(result: FitResult, *, curves: Mapping[str, FamilyFit] | None = None,
               points: Sequence[SchemeCapacity] | None = None, curve_label: str = "", points_note: str = ""):
    """The fit's figure (a matplotlib Figure; :func:`plot_fit` writes it). Arguments as there."""
    curves = dict(result.families if curves is None else curves)
    source = result.capacities if points is None else points
    # A weights x activations scheme with the same format on both is drawn at sqrt(rho) (its
    # per-tensor capacity under factorization); other composite schemes are left out, and so are
    # schemes whose runs were not fitted (outside the domain: no capacity of their own).
    shown = [c for c in source if c.stage_gmse and not c.reference and c.fitted and
             (len(c.stage_gmse) == 1 or (len(c.stage_gmse) == 2 and c.stage_gmse[0] == c.stage_gmse[1]))]
    families = {f for c in shown for f, _ in c.stage_gmse}
    curves = {f: c for f, c in curves.items() if f in families or not c.held}
    has_cap = bool(shown) or bool(curves)

    keys = {r.scheme: scheme_keys(r.scheme) for r in result.residuals}
    # a scheme's keys come from its formats where the fit knows them (a runs file may name a
    # scheme anything), its name only where it does not
    keys.update({c.scheme: scheme_keys(c.scheme, c.weights, c.activations) for c in [*result.capacities, *shown]})
    groups = _group_order({g for g, _ in keys.values()})
    looks = figures.series_looks(groups, figures.PALETTE if len(groups) <= len(figures.PALETTE) else _tab20())
    color = {g: c for g, (c, _) in looks.items()}
    shape = {g: m for g, (_, m) in looks.items()}
    kinds = sorted({k for _, k in keys.values()})

    drift = result.drift is not None and any(r.implied_rho for r in result.residuals)
    ncols = 2 if has_cap or drift else 1
    with figures.house_style():
        fig, axes = figures.new_figure(7.0 if ncols == 2 else 4.7, 6.4 if drift else 3.4, nrows=2 if drift else 1,
                                       ncols=ncols)
        ax = axes[0][0]
        by_key: dict[tuple[str, str], list[int]] = {}
        for i, r in enumerate(result.residuals):
            by_key.setdefault(keys[r.scheme], []).append(i)
        obs = np.array([r.loss for r in result.residuals])
        pred = np.array([r.predicted for r in result.residuals])
        for (group, kind), idx in sorted(by_key.items(), key=lambda kv: (groups.index(kv[0][0]), kv[0][1])):
            # Runs outside the law's domain were predicted, not fitted: drawn faded.
            for fitted in (True, False):
                sel = [i for i in idx if result.residuals[i].fitted is fitted]
                if sel:
                    ax.scatter(obs[sel], pred[sel], s=20, zorder=3, alpha=1.0 if fitted else 0.35,
                               label=f"{group}{figures.FACTOR_SEP}{kind}", **_marker(kind, color[group], shape[group]))
        lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
        pad = 0.03 * (hi - lo or 1.0)
        ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.2", lw=0.9, ls=":", zorder=1,
                label="predicted = observed")
        ax.set_xlim(lo - pad, hi + pad)
        ax.set_ylim(lo - pad, hi + pad)
        ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("observed loss (nats per token)")
        ax.set_ylabel("loss the fitted law predicts (nats per token)")
        n_fit = result.n_fitted if result.n_fitted is not None else result.n_runs
        outside = f"\nfaded: {result.n_runs - n_fit} outside the domain, predicted" if n_fit < result.n_runs else ""
        ax.set_title(f"(a) every run\nRMSE of log loss {result.fit_error:.2g} over {n_fit} fitted{outside}")
        curve_handles = _capacity_panel(axes[0][1], result, curves, shown, keys, looks, curve_label,
                                        points_note) if has_cap else []
        if not has_cap and drift:
            axes[0][1].set_visible(False)
        if drift:
            _drift_panels(axes[1], result, keys, looks)

        files = ", ".join(Path(f).name for f in result.data_files) or "the given runs"
        fig.suptitle(f"uscl fit --model {result.model} on {files}: {result.n_runs} runs, {result.n_schemes} schemes")
        colours = [(_proxy(None, _marker("weights only", color[g], shape[g])), g) for g in groups]
        markers = [(_proxy(None, _marker(kind, "0.55")), kind) for kind in kinds]
        lines = [(ax.lines[-1], ax.lines[-1].get_label()), *((h, h.get_label()) for h in curve_handles)]
        if drift:
            reference = axes[1][0].lines[-1]
            lines.append((reference, reference.get_label()))
        figures.figure_legend(fig, [("weight format", colours), ("compressed", markers), ("lines", lines)])
        figures.freeze_layout(fig)
    return fig


def _proxy(marker: str | None, style: dict):
    """A legend handle that draws nothing on the axes."""
    from matplotlib.lines import Line2D

    style = dict(style)
    marker = marker or style.pop("marker")
    face = style.pop("facecolors", style.pop("color", None))
    face = face[0] if isinstance(face, list) else face  # a scatter's one face colour
    edge = style.pop("edgecolors", face)
    return Line2D([], [], ls="none", marker=marker, markersize=5.5, markerfacecolor=face,
                  markeredgecolor=edge, markeredgewidth=style.get("linewidths", 0.4))


def _tab20() -> tuple[str, ...]:
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    return tuple(to_hex(c) for c in colormaps["tab20"].colors)


def _capacity_panel(ax, result: FitResult, curves: Mapping[str, FamilyFit], shown: Sequence[SchemeCapacity],
                    keys: Mapping[str, tuple[str, str]], looks: Mapping[str, tuple[str, str]], curve_label: str,
                    points_note: str = "") -> list:
    """rho against GMSE: each family's curve (fitted: black; held: grey, dashed per family) and each
    scheme's own capacity with its bootstrap interval."""
    gmse = [c.stage_gmse[0][1] for c in shown]
    g_lo = min([*gmse, 1e-3]) / 3
    grid = np.logspace(np.log10(g_lo), -1e-4, 300)
    handles = []
    top = 1.0  # the highest point or bar: the view must not clip a capacity above 1
    for fam, c in sorted(curves.items()):
        constants = f"{'' if c.shape == 'tanh' else f'{c.shape}, '}L {c.L:.3g}, F {c.F:.3g}, C {c.C:.3g}"
        if c.held:
            origin = curve_label or _held_source(result, fam)
            label = f"{fam} curve, held ({origin}): {constants}"
        else:
            label = f"{fam} curve, fitted: {constants}"
        rho = capacity(grid, c.L, c.F, c.C, shape=c.shape)
        top = max(top, float(rho.max()))
        (line,) = ax.plot(grid, rho, color="0.55" if c.held else "black",
                          ls=_HELD_STYLE.get(fam, "--") if c.held else _FAMILY_STYLE.get(fam, "-"), lw=1.2, zorder=1, label=label)
        handles.append(line)
    for c, g in zip(shown, gmse, strict=True):
        same = len(c.stage_gmse) == 2
        power = 0.5 if same else 1.0
        val = c.rho**power
        yerr = None
        if c.rho_low is not None and c.rho_high is not None:
            yerr = [[max(val - c.rho_low**power, 0.0)], [max(c.rho_high**power - val, 0.0)]]
            top = max(top, c.rho_high**power)
        top = max(top, val)
        group, kind = keys[c.scheme]
        ax.errorbar([g], [val], yerr=yerr, fmt="none", ecolor=looks[group][0], elinewidth=0.8, capsize=2,
                    zorder=2, label=f"{group}{figures.FACTOR_SEP}{kind}")
        ax.scatter([g], [val], s=26, zorder=3, label=f"{group}{figures.FACTOR_SEP}{kind}", **_marker(kind, *looks[group]))
    ax.set_xscale("log")
    ax.set_xlim(g_lo, 1.3)
    ax.set_ylim(0, 1.08 * top)
    ax.set_xlabel("Gaussian MSE of the scheme's format (log scale)")
    ax.set_ylabel("capacity ρ (weights and activations: √ρ per tensor)")
    fitted = "each scheme's own (decoupled) capacity" if result.model != "decoupled" else "this fit's capacities"
    fitted = points_note or fitted
    bars = "\nbars: 95% bootstrap interval" if any(c.rho_low is not None for c in shown) else ""
    ax.set_title(f"(b) capacity against GMSE\npoints: {fitted}{bars}")
    return handles


def _drift_panels(axes, result: FitResult, keys: Mapping[str, tuple[str, str]],
                  looks: Mapping[str, tuple[str, str]]) -> None:
    """(c), (d): each fitted run's implied capacity over the law's, against N and against D/N,
    with the pooled within-scheme slope and its interval in the title."""
    rows = [r for r in result.residuals if r.fitted and r.implied_rho and r.rho > 0]
    slopes = {s.regressor: s for s in result.drift.slopes}
    panels = ((axes[0], "log N", "N, parameters", "(c)"), (axes[1], "log D/N", "D / N, tokens per parameter", "(d)"))
    for ax, key, label, tag in panels:
        for r in rows:
            group, kind = keys[r.scheme]
            ax.scatter([r.N if key == "log N" else r.D / r.N], [r.implied_rho / r.rho], s=16, zorder=3,
                       label=f"{group}{figures.FACTOR_SEP}{kind}", **_marker(kind, *looks[group]))
        ax.axhline(1.0, color="0.2", lw=0.9, ls="--", zorder=1, label=DRIFT_REFERENCE)
        figures.log_axis(ax, [r.N if key == "log N" else r.D / r.N for r in rows], axis="x")
        figures.log_axis(ax, [1.0] + [r.implied_rho / r.rho for r in rows], axis="y")
        log = {a: " (log scale)" if scale == "log" else "" for a, scale in (("x", ax.get_xscale()), ("y", ax.get_yscale()))}
        ax.set_xlabel(label + log["x"])
        ax.set_ylabel("implied ρ / the law's ρ" + log["y"])
        title = f"{tag} capacity drift with {key.removeprefix('log ')}, within scheme"
        if key in slopes:
            sl = slopes[key]
            title += f"\nslope on {key} {sl.slope:+.3f} [{sl.low:+.3f}, {sl.high:+.3f}]"
        elif rows:
            # e.g. a sweep at one tokens-per-parameter: every point sits at one x, and no
            # slope is fitted (the drift report leaves the regressor out)
            title += f"\nno slope: {key.removeprefix('log ')} does not vary within a scheme"
        ax.set_title(title)


def _held_source(result: FitResult, family: str) -> str:
    source = result.constants.get(f"{family}.L")
    return source.source.removeprefix("held at ").strip() if source is not None and source.fixed else "not fitted"


def plot_fit(result: FitResult, path: str | Path, *, curves: Mapping[str, FamilyFit] | None = None,
             points: Sequence[SchemeCapacity] | None = None, curve_label: str = "", points_note: str = "") -> Path:
    """Write the fit's figure as PNG, SVG or PDF (by ``path``'s extension).

    ``curves`` default to the fit's families; ``points`` (default: the fit's capacities) are
    drawn with their bootstrap intervals -- pass a decoupled fit's capacities to show the free
    per-scheme capacities beside a unified fit's curves. ``curve_label`` names where held
    curves come from (e.g. ``law paper-llama-c4``); by default the fit's own record says.
    ``points_note`` replaces the capacity panel's "points: ..." line (e.g. why none are drawn).
    """
    path = figures.check_plot_path(path)
    return figures.save_figure(fit_figure(result, curves=curves, points=points, curve_label=curve_label,
                                          points_note=points_note), path)


def plot_panels(result: FitResult, runs: Sequence[Run], *, model: str | None = None, base_law: Any = None,
                huber_delta: float | None = None, bootstrap: int = 0, seed: int = 0,
                fixed: Mapping[str, float] | None = None, prior: Any = None, weigh_schemes: bool = False,
                fit_outside: bool = False) -> dict[str, Any]:
    """The keyword arguments of :func:`plot_fit` that show ``result`` (fitted on ``runs`` with
    these options, ``model`` by default the result's) beside the evidence for its curves: a
    decoupled fit is drawn against ``base_law``'s curves (default: the shipped law), a unified
    fit beside each scheme's own capacity from a decoupled fit under the same options (held law
    constants, prior, weights, domain); the other models need nothing more."""
    from gmse_cli.fit.drivers import fit
    from gmse_cli.fit.params import LAW
    from gmse_cli.fit.reports import with_stage_gmse
    from gmse_cli.law import load_law

    model = result.model if model is None else model
    if model == "decoupled":
        law = base_law or load_law(None)
        curves = {f.value: FamilyFit(L=c.L.value, F=c.F.value, C=c.C.value, shape=c.shape, held=True, n_gmse=0)
                  for f, c in law.families.items()}
        return {"curves": curves, "points": with_stage_gmse(result.capacities), "curve_label": f"law {law.name}"}
    if model == "unified":
        held = {k: v for k, v in (fixed or {}).items() if k in LAW}  # a curve's L, F, C has no place there
        decoupled = fit(runs, model="decoupled", huber_delta=huber_delta, bootstrap=bootstrap, seed=seed, fixed=held,
                        prior=prior, weigh_schemes=weigh_schemes, fit_outside=fit_outside,
                        sensitivity=False, profile=False, loso=False)
        if (problem := decoupled.law_problem()) is not None:
            # a decoupled fit the command would refuse: its capacities are not each scheme's own
            why = problem.split(", but")[0].removeprefix("the fit ")
            return {"points": [], "points_note": f"none (the decoupled fit {why}: no law)"}
        return {"points": with_stage_gmse(decoupled.capacities)}
    return {}
