"""The published evidence shown beside the domain flag, re-derived from QuEST's runs by a
decoupled fit written here (scipy, not uscl's fitter): one free capacity per scheme, bf16 at
capacity 1, Loss = A (N rho)^-alpha + B D^-beta + E, Huber (delta 1e-3) on log-loss. The
schemes are read from the raw quantizer names: Hadamard (and HalfHadamard) variants rotated,
Trust/Clip quantizers unrotated, both tensors at the same width."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import minimize

from gmse_cli.law import UNROTATED_EVIDENCE, evidence_line
from gmse_cli.spec import resolve_format

_DELTA = 1e-3


def _scheme(run: dict) -> str:
    def tensor(q: str, bits: int) -> str:
        if q == "NoQuantizer":
            return "none"
        kind = "48" if "FourEight" in q else "fp4" if "FP4" in q else "int"
        return f"{'had' if 'Hadamard' in q else 'plain'}-{kind}{bits}"
    w, a = tensor(run["w_quant"], run["w_bits"]), tensor(run["a_quant"], run["a_bits"])
    return "bf16" if w == a == "none" else f"W:{w} A:{a}"


def _decoupled(runs: list[dict]) -> dict[str, tuple[float, int]]:
    names = sorted({_scheme(r) for r in runs} - {"bf16"})
    idx = np.array([names.index(_scheme(r)) if _scheme(r) != "bf16" else len(names) for r in runs])
    logN = np.log([r["non_embedding_parameters"] for r in runs])
    logD = np.log([r["tokens"] for r in runs])
    y = np.log([r["loss"] for r in runs])

    def objective(p):
        lA, alpha, lB, beta, lE = p[:5]
        log_rho = np.append(p[5:], 0.0)[idx]
        t1, t2, E = np.exp(lA - alpha * (logN + log_rho)), np.exp(lB - beta * logD), np.exp(lE)
        pred = t1 + t2 + E
        r = np.log(pred) - y
        huber = np.where(np.abs(r) <= _DELTA, 0.5 * r * r, _DELTA * (np.abs(r) - 0.5 * _DELTA))
        d = np.clip(r, -_DELTA, _DELTA) / pred
        grad = np.r_[np.sum(d * t1), -np.sum(d * t1 * (logN + log_rho)), np.sum(d * t2), -np.sum(d * t2 * logD),
                     np.sum(d * E), np.bincount(idx, -alpha * d * t1, minlength=len(names) + 1)[:-1]]
        return huber.sum(), grad

    bounds = [(-10, 15), (1e-3, 3), (-10, 20), (1e-3, 3), (-60, 1.5)] + [(-12, 1)] * len(names)
    best = min((minimize(objective, np.r_[np.log(a), al, np.log(b), be, np.log(e), np.full(len(names), -0.5)],
                         jac=True, method="L-BFGS-B", bounds=bounds,
                         options={"maxiter": 20000, "ftol": 1e-14, "gtol": 1e-10})
                for a, al, b, be, e in ((8, 0.063, 100, 0.25, 1e-3),)),
               key=lambda res: res.fun)
    counts = np.bincount(idx, minlength=len(names) + 1)
    return {name: (float(np.exp(best.x[5 + i])), int(counts[i])) for i, name in enumerate(names)}


@pytest.mark.slow
def test_unrotated_evidence_is_what_the_runs_say(shared_data):
    rho = _decoupled(json.loads((shared_data / "quest_runs.json").read_text()))
    assert len(UNROTATED_EVIDENCE) == 5
    for row in UNROTATED_EVIDENCE:
        plain, n_runs = rho[f"W:plain-int{row.bits} A:plain-int{row.bits}"]
        rotated, _ = rho[f"W:had-int{row.bits} A:had-int{row.bits}"]
        # Near-L1 Huber leaves W2A2's optimum flat: starts land at 0.0777-0.0815 within 0.2% of
        # one objective, all inside the shipped bootstrap interval; the other widths agree to 5e-4.
        assert row.rho == pytest.approx(plain, abs=5e-3 if row.bits == 2 else 5e-4)
        assert row.rho_low < plain < row.rho_high
        assert row.rho_rotated == pytest.approx(rotated, abs=5e-4)
        assert row.n_runs == n_runs
        line = evidence_line(resolve_format(f"int{row.bits}"))
        assert f"({row.rho / row.rho_rotated:.0%};" in line and f"its {n_runs} runs" in line
        if row.bits != 2:
            assert f"{plain / rotated:.0%}" == f"{row.rho / row.rho_rotated:.0%}"
