"""Reports on a fit: the factorization check and the fit's plot.

Each takes a finished result (or its parts) and computes or draws evidence from it; nothing
here refits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from gmse_cli.figures import save_figure
from gmse_cli.fit.results import (
    FactorizationCell,
    FactorizationCheck,
    FamilyFit,
    FitResult,
    SchemeCapacity,
)
from gmse_cli.fit.stages import GmseCache
from gmse_cli.spec import Format

__all__ = ["factorization_check", "with_stage_gmse", "plot_fit"]


def factorization_check(capacities: Sequence[SchemeCapacity]) -> FactorizationCheck:
    """rho(W:w A:a) against rho(w) * rho(a), and a rank-1 fit of the W x A grid.

    The weight factor is the weights-only scheme ``w``; the activation factor is the
    activations-only scheme (bf16 weights) when present, else the same format applied to weights
    only ("tied": the law's assumption that a format's capacity does not depend on the tensor).
    """
    rho = {(c.weights, c.activations): c.rho for c in capacities}
    dense = {(c.weights, c.activations) for c in capacities if c.reference}
    ref_w = next((w for w, a in dense), "bf16")

    def weights_only(w: str) -> float | None:
        if (w, None) in rho:
            return rho[(w, None)]
        return 1.0 if w == ref_w else None

    cells = []
    for c in capacities:
        if c.activations is None:
            continue
        rw = weights_only(c.weights)
        ra, tied = (rho.get((ref_w, c.activations)), False)
        if ra is None:
            ra, tied = weights_only(c.activations), True
        if rw is None or ra is None:
            continue
        cells.append(FactorizationCell(weights=c.weights, activations=c.activations, rho=c.rho, rho_weights=rw,
                                       rho_activations=ra, product=rw * ra, error=c.rho - rw * ra, tied=tied))
    errors = np.array([c.error for c in cells])
    # Rank-1 grid: rows = weight formats, columns = activation formats (None = not compressed).
    rows = sorted({w for w, _ in rho})
    cols = sorted({a or "" for _, a in rho})
    obs = [(rows.index(w), cols.index(a or ""), v) for (w, a), v in rho.items()]
    dof = len(obs) - (len(rows) + len(cols) - 1)
    rank1 = None
    note = ""
    if dof > 0:
        rank1 = _rank1_rms(obs, len(rows), len(cols))
    else:
        note = (f"the W x A grid has {len(obs)} cells for {len(rows) + len(cols) - 1} rank-1 parameters: "
                "a rank-1 test needs more cells (e.g. activation-only runs)")
    return FactorizationCheck(
        cells=cells, rms_error=float(np.sqrt(np.mean(errors**2))) if len(cells) else None,
        max_abs_error=float(np.max(np.abs(errors))) if len(cells) else None,
        rank1_rms=rank1, rank1_dof=dof, note=note,
    )


def _rank1_rms(obs, nr: int, nc: int, iters: int = 500) -> float:
    """Alternating least squares for rho[i, j] ~ u_i v_j over the observed cells."""
    i = np.array([o[0] for o in obs])
    j = np.array([o[1] for o in obs])
    v_obs = np.array([o[2] for o in obs])
    u = np.ones(nr)
    v = np.ones(nc)
    for _ in range(iters):
        u = np.bincount(i, weights=v_obs * v[j], minlength=nr) / np.maximum(np.bincount(i, weights=v[j] ** 2, minlength=nr), 1e-300)
        v = np.bincount(j, weights=v_obs * u[i], minlength=nc) / np.maximum(np.bincount(j, weights=u[i] ** 2, minlength=nc), 1e-300)
    return float(np.sqrt(np.mean((v_obs - u[i] * v[j]) ** 2)))


def with_stage_gmse(capacities: Sequence[SchemeCapacity], gmse: Callable[[Format], float] | None = None,
                    ) -> list[SchemeCapacity]:
    """Capacities with the (family, GMSE) of each scheme's lossy stages filled in."""
    from gmse_cli.spec import resolve_format

    gmse = gmse or GmseCache()
    out = []
    for c in capacities:
        if c.stage_gmse is None:
            fmts = [resolve_format(c.weights)] + ([resolve_format(c.activations)] if c.activations else [])
            stages = [(fam.value, gmse(part)) for fmt in fmts for fam, part in fmt.stage_formats()]
            c = c.model_copy(update={"stage_gmse": stages})
        out.append(c)
    return out


def plot_fit(result: FitResult, path: str | Path, *, curves: Mapping[str, FamilyFit] | None = None,
             points: Sequence[SchemeCapacity] | None = None, curve_label: str = "") -> None:
    """Predicted vs observed loss; with capacity curves or points, also rho vs GMSE.

    ``curves`` default to the fit's families; ``points`` (default: the fit's capacities) are
    drawn with their bootstrap intervals as error bars -- pass a decoupled fit's capacities to
    show the free per-scheme capacities beside a unified fit's curves. A weights x activations
    scheme with the same format on both is drawn at sqrt(rho) (its per-tensor capacity under
    factorization); other composite schemes are left out of that panel.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = dict(result.families if curves is None else curves)
    source = result.capacities if points is None else points
    points = [c for c in source if c.stage_gmse and len(c.stage_gmse) in (1, 2) and not c.reference]
    has_cap = bool(curves) or bool(points)
    drift = result.drift is not None and any(r.implied_rho for r in result.residuals)
    cols = 2 if has_cap or drift else 1
    fig, grid_axes = plt.subplots(2 if drift else 1, cols, figsize=(6 * cols, 10 if drift else 5), squeeze=False)
    axes = grid_axes[0]
    ax = axes[0]
    obs = np.array([r.loss for r in result.residuals])
    pred = np.array([r.predicted for r in result.residuals])
    schemes = sorted({r.scheme for r in result.residuals})
    cmap = plt.get_cmap("tab20")
    color = {s: cmap(k % 20) for k, s in enumerate(schemes)}
    for s in schemes:
        sel = [i for i, r in enumerate(result.residuals) if r.scheme == s]
        fitted = result.residuals[sel[0]].fitted
        ax.scatter(obs[sel], pred[sel], s=18, label=s if len(schemes) <= 20 else None,
                   **({"color": color[s]} if fitted else {"facecolors": "none", "edgecolors": color[s]}))
    lo, hi = min(obs.min(), pred.min()), max(obs.max(), pred.max())
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("observed loss")
    ax.set_ylabel("predicted loss")
    n_fit = result.n_fitted if result.n_fitted is not None else result.n_runs
    extra = "" if n_fit == result.n_runs else f" (hollow: {result.n_runs - n_fit} outside the domain, predicted)"
    ax.set_title(f"{result.model} fit: RMSE(log loss) = {result.fit_error:.2e}, {n_fit} runs fitted{extra}", fontsize=9)
    if len(schemes) <= 20:
        ax.legend(fontsize=6, loc="upper left")
    if drift:
        _plot_drift(result, grid_axes[1], color)
    if has_cap:
        ax = axes[1]
        grid = np.logspace(-6, -0.05, 300)
        bits = -np.log(grid) / np.log(4.0)
        for k, (fam, c) in enumerate(sorted(curves.items())):
            ax.plot(grid, c.L * np.tanh(c.F * bits) ** c.C, color=cmap(2 * k),
                    label=f"{curve_label}{fam}: L={c.L:.2f} F={c.F:.2f} C={c.C:.2f}")
        for c in points:
            same = len(c.stage_gmse) == 2 and c.stage_gmse[0] == c.stage_gmse[1]
            if len(c.stage_gmse) == 2 and not same:
                continue
            g = c.stage_gmse[0][1]
            power = 0.5 if same else 1.0
            val = c.rho**power
            yerr = None
            if c.rho_low is not None and c.rho_high is not None:
                yerr = [[max(val - c.rho_low**power, 0.0)], [max(c.rho_high**power - val, 0.0)]]
            ax.errorbar([g], [val], yerr=yerr, fmt="s" if same else "o", ms=4, color="k" if not same else "tab:red",
                        capsize=2)
            ax.annotate(c.scheme, (g, val), fontsize=5, xytext=(2, 2), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("GMSE")
        ax.set_ylabel("capacity rho (W+A same format: sqrt rho, squares)")
        ax.set_ylim(0, 1.1)
        ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    save_figure(fig, path)


def _plot_drift(result: FitResult, axes, color) -> None:
    """Implied over fitted capacity against N and D/N, per scheme (fitted runs), with the pooled slopes."""
    rows = [r for r in result.residuals if r.fitted and r.implied_rho and r.rho > 0]
    schemes = sorted({r.scheme for r in rows})
    slopes = {s.regressor: s for s in result.drift.slopes}
    for ax, key, label in ((axes[0], "log N", "N (non-embedding parameters)"), (axes[1], "log D/N", "D / N")):
        for s in schemes:
            mine = [r for r in rows if r.scheme == s]
            x = [r.N if key == "log N" else r.D / r.N for r in mine]
            ax.scatter(x, [r.implied_rho / r.rho for r in mine], s=14, color=color[s])
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("implied rho / fitted rho")
        if key in slopes:
            sl = slopes[key]
            ax.set_title(f"drift: slope on {key} {sl.slope:+.3f} [{sl.low:+.3f}, {sl.high:+.3f}] (within scheme)",
                         fontsize=9)
