"""Fits at the sizes real users bring: memory per objective call stays bounded.

A dense fit starts from 4,500 points and a held-out refit batch from every problem's starts;
the objective's temporaries are (starts, runs), so at 10,000 runs one call took 360 MB per
array (561 MB peak RSS for `uscl fit` of 10,000 runs, against 222 MB at 1,000) and at 50,000
runs gigabytes. Rows now go through the objective in chunks of at most MAX_CELLS cells.
"""

from __future__ import annotations

import numpy as np
import pytest

from gmse_cli.fit import problem as problem_module
from gmse_cli.fit.objective import LossObjective
from gmse_cli.fit.parts import NoCapacity
from gmse_cli.fit.problem import Problem, epoch_grid, multistart, multistart_many

TRUE = {"A": 400.0, "alpha": 0.34, "B": 2000.0, "beta": 0.37, "E": 1.8}


def _noiseless_runs(n: int):
    """Runs on a grid of N and D/N whose loss is exactly the Chinchilla form."""
    rng = np.random.default_rng(0)
    N = 10 ** rng.uniform(6, 9, n)
    D = N * rng.choice([5.0, 20.0, 100.0, 400.0], n)
    loss = TRUE["A"] * N ** -TRUE["alpha"] + TRUE["B"] * D ** -TRUE["beta"] + TRUE["E"]
    return np.log(N), np.log(D), np.log(loss)


def _spied_problem(n: int, monkeypatch, cells: int):
    logN, logD, y = _noiseless_runs(n)
    objective = LossObjective(logN, logD, y, NoCapacity(), 1e6)  # least squares
    seen: list[tuple[int, int]] = []  # rows of theta and of the weights in each call
    real = objective.value_grad

    def spy(theta, weights=None, **kw):
        seen.append((theta.shape[0], 0 if weights is None else np.shape(weights)[0]))
        return real(theta, weights, **kw)

    monkeypatch.setattr(objective, "value_grad", spy)
    monkeypatch.setattr(problem_module, "MAX_CELLS", cells)
    return Problem(objective, {}), objective, seen


def test_dense_multistart_keeps_each_call_within_the_cell_budget(monkeypatch):
    n = 200
    problem, objective, seen = _spied_problem(n, monkeypatch, cells=25 * n)
    starts = objective.from_public(epoch_grid()[::15])  # 300 starts
    x, _, _, _ = multistart(problem, starts)
    assert max(rows for rows, _ in seen) <= 25
    A, alpha, B, beta, E = objective.to_public(x)[0]
    # least squares on noiseless data recovers the generating constants
    assert np.exp(A) == pytest.approx(TRUE["A"], rel=1e-3)
    assert alpha == pytest.approx(TRUE["alpha"], rel=1e-4)
    assert np.exp(B) == pytest.approx(TRUE["B"], rel=1e-3)
    assert beta == pytest.approx(TRUE["beta"], rel=1e-4)
    assert np.exp(E) == pytest.approx(TRUE["E"], rel=1e-5)


def test_chunked_value_and_gradient_match_the_closed_form(monkeypatch):
    n = 100
    problem, objective, seen = _spied_problem(n, monkeypatch, cells=7 * n)
    logN, logD, y = _noiseless_runs(n)
    rng = np.random.default_rng(1)
    public = np.column_stack([rng.uniform(4, 7, 40), rng.uniform(0.2, 0.5, 40), rng.uniform(6, 9, 40),
                              rng.uniform(0.2, 0.5, 40), rng.uniform(0.3, 0.8, 40)])
    f, g = problem.fun()(objective.from_public(public), np.arange(40))
    assert max(rows for rows, _ in seen) <= 7
    logA, alpha, logB, beta, logE = (public[:, j : j + 1] for j in range(5))
    pred = np.log(np.exp(logA - alpha * logN) + np.exp(logB - beta * logD) + np.exp(logE))
    np.testing.assert_allclose(f, 0.5 * ((pred - y) ** 2).sum(axis=1), rtol=1e-12)
    # d f / d logE in closed form (the same coordinate internally: centering moves only A and B)
    dlogE = ((pred - y) * np.exp(logE) / np.exp(pred)).sum(axis=1)
    np.testing.assert_allclose(g[:, 4], dlogE, rtol=1e-9, atol=1e-15)


def test_held_out_batches_send_weights_in_chunks(monkeypatch):
    n = 120
    problem, objective, seen = _spied_problem(n, monkeypatch, cells=10 * n)
    weights = np.ones((3, n))
    weights[1, :40] = 0.0  # three problems: all runs, and two with a third of the runs left out
    weights[2, 80:] = 0.0
    starts = objective.from_public(epoch_grid()[::150])  # 30 starts x 3 problems
    x, _, ok, _ = multistart_many(problem, starts, weights)
    assert ok.all()
    assert max(rows for rows, _ in seen) <= 10
    assert max(w_rows for _, w_rows in seen) <= 10
    for row in objective.to_public(x):
        assert row[1] == pytest.approx(TRUE["alpha"], rel=1e-3)
