"""The second implementation the fit-model tests check uscl against (test_fitmodels_checked.py,
test_fitmodels_runs_files.py): scipy's ``least_squares`` with its own Huber loss for the law fits,
the Kumar, capacity and drift references, the generated runs and QuEST's table read by plain
numpy/json code, and the in-process ``uscl`` runner. Nothing of gmse_cli computes a number here
(``library_fit`` only runs gmse_cli's fit, whose output the tests check).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
import scipy.special
from conftest import REPO_ROOT, SHARED_DATA
from scipy.optimize import brentq, least_squares
from scipy.stats import t as student_t

QUEST = SHARED_DATA / "quest_runs.json"
CHINCHILLA = SHARED_DATA / "chinchilla_epoch_extracted.csv"


def shared(path: Path) -> Path:
    """A shared data file, or the test skips (an unpacked sdist has no ../shared/data)."""
    if not path.is_file():
        pytest.skip(f"{path} is not present")
    return path
CHI2_95 = 3.841458820694124  # chi-square(1) 0.95 quantile, scipy.stats.chi2.ppf(0.95, 1)
LOG4 = math.log(4.0)

# A known law for generated runs (README's coverage experiment uses the same dense constants).
TRUE = {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37, "E": 1.8}
SIZES = np.geomspace(2e7, 1e9, 6)
TPP = (10.0, 25.0, 60.0, 150.0)


# -- the reference implementation ------------------------------------------------------------

def huber_sum(r: np.ndarray, delta: float) -> float:
    a = np.abs(r)
    return float(np.sum(np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))))


def law_log_loss(c: dict, N, D, logrho=0.0) -> np.ndarray:
    """log(A (N rho)^-alpha + B D^-beta + E) in natural constants."""
    N, D = np.asarray(N, float), np.asarray(D, float)
    return np.log(c["A"] * (N * np.exp(logrho)) ** -c["alpha"] + c["B"] * D ** -c["beta"] + c["E"])


class LawProblem:
    """Huber on log-loss of the law with a capacity part; z = (a, alpha, b, beta, e, *extra),
    a and b centred at the mean log N / log D (A = exp(a + alpha mean log N))."""

    def __init__(self, N, D, loss, delta, logrho=None, logrho_jac=None):
        self.lN, self.lD, self.y = np.log(N), np.log(D), np.log(loss)
        self.cN, self.cD = self.lN.mean(), self.lD.mean()
        self.delta = delta
        self.logrho = logrho or (lambda extra: 0.0)
        self.logrho_jac = logrho_jac  # d log rho / d extra, (n, extras); log rho never depends on alpha here

    def jac(self, z):
        a, alpha, b, beta, e = z[:5]
        with np.errstate(all="ignore"):  # a trial point far off: zeros, as its residual is clamped
            x = self.lN - self.cN + self.logrho(z[5:])
            t = np.stack([a - alpha * x, b - beta * (self.lD - self.cD), np.full_like(x, e)])
            w = np.exp(t - t.max(axis=0))
            w /= w.sum(axis=0)
            J = np.column_stack([w[0], -w[0] * x, w[1], -w[1] * (self.lD - self.cD), w[2]])
            if len(z) > 5:
                J = np.hstack([J, (-alpha * w[0])[:, None] * self.logrho_jac(z[5:])])
        return np.nan_to_num(J, nan=0.0, posinf=0.0, neginf=0.0)

    def resid(self, z):
        a, alpha, b, beta, e = z[:5]
        with np.errstate(all="ignore"):
            x = self.lN - self.cN + self.logrho(z[5:])
            pred = np.logaddexp(np.logaddexp(a - alpha * x, b - beta * (self.lD - self.cD)), e)
        r = pred - self.y
        return np.where(np.isfinite(r), r, 1e3)  # a trial point far off: a large residual

    def objective(self, z) -> float:
        return huber_sum(self.resid(z), self.delta)

    def to_z(self, c: dict, extra=()) -> np.ndarray:
        return np.array([math.log(c["A"]) - c["alpha"] * self.cN, c["alpha"],
                         math.log(c["B"]) - c["beta"] * self.cD, c["beta"], math.log(c["E"]), *extra])

    def to_public(self, z) -> dict:
        return {"A": math.exp(z[0] + z[1] * self.cN), "alpha": z[1], "B": math.exp(z[2] + z[3] * self.cD),
                "beta": z[3], "E": math.exp(z[4])}

    def solve(self, z0, hold=None):
        """Best Huber fit from z0 with the coordinates in ``hold`` kept at z0's values."""
        z0 = np.asarray(z0, float)
        free = np.ones(len(z0), bool) if hold is None else ~np.isin(np.arange(len(z0)), hold)

        def full(x):
            z = z0.copy()
            z[free] = x
            return z

        res = least_squares(lambda x: self.resid(full(x)), z0[free], jac=lambda x: self.jac(full(x))[:, free],
                            loss="huber", f_scale=self.delta, method="trf", x_scale="jac", ftol=1e-15, xtol=1e-15,
                            gtol=1e-15, max_nfev=4000)
        z = full(res.x)
        return z, self.objective(z)

    def multistart(self, starts, hold=None):
        best = min((self.solve(s, hold) for s in starts), key=lambda zf: zf[1])
        return best

    def law_starts(self, extras=((),), alphas=(0.2, 0.5), betas=(0.2, 0.5), e_below=(1.5, 0.3)):
        level = float(np.mean(self.y))
        out = []
        for alpha in alphas:
            for beta in betas:
                for e in (level - d for d in e_below):
                    for extra in extras:
                        out.append(np.array([level - 1.0, alpha, level - 1.0, beta, e, *extra]))
        return out


def rmse(r) -> float:
    return float(np.sqrt(np.mean(np.square(r))))


# -- running uscl (in process) ---------------------------------------------------------------

def uscl(*args: str) -> tuple[int, str, str]:
    from gmse_cli.cli import main

    out, err = io.StringIO(), io.StringIO()
    code = 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(list(args))
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return code, out.getvalue(), err.getvalue()


def uscl_fit_json(*args: str) -> dict:
    code, out, err = uscl("fit", *args, "--json")
    assert code == 0, err
    return json.loads(out)["results"][0]


# -- generated runs -----------------------------------------------------------------------------

def write_jsonl(path: Path, records) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def kumar_log_rho(w_bits, a_bits, gamma_w, gamma_a):
    """Kumar et al.: log prod over weights, activations of (1 - exp(-P / gamma))."""
    return np.log1p(-np.exp(-np.asarray(w_bits, float) / gamma_w)) + np.log1p(-np.exp(-np.asarray(a_bits, float) / gamma_a))


# (weights, activations, weight bits, activation bits): the bits are read off the names here
KUMAR_SCHEMES = [("bf16", None, 16, 16), ("int2", None, 2, 16), ("int3", None, 3, 16), ("int4", None, 4, 16),
                 ("int6", None, 6, 16), ("int3", "had128+int3", 3, 3), ("int4", "had128+int4", 4, 4),
                 ("int8", "had128+int2", 8, 2)]
KUMAR_TRUE = {**TRUE, "gamma_w": 2.0, "gamma_a": 1.2}


def kumar_runs(seed: int, noise: float = 0.003):
    rng = np.random.default_rng(seed)
    recs = []
    for w, a, pw, pa in KUMAR_SCHEMES:
        for N in SIZES:
            for tpp in TPP:
                lr = kumar_log_rho(pw, pa, KUMAR_TRUE["gamma_w"], KUMAR_TRUE["gamma_a"])
                y = law_log_loss(KUMAR_TRUE, N, N * tpp, lr) + rng.normal(0.0, noise)
                recs.append({"weights": w, "activations": a, "N": float(N), "D": float(N * tpp),
                             "loss": float(np.exp(y)), "pw": pw, "pa": pa})
    return recs


def kumar_problem(N, D, loss, pw, pa, delta) -> LawProblem:
    def jac(x):  # d/d log gamma of log(1 - exp(-P / gamma)) = -u / expm1(u), u = P / gamma
        u = np.stack([pw / np.exp(x[0]), pa / np.exp(x[1])], axis=1)
        with np.errstate(over="ignore"):
            return -u / np.expm1(u)

    return LawProblem(N, D, loss, delta, lambda x: kumar_log_rho(pw, pa, np.exp(x[0]), np.exp(x[1])), jac)


def kumar_reference(recs, delta):
    N, D, loss = (np.array([r[k] for r in recs], float) for k in ("N", "D", "loss"))
    pw, pa = np.array([r["pw"] for r in recs], float), np.array([r["pa"] for r in recs], float)
    prob = kumar_problem(N, D, loss, pw, pa, delta)
    z, f = prob.multistart(prob.law_starts([(0.0, 0.0), (1.0, 1.0)]))
    return prob, z, f, pw, pa


# -- profile likelihood (identify.py's docstring, heldout_method's c) --------------------------

def likelihood_c(r: np.ndarray, delta: float, free: int = 0) -> float:
    """c = (residuals inside delta, less the ``free`` fitted constants) / sum clip(r, -delta, delta)^2;
    (n - free) / sum r^2 if none is left inside."""
    inside = np.sum(np.abs(r) <= delta) - free
    spread = np.sum(np.clip(r, -delta, delta) ** 2)
    return float(inside / spread) if inside > 0 and spread > 0 else float((len(r) - free) / np.sum(r * r))


def profile_ends(prob: LawProblem, z_hat, f_hat, j: int, lower: float, upper: float, *, log_coord: bool,
                 held=()):
    """(low, high, low_open, high_open): where 2 c (f(v) - f_min) crosses 3.841, v moved outward in
    natural units by doubling steps from 0.2% of the distance to each domain end, the rest (but
    the ``held`` coordinates) refitted."""
    c = likelihood_c(prob.resid(z_hat), prob.delta, free=len(z_hat) - len(held))  # the profile's degrees of freedom
    threshold = f_hat + CHI2_95 / (2.0 * c)
    v_hat = math.exp(z_hat[j]) if log_coord else z_hat[j]
    warm = {"z": z_hat}

    def excess(v: float) -> float:
        best = math.inf
        # a third start with log E (z[4]) off its bound: at E ~ 0 its gradient E df/dE vanishes, and
        # a refit started there never moves it (tests/test_stats_rederive.py)
        lifted = warm["z"].copy()
        lifted[4] = max(lifted[4], math.log(0.03))
        for start in (warm["z"], z_hat) + ((lifted,) if j != 4 else ()):
            z0 = start.copy()
            z0[j] = math.log(v) if log_coord else v
            z, f = prob.solve(z0, hold=[j, *held])
            if f < best:
                best, zb = f, z
        warm["z"] = zb
        return best - threshold

    def side(end: float):
        inner, step = v_hat, 2e-3
        while True:
            v = v_hat + (end - v_hat) * min(step, 1.0)
            if excess(v) > 0:
                break
            if step >= 1.0:
                return end, True
            inner, step = v, 2 * step
        warm["z"] = z_hat
        return brentq(excess, inner, v, xtol=1e-9 * abs(v)), False

    (low, low_open), (high, high_open) = side(lower), side(upper)
    return low, high, low_open, high_open


# -- the two-stage capacity model ---------------------------------------------------------------

def bits_of(gmse) -> np.ndarray:
    return -np.log(np.asarray(gmse, float)) / LOG4


def curve_log_rho(L, F, C, gmse, shape: str = "tanh") -> np.ndarray:
    """log of L s(F log_1/4 GMSE)^C, s = tanh or erf (``shape``)."""
    s = {"tanh": np.tanh, "erf": scipy.special.erf}[shape]
    return np.log(L) + C * np.log(s(F * bits_of(gmse)))


# weights (each with the GMSE its record carries), activations or None
STAGE_GMSE = {"bf16": 2.76e-6, "int1": 0.3634, "int2": 0.1188, "int3": 0.03744, "int4": 0.01154,
              "int6": 7.3e-4, "int8": 8.78e-5}
CAPACITY_SCHEMES = [("bf16", None), ("int1", None), ("int2", None), ("int3", None), ("int4", None),
                    ("int6", None), ("int2", "had128+int2"), ("int3", "had128+int3")]
CURVE_TRUE = {"L": 0.97, "F": 0.45, "C": 1.6}


def scheme_gmse(w: str, a: str | None) -> list[float]:
    return [STAGE_GMSE[w]] + ([] if a is None else [STAGE_GMSE[a.removeprefix("had128+")]])


def capacity_runs(seed: int, noise: float = 0.003):
    rng = np.random.default_rng(seed)
    recs = []
    for w, a in CAPACITY_SCHEMES:
        gm = scheme_gmse(w, a)
        lr = float(np.sum(curve_log_rho(CURVE_TRUE["L"], CURVE_TRUE["F"], CURVE_TRUE["C"], gm)))
        stage = {"weights": [{"family": "quantization", "gmse": gm[0]}]}
        if a is not None:
            stage["activations"] = [{"family": "quantization", "gmse": gm[1]}]
        for N in SIZES:
            for tpp in TPP:
                y = law_log_loss(TRUE, N, N * tpp, lr) + rng.normal(0.0, noise)
                recs.append({"weights": w, "activations": a, "N": float(N), "D": float(N * tpp),
                             "loss": float(np.exp(y)), "stage_gmse": stage})
    return recs


def scheme_key(w: str, a: str | None) -> str:
    return w if a is None else f"W:{w} A:{a}"


def decoupled_reference(N, D, loss, scheme, reference: str, delta: float):
    """One free log rho per scheme (the reference at 0): returns the problem, z, f, and the schemes."""
    others = sorted(set(scheme) - {reference})
    col = np.array([0 if s == reference else 1 + others.index(s) for s in scheme])

    onehot = (col[:, None] == np.arange(1, len(others) + 1)[None, :]).astype(float)
    prob = LawProblem(N, D, loss, delta, lambda x: np.concatenate([[0.0], x])[col], lambda x: onehot)
    z, f = prob.multistart(prob.law_starts([np.zeros(len(others))], betas=(0.2,), e_below=(1.5,)))
    return prob, z, f, others


def curve_reference(points, delta=1e-4, held=None, fixed_c=None, shapes=None):
    """(L, F, C) per family through (stages [(family, GMSE)], rho) points, Huber on rho; ``held``:
    {family: (L, F, C)} kept, ``fixed_c``: {family: C} kept, ``shapes``: {family: 'tanh' or 'erf'}
    (default tanh). Returns {family: (L, F, C)} and the RMSE of rho."""
    held, fixed_c, shapes = held or {}, fixed_c or {}, shapes or {}
    fams = sorted({f for st, _ in points for f, _ in st} - set(held))
    target = np.array([rho for _, rho in points])

    def family_curves(x):
        return {**held, **{f: (*np.exp(x[3 * i: 3 * i + 2]), fixed_c.get(f, math.exp(x[3 * i + 2])))
                           for i, f in enumerate(fams)}}

    def predict(x):
        curves = family_curves(x)
        return np.array([math.exp(sum(float(curve_log_rho(*curves[f], g, shapes.get(f, "tanh"))) for f, g in st))
                         for st, _ in points])

    best = None
    for L in (1.0,):
        for F in (0.2, 0.5, 1.0):
            for C in (0.7, 1.5, 3.0):
                x0 = np.tile(np.log([L, F, C]), len(fams))
                res = least_squares(lambda x: predict(x) - target, x0, loss="huber", f_scale=delta,
                                    ftol=1e-15, xtol=1e-15, gtol=1e-15, max_nfev=3000)
                f = huber_sum(predict(res.x) - target, delta)
                if best is None or f < best[1]:
                    best = (res.x, f)
    x = best[0]
    return {f: tuple(map(float, c)) for f, c in family_curves(x).items()}, best[1], rmse(predict(x) - target), predict


# -- capacity drift (gmse_cli/fit/drift.py's docstring, README "Identifiability") ---------------

def implied_rho(law: dict, N, D, loss) -> np.ndarray:
    excess = np.asarray(loss) - law["B"] * np.asarray(D) ** -law["beta"] - law["E"]
    with np.errstate(invalid="ignore"):
        return np.where(excess > 0, (excess / law["A"]) ** (-1.0 / law["alpha"]) / np.asarray(N), np.nan)


def ols(X: np.ndarray, y: np.ndarray, k: int):
    """Coefficient k, its 95% t interval (dof n - rank) and standard error, by QR."""
    q, r = np.linalg.qr(X)
    coef = np.linalg.solve(r, q.T @ y)
    dof = len(y) - X.shape[1]
    resid = y - X @ coef
    rinv = np.linalg.inv(r)
    se = math.sqrt(float(resid @ resid) / dof * float((rinv @ rinv.T)[k, k])) if dof > 0 else math.nan
    half = float(student_t.ppf(0.975, dof)) * se if dof > 0 else math.nan
    return float(coef[k]), float(coef[k] - half), float(coef[k] + half), se, resid


def drift_reference(scheme, N, D, loss, rho, use, law):
    """The joint within-scheme regression of log(implied rho / fitted rho) on log N and log D/N
    (one intercept per scheme; a regressor whose within-scheme deviations stay under 0.005 is
    dropped) and each scheme's own regression on log N (and log D/N where its span is 1% or more)."""
    implied = implied_rho(law, N, D, loss)
    use = np.asarray(use) & np.isfinite(implied)
    idx = np.flatnonzero(use)
    names = sorted({scheme[i] for i in idx})
    y = np.log(implied[idx] / np.asarray(rho)[idx])
    dummies = np.array([[scheme[i] == s for s in names] for i in idx], float)
    regs = {"log N": np.log(N[idx]), "log D/N": np.log(D[idx] / N[idx])}
    kept = {}
    for label, x in regs.items():
        means = dummies @ (dummies.T @ x / dummies.sum(axis=0))
        if np.max(np.abs(x - means)) >= 0.005:
            kept[label] = x
    X = np.column_stack([dummies, *kept.values()])
    slopes = {label: ols(X, y, len(names) + j)[:4] for j, label in enumerate(kept)}
    rms = rmse(ols(X, y, 0)[4])
    per = {}
    for s in names:
        m = np.array([scheme[i] == s for i in idx])
        lN, lT = regs["log N"][m], regs["log D/N"][m]
        if len(np.unique(np.round(lN, 9))) < 3:
            per[s] = None
            continue
        cols = [np.ones(m.sum()), lN] + ([lT] if np.ptp(lT) >= 0.01 else [])
        per[s] = ols(np.column_stack(cols), y[m], 1)[:3]
    return {"n": len(idx), "slopes": slopes, "rms": rms, "per": per,
            "mean": {s: float(np.mean(y[[scheme[i] == s for i in idx]])) for s in names}}


def check_drift(result: dict, scheme, N, D, loss, use):
    """uscl's drift report equals the reference regression on the JSON's own law and rho."""
    law = {k: result["constants"][k]["value"] for k in ("A", "alpha", "B", "beta", "E")}
    rho = np.array([r["rho"] for r in result["residuals"]])
    ref = drift_reference(scheme, N, D, loss, rho, use, law)
    drift = result["drift"]
    assert drift["n_runs"] == ref["n"]
    assert [s["regressor"] for s in drift["slopes"]] == list(ref["slopes"])
    for s in drift["slopes"]:
        slope, low, high, se = ref["slopes"][s["regressor"]]
        assert (s["slope"], s["slope_low"], s["slope_high"], s["slope_std_err"]) == pytest.approx(
            (slope, low, high, se), rel=1e-7, abs=1e-10)
    assert drift["residual_rms"] == pytest.approx(ref["rms"], rel=1e-7)
    assert sorted(s["scheme"] for s in drift["schemes"]) == sorted(ref["per"])
    for s in drift["schemes"]:
        assert s["log_ratio_mean"] == pytest.approx(ref["mean"][s["scheme"]], rel=1e-7, abs=1e-12)
        got = ref["per"][s["scheme"]]
        if got is None:
            assert s["slope_log_n"] is None
        elif math.isnan(got[1]):  # as many coefficients as runs: a slope, no interval
            assert s["slope_log_n"] == pytest.approx(got[0], rel=1e-7, abs=1e-10)
            assert s["slope_log_n_low"] is None and s["slope_log_n_high"] is None
        else:
            assert (s["slope_log_n"], s["slope_log_n_low"], s["slope_log_n_high"]) == pytest.approx(
                got, rel=1e-7, abs=1e-10)
    return ref


# -- QuEST's runs, read here ------------------------------------------------------------------

def quest_table():
    """N, D, loss, weight and activation bits (FP4 is 4 bits, no quantizer 16), inside the
    domain (activations not quantized, or behind a Hadamard rotation), dense (nothing quantized)."""
    recs = json.loads(shared(QUEST).read_text())

    def bits(quant, recorded):
        return 16.0 if quant == "NoQuantizer" else 4.0 if "FP4" in quant else float(recorded)

    return {
        "N": np.array([r["non_embedding_parameters"] for r in recs], float),
        "D": np.array([r["tokens"] for r in recs], float),
        "loss": np.array([r["loss"] for r in recs], float),
        "pw": np.array([bits(r["w_quant"], r["w_bits"]) for r in recs]),
        "pa": np.array([bits(r["a_quant"], r["a_bits"]) for r in recs]),
        "inside": np.array([r["a_quant"] == "NoQuantizer" or "Hadamard" in r["a_quant"] for r in recs]),
        "dense": np.array([r["w_quant"] == r["a_quant"] == "NoQuantizer" for r in recs]),
    }


def quest_scheme_keys() -> list[tuple]:
    """Each QuEST run's scheme as README maps it: (rotated, kind, bits) for weights and activations."""
    def key(quant, bits):
        if quant == "NoQuantizer":
            return None
        kind = "foureight" if "FourEight" in quant else "fp4" if "FP4" in quant else "int"
        return ("Hadamard" in quant, kind, None if kind == "fp4" else int(bits))

    return [(key(r["w_quant"], r["w_bits"]), key(r["a_quant"], r["a_bits"])) for r in json.loads(shared(QUEST).read_text())]


def shipped_curve(family: str) -> tuple[float, float, float]:
    law = tomllib.loads((REPO_ROOT / "gmse_cli" / "laws" / "paper-llama-c4.toml").read_text())
    return tuple(law["families"][family][k]["value"] for k in ("L", "F", "C"))


# == the tests =================================================================================

def constants_of(result: dict, names) -> dict:
    return {k: result["constants"][k]["value"] for k in names}


LAW = ("A", "alpha", "B", "beta", "E")


def select_worst(recs, k: int):
    """Drop the k highest losses (every run tied with the k-th highest goes too)."""
    cut = sorted(r["loss"] for r in recs)[-k]
    return [r for r in recs if r["loss"] < cut]


def library_fit(path: Path, model: str, *, profile: bool = False, **options):
    """gmse_cli's fit as `uscl fit --no-heldout` makes it (the base law: the shipped one), and its
    result as --json prints it; without the profile unless asked (the CLI always makes it)."""
    from gmse_cli.cli.output import envelope
    from gmse_cli.fit import fit
    from gmse_cli.law import load_law
    from gmse_cli.runs import load_runs

    runs = load_runs(path)
    base = load_law(None) if model in ("unified", "capacity") else None
    result = fit(runs, model=model, loso=False, profile=profile, base_law=base, **options)
    return result, envelope("fit", [result.model_dump(mode="json")])["results"][0]


def library_fit_json(path: Path, model: str, **options) -> dict:
    return library_fit(path, model, **options)[1]
