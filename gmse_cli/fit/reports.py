"""Reports on a fit: the factorization check and the stage GMSEs its plot reads.

Each takes a finished result (or its parts) and computes or draws evidence from it; nothing
here refits.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from gmse_cli.fit.evidence import FactorizationCell, FactorizationCheck
from gmse_cli.fit.results import SchemeCapacity
from gmse_cli.fit.stages import GmseCache, stage_tensors
from gmse_cli.spec import Format

__all__ = ["factorization_check", "with_stage_gmse"]


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
            weights = resolve_format(c.weights)
            activations = resolve_format(c.activations) if c.activations else None
            stages = [(fam.value, gmse(part)) for fmt in (weights, activations) if fmt is not None
                      for fam, part in fmt.stage_formats()]
            c = c.model_copy(update={"stage_gmse": stages, "stage_tensor": stage_tensors(weights, activations)})
        out.append(c)
    return out
