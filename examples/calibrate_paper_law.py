"""Regenerate the shipped default law, gmse_cli/laws/paper-llama-c4.toml.

    python examples/calibrate_paper_law.py                 # writes the shipped file
    python examples/calibrate_paper_law.py --check         # regenerate and compare, write nothing

The check compares the constants to 1e-6 and the joint draws column by column, except A and B,
which it compares through the losses each row predicts (see ``_draws_differences``: in a few
rows B collapses toward 0, where the data cannot pin it down).

Where every constant comes from (the same words go into each constant's provenance):

1. alpha, beta, E and the quantization curve (L, F, C): the paper's fitted constants for Llama
   on C4, with their 1-sigma (arXiv 2506.01863; shared/reference/paper.md, section 1).
2. The sparsity curve: the paper's L, F, C belong to quantization only, so sparsity gets its own
   curve, fitted (Huber on rho, delta 1e-4, as the paper fits capacity shapes) to the paper's
   unstructured-magnitude capacities .95 ... .35 at sparsity .1 ... .9 placed at the
   closed-form magnitude-pruning GMSE (2 Phi(t) - 1) - 2 t phi(t), t = Phi^-1((1 + s) / 2).
   Sigma and interval: bootstrap over the nine points.
3. Vector quantization: no separate curve is published; VQ formats sit on the quantization
   curve by their GMSE (the paper's claim that one GMSE curve predicts a family of grids), so
   the quantization constants are copied, and the provenance says so.
4. A and B are not published. They are fitted on QuEST's 104 public runs (shared/data,
   quest_runs.json: the same Llama/C4 setup, GPT-2 tokenizer) with every other constant held
   at the values above: each run's capacity is the product of its stages' capacities from
   their GMSEs (weights x activations, sparsity x quantization; the bf16 baseline at the rho
   of the bf16 GMSE). Huber on log-loss (delta 1e-3). All 104 runs, the 24 that quantize
   activations without a rotation (outside the law's domain, which ``uscl fit`` leaves out of
   its fits) included: the shipped law's recipe, kept until the law is recalibrated.
5. Joint draws ([draws] in the file), because A and B trade off against alpha, beta and E: per
   draw, alpha, beta, E and the quantization F, C from their marginals (as gmse_cli.law draws
   them: the paper's sigma, truncated to the physical domain; L held, as the law holds it), the
   sparsity curve refitted on a bootstrap resample of its nine points, and A, B refitted on the
   QuEST runs resampled within schemes (uscl fit's bootstrap) with everything else held at the
   drawn values -- so A, B compensate the drawn constants as the data demand. A's and B's sigma
   and interval in the file are the marginals of these draws.

The script prints the fit error (RMSE of log-loss) on the QuEST runs, the per-scheme mean
residual, and the law's weights x activations capacities beside the paper's table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gmse_cli import __version__  # noqa: E402
from gmse_cli.errors import FitError  # noqa: E402
from gmse_cli.fit import CapacityPoint, GmseCache, fit, fit_capacity, run_stages  # noqa: E402

# The fit's own bootstrap pieces too, so the joint draws group, resample and summarize exactly
# as `uscl fit --bootstrap` does.
from gmse_cli.fit.design import group_by_scheme  # noqa: E402
from gmse_cli.fit.resampling import bootstrap_weights, percentiles  # noqa: E402
from gmse_cli.law import (  # noqa: E402
    Constant,
    FamilyCurve,
    Law,
    LawDraws,
    fitted_range_of,
    load_law,
    sample_law,
    save_law,
)
from gmse_cli.runs import Run, load_quest_runs  # noqa: E402
from gmse_cli.spec import Family  # noqa: E402

PAPER = "paper (Panferov et al. 2025, arXiv 2506.01863), fitted constants for Llama on C4, +/- 1 sigma by bootstrap"
# (value, 1-sigma) as reported; shared/reference/paper.md section 1.
PAPER_LAW = {"alpha": (0.13, 0.05), "beta": (0.33, 0.06), "E": (1.3, 0.5)}
PAPER_QUANT = {"L": (1.0, 0.7), "F": (0.41, 0.02), "C": (1.39, 0.08)}
# Unstructured magnitude sparsity alone, read off the paper's figure (paper.md section 1).
PAPER_SPARSITY = [(0.1, 0.95), (0.2, 0.89), (0.3, 0.84), (0.4, 0.78), (0.5, 0.72),
                  (0.6, 0.64), (0.7, 0.56), (0.8, 0.47), (0.9, 0.35)]
# Weights x activations capacities of the paper (rows W bits, columns A bits; 16 = bf16).
PAPER_WA = {1: [.09, .15, .19, .20, .21], 2: [.15, .30, .40, .45, .45], 3: [.19, .42, .62, .70, .74],
            4: [.20, .46, .72, .85, .90], 16: [.21, .48, .76, .91, 1.00]}
BITS = [1, 2, 3, 4, 16]

SPARSITY_DELTA = 1e-4  # Huber delta on rho, as the paper fits capacity shapes
# 300 joint draws, each a refit of A and B (~0.03 s). A sparsity refit costs ~0.5 s (a full
# start grid), so fewer are made and the draws cycle through them: the nine sparsity points and
# the QuEST runs are independent data, so any pairing is a draw from the joint distribution.
DEFAULT_JOINT_DRAWS = 300
DEFAULT_SPARSITY_REFITS = 50
# Draws are stored to 6 significant digits: far below their spread, and the file stays readable.
DRAW_DIGITS = 6

DEFAULT_OUT = REPO / "gmse_cli" / "laws" / "paper-llama-c4.toml"
DEFAULT_DATA = REPO.parent / "shared" / "data" / "quest_runs.json"


def magnitude_gmse(s: float) -> float:
    try:
        from gmse_cli.compress.sparsity import magnitude_gmse as engine
    except ImportError:  # the formula itself, for a checkout without the compressors
        from scipy.stats import norm

        t = norm.ppf((1 + s) / 2)
        return float((2 * norm.cdf(t) - 1) - 2 * t * norm.pdf(t))
    return float(engine(s))


def paper_constant(value: float, sigma: float, what: str) -> Constant:
    # The paper reports a 1-sigma only; no interval is invented for it.
    return Constant(value=value, sigma=sigma, provenance=f"{PAPER}; {what}")


def sparsity_points() -> list[CapacityPoint]:
    return [CapacityPoint(name=f"sparse-{round(100 * s)}", stages=((Family.SPARSITY, magnitude_gmse(s)),), rho=rho)
            for s, rho in PAPER_SPARSITY]


def calibrate_sparsity(bootstrap: int, seed: int) -> tuple[FamilyCurve, float, list[tuple[float, float, float, float]]]:
    points = sparsity_points()
    cf = fit_capacity(points, huber_delta=SPARSITY_DELTA, bootstrap=bootstrap, seed=seed, curve="tanh")
    how = ("calibrated here: Huber (delta 1e-4) fit of rho = L tanh(F log_1/4 GMSE)^C to the paper's "
           "unstructured-magnitude sparsity capacities (.95 .89 .84 .78 .72 .64 .56 .47 .35 at sparsity "
           ".1-.9, read off its figure) at the closed-form magnitude GMSE; sigma and 95% interval from "
           f"{bootstrap} bootstrap resamples of the 9 points (examples/calibrate_paper_law.py)")
    curve = FamilyCurve(**{
        k: Constant(value=cf.constants[f"sparsity.{k}"].value, sigma=cf.constants[f"sparsity.{k}"].sigma,
                    low=cf.constants[f"sparsity.{k}"].low, high=cf.constants[f"sparsity.{k}"].high, provenance=how)
        for k in ("L", "F", "C")
    })
    table = [(s, p.stages[0][1], p.rho, pred) for (s, _), p, pred in zip(PAPER_SPARSITY, points, cf.predicted, strict=True)]
    return curve, cf.fit_error, table


def sparsity_refits(count: int, rng: np.random.Generator) -> list[dict[str, float]]:
    """``count`` refits of the sparsity curve on bootstrap resamples of its nine points.

    A resample's best fit occasionally leaves the physical domain (L > 1: more capacity than
    dense, which the law forbids); such refits are replaced by further resamples.
    """
    points = sparsity_points()
    out: list[dict[str, float]] = []
    candidates = bootstrap_weights(np.zeros(len(points), dtype=int), 2 * count, rng)
    for counts in candidates:
        cf = fit_capacity([p.model_copy(update={"weight": float(c)}) for p, c in zip(points, counts, strict=True)],
                          huber_delta=SPARSITY_DELTA, curve="tanh")
        curve = {f"sparsity.{k}": cf.constants[f"sparsity.{k}"].value for k in ("L", "F", "C")}
        if curve["sparsity.L"] <= 1.0:
            out.append(curve)
        if len(out) == count:
            return out
    raise SystemExit(f"error: only {len(out)} of {len(candidates)} sparsity refits kept L <= 1")


def joint_draws(point: Law, runs: list[Run], *, draws: int, refits: int, seed: int) -> tuple[LawDraws, int]:
    """Rows of (A, alpha, B, beta, E, curves) drawn together (module docstring, step 5), and
    how many A, B refits failed (those rows are dropped).

    ``runs`` must carry their stage GMSEs (``stage_gmse``) so a refit computes none.
    """
    rng = np.random.default_rng(seed)
    marginal = sample_law(point, draws=draws, rng=rng)  # the law's own model of its marginals
    _, scheme_of_run = group_by_scheme(runs)
    run_counts = bootstrap_weights(scheme_of_run, draws, rng)
    sparsity = sparsity_refits(refits, rng)
    # With only log A and log B free, one start at the point fit finds what the fit's start grid
    # finds, five times faster (checked on all 300 rows: the same to 6 digits, except B in the
    # rows where it collapses below 1e-4, where B D^-beta < 1e-8 and the predictions agree).
    start = np.array([[math.log(point.A.value), point.alpha.value, math.log(point.B.value), point.beta.value,
                       math.log(point.E.value)]])

    quant_L, quant_F, quant_C = marginal.curves[Family.QUANTIZATION]
    rows: list[dict[str, float]] = []
    for k in range(draws):
        held = {"alpha": marginal.alpha[k], "beta": marginal.beta[k], "E": marginal.E[k],
                "quantization.L": quant_L[k], "quantization.F": quant_F[k], "quantization.C": quant_C[k],
                **sparsity[k % refits]}
        resampled = [run for run, count in zip(runs, run_counts[k], strict=True) for _ in range(int(count))]
        try:
            refit = fit(resampled, model="unified", curve="tanh", fixed=held, starts=start, loso=False, sensitivity=False,
                        profile=False, fit_outside=True)
        except FitError:
            continue
        rows.append(held | {"A": refit.A, "B": refit.B})
    # L is held (no column); VQ sits on the quantization curve, so its F, C move with it.
    names = ["A", "alpha", "B", "beta", "E", "quantization.F", "quantization.C", "sparsity.L", "sparsity.F",
             "sparsity.C"]
    constants = {name: tuple(float(f"{row[name]:.{DRAW_DIGITS}g}") for row in rows) for name in names}
    constants |= {f"vq.{k}": constants[f"quantization.{k}"] for k in ("F", "C")}
    failed = draws - len(rows)
    provenance = (
        f"{len(rows)} joint draws by examples/calibrate_paper_law.py (seed {seed}"
        + (f"; {failed} of {draws} A, B refits failed to converge and were dropped" if failed else "")
        + "): each row draws alpha, beta, E and the quantization F, C from their marginals in this file "
        "(normal with the paper's sigma, truncated to alpha, beta, F, C > 0 and E > 0, as gmse_cli.law "
        f"draws them), takes the sparsity L, F, C from one of {refits} refits of that curve on bootstrap "
        "resamples of its 9 points (rows cycle through them; refits with L > 1 are replaced), and refits A and B "
        "on QuEST's runs resampled within schemes (Huber on log-loss, as the point fit) with everything else "
        "held at the row's values, so A and B compensate the drawn constants as the data demand. Quantization "
        "L is held at its value (no column: not identified apart from A; see gmse_cli.law, vary_L). The vq "
        f"columns copy the quantization ones (VQ sits on the quantization curve). Values to {DRAW_DIGITS} "
        "significant digits"
    )
    return LawDraws(provenance=provenance, constants=constants), failed


def with_stage_gmse(runs: list[Run], gmse: GmseCache) -> list[Run]:
    """The runs with their stages' GMSEs recorded, computed once for every refit."""
    return [r.model_copy(update={"stage_gmse": tuple((f.value, g) for f, g in run_stages(r, gmse))}) for r in runs]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="QuEST quest_runs.json")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--bootstrap", type=int, default=1000,
                    help="bootstrap refits for the sparsity curve's sigma (and A, B's, conditional on the rest)")
    ap.add_argument("--draws", type=int, default=DEFAULT_JOINT_DRAWS, help="joint draws of the constants")
    ap.add_argument("--sparsity-refits", type=int, default=DEFAULT_SPARSITY_REFITS,
                    help="bootstrap refits of the sparsity curve the joint draws cycle through")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--date", default=dt.date.today().isoformat(), help="date written into [meta]")
    ap.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    args = ap.parse_args(argv)
    if not args.data.is_file():
        print(f"error: {args.data} not found (QuEST runs; see shared/data/README.md)", file=sys.stderr)
        return 2

    # 1-3: the published constants, the sparsity curve, VQ.
    sparsity, sparsity_err, table = calibrate_sparsity(args.bootstrap, args.seed)
    quant = FamilyCurve(**{k: paper_constant(v, s, f"quantization curve constant {k}") for k, (v, s) in PAPER_QUANT.items()})
    vq_note = ("copied from the quantization curve: the paper publishes no separate vector-quantization "
               "curve, and VQ formats sit on the scalar-quantization GMSE curve (the paper's unified-law claim); "
               "treat as uncertain")
    vq = FamilyCurve(**{k: c.model_copy(update={"provenance": f"{vq_note}; {c.provenance}"})
                        for k, c in (("L", quant.L), ("F", quant.F), ("C", quant.C))})

    # 4: A and B on the QuEST runs, everything else held.
    runs = load_quest_runs(args.data)
    fixed = {k: v for k, (v, _) in PAPER_LAW.items()}
    fixed |= {f"quantization.{k}": v for k, (v, _) in PAPER_QUANT.items()}
    fixed |= {f"sparsity.{k}": getattr(sparsity, k).value for k in ("L", "F", "C")}
    gmse = GmseCache(seed=args.seed)
    # All runs, the unrotated W+A ones too (fit_outside): the shipped recipe.
    res = fit(runs, model="unified", curve="tanh", fixed=fixed, bootstrap=args.bootstrap, seed=args.seed, gmse=gmse,
              loso=False, profile=False, fit_outside=True, data_files=[str(args.data)])
    digest = hashlib.sha256(args.data.read_bytes()).hexdigest()
    how_ab = (f"calibrated here: fitted on QuEST's {res.n_runs} public runs ({args.data.name}, sha256 {digest[:16]}; "
              "Llama/C4, GPT-2 tokenizer) with alpha, beta, E and every capacity curve held at the values in "
              "this file; capacity = product of per-stage rho from each stage's GMSE (weights x activations, "
              f"sparsity x quantization, bf16 at the rho of its GMSE); Huber on log-loss (delta {res.huber_delta:g}), "
              f"L-BFGS; fit error (RMSE of log-loss) {res.fit_error:.4f}. Sigma and 95% interval: the marginal of "
              "this file's [draws], whose A, B refits compensate the drawn alpha, beta, E and curves (strongly "
              "correlated with them: draw intervals from the rows, not from this marginal)")

    def fitted(key: str, draws: LawDraws) -> Constant:
        c = res.constants[key]
        low, high, sigma = (float(x) for x in percentiles(np.asarray(draws.constants[key])))
        conditional = "" if c.sigma is None else (
            f"; conditional on the held constants, {res.bootstrap} bootstrap refits alone give {key} +/- "
            f"{c.sigma:.3g} (95% [{c.low:.4g}, {c.high:.4g}])")
        return Constant(value=c.value, sigma=sigma, low=low, high=high, provenance=how_ab + conditional)

    # The point law the draws start from: A, B as fitted, the other constants with their marginals.
    point = Law(
        name="paper-llama-c4", A=Constant(value=res.A, provenance="point fit"),
        B=Constant(value=res.B, provenance="point fit"),
        alpha=paper_constant(*PAPER_LAW["alpha"], "scaling exponent of parameters"),
        beta=paper_constant(*PAPER_LAW["beta"], "scaling exponent of tokens"),
        E=paper_constant(*PAPER_LAW["E"], "irreducible loss"),
        families={Family.QUANTIZATION: quant, Family.SPARSITY: sparsity},
    )
    started = time.perf_counter()
    draws, failed = joint_draws(point, with_stage_gmse(runs, gmse), draws=args.draws, refits=args.sparsity_refits,
                                seed=args.seed)
    seconds = time.perf_counter() - started

    law = Law(
        name="paper-llama-c4",
        description=("The paper's Llama/C4 law (alpha, beta, E, quantization curve) with a sparsity curve "
                     "calibrated to its reported sparsity capacities and A, B calibrated on QuEST's public "
                     "runs; regenerate with examples/calibrate_paper_law.py"),
        meta={
            "source": "arXiv 2506.01863 (Panferov et al., Unified Scaling Laws for Compressed Representations)",
            "generated_by": "examples/calibrate_paper_law.py",
            "data": f"{args.data.name} (QuEST, IST-DASLab/QuEST for_plots/runs_for_scaling.json; sha256 {digest})",
            "runs": str(res.n_runs),
            "options": (f"A,B: unified fit, huber_delta={res.huber_delta:g}, bootstrap={res.bootstrap}, seed={args.seed}; "
                        f"sparsity: capacity fit, huber_delta={SPARSITY_DELTA:g}, bootstrap={args.bootstrap}; "
                        f"draws={args.draws}, sparsity_refits={args.sparsity_refits}, seed={args.seed}"),
            "fit_error_quest": f"{res.fit_error:.6f}",
            "fit_error_sparsity_rho": f"{sparsity_err:.6f}",
            "date": args.date,
            "uscl_version": __version__,
        },
        A=fitted("A", draws),
        alpha=point.alpha,
        B=fitted("B", draws),
        beta=point.beta,
        E=point.E,
        families={Family.QUANTIZATION: quant, Family.SPARSITY: sparsity, Family.VQ: vq},
        fitted_range=fitted_range_of(
            [r.N for r in runs], [r.D for r in runs],
            provenance=(f"QuEST's {len(runs)} public runs ({args.data.name}), on which A and B were calibrated; "
                        "the paper's own sweep, which gave alpha, beta, E and the quantization curve, spans "
                        "30M-200M parameters at 50-200 tokens per parameter; GMSEs: the stages of those runs "
                        "and of the nine sparsity points the sparsity curve was calibrated on (no VQ run)"),
            stages=[*(st for r in runs for st in run_stages(r, gmse)), *(p.stages[0] for p in sparsity_points())]),
        draws=draws,
    )

    _report(law, res, table, sparsity_err, gmse)
    print(f"joint draws: {draws.rows} rows in {seconds:.0f} s ({failed} refits failed); marginal 95%: "
          f"A [{law.A.low:.4g}, {law.A.high:.4g}], B [{law.B.low:.4g}, {law.B.high:.4g}]")
    if args.check:
        shipped = load_law(args.out)
        bad = [k for k in ("A", "alpha", "B", "beta", "E")
               if not math.isclose(getattr(shipped, k).value, getattr(law, k).value, rel_tol=1e-6)]
        bad += [f"{f}.{k}" for f in law.families for k in ("L", "F", "C")
                if not math.isclose(getattr(shipped.families[f], k).value, getattr(law.families[f], k).value, rel_tol=1e-6)]
        bad += _draws_differences(shipped.draws, law.draws, runs)
        bad += [] if _same_range(shipped.fitted_range, law.fitted_range) else ["fitted_range"]
        print(f"check against {args.out}: " + ("identical constants" if not bad else f"DIFFERENT: {', '.join(bad)}"))
        return 1 if bad else 0
    save_law(law, args.out)
    print(f"wrote {args.out}")
    return 0


def _same_range(a, b) -> bool:
    """Two fitted ranges alike, their stage GMSEs to 1e-9 relative: quadrature's last digits
    move with the summation order (2.7610878602e-06 then ...6022e-06)."""
    if a is None or b is None or (a.gmse is None) != (b.gmse is None):
        return a == b
    if set(a.gmse or {}) != set(b.gmse or {}) or a.model_copy(update={"gmse": None}) != b.model_copy(update={"gmse": None}):
        return False
    return all(math.isclose(x, y, rel_tol=1e-9) for f in (a.gmse or {}) for x, y in zip(a.gmse[f], b.gmse[f], strict=True))


def _draws_differences(a: LawDraws | None, b: LawDraws | None, runs: list[Run]) -> list[str]:
    """What differs between two sets of joint draws, as the check reports it (empty: the same).

    Every column but A and B is drawn, not fitted, so it must match to the stored digits (refits
    may land a few ulps apart on another machine, which moves at most the last digit). A and B
    are refitted per row, and in a few rows B collapses toward 0 (B D^-beta below 1e-8 of the
    loss at every run): there the data cannot pin B down, and its value is the optimizer's
    accident, so comparing B itself fails for no reason. What a row means is the losses it
    predicts, so A and B are compared through them: each row's predicted loss at every run's
    (N, D) (capacity 1) must agree to 1e-5, far below the draws' spread.
    """
    if a is None or b is None:
        return [] if a is b else ["draws (one side has none)"]
    if a.constants.keys() != b.constants.keys():
        return [f"draws columns ({', '.join(sorted(a.constants.keys() ^ b.constants.keys()))})"]
    if a.rows != b.rows:
        return [f"draws rows ({a.rows} vs {b.rows})"]
    bad = [f"draws.{k}" for k in a.constants if k not in ("A", "B")
           and not np.allclose(a.constants[k], b.constants[k], rtol=10.0 ** (1 - DRAW_DIGITS), atol=0)]
    N = np.array([r.N for r in runs])[None, :]
    D = np.array([r.D for r in runs])[None, :]

    def loss(d: LawDraws) -> np.ndarray:
        c = {k: np.asarray(d.constants[k])[:, None] for k in ("A", "alpha", "B", "beta", "E")}
        return c["A"] * N ** -c["alpha"] + c["B"] * D ** -c["beta"] + c["E"]

    rel = np.abs(loss(a) / loss(b) - 1.0).max(axis=1)
    if np.any(rel > 1e-5):
        rows = np.flatnonzero(rel > 1e-5)
        bad.append(f"draws predictions (rows {', '.join(map(str, rows[:5]))}{' ...' if len(rows) > 5 else ''}: "
                   f"up to {rel.max():.2g} relative)")
    return bad


def _report(law: Law, res, table, sparsity_err: float, gmse) -> None:
    from gmse_cli.gmse import gmse_of

    print(f"sparsity curve: L={law.families[Family.SPARSITY].L.value:.4f} F={law.families[Family.SPARSITY].F.value:.4f} "
          f"C={law.families[Family.SPARSITY].C.value:.4f}  (RMSE of rho {sparsity_err:.4f})")
    print("  sparsity  GMSE      paper rho  law rho")
    for s, g, rho, pred in table:
        print(f"  {s:8.1f}  {g:.6f}  {rho:9.2f}  {pred:7.3f}")
    print(f"A = {law.A.value:.4g} +/- {law.A.sigma:.3g}   B = {law.B.value:.4g} +/- {law.B.sigma:.3g}")
    print(f"QuEST runs: {res.n_runs}, fit error (RMSE of log-loss) = {res.fit_error:.4f}")
    by_scheme: dict[str, list[float]] = {}
    for r in res.residuals:
        by_scheme.setdefault(r.scheme, []).append(r.residual)
    print("  mean log-residual (predicted - observed) by scheme:")
    for scheme, values in sorted(by_scheme.items(), key=lambda kv: np.mean(kv[1])):
        print(f"  {np.mean(values):+.4f}  ({len(values):2d} runs)  {scheme}")
    curve = law.families[Family.QUANTIZATION]
    rho = {b: curve.rho(gmse_of("bf16" if b == 16 else f"int{b}").gmse) for b in BITS}
    print("weights x activations capacity: law (product of per-tensor rho) / paper")
    print("  W\\A " + "".join(f"{a:>13d}" for a in BITS))
    errs = []
    for w in BITS:
        cells = []
        for j, a in enumerate(BITS):
            pred = rho[w] * rho[a]
            errs.append(pred - PAPER_WA[w][j])
            cells.append(f"{pred:6.3f}/{PAPER_WA[w][j]:.2f}")
        print(f"  {w:3d} " + "".join(f"{c:>13s}" for c in cells))
    print(f"  RMS difference from the paper's table: {float(np.sqrt(np.mean(np.square(errs)))):.3f}")


if __name__ == "__main__":
    sys.exit(main())
