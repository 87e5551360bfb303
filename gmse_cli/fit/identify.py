"""Identifiability after a fit: constants at a bound, and profile-likelihood intervals.

A bootstrap interval only says how far the optimum moves when runs are resampled; when the
data cannot pin a constant down (E trading off against A and alpha on runs that never approach
the irreducible loss), the optimum can sit at a bound of the constant's domain and move little,
and the bootstrap interval looks tight. Two checks show it:

- :func:`bound_flags`: a constant fitted through its logarithm (A, B, E, a curve's F, C) whose
  value is negligible where it acts (E below 1e-4 of the smallest loss, a hundredth of the
  typical residual; B D^-beta or A (N rho)^-alpha below that at every run) sits at its bound
  0; an exponent at or below 0 has left the law's domain.
- :func:`profile_interval`: the profile likelihood of one constant. At each value v on a path
  outward from the estimate, every other free constant is refitted (warm-started from the
  nearest point inside the interval found so far and, as a second row, from the full optimum
  with v set; E below 1% of the smallest loss is also restarted from there, a third row, since
  its log's gradient vanishes at the bound); the statistic is 2 c (f(v) - f_min) with f the fit's objective and c the
  likelihood scale of
  :func:`gmse_cli.fit.prior.likelihood_scale` with the fit's p free constants taken off the
  residuals' count (for least squares this is (n - p) (RSS(v) - RSS) / RSS; a MAP fit keeps its
  prior's c);
  the 95% interval is where it stays below the chi-square(1) quantile 3.841. The crossing is
  bracketed by steps that double from 0.2% of the distance to the domain's end, then refined by
  bisection. An end that never crosses within the constant's domain is reported as that
  domain's end (E: 0 and the smallest observed loss; alpha: 1e-3 and 3) and flagged open.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gmse_cli.fit.optimize import batched_lbfgs
from gmse_cli.fit.params import LAW, LAW_INTERNAL, is_log
from gmse_cli.fit.parts import StagePart

__all__ = ["CHI2_95", "bound_flags", "profile_interval", "identify_constants", "top_bits"]

CHI2_95 = 3.841458820694124  # chi-square(1) 95% quantile
_NEGLIGIBLE = 1e-4
_STRAIGHT = 0.1  # F x largest fitted bits below this: s is linear over the runs (0.33% at most, tanh or erf)


def bound_flags(constants: dict[str, float], free: Sequence[str], *, min_loss: float, n_eff: np.ndarray,
                tokens: np.ndarray, top_bits: Mapping[str, float] | None = None) -> dict[str, str]:
    """{public name: why it sits at a bound} for the free constants that do (module docstring).

    ``top_bits``: each family's largest fitted log_1/4 GMSE (finite). A curve whose F times it is
    below :data:`_STRAIGHT` never bends over the fitted runs (tanh z = z and erf z = 2z/sqrt(pi) within z^2/3), so the runs
    see only L F^C: L and F are not identified apart, and neither is the curve beyond them.
    """
    out: dict[str, str] = {}
    floor = _NEGLIGIBLE * min_loss
    if "E" in free and constants["E"] < floor:
        out["E"] = (f"E = {constants['E']:.2g} sits at its lower bound 0: these runs do not identify an irreducible "
                    "loss; read E's interval from the profile, or hold it (--fix E=VALUE, --prior paper)")
    # a capacity that underflowed to 0 makes its term infinite (not negligible), and no warning
    with np.errstate(divide="ignore", over="ignore"):
        data_small = np.all(constants["B"] * tokens ** -constants["beta"] < floor)
        params_small = np.all(constants["A"] * n_eff ** -constants["alpha"] < floor)
    if "B" in free and data_small:
        out["B"] = (f"B = {constants['B']:.2g}: the data term B D^-beta is below {_NEGLIGIBLE:g} of the loss at "
                    "every run, so B and beta are not identified")
    if "A" in free and params_small:
        out["A"] = f"A = {constants['A']:.2g}: the parameter term is negligible at every run"
    for key, scale in (("alpha", n_eff), ("beta", tokens)):
        if key not in free:
            continue
        if constants[key] <= 0:
            out[key] = f"{key} = {constants[key]:.3g} <= 0: the loss does not fall with scale; the fit is not a law"
        elif 0 < (spread := _log_spread(scale)) and constants[key] * spread < _NEGLIGIBLE:  # e.g. one loss at every run
            out[key] = (f"{key} = {constants[key]:.3g}: its term changes by less than {_NEGLIGIBLE:g} (relative) across "
                        "these runs, so the loss does not fall with scale here; neither it nor the capacities are "
                        "identified")
    for name, value in constants.items():
        fam, _, k = name.rpartition(".")
        if fam and k in ("F", "C") and name in free and value < 1e-4:
            out[name] = f"{name} = {value:.2g} sits at its lower bound 0: the {fam} curve is flat (not identified)"
        elif fam and k in ("F", "C") and name in free and value > 1e3:
            out[name] = (f"{name} = {value:.3g} ran off to infinity: the {fam} curve is a step, so the runs "
                         "do not identify its shape (their capacities barely differ, or too few GMSEs)")
        elif fam and k == "F" and name in free and top_bits and value * top_bits.get(fam, math.inf) < _STRAIGHT:
            out[name] = (f"{name} = {value:.3g} with the largest fitted GMSE at {top_bits[fam]:.3g} bits: the {fam} "
                         f"curve is a power law over these runs (F x bits = {value * top_bits[fam]:.2g}), so only "
                         f"L F^C is identified, not L and F apart, nor its capacities beyond the fitted GMSEs")
    return out


def _log_spread(values: np.ndarray) -> float:
    """log(max / min) over the finite positive ``values`` (0 when there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values) & (values > 0)]
    return float(np.log(values.max() / values.min())) if values.size else 0.0


def _natural(internal_name: str, t: np.ndarray) -> np.ndarray:
    return np.exp(t) if is_log(internal_name) else t


def _internal(internal_name: str, v: np.ndarray) -> np.ndarray:
    return np.log(v) if is_log(internal_name) else v


def profile_interval(problem, x_hat: np.ndarray, f_hat: float, coordinate: int, *, scale: float,
                     lower: float, upper: float, weights: np.ndarray | None = None, first_step: float = 2e-3,
                     bisections: int = 30, level_stat: float = CHI2_95, lift: Mapping[int, float] | None = None,
                     **extra: np.ndarray):
    """(low, high, low_open, high_open) of the profile-likelihood interval of one constant.

    ``coordinate`` indexes the free coordinates of ``problem``; its value is moved in natural
    units (E, not log E) from the estimate toward ``lower`` and ``upper``: a first step of
    ``first_step`` times the distance to that end, doubling until the statistic crosses (or
    the end is reached), then ``bisections`` halvings of the bracket, refitting the rest at
    every point (module docstring). ``scale`` is c; ``weights`` the fit's data weights;
    ``extra`` its per-row objective data, one row. ``lift`` ({free coordinate: internal floor}):
    each refit also starts from the warm start with those coordinates raised to at least their
    floor. A constant fitted through its logarithm that sits at its bound 0 (E at 1e-6) has a
    vanishing gradient there (d/d log E = E d/dE), so a refit started at the bound never moves
    it off, however much lower the objective is away from it.
    """
    lift = {j: t for j, t in (lift or {}).items() if j != coordinate}
    name = problem.objective.names[problem.free[coordinate]]
    v_hat = float(_natural(name, np.array(x_hat[coordinate])))
    threshold = f_hat + level_stat / (2.0 * scale)
    mask = np.ones(len(x_hat))
    mask[coordinate] = 0.0

    def refit(start: np.ndarray, v: float) -> tuple[np.ndarray, float]:
        """The rest refitted at value v, from ``start`` and from the full optimum; the better one."""
        rows = [start, x_hat]
        if any(start[j] < t for j, t in lift.items()):
            lifted = start.copy()
            for j, t in lift.items():
                lifted[j] = max(lifted[j], t)
            rows.append(lifted)
        x0 = np.stack(rows)
        n = len(rows)
        x0[:, coordinate] = _internal(name, np.array(v))
        fun = problem.fun(None if weights is None else np.broadcast_to(weights, (n, len(weights))),
                          np.broadcast_to(mask, (n, len(mask))),
                          **{key: np.repeat(np.asarray(val)[None], n, axis=0) for key, val in extra.items()})
        x, f, _, _ = batched_lbfgs(fun, x0, max_iter=500, groups=np.arange(n))
        f = np.where(np.isfinite(f), f, np.inf)
        best = int(np.argmin(f))
        return x[best], float(f[best])

    def side(end: float) -> tuple[float, bool]:
        span = end - v_hat
        if not math.isfinite(end) or abs(span) <= 1e-12 * max(abs(v_hat), 1.0):
            return v_hat, True
        inner_v, inner_x = v_hat, x_hat.copy()
        step = first_step
        while True:
            v = v_hat + span * min(step, 1.0)
            x, f = refit(inner_x, v)
            if f > threshold:
                break
            if step >= 1.0:
                return float(end), True
            inner_v, inner_x = v, x
            step *= 2.0
        outer_v = v
        for _ in range(bisections):  # the crossing lies between inner_v (below) and outer_v (above)
            mid = 0.5 * (inner_v + outer_v)
            xm, fm = refit(inner_x, mid)
            if fm > threshold:
                outer_v = mid
            else:
                inner_v, inner_x = mid, xm
        return 0.5 * (inner_v + outer_v), False

    low, high_ = side(lower), side(upper)
    return low[0], high_[0], low[1], high_[1]


def top_bits(part, train) -> dict[str, float] | None:
    """Each family's largest finite stage bits over the fitted runs (a unified fit's curves), else None."""
    if not isinstance(part, StagePart):
        return None
    used = (part.incidence[:, train] > 0).any(axis=1) & np.isfinite(part.bits)
    return {fam: float(part.bits[used & (part.fam == j)].max()) for j, fam in enumerate(part.families)
            if np.any(used & (part.fam == j))}


def identify_constants(constants, problem, x, fval, objective, train, runs, logrho, scale, W1, profile, notes):
    """Bound flags and profile intervals (:mod:`gmse_cli.fit.identify`) on the fit's constants."""
    values = {k: c.value for k, c in constants.items()}
    free = [k for k, c in constants.items() if not c.fixed]
    losses = np.array([r.loss for r, t in zip(runs, train, strict=True) if t])
    n_eff = np.array([r.N for r, t in zip(runs, train, strict=True) if t]) * np.exp(logrho[train])
    tokens = np.array([r.D for r, t in zip(runs, train, strict=True) if t])
    flags = bound_flags(values, free, min_loss=float(losses.min()), n_eff=n_eff, tokens=tokens,
                        top_bits=top_bits(getattr(objective, "part", None), train))
    out = dict(constants)
    for key, why in flags.items():
        out[key] = out[key].model_copy(update={"at_bound": why})
        notes.append(why)
    if not profile:
        return out
    names = list(objective.names)
    domains = {"alpha": (1e-3, 3.0), "E": (1e-9 * float(losses.min()), 0.999 * float(losses.min()))}
    # E near its bound 0 is restarted from 1% of the smallest loss as well (profile_interval's lift)
    e_internal = names.index(LAW_INTERNAL[LAW.index("E")])
    lift = ({int(np.flatnonzero(problem.free == e_internal)[0]): math.log(1e-2 * float(losses.min()))}
            if e_internal in problem.free and is_log(names[e_internal]) else None)
    for key, (lo, hi) in domains.items():
        j = names.index(LAW_INTERNAL[LAW.index(key)])
        if j not in problem.free:
            continue
        k = int(np.flatnonzero(problem.free == j)[0])
        low, high, low_open, high_open = profile_interval(problem, x, fval, k, scale=scale, lower=lo, upper=hi,
                                                          weights=W1, lift=lift)
        if key == "E" and low_open:
            low = 0.0
        out[key] = out[key].model_copy(update={"profile_low": low, "profile_high": high})
        ends = [w for w, o in (("lower", low_open), ("upper", high_open)) if o]
        if ends:
            notes.append(f"the 95% profile interval of {key} is open at its {' and '.join(ends)} end "
                         f"([{low:.3g}, {high:.3g}] is the searched domain there): the runs do not bound it")
    return out
