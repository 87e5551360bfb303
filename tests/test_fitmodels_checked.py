"""`uscl fit --model kumar / capacity`, the drift report, the profile intervals and the runs
readers, re-derived by a second implementation written here from the README and the JSON.

Nothing of gmse_cli computes a checked number: the law fits are scipy's ``least_squares`` with
its own Huber loss (``loss='huber', f_scale=delta`` is exactly 0.5 r^2 inside delta and
delta (|r| - delta/2) beyond: the objective ``heldout_method`` states), the capacities and
the run files are read back by plain numpy/json/csv code. gmse_cli only produces the output that
is checked (through the CLI, in process) and reads the generated files.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest
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


def curve_log_rho(L, F, C, gmse) -> np.ndarray:
    """log of L tanh(F log_1/4 GMSE)^C."""
    return np.log(L) + C * np.log(np.tanh(F * bits_of(gmse)))


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


def curve_reference(points, delta=1e-4, held=None, fixed_c=None):
    """(L, F, C) per family through (stages [(family, GMSE)], rho) points, Huber on rho; ``held``:
    {family: (L, F, C)} kept, ``fixed_c``: {family: C} kept. Returns {family: (L, F, C)} and the
    RMSE of rho."""
    held, fixed_c = held or {}, fixed_c or {}
    fams = sorted({f for st, _ in points for f, _ in st} - set(held))
    target = np.array([rho for _, rho in points])

    def family_curves(x):
        return {**held, **{f: (*np.exp(x[3 * i: 3 * i + 2]), fixed_c.get(f, math.exp(x[3 * i + 2])))
                           for i, f in enumerate(fams)}}

    def predict(x):
        curves = family_curves(x)
        return np.array([math.exp(sum(float(curve_log_rho(*curves[f], g)) for f, g in st)) for st, _ in points])

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


@pytest.fixture(scope="module")
def kumar_generated(tmp_path_factory):
    """uscl fit --model kumar on generated runs, with --where, --exclude-worst and --fix."""
    recs = kumar_runs(seed=3)
    path = write_jsonl(tmp_path_factory.mktemp("kumar") / "runs.jsonl", recs)
    result = uscl_fit_json(str(path), "--model", "kumar", "--no-heldout", "--where", "N>=3e7",
                           "--exclude-worst", "3", "--fix", "gamma_a=1.2")
    kept = select_worst([r for r in recs if r["N"] >= 3e7], 3)
    return kept, result


def test_kumar_generated_matches_reference_fit(kumar_generated):
    kept, result = kumar_generated
    assert result["n_runs"] == result["n_fitted"] == len(kept) == 8 * 5 * 4 - 3
    N, D, loss, pw, pa = (np.array([r[k] for r in kept], float) for k in ("N", "D", "loss", "pw", "pa"))
    prob = kumar_problem(N, D, loss, pw, pa, 1e-3)
    start = prob.law_starts([(0.0, math.log(1.2)), (1.0, math.log(1.2))])
    z, f = prob.multistart(start, hold=[6])
    mine = {**prob.to_public(z), "gamma_w": math.exp(z[5]), "gamma_a": 1.2}
    got = constants_of(result, mine)
    assert result["constants"]["gamma_a"]["fixed"] and got["gamma_a"] == 1.2
    # the same optimum: the objective to 1e-9, the constants to a few 1e-7
    zt = prob.to_z(got, (math.log(got["gamma_w"]), math.log(1.2)))
    assert prob.objective(zt) == pytest.approx(result["objective"], rel=1e-9)
    assert result["objective"] <= f * (1 + 1e-9)
    assert got == pytest.approx(mine, rel=2e-6)
    # and near the truth the runs were drawn from (0.3% noise)
    assert got == pytest.approx(KUMAR_TRUE, rel=0.1)
    # predictions, rho and the fit error from the JSON's constants
    lr = kumar_log_rho(pw, pa, got["gamma_w"], 1.2)
    pred = law_log_loss(got, N, D, lr)
    res = result["residuals"]
    assert [r["loss"] for r in res] == pytest.approx(loss.tolist(), rel=1e-15)
    assert np.log([r["predicted"] for r in res]) == pytest.approx(pred, abs=1e-12)
    assert [r["residual"] for r in res] == pytest.approx(pred - np.log(loss), abs=1e-12)
    assert [r["rho"] for r in res] == pytest.approx(np.exp(lr), rel=1e-12)
    assert result["fit_error"] == pytest.approx(rmse(pred - np.log(loss)), rel=1e-10)
    # the profile intervals of alpha and E: the same objective profiled here
    c = likelihood_c(prob.resid(z), 1e-3)
    assert c > 0
    for key, j, lo, hi, log_coord in (("alpha", 1, 1e-3, 3.0, False),
                                      ("E", 4, 1e-9 * loss.min(), 0.999 * loss.min(), True)):
        low, high, low_open, high_open = profile_ends(prob, z, f, j, lo, hi, log_coord=log_coord, held=[6])
        assert not (low_open or high_open)
        entry = result["constants"][key]
        assert (entry["profile_low"], entry["profile_high"]) == pytest.approx((low, high), rel=1e-6)
        assert entry["profile_low"] < got[key] < entry["profile_high"]
        assert entry["at_bound"] is None
    # no profile for a held constant, none for gamma_w
    assert result["constants"]["gamma_w"]["profile_low"] is None
    scheme = [scheme_key(r["weights"], r["activations"]) for r in kept]
    dense = np.array([r["weights"] == "bf16" and r["activations"] is None for r in kept])
    check_drift(result, scheme, N, D, loss, ~dense)


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


def test_kumar_on_quest_matches_reference_fit():
    q = quest_table()
    inside = q["inside"]
    result = library_fit_json(shared(QUEST), "kumar")
    assert result["n_runs"] == 104 and result["n_fitted"] == int(inside.sum()) == 80
    prob = kumar_problem(q["N"][inside], q["D"][inside], q["loss"][inside], q["pw"][inside], q["pa"][inside], 1e-3)
    z, f = prob.multistart(prob.law_starts([(0.0, 0.0), (1.0, 1.0)]))
    got = constants_of(result, (*LAW, "gamma_w", "gamma_a"))
    zt = prob.to_z(got, (math.log(got["gamma_w"]), math.log(got["gamma_a"])))
    assert prob.objective(zt) == pytest.approx(result["objective"], rel=1e-9)
    assert result["objective"] <= f * (1 + 1e-9)
    mine = {**prob.to_public(z), "gamma_w": math.exp(z[5]), "gamma_a": math.exp(z[6])}
    assert got == pytest.approx(mine, rel=1e-5)
    # every run predicted (outside the domain too), the error over the fitted ones
    lr = kumar_log_rho(q["pw"], q["pa"], got["gamma_w"], got["gamma_a"])
    pred = law_log_loss(got, q["N"], q["D"], lr)
    assert np.log([r["predicted"] for r in result["residuals"]]) == pytest.approx(pred, abs=1e-12)
    assert [r["fitted"] for r in result["residuals"]] == inside.tolist()
    assert result["fit_error"] == pytest.approx(rmse((pred - np.log(q["loss"]))[inside]), rel=1e-10)
    assert result["fit_error"] == pytest.approx(0.01404, abs=5e-5)  # worse than unified's 0.0037
    scheme = [r["scheme"] for r in result["residuals"]]
    check_drift(result, scheme, q["N"], q["D"], q["loss"], inside & ~q["dense"])


def test_capacity_model_generated_matches_two_stage_reference(tmp_path):
    """The two stages with a law constant and a curve constant held (at their true values; QuEST's
    test below fits everything)."""
    recs = capacity_runs(seed=5)
    fixed = {"alpha": TRUE["alpha"], "quantization.C": CURVE_TRUE["C"]}
    result = library_fit_json(write_jsonl(tmp_path / "runs.jsonl", recs), "capacity", fixed=fixed)
    for key, value in fixed.items():
        assert result["constants"][key] == {**result["constants"][key], "value": value, "fixed": True}
    N, D, loss = (np.array([r[k] for r in recs], float) for k in ("N", "D", "loss"))
    scheme = [scheme_key(r["weights"], r["activations"]) for r in recs]
    # stage 1: decoupled capacities, bf16 the reference at 1, alpha held
    prob, z, f, others = decoupled_reference(N, D, loss, scheme, "bf16", 1e-3)
    z[1] = TRUE["alpha"]
    z, f = prob.solve(z, hold=[1])
    law = constants_of(result, LAW)
    assert law == pytest.approx(prob.to_public(z), rel=2e-6)
    assert result["objective"] == pytest.approx(f, rel=1e-9)  # the objective reported is stage 1's
    rho = {"bf16": 1.0, **dict(zip(others, np.exp(z[5:]), strict=True))}
    caps = {c["scheme"]: c for c in result["capacities"]}
    assert set(caps) == set(rho)
    assert {s: caps[s]["rho"] for s in rho} == pytest.approx(rho, rel=1e-6)
    # stage 2: the curve through (stage GMSEs, rho), Huber delta 1e-4 on rho
    points = [([("quantization", g) for g in scheme_gmse(w, a)], rho[scheme_key(w, a)]) for w, a in CAPACITY_SCHEMES]
    for w, a in CAPACITY_SCHEMES:
        assert caps[scheme_key(w, a)]["stage_gmse"] == [["quantization", g] for g in scheme_gmse(w, a)]
    curves, _, err, _ = curve_reference(points, fixed_c={"quantization": CURVE_TRUE["C"]})
    fam = result["families"]["quantization"]
    assert (fam["L"], fam["F"], fam["C"]) == pytest.approx(curves["quantization"], rel=1e-5)
    assert (fam["L"], fam["F"], fam["C"]) == pytest.approx(tuple(CURVE_TRUE.values()), rel=0.1)
    assert result["capacity_fit_error"] == pytest.approx(err, rel=1e-5)
    # every run re-predicted from the curve with stage 1's law: the fit error
    lr = np.array([np.sum(curve_log_rho(fam["L"], fam["F"], fam["C"], scheme_gmse(r["weights"], r["activations"])))
                   for r in recs])
    pred = law_log_loss(law, N, D, lr)
    assert [r["rho"] for r in result["residuals"]] == pytest.approx(np.exp(lr), rel=1e-12)
    assert np.log([r["predicted"] for r in result["residuals"]]) == pytest.approx(pred, abs=1e-12)
    assert result["fit_error"] == pytest.approx(rmse(pred - np.log(loss)), rel=1e-10)
    dense = np.array([s == "bf16" for s in scheme])
    check_drift(result, scheme, N, D, loss, ~dense)


def test_capacity_model_on_quest_matches_reference():
    fitted_result, result = library_fit(shared(QUEST), "capacity", profile=True)
    q = quest_table()
    inside = q["inside"]
    keys = [str(k) for k in quest_scheme_keys()]
    names = [r["scheme"] for r in result["residuals"]]
    assert len(set(zip(keys, names, strict=True))) == len(set(keys)) == len(set(names)) == 17  # one scheme per key
    name_of = dict(zip(keys, names, strict=True))
    fitted = [k for k, m in zip(keys, inside, strict=True) if m]
    reference = str((None, None))
    prob, z, f, others = decoupled_reference(q["N"][inside], q["D"][inside], q["loss"][inside], fitted, reference, 1e-3)
    law = constants_of(result, LAW)
    caps = {c["scheme"]: c for c in result["capacities"]}
    zt = prob.to_z(law, [math.log(caps[name_of[s]]["rho"]) for s in others])
    assert prob.objective(zt) == pytest.approx(result["objective"], rel=1e-9)
    assert result["objective"] <= f * (1 + 1e-9)
    mine = prob.to_public(z)
    assert {k: law[k] for k in ("A", "alpha", "B", "beta")} == pytest.approx({k: mine[k] for k in ("A", "alpha", "B", "beta")},
                                                                             rel=1e-6)
    rho = {reference: 1.0, **dict(zip(others, np.exp(z[5:]), strict=True))}
    assert {s: caps[name_of[s]]["rho"] for s in rho} == pytest.approx(rho, rel=1e-6)
    # E runs to 0: flagged at its bound (E < 1e-4 of the smallest loss), and its profile is open below
    assert law["E"] < 1e-4 * q["loss"][inside].min() and mine["E"] < 1e-4 * q["loss"][inside].min()
    assert result["constants"]["E"]["at_bound"] and result["constants"]["alpha"]["at_bound"] is None
    lo_loss = float(q["loss"][inside].min())
    for key, j, lo, hi, log_coord in (("alpha", 1, 1e-3, 3.0, False), ("E", 4, 1e-9 * lo_loss, 0.999 * lo_loss, True)):
        low, high, low_open, high_open = profile_ends(prob, z, f, j, lo, hi, log_coord=log_coord)
        entry = result["constants"][key]
        assert not high_open and low_open == (key == "E")
        assert entry["profile_high"] == pytest.approx(high, rel=1e-5)
        assert entry["profile_low"] == (0.0 if key == "E" else pytest.approx(low, rel=1e-5))
    # stage 2: the quantization curve through the fitted schemes' points, sparsity held at the shipped law
    held = {"sparsity": shipped_curve("sparsity")}
    assert tuple(result["families"]["sparsity"][k] for k in "LFC") == held["sparsity"]
    points = [([tuple(st) for st in caps[name_of[s]]["stage_gmse"]], rho[s]) for s in sorted(rho)]
    curves, _, err, _ = curve_reference(points, held=held)
    fam = result["families"]["quantization"]
    assert (fam["L"], fam["F"], fam["C"]) == pytest.approx(curves["quantization"], rel=1e-4)
    assert result["capacity_fit_error"] == pytest.approx(err, rel=1e-4)
    # every run (outside the domain too) re-predicted from the curves with stage 1's law
    curve_of = {"quantization": (fam["L"], fam["F"], fam["C"]), **held}
    lr = np.array([sum(float(curve_log_rho(*curve_of[f], g)) for f, g in caps[n]["stage_gmse"]) for n in names])
    pred = law_log_loss(law, q["N"], q["D"], lr)
    assert np.log([r["predicted"] for r in result["residuals"]]) == pytest.approx(pred, abs=1e-12)
    assert result["fit_error"] == pytest.approx(rmse((pred - np.log(q["loss"]))[inside]), rel=1e-10)
    assert result["fit_error"] == pytest.approx(0.0040, abs=5e-5)  # README's table: capacity, in-sample
    # Regression: a scheme outside the domain (unrotated W+A) was reported at the decoupled stage's
    # start, capacity 1 (and drawn there as its own capacity); it has the curves' capacity, the one
    # its runs are predicted with, and no point of its own in the plot.
    outside = sorted({n for n, m in zip(names, inside, strict=True) if not m})
    assert len(outside) == 5 and not any(caps[n]["fitted"] for n in outside)
    rho_curve = {n: math.exp(lr[names.index(n)]) for n in outside}
    assert {n: caps[n]["rho"] for n in outside} == pytest.approx(rho_curve, rel=1e-12)
    assert rho_curve["W:int1 A:int1"] < 0.05  # not 1
    from matplotlib.collections import PathCollection

    from gmse_cli.fit import fit_figure

    figure = fit_figure(fitted_result)
    points = [c for c in figure.axes[1].collections if isinstance(c, PathCollection)]
    drawable = [c for c in caps.values() if c["fitted"] and not c["reference"] and
                (len(c["stage_gmse"]) == 1 or (len(c["stage_gmse"]) == 2 and c["stage_gmse"][0] == c["stage_gmse"][1]))]
    assert len(points) == len(drawable) == 10
    ref = check_drift(result, names, q["N"], q["D"], q["loss"], inside & ~q["dense"])
    assert ref["slopes"]["log N"][1] < 0 < ref["slopes"]["log N"][2]  # no significant drift


# -- the runs readers -----------------------------------------------------------------------------

def read_by_uscl(path: Path) -> list[tuple]:
    from gmse_cli.runs import load_runs

    return [(r.N, r.D, r.loss, r.weights, r.activations) for r in load_runs(path)]


def number_text(rng: np.random.Generator, value: float) -> str:
    """value written one of several ways (its float() is what a reader must get)."""
    style = rng.integers(6)
    text = [repr(value), f"{value:.6e}", f"{value:.6E}", f"{value:.9g}", f"{value:.4f}",
            str(int(value)) if value >= 1e3 else repr(value)][style]
    return f" {text} " if rng.random() < 0.2 else text


CSV_N, CSV_D, CSV_FLOP, CSV_LOSS = ("N", "n", " params ", "Model Size"), ("D", "tokens", "Training Tokens"), \
    ("Training FLOP", "flops", "compute"), ("loss", "Loss", "val_loss", "final_loss")
FORMATS_W = ("", "bf16", "int4", "had128+int3", "2:4+int4")
FORMATS_A = ("", "none", "had128+int4", "int8")


def csv_variant(rng: np.random.Generator) -> tuple[bytes, list[tuple]]:
    """A CSV of 2-7 runs in one of many dialects, and the runs it holds (read here)."""
    n = int(rng.integers(2, 8))
    use_flop = rng.random() < 0.4
    formats = rng.random() < 0.6
    cols = [rng.choice(CSV_N), rng.choice(CSV_FLOP if use_flop else CSV_D), rng.choice(CSV_LOSS)]
    cols += ["weights", "activations"] if formats else []
    cols += [c for c in ("seed", "note") if rng.random() < 0.5]
    order = rng.permutation(len(cols))
    rows, expected = [], []
    for _ in range(n):
        N = float(rng.choice([3e7, 1.25e8, 7.7e8])) * (1 + rng.random())
        D = N * float(rng.uniform(5, 200))
        loss = float(rng.uniform(2.0, 4.0))
        cell = {cols[0]: number_text(rng, N), cols[2]: number_text(rng, loss),
                cols[1]: number_text(rng, 6 * N * D if use_flop else D), "seed": str(int(rng.integers(3))),
                "note": "a, quoted \"note\""}
        w, a = str(rng.choice(FORMATS_W)), str(rng.choice(FORMATS_A))
        cell |= {"weights": w, "activations": a}
        Nv = float(cell[cols[0]])
        Dv = float(cell[cols[1]]) / (6 * Nv) if use_flop else float(cell[cols[1]])
        run = (Nv, Dv, float(cell[cols[2]]), (w or "bf16") if formats else "bf16",
               (None if a in ("", "none") else a) if formats else None)
        rows.append([cell[cols[i]] for i in order])
        expected.append(run)
    if rng.random() < 0.3:  # a duplicate run: read twice, as written
        rows.append(rows[0])
        expected.append(expected[0])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if rng.random() < 0.5 else "\n",
                        quoting=csv.QUOTE_ALL if rng.random() < 0.3 else csv.QUOTE_MINIMAL)
    writer.writerow([cols[i] for i in order])
    writer.writerows(rows)
    text = out.getvalue() + ("\n" if rng.random() < 0.3 else "")
    if rng.random() < 0.3:
        text = text.rstrip("\r\n")  # no newline at the end
    return (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + text.encode(), expected


JSON_N, JSON_D, JSON_LOSS = ("N", "n_params", "params", "non_embedding_params"), ("D", "tokens", "n_tokens"), \
    ("loss", "final_val_loss", "val_loss")


def record_variant(rng: np.random.Generator) -> tuple[dict | None, tuple | None]:
    """A uscl run record in one of many spellings, and the run it holds (None: one to skip)."""
    N = float(rng.choice([3e7, 1.25e8])) * (1 + rng.random())
    D, loss = N * float(rng.uniform(5, 200)), float(rng.uniform(2.0, 4.0))
    w, a = str(rng.choice(FORMATS_W)), str(rng.choice(FORMATS_A))
    values = {"N": N, "D": D, "loss": loss}
    as_text = rng.random() < 0.2  # numbers given as JSON strings
    body = {str(rng.choice(keys)): (repr(values[k]) if as_text else values[k])
            for k, keys in (("N", JSON_N), ("D", JSON_D), ("loss", JSON_LOSS))}
    if w:
        body[str(rng.choice(["weights", "weight_format"]))] = w
    if a:
        body[str(rng.choice(["activations", "acts"]))] = a
    rec = {"result": body} if rng.random() < 0.2 else body
    rec |= {"seed": int(rng.integers(3)), "note": "x", "status": str(rng.choice(["ok", "done", "finished"]))}
    skip = rng.random() < 0.1
    if skip:
        rec["status"] = "diverged"
    keys = list(rec)
    rng.shuffle(keys)
    return {k: rec[k] for k in keys}, None if skip else (N, D, loss, w or "bf16", None if a in ("", "none") else a)


def test_csv_dialects_read_as_written(tmp_path):
    import warnings

    rng = np.random.default_rng(11)
    for i in range(60):
        data, expected = csv_variant(rng)
        path = tmp_path / f"runs{i}.csv"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = read_by_uscl(path)
        assert got == expected, data[:300]


def test_json_lines_and_lists_read_as_written(tmp_path):
    import warnings

    from gmse_cli.runs import RunsWarning

    rng = np.random.default_rng(12)
    for i in range(40):
        pairs = [record_variant(rng) for _ in range(int(rng.integers(2, 7)))]
        if rng.random() < 0.3:  # a duplicate run: read twice, as written
            pairs.append(pairs[0])
        expected = [run for _, run in pairs if run is not None]
        recs = [rec for rec, _ in pairs]
        end = "\r\n" if rng.random() < 0.5 else "\n"
        text = "".join(json.dumps(r) + end + (end if rng.random() < 0.2 else "") for r in recs)
        for name, body in ((f"runs{i}.jsonl", text), (f"runs{i}.json", json.dumps(recs, indent=int(rng.integers(0, 3))))):
            path = tmp_path / name
            path.write_bytes((b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + body.encode())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = read_by_uscl(path)
            assert got == expected, body[:300]
            assert len(caught) == len(recs) - len(expected)  # one warning per skipped (diverged) run
            assert all(issubclass(w.category, RunsWarning) and "diverged" in str(w.message) for w in caught)


def test_json_lines_non_finite_loss_is_a_skipped_run(tmp_path):
    import warnings

    path = tmp_path / "runs.jsonl"
    path.write_text('{"N": 1e8, "D": 2e9, "loss": NaN}\n{"N": 1e8, "D": 2e9, "loss": Infinity}\n'
                    '{"N": 2e8, "D": 4e9, "loss": 3.25}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_by_uscl(path) == [(2e8, 4e9, 3.25, "bf16", None)]
    assert ["loss = nan" in str(w.message) for w in caught] == [True, False]
    assert "loss = inf" in str(caught[1].message)


def quest_records(n: int = 12) -> list[dict]:
    return json.loads(shared(QUEST).read_text())[:n]


def test_quest_records_read_as_written(tmp_path):
    rng = np.random.default_rng(13)
    recs = json.loads(shared(QUEST).read_text())
    for i in range(10):
        pick = [dict(recs[j]) for j in rng.choice(len(recs), size=8, replace=False)]
        for r in pick:
            r["extra"] = "kept aside"
            items = list(r.items())
            rng.shuffle(items)
            r.clear()
            r.update(items)
        path = tmp_path / f"quest{i}.json"
        path.write_text(json.dumps(pick, indent=1))
        got = read_by_uscl(path)
        assert [g[:3] for g in got] == [(float(r["non_embedding_parameters"]), float(r["tokens"]), float(r["loss"]))
                                         for r in pick]
        assert [g[4] is None for g in got] == [r["a_quant"] == "NoQuantizer" for r in pick]
        assert [("had128+" in g[3]) for g in got] == ["Hadamard" in r["w_quant"] for r in pick]


def test_quest_record_with_a_list_or_object_in_its_args_is_read(tmp_path):
    """Regression: a QuEST record whose args.seed, model_size, trust ... held a list or an object
    made the Run's metadata fail pydantic's validation: a traceback (exit 1), not a run."""
    from gmse_cli.runs import load_runs

    recs = quest_records(2)
    recs[0]["args"] = {**recs[0]["args"], "seed": [0, 1], "lr": {"peak": 1e-3}}
    recs[1]["model_size"] = {"layers": 7}
    recs[1]["trust"] = [1.0]
    path = tmp_path / "quest.json"
    path.write_text(json.dumps(recs))
    runs = load_runs(path)
    assert [(r.N, r.D, r.loss) for r in runs] == [(float(r["non_embedding_parameters"]), float(r["tokens"]), r["loss"])
                                                   for r in recs]
    assert "seed" not in runs[0].meta and "lr" not in runs[0].meta and "model_size" not in runs[1].meta
    assert runs[1].meta["n_layer"] == recs[1]["args"]["n_layer"]  # scalars are kept


def test_chinchilla_points_read_with_D_from_training_flop():
    rows = list(csv.DictReader(shared(CHINCHILLA).read_text().splitlines()))
    expected = [(float(r["Model Size"]), float(r["Training FLOP"]) / (6 * float(r["Model Size"])), float(r["loss"]),
                 "bf16", None) for r in rows]
    got = read_by_uscl(shared(CHINCHILLA))
    assert len(got) == len(expected) == 245
    assert got == expected


GOOD_CSV_ROWS = [("3e7", "6e8", "3.9"), ("6e7", "1.2e9", "3.6"), ("1.2e8", "2.4e9", "3.4"), ("2.4e8", "4.8e9", "3.2"),
                 ("4.8e8", "9.6e9", "3.05"), ("9.6e8", "1.92e10", "2.95"), ("3e7", "3e9", "3.7")]


def csv_with(cell: str, column: int, header=("N", "D", "loss"), row: int = 3) -> str:
    rows = [list(r) for r in GOOD_CSV_ROWS]
    rows[row][column] = cell
    return ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)


def jsonl_with(key: str, value: str) -> str:
    lines = [f'{{"N": {n}, "D": {d}, "loss": {x}}}' for n, d, x in GOOD_CSV_ROWS]
    lines[2] = lines[2].replace(f'"{key}": ' + dict(zip("NDl", GOOD_CSV_ROWS[2], strict=True))[key[0]], f'"{key}": {value}')
    return "\n".join(lines) + "\n"


def quest_with(**changes) -> str:
    recs = quest_records(8)
    recs[5] = {k: v for k, v in {**recs[5], **changes}.items() if v != "<drop>"}
    return json.dumps(recs)


def bad_inputs():
    """(file name, contents, what the one error line must name)."""
    cases = []
    for column, field in ((0, "N"), (1, "D"), (2, "loss")):
        for cell in ("nan", "inf", "-4e8", "0", "abc", "", "1e999", "-inf"):
            shown = {"": "''", "abc": "'abc'"}.get(cell, cell)
            if field != "N":  # D and loss are checked as numbers: their float
                shown = {"": "''", "abc": "'abc'"}.get(cell, repr(float(cell)) if cell not in ("", "abc") else cell)
            cases.append((f"csv-{field}-{cell or 'empty'}.csv", csv_with(cell, column), [f"{field} = ", shown]))
    for cell in ("-1e18", "0", "nan", "inf", "x"):
        cases.append((f"csv-flop-{cell}.csv", csv_with(cell, 1, header=("N", "Training FLOP", "loss")),
                      ["Training FLOP = ", cell]))
    cases += [
        ("csv-no-loss.csv", "N,D,val\n1e8,2e9,3\n", ["loss"]),
        ("csv-short-row.csv", "N,D,loss\n1e8,2e9\n", ["fields"]),
        ("csv-long-row.csv", "N,D,loss\n1e8,2e9,3,4\n", ["fields"]),
        ("csv-empty.csv", "", ["no data rows"]),
        ("csv-header-only.csv", "N,D,loss\r\n", ["no data rows"]),
        ("csv-bad-format.csv", "N,D,loss,weights\n1e8,2e9,3,int99q\n", ["int99q"]),
        ("csv-repeated-column.csv", "N,D,loss,n\n1e8,2e9,3,4\n", ["'n'"]),
        ("csv-utf16.csv", "N,D,loss\n1e8,2e9,3\n".encode("utf-16").decode("latin-1"), ["UTF-16"]),
    ]
    for key, value in (("N", "NaN"), ("N", "-1"), ("N", "0"), ("N", '"abc"'), ("N", "true"), ("N", "[1]"),
                       ("N", "1" + "0" * 400), ("D", "Infinity"), ("D", "-2e9"), ("D", '"x"'), ("loss", "-3"),
                       ("loss", "0"), ("loss", '"three"'), ("loss", "false")):
        shown = {"NaN": "nan", "Infinity": "inf", '"abc"': "abc", '"x"': "x", '"three"': "three", "true": "True",
                 "false": "False", "[1]": "[1]"}.get(value, value[:20])
        if value in ("-1", "0", "-2e9", "-3"):
            shown = repr(float(value))
        cases.append((f"jsonl-{key}-{len(cases)}.jsonl", jsonl_with(key, value), [f"{key} = ", shown]))
    cases += [
        ("jsonl-missing.jsonl", '{"N": 1e8, "D": 2e9}\n', ["missing loss"]),
        ("jsonl-not-json.jsonl", '{"N": 1e8, "D": 2e9, "loss": 3\n', ["not a JSON line"]),
        ("jsonl-array-line.jsonl", "[1, 2]\n", ["record 0: expected an object"]),  # read as a JSON list
        ("jsonl-empty.jsonl", "", ["no runs to fit"]),
        ("jsonl-bad-format.jsonl", '{"N": 1e8, "D": 2e9, "loss": 3, "weights": "int99q"}\n', ["int99q"]),
        ("json-empty-list.json", "[]", ["no runs to fit"]),
    ]
    if not QUEST.is_file():  # collected with no ../shared/data (an unpacked sdist): the rest need QuEST's runs
        return cases
    cases += [
        ("quest-loss.json", quest_with(loss=-1.5), ["loss = -1.5"]),
        ("quest-tokens.json", quest_with(tokens="many"), ["tokens = 'many'"]),
        ("quest-params-null.json", quest_with(non_embedding_parameters=None), ["non_embedding_parameters = None"]),
        ("quest-bits.json", quest_with(w_quant="TrustQuantizer", w_bits=4.5), ["bits=4.5"]),
        ("quest-bits-text.json", quest_with(w_quant="TrustQuantizer", w_bits="4"), ["w_bits = '4'"]),
        ("quest-quantizer.json", quest_with(w_quant="MagicQuantizer"), ["MagicQuantizer"]),
        ("quest-missing.json", quest_with(a_quant="<drop>"), ["a_quant"]),
        ("quest-args.json", quest_with(args=[1]), ["args = [1]"]),
        ("quest-record.json", json.dumps([*quest_records(3), 7]), ["record 3"]),
    ]
    return cases


def assert_one_error_line(code: int, err: str, *names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for name in names:
        assert name.lower() in lines[0].lower(), (name, lines[0])


@pytest.mark.parametrize("name, contents, names", bad_inputs(), ids=[c[0] for c in bad_inputs()])
def test_bad_runs_file_is_one_error_line(tmp_path, name, contents, names):
    path = tmp_path / name
    path.write_bytes(contents.encode("latin-1") if "utf16" in name else contents.encode())
    code, out, err = uscl("fit", str(path), "--model", "dense", "--no-heldout", "--json")
    assert out == ""
    assert_one_error_line(code, err, *names)


@pytest.mark.parametrize("option", [
    ("--where", "N>=abc", "abc"), ("--where", "nosuchkey=1", "nosuchkey"), ("--where", "N", "KEY OP VALUE"),
    ("--where", "N>1e30", "no runs left"), ("--exclude-worst", "7", "7"), ("--exclude-worst", "-2", "-2"),
    ("--exclude-worst", "two", "--exclude-worst"), ("--fix", "alpha=abc", "alpha=abc"), ("--fix", "A=-3", "A"),
    ("--fix", "E=nan", "E"), ("--fix", "beta=inf", "beta"), ("--fix", "gamma_w=2", "gamma_w"), ("--fix", "alpha", "alpha"),
])
def test_bad_selection_or_fix_is_one_error_line(tmp_path, option):
    path = tmp_path / "runs.csv"
    path.write_text(csv_with("3.5", 2))
    code, out, err = uscl("fit", str(path), "--model", "dense", "--no-heldout", option[0], option[1])
    assert out == ""
    assert_one_error_line(code, err, option[2])


def test_where_and_exclude_worst_keep_the_runs_a_plain_filter_keeps(tmp_path):
    from gmse_cli.runs import exclude_worst, load_runs, select

    rng = np.random.default_rng(14)
    rows = []
    for _ in range(60):
        N = float(rng.choice([3e7, 1e8, 3e8]))
        w, a = str(rng.choice(["bf16", "int4", "had128+int3"])), str(rng.choice(["", "had128+int4"]))
        rows.append({"N": N, "D": N * float(rng.choice([10, 25, 80])), "loss": float(rng.choice([2.5, 3.0, 3.1, 3.5])),
                     "weights": w, "activations": a, "seed": int(rng.integers(3)), "tag": str(rng.choice(["x", "yz"]))})
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights,activations,seed,tag\n" + "".join(
        f"{r['N']},{r['D']},{r['loss']},{r['weights']},{r['activations']},{r['seed']},{r['tag']}\n" for r in rows))
    runs = load_runs(path)

    def bits(spec: str) -> float:
        return 16.0 if spec in ("", "bf16") else float(spec[-1])

    filters = {
        "N>=1e8": lambda r: r["N"] >= 1e8, "N < 1e8": lambda r: r["N"] < 1e8, "scheme~INT": lambda r: "int" in r["weights"] + r["activations"],
        "weights!~had": lambda r: "had" not in r["weights"], "w_bits=4": lambda r: bits(r["weights"]) == 4,
        "a_bits!=16": lambda r: bits(r["activations"]) != 16, "activations=none": lambda r: r["activations"] == "",
        "tpp<=25": lambda r: r["D"] / r["N"] <= 25, "seed=2": lambda r: r["seed"] == 2, "tag=YZ": lambda r: r["tag"] == "yz",
        "loss>3": lambda r: r["loss"] > 3, "D==3e9": lambda r: r["D"] == 3e9,
    }
    for expr, keep in filters.items():
        got = select(runs, [expr])
        assert [(r.N, r.D, r.loss) for r in got] == [(r["N"], r["D"], r["loss"]) for r in rows if keep(r)], expr
    both = select(runs, ["N>=1e8", "w_bits=4"])
    assert len(both) == sum(r["N"] >= 1e8 and bits(r["weights"]) == 4 for r in rows)
    # dropping the k highest losses drops every run tied with the k-th highest
    for k in (1, 3, 10):
        cut = sorted(r["loss"] for r in rows)[-k]
        assert [r.loss for r in exclude_worst(runs, k)] == [r["loss"] for r in rows if r["loss"] < cut]


def test_kumar_gamma_of_a_single_precision_is_held_not_reported_as_fitted(tmp_path):
    """Regression: on runs whose activations are all 16-bit (a weight-only sweep), Kumar's
    1 - exp(-16 / gamma_a) is one factor on every N, so gamma_a only rescales A; the fit reported
    it as fitted (source 'fit') at whatever value its start left it. Now it is held where the factor
    is 1, and says so; the rest is the fit with that factor 1."""
    recs = [r for r in kumar_runs(seed=4) if r["activations"] is None][::2]  # 6 sizes x 2 D/N per scheme
    result = library_fit_json(write_jsonl(tmp_path / "runs.jsonl", recs), "kumar")
    gamma_a = result["constants"]["gamma_a"]
    assert gamma_a["fixed"] and gamma_a["source"].startswith("held") and gamma_a["value"] == pytest.approx(16 / 40)
    assert any(note.startswith("gamma_a held") for note in result["notes"])
    assert not result["constants"]["gamma_w"]["fixed"]
    N, D, loss, pw, pa = (np.array([r[k] for r in recs], float) for k in ("N", "D", "loss", "pw", "pa"))
    prob = kumar_problem(N, D, loss, pw, pa, 1e-3)
    z, f = prob.multistart(prob.law_starts([(0.0, math.log(0.4)), (1.0, math.log(0.4))]), hold=[6])
    assert 1.0 - math.exp(-16 / 0.4) == 1.0  # the held factor is 1 in double precision
    assert result["objective"] == pytest.approx(f, rel=1e-9)
    assert constants_of(result, (*LAW, "gamma_w")) == pytest.approx({**prob.to_public(z), "gamma_w": math.exp(z[5])},
                                                                    rel=2e-6)
