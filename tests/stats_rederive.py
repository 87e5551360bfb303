"""An independent implementation of ``uscl fit``'s statistical reporting (numpy/scipy only),
written from the paper, the README and the JSON definitions (``heldout_method``, the README's
key table), never from gmse_cli.fit: profile-likelihood intervals of alpha and E, the
``--prior paper`` MAP objective, the capacity-drift regression, the scale split and the
outside-domain / per-scheme held-out tables.

Model: loss = A (N rho)^-alpha + B D^-beta + E, log rho = sum over a run's lossy stages of
log L_f + C_f log s_f(F_f b), b = log_{1/4} GMSE, s_f the family's shape (tanh or erf,
``families[].shape``). Objective f = sum over fitted runs of
Huber_delta(log pred - log obs). Parametrization here (unlike uscl's log E): z = [log A, alpha,
log B, beta, E (natural, bounded at 0), then log L, log F, log C of each free family], minimized
by scipy's L-BFGS-B with analytic gradients.

Likelihood scale c (README, heldout_method): c = (runs with |r| <= delta, minus the p free
constants for the profile of a free fit, minus none for a prior's c) / sum clip(r, +-delta)^2,
r the free fit's residuals on the fitted runs. Profile statistic 2 c (f_prof(v) - f_min), with
f including the prior / c in a MAP fit (whose profile keeps the prior's c); 95% interval where it
stays below chi2(1)'s 0.95 quantile; searched domain alpha in [1e-3, 3], E in [0, 0.999 min loss].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import brentq, minimize
from scipy.special import erf
from scipy.stats import chi2
from scipy.stats import t as student_t

LN4 = np.log(4.0)
LAWKEYS = ("A", "alpha", "B", "beta", "E")
DENSE = {"bf16", "fp16", "fp32"}
PAPER_PRIOR = {"alpha": (0.13, 0.05), "beta": (0.33, 0.06), "E": (1.3, 0.5),
               "quantization.L": (1.0, 0.7), "quantization.F": (0.41, 0.02), "quantization.C": (1.39, 0.08)}


@dataclass
class Data:
    log_n: np.ndarray
    log_d: np.ndarray
    log_y: np.ndarray
    fitted: np.ndarray
    scheme: list
    stages: list  # per run: list of (family, bits)
    families: list  # every family seen
    free_fam: dict  # family -> list of free keys among 'L', 'F', 'C'
    held: dict = field(default_factory=dict)  # 'fam.K' -> value
    shape: dict = field(default_factory=dict)  # family -> 'tanh' or 'erf'

    @property
    def dense(self) -> np.ndarray:
        return np.array([s in DENSE for s in self.scheme])


def data_from_result(res: dict) -> Data:
    """The runs of a ``uscl fit --json`` result (residuals[], capacities[].stages, constants)."""
    caps = {c["scheme"]: c for c in res["capacities"]}
    rows = res["residuals"]
    stages = []
    for r in rows:
        st = caps[r["scheme"]].get("stages") or []
        stages.append([(s["family"], -np.log(s["gmse"]) / LN4 if s["gmse"] > 0 else np.inf) for s in st])
    fams = sorted({f for st in stages for f, _ in st})
    consts = res["constants"]
    free_fam, held = {}, {}
    for f in fams:
        free_fam[f] = [k for k in "LFC" if not consts[f"{f}.{k}"]["fixed"]]
        for k in "LFC":
            if consts[f"{f}.{k}"]["fixed"]:
                held[f"{f}.{k}"] = consts[f"{f}.{k}"]["value"]
    return Data(np.log([r["params"] for r in rows]), np.log([r["tokens"] for r in rows]),
                np.log([r["loss"] for r in rows]), np.array([bool(r["fitted"]) for r in rows]),
                [r["scheme"] for r in rows], stages, fams, free_fam, held,
                {f: res["families"][f]["shape"] for f in fams})


class Model:
    """Predictions, Huber objective and gradient over the free constants of ``data``."""

    def __init__(self, data: Data, delta: float, fixed: dict | None = None, prior_names=None):
        self.d, self.delta = data, delta
        self.names = ["logA", "alpha", "logB", "beta", "E"]
        for f in data.families:
            self.names += [f"{f}.log{k}" for k in data.free_fam[f]]
        self.fixed = dict(fixed or {})  # internal name -> internal value
        # constants a prior applies to: the fit's free ones (a profiled constant keeps its prior)
        self.prior_names = list(self.free) if prior_names is None else list(prior_names)

    def with_fixed(self, fixed: dict) -> Model:
        """The same model with ``fixed`` held (a prior keeps applying to this model's free constants)."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.fixed = dict(fixed)
        return out

    @property
    def free(self) -> list:
        return [n for n in self.names if n not in self.fixed]

    def full(self, x) -> dict:
        it = iter(np.asarray(x, dtype=float))
        return {n: (self.fixed[n] if n in self.fixed else next(it)) for n in self.names}

    def _fam(self, p, f, k):
        return np.exp(p[f"{f}.log{k}"]) if f"{f}.log{k}" in p else self.d.held[f"{f}.{k}"]

    def parts(self, p):
        """(log pred, dlogpred/dname dict) for every run."""
        n = len(self.d.log_n)
        logrho = np.zeros(n)
        dlr = {nm: np.zeros(n) for nm in self.names if "." in nm}
        for i, st in enumerate(self.d.stages):
            for f, b in st:
                L, F, C = (self._fam(p, f, k) for k in "LFC")
                is_erf = self.d.shape.get(f, "tanh") == "erf"
                th = 1.0 if not np.isfinite(b) else (erf(F * b) if is_erf else np.tanh(F * b))
                logrho[i] += np.log(L) + C * np.log(th)
                if f"{f}.logL" in dlr:
                    dlr[f"{f}.logL"][i] += 1.0
                if f"{f}.logC" in dlr:
                    dlr[f"{f}.logC"][i] += C * np.log(th)
                if f"{f}.logF" in dlr and np.isfinite(b):
                    # z s'(z) / s(z), z = F b: tanh z (1/th - th), erf z (2/sqrt(pi)) e^(-z^2) / th
                    z = F * b
                    dlr[f"{f}.logF"][i] += C * (z * 2.0 / np.sqrt(np.pi) * np.exp(-z * z) / th if is_erf
                                                else z * (1.0 / th - th))
        return self._law(p, logrho, dlr)

    def _law(self, p, logrho, dlogrho):
        """(log pred, dlogpred/dname, log rho) of the law at ``logrho``, each constant in
        ``dlogrho`` moving log rho by its array (the chain rule through N rho)."""
        A, B = np.exp(p["logA"]), np.exp(p["logB"])
        t1 = A * np.exp(-p["alpha"] * (self.d.log_n + logrho))
        t2 = B * np.exp(-p["beta"] * self.d.log_d)
        pred = t1 + t2 + p["E"]
        g = {"logA": t1 / pred, "alpha": -t1 * (self.d.log_n + logrho) / pred, "logB": t2 / pred,
             "beta": -t2 * self.d.log_d / pred, "E": 1.0 / pred}
        for nm, v in dlogrho.items():
            g[nm] = -p["alpha"] * t1 * v / pred
        return np.log(pred), g, logrho

    def residuals(self, x):
        lp, _, _ = self.parts(self.full(x))
        return lp - self.d.log_y

    def fun(self, x, use=None, prior=None, c=None):
        p = self.full(x)
        lp, g, _ = self.parts(p)
        r = lp - self.d.log_y
        use = self.d.fitted if use is None else use
        a = np.abs(r)
        hub = np.where(a <= self.delta, 0.5 * r * r, self.delta * (a - 0.5 * self.delta))
        psi = np.clip(r, -self.delta, self.delta) * use
        val = float(np.sum(hub * use))
        grad = np.array([float(np.dot(g[n], psi)) for n in self.free])
        if not (np.isfinite(val) and np.all(np.isfinite(grad))):
            return 1e10, np.zeros(len(self.free))
        if prior:
            for key, (mu, sig) in prior.items():
                nm, nat = _internal_of(key)
                if nm not in self.prior_names:
                    continue
                v = p[nm] if not nat else np.exp(p[nm])
                val += 0.5 * ((v - mu) / sig) ** 2 / c
                if nm in self.free:
                    grad[self.free.index(nm)] += (v - mu) / sig**2 / c * (v if nat else 1.0)
        return val, grad

    def bounds(self):
        return [(0.0, None) if n == "E" else (1e-4, 5.0) if n in ("alpha", "beta") else (-30.0, 30.0)
                for n in self.free]

    def minimize(self, starts, use=None, prior=None, c=None):
        best = None
        for x0 in np.atleast_2d(starts):
            res = minimize(self.fun, x0, jac=True, args=(use, prior, c), method="L-BFGS-B", bounds=self.bounds(),
                           options={"maxiter": 20000, "maxfun": 40000, "ftol": 1e-16, "gtol": 1e-13,
                                    "maxcor": 30})
            if best is None or res.fun < best.fun:
                best = res
        return best.x, float(best.fun)


def _internal_of(key):
    """(internal name, is it a log coordinate) of a public constant name."""
    if key in ("alpha", "beta", "E"):
        return key, False
    fam, k = key.split(".")
    return f"{fam}.log{k}", True


def start_from_result(model: Model, res: dict) -> np.ndarray:
    c = res["constants"]
    out = []
    for n in model.free:
        if n in ("logA", "logB"):
            out.append(np.log(c[n[3:]]["value"]))
        elif n in ("alpha", "beta", "E"):
            out.append(c[n]["value"])
        else:
            fam, k = n.split(".log")
            out.append(np.log(c[f"{fam}.{k}"]["value"]))
    return np.array(out)


def random_starts(model: Model, rng, k: int) -> np.ndarray:
    lo = {"logA": 0.0, "alpha": 0.02, "logB": 2.0, "beta": 0.1, "E": 0.0}
    hi = {"logA": 8.0, "alpha": 0.6, "logB": 9.0, "beta": 0.6, "E": 2.0}
    out = np.empty((k, len(model.free)))
    for j, n in enumerate(model.free):
        if n in lo:
            out[:, j] = rng.uniform(lo[n], hi[n], k)
        elif n.endswith("logL"):
            out[:, j] = rng.uniform(-0.3, 0.3, k)
        elif n.endswith("logF"):
            out[:, j] = rng.uniform(np.log(0.1), np.log(1.5), k)
        else:
            out[:, j] = rng.uniform(np.log(0.3), np.log(4.0), k)
    return out


def likelihood_scale(r: np.ndarray, delta: float, free: int) -> float:
    inside = float(np.sum(np.abs(r) <= delta)) - free
    return inside / float(np.sum(np.clip(r, -delta, delta) ** 2))


def profile(model: Model, x_hat, f_hat, key: str, c: float, lower: float, upper: float, prior=None, pc=None,
            level: float = 0.95):
    """(low, high, low_open, high_open) of the profile-likelihood interval of 'alpha' or 'E'."""
    q = float(chi2.ppf(level, 1))
    j = model.free.index(key)
    others = [n for n in model.free if n != key]
    v_hat = float(x_hat[j])

    def prof(v, warm):
        sub = model.with_fixed({**model.fixed, key: v})
        assert sub.free == others
        xs = np.stack([warm, np.delete(x_hat, j)])
        x, f = sub.minimize(xs, prior=prior, c=pc)
        return 2.0 * c * (f - f_hat) - q, x

    def side(end):
        warm = np.delete(x_hat, j)
        step = 0.002
        inner = v_hat
        while True:
            v = v_hat + (end - v_hat) * min(step, 1.0)
            s, x = prof(v, warm)
            if s > 0:
                break
            if step >= 1.0:
                return end, True
            inner, warm = v, x
            step *= 2
        cache = {"w": warm}

        def g(u):
            s_, x_ = prof(u, cache["w"])
            return s_

        return brentq(g, inner, v, xtol=1e-10, rtol=1e-10), False

    lo, lo_open = side(lower)
    hi, hi_open = side(upper)
    return lo, hi, lo_open, hi_open


def implied_capacity(loss, N, D, A, alpha, B, beta, E):
    """Invert the law for rho: A (N rho)^-alpha = loss - B D^-beta - E."""
    excess = np.asarray(loss) - B * np.asarray(D) ** (-beta) - E
    out = np.full(excess.shape, np.nan)
    ok = excess > 0
    out[ok] = np.exp(-(np.log(excess[ok]) - np.log(A)) / alpha) / np.asarray(N)[ok]
    return out


def drift(scheme, logN, logDN, y, level=0.95):
    """Within-scheme OLS of y on log N and log D/N (Frisch-Waugh: demeaned by scheme), t intervals.

    Returns {regressor: (slope, low, high, se)}, residual rms, dof. A regressor whose within-scheme
    deviations never exceed 0.005 is dropped."""
    scheme = np.asarray(scheme)
    names = sorted(set(scheme))

    def demean(v):
        out = v.astype(float).copy()
        for s in names:
            m = scheme == s
            out[m] -= v[m].mean()
        return out

    cols = {"log N": demean(logN), "log D/N": demean(logDN)}
    cols = {k: v for k, v in cols.items() if np.max(np.abs(v)) >= 0.005}
    X = np.column_stack(list(cols.values()))
    yt = demean(y)
    beta_hat = np.linalg.solve(X.T @ X, X.T @ yt)
    resid = yt - X @ beta_hat
    dof = len(y) - len(names) - X.shape[1]
    s2 = resid @ resid / dof
    se = np.sqrt(np.diag(s2 * np.linalg.inv(X.T @ X)))
    tq = student_t.ppf(0.5 + level / 2, dof)
    out = {k: (b, b - tq * s, b + tq * s, s) for k, b, s in zip(cols, beta_hat, se, strict=True)}
    return out, float(np.sqrt(np.mean(resid**2))), dof


def scheme_slope(logN, logDN, y, level=0.95):
    """One scheme's log N slope (with log D/N beside it where its range is >= 0.01), t interval."""
    if len(np.unique(np.round(logN, 9))) < 3:
        return None
    X = [np.ones(len(y)), logN] + ([logDN] if np.ptp(logDN) >= 0.01 else [])
    X = np.column_stack(X)
    b, *_ = np.linalg.lstsq(X, y, rcond=None)
    dof = len(y) - X.shape[1]
    if dof < 1:
        return b[1], None, None
    r = y - X @ b
    se = np.sqrt(r @ r / dof * np.linalg.inv(X.T @ X)[1, 1])
    tq = student_t.ppf(0.5 + level / 2, dof)
    return b[1], b[1] - tq * se, b[1] + tq * se


class DecoupledModel(Model):
    """The decoupled law (the capacity model's first stage): log rho a free constant per fitted
    scheme, the reference scheme's 0."""

    def __init__(self, data: Data, delta: float, reference: str, fixed: dict | None = None, prior_names=None):
        self.d, self.delta, self.reference = data, delta, reference
        fitted = sorted({s for s, f in zip(data.scheme, data.fitted, strict=True) if f} - {reference})
        self.names = ["logA", "alpha", "logB", "beta", "E"] + [f"phi:{s}" for s in fitted]
        self.fixed = dict(fixed or {})
        self.prior_names = list(self.free) if prior_names is None else list(prior_names)
        self._col = {s: np.array([x == s for x in data.scheme], dtype=float) for s in fitted}

    def parts(self, p):
        logrho = np.zeros(len(self.d.log_n))
        for s, m in self._col.items():
            logrho += p[f"phi:{s}"] * m
        return self._law(p, logrho, {f"phi:{s}": m for s, m in self._col.items()})
