"""The race: measure cheaply, prune by bounds and paired standard errors, refine the rest.

1. *Rate-distortion bound* (Gaussian objective only). A stage of b bits per parameter has
   GMSE >= 4^-b, so its capacity is at most rho_family(4^-b). A candidate whose bound (for a
   composite: the sparsity stage's measured capacity times its quantizer's bound) falls below
   the conservative frontier already found at its bit cost is dropped unmeasured.
2. *A cheap pass.* Every other candidate is measured on a few rows of one shared sample bank
   (common random numbers: candidates see the same Gaussian rows).
3. *Refinement* on 4x more rows per level. A candidate stays if it could open a new step of
   the reported frontier or be the best at the budget, judged by the standard error of its
   *paired* difference with the frontier member concerned (each measurement keeps every row's
   influence on it, so the pairing costs nothing); the survivors of the last level get the
   final estimate (exact quadrature where it exists, otherwise Monte Carlo on the same bank to
   ``rel_err``).
4. *Thinning.* The reported frontier is epsilon-Pareto: a member must beat the previous one
   by ``min_gain`` in relative capacity (fp32 vs bf16 row scales differ by 1/512 bit and
   nothing else); the best format at the budget is always reported.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from gmse_cli.errors import LawError, SpecError, bad_value
from gmse_cli.limits import MAX_SEARCH_BITS, check_seed, is_real
from gmse_cli.messages import note
from gmse_cli.search.evaluate import CheckpointEvaluator, Evaluator, GaussianEvaluator
from gmse_cli.search.frontier import Entry, Frontier, capacity_slope, pareto_frontier, thin
from gmse_cli.search.results import SearchPoint, SearchResult, StagePoint, compare_catalog
from gmse_cli.search.space import Pool, SearchSpace, build_pool
from gmse_cli.spec import DEFAULT_ROW_LENGTH, Family, Format

Progress = Callable[[str, int, int], None] | None


def _validate(budget: float, rel_err: float, z: float, rows_per_layer: int, min_gain: float) -> None:
    if not (is_real(budget) and 0 < budget <= MAX_SEARCH_BITS):  # nan fails both comparisons
        raise bad_value(SpecError, "budget", budget, "must be a number of bits per parameter above 0 and at most "
                        f"{MAX_SEARCH_BITS} (e.g. 4.25)")
    if not (0 < rel_err < 1):
        raise bad_value(SpecError, "rel_err", rel_err, "must be in (0, 1) (e.g. 1e-3)")
    if not z > 0:
        raise SpecError(f"z {z} must be positive (standard errors of margin when pruning)")
    if rows_per_layer < 2:
        raise bad_value(SpecError, "rows_per_layer", rows_per_layer, "must be at least 2")
    if not 0 <= min_gain < 1:
        raise SpecError(f"min_gain {min_gain} must be in [0, 1) (a relative capacity gain)")


def _t_margin(z: float, rows: int) -> float:
    """Student's t quantile, on ``rows - 1`` degrees of freedom, of the normal's confidence at ``z``."""
    from scipy import stats

    return float(stats.t.ppf(stats.norm.cdf(z), max(rows - 1, 1)))


class _Race:
    """What every phase of one search shares: each stage format is measured once per level
    (a composite shares its stages' measurements with every candidate that uses them), and a
    candidate's capacity is the law's product over its stages."""

    def __init__(self, law, evaluator: Evaluator, *, objective: str, lengths: Sequence[int], z: float) -> None:
        self.law = law
        self.evaluator = evaluator
        self.final_level = evaluator.levels
        self.objective = objective
        self.lengths = lengths
        self.z = z
        # Refinement prunes on paired standard errors from few rows (4 after the cheap pass):
        # a normal z on them dropped true frontier members (3.7% of capacity at 2.04 bits, seed
        # 1), so it prunes at Student's t quantile of z's confidence on rows - 1 degrees of
        # freedom. The cheap pass keeps z: it compares loose rate-distortion bounds.
        self.margins = tuple(_t_margin(z, rows) for rows in evaluator.level_rows)
        # (stages, level) -> (value, influence) below the final level, (value, std err) at it
        self.cache: dict[tuple[tuple, int], tuple[float, object]] = {}
        self.refused: set[tuple] = set()
        self.left_out = 0  # candidates of a family the law has no curve for: never measured

    def stage_value(self, fmt: Format, level: int):
        key = (fmt.stages, level)
        if key not in self.cache:
            if level == self.final_level:
                self.cache[key] = self.evaluator.final(fmt, self.cache.get((fmt.stages, self.final_level - 1)))
            else:
                self.cache[key] = self.evaluator.measure(fmt, level)
        return self.cache[key]

    def evaluate(self, entry: Entry, level: int) -> bool:
        """Measure every stage at ``level`` and combine the capacities (the paper's product);
        False if a compressor refuses the combination."""
        parts = []
        for family, fmt in entry.stages:
            if fmt.stages in self.refused:
                return False
            try:
                parts.append((family, *self.stage_value(fmt, level)))
            except SpecError:
                self.refused.add(fmt.stages)  # a combination the compressors reject: not a candidate
                return False
        rhos = []
        for family, value, spread in parts:
            rho_k, slope = capacity_slope(self.law, family, value)
            rhos.append((rho_k, slope, spread))
        rho = math.prod(r for r, _, _ in rhos)
        if level == self.final_level:
            var = sum((math.prod(r for j, (r, _, _) in enumerate(rhos) if j != k) * slope * se) ** 2
                      for k, (_, slope, se) in enumerate(rhos))
            entry.rho, entry.rho_se, entry.psi = rho, math.sqrt(var), None
        else:
            # d rho = sum_k (prod of the other factors) * rho_k' * d GMSE_k, row by row
            psi = sum(math.prod(r for j, (r, _, _) in enumerate(rhos) if j != k) * slope * infl
                      for k, (_, slope, infl) in enumerate(rhos))
            entry.rho, entry.psi = rho, np.asarray(psi, dtype=float)
            entry.rho_se = math.sqrt(float(entry.psi @ entry.psi))
        entry.level = level
        return True

    def rd_bound(self, family: Family, fmt: Format) -> float:
        # A stage of b bits per Gaussian entry has GMSE >= 4^-b (rate-distortion), hence
        # capacity <= rho(4^-b). Real weights obey no such bound.
        if self.objective != "gaussian":
            return 1.0
        return float(self.law.rho(family, 4.0 ** (-min(fmt.bits_per_param(n) for n in self.lengths))))

    def upper(self, family: Family, fmt: Format) -> float:
        """The cheap pass's capacity of one stage plus ``z`` standard errors."""
        value, psi = self.stage_value(fmt, 0)
        rho_k, slope = capacity_slope(self.law, family, value)
        return rho_k + self.z * abs(slope) * math.sqrt(float(psi @ psi))

    def point(self, entry: Entry) -> SearchPoint:
        """A fully measured entry as reported."""
        method = "monte-carlo"
        if len(entry.stages) == 1:
            joint = self.stage_value(entry.stages[0][1], self.final_level)
            method = self.evaluator.methods.get(entry.stages[0][1].stages, method)
        else:
            # The joint error of a composite is reported beside the factorized capacity, not
            # ranked on: the last level's rows (and their standard error) are enough.
            value, psi = self.evaluator.measure(entry.cand.spec, self.final_level - 1)
            joint = (value, math.sqrt(float(psi @ psi)))
        stages = []
        for family, fmt in entry.stages:
            value, se = self.stage_value(fmt, self.final_level)
            stages.append(StagePoint(family=family, name=fmt.display_name, gmse=value, std_err=se,
                                     method=self.evaluator.methods.get(fmt.stages, "monte-carlo")))
        spec = entry.cand.spec.model_copy(update={"name": entry.cand.name})
        return SearchPoint(
            name=entry.cand.name, bits_per_param=entry.cand.bits_per_param, gmse=joint[0],
            gmse_std_err=joint[1], gmse_method=method, rho=entry.rho, rho_std_err=entry.rho_se, spec=spec,
            stages=tuple(stages), source=entry.cand.source, fitted_gmse_recorded=self.law.fitted_gmse_recorded,
            beyond_fitted_gmse=self.law.beyond_fitted_gmse((s.family, s.gmse) for s in stages),
        )


def _cheap_singles(race: _Race, pool: Pool, progress: Progress) -> tuple[list[Entry], list[Entry], int]:
    """Cheap pass 1: single formats, cheapest first, pruned against the frontier so far.
    Returns (every single the law can rank, those measured, how many were pruned)."""
    from gmse_cli.realmse import stage_targets

    singles = []
    for cand in pool.singles:
        stages = stage_targets(cand.spec)
        try:
            race.law.check_covers(f for f, _ in stages)
        except LawError:  # a family the law cannot rank
            race.left_out += 1
            continue
        singles.append(Entry(cand=cand, stages=stages))
    singles.sort(key=lambda e: (e.cand.bits_per_param, e.cand.name))
    measured: list[Entry] = []
    pruned = 0
    front = Frontier([], race.z)
    since = 0
    for n, entry in enumerate(singles):
        if progress and n % 16 == 0:
            progress("cheap pass", n, len(singles))
        if since >= 32:
            front, since = Frontier(measured, race.z), 0
        bound = math.prod(race.rd_bound(f, fmt) for f, fmt in entry.stages)
        if bound < front.at(entry.cand.bits_per_param):
            pruned += 1
            continue
        if race.evaluate(entry, 0):
            measured.append(entry)
            since += 1
    if progress:  # the phase's last count: a bar (or a log's done line) ends at its total
        progress("cheap pass", len(singles), len(singles))
    return singles, measured, pruned


def _cheap_composites(race: _Race, pool: Pool, measured: list[Entry], progress: Progress) -> int:
    """Cheap pass 2: composites, bounded by (sparsity capacity) x (quantizer bound); appends
    to ``measured`` and returns how many were pruned."""
    from gmse_cli.realmse import stage_targets

    n_pairs = len(pool.pair_bits)
    if not n_pairs:
        return 0
    try:
        race.law.check_covers([Family.SPARSITY, Family.QUANTIZATION])
    except LawError:  # a family the law cannot rank: left out, as single formats of it are
        race.left_out += n_pairs
        return 0
    s_hi = np.array([race.upper(Family.SPARSITY, s_fmt) for _, s_fmt, _, _ in pool.sparsifiers])
    q_hi = np.array([race.rd_bound(Family.QUANTIZATION, q_fmt) for _, q_fmt, _ in pool.quantizers])
    order = np.argsort(pool.pair_bits, kind="stable")
    front, since = Frontier(measured, race.z), 0
    # Most composites fall at once: their bound is below the frontier of single formats.
    alive = order[(s_hi[pool.pair_s[order]] * q_hi[pool.pair_q[order]]) >= front.at(pool.pair_bits[order])]
    pruned = n_pairs - len(alive)
    for n, i in enumerate(alive):
        if progress and n % 16 == 0:
            progress("composites", n, len(alive))
        if since >= 32:
            front, since = Frontier(measured, race.z), 0
        qi = pool.pair_q[i]
        q_fmt = pool.quantizers[qi][1]
        if (q_fmt.stages, 0) in race.cache:  # measured already: its own upper value is sharper
            q_hi[qi] = min(q_hi[qi], race.upper(Family.QUANTIZATION, q_fmt))
        if s_hi[pool.pair_s[i]] * q_hi[qi] < front.at(pool.pair_bits[i]):
            pruned += 1
            continue
        cand = pool.pair(int(i))
        entry = Entry(cand=cand, stages=stage_targets(cand.spec))
        if race.evaluate(entry, 0):
            measured.append(entry)
            since += 1
    if progress:
        progress("composites", len(alive), len(alive))
    return pruned


def _refine(race: _Race, measured: list[Entry], min_gain: float, progress: Progress) -> list[Entry]:
    """Refinement: keep the thinned frontier and what could still join it or beat its best by
    z paired standard errors (common random numbers make the pairing tight)."""
    survivors = measured
    for level in range(1, race.final_level + 1):
        z = race.margins[level - 1]  # the survivors' influences are from the previous level's rows
        front = thin(Frontier(survivors).members, min_gain)
        on = {id(e) for e in front}
        best = front[-1]
        front_bits = np.array([e.cand.bits_per_param for e in front])
        kept_before = []
        for e in survivors:
            k = int(np.searchsorted(front_bits, e.cand.bits_per_param + 1e-12, side="right")) - 1
            if id(e) in on or k < 0:
                kept_before.append(e)
                continue
            # Could it open a new step of the thinned frontier above the member covering it?
            t = front[k]
            step = (1 + min_gain) * t.rho - e.rho
            d = e.psi - (1 + min_gain) * t.psi
            # ... or displace it, at the same bits? Thinning keeps one format per bit cost, so a
            # tie on these rows (1:4+lm3-absmax and -mse on 4 rows of 128) dropped the one listed
            # second for good, though it was the better on more rows.
            same = e.cand.bits_per_param <= t.cand.bits_per_param + 1e-12
            dt = e.psi - t.psi
            # ... or be the best at the budget?
            gap = best.rho - e.rho
            db = e.psi - best.psi
            if (step <= z * math.sqrt(float(d @ d)) or gap <= z * math.sqrt(float(db @ db))
                    or (same and t.rho - e.rho <= z * math.sqrt(float(dt @ dt)))):
                kept_before.append(e)
        survivors = []
        for n, entry in enumerate(kept_before):
            if progress and n % 8 == 0:
                progress(f"refine {level}/{race.final_level}", n, len(kept_before))
            if race.evaluate(entry, level):
                survivors.append(entry)
        if progress:
            progress(f"refine {level}/{race.final_level}", len(kept_before), len(kept_before))
    return survivors


def _below_every_format(budget: float, space: SearchSpace, lengths: list[int], weights: list[float]) -> SpecError:
    """The error for a budget below the whole space, naming its cheapest format."""
    wide = build_pool(64.0, space, lengths, weights)
    cheapest = min(wide.singles, key=lambda c: c.bits_per_param, default=None)
    if len(wide.pair_bits) and (cheapest is None or wide.pair_bits.min() < cheapest.bits_per_param):
        cheapest = wide.pair(int(np.argmin(wide.pair_bits)))
    # Shortest round-trip spellings: a rounded one named another budget than the one given
    # ('--bits 0.128906249' read 0.128906) and could print the cheapest at the budget itself.
    hint = f"; the cheapest is {cheapest.name} at {cheapest.bits_per_param!r}" if cheapest else ""
    return SpecError(f"--bits {budget!r} is below every format in the search space{hint}")


def search_formats(
    budget: float,
    *,
    law: object | None = "default",
    space: SearchSpace | None = None,
    rel_err: float = 3e-3,
    seed: int = 0,
    z: float = 3.0,
    row_length: int = DEFAULT_ROW_LENGTH,
    level_rows: Sequence[int] = (4, 16, 64),
    max_rows: int = 1024,
    checkpoint: str | Path | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    rows_per_layer: int = 256,
    min_gain: float = 5e-3,
    progress: Progress = None,
    cache: str = "use",
) -> SearchResult:
    """Search ``space`` for the highest capacity at or below ``budget`` bits per parameter.

    ``law``: a Law, a law file / shipped name, or ``"default"``. ``rel_err``: target relative
    standard error of the final (reported) GMSE estimates; candidates are *compared* far more
    precisely than that, on common random numbers, so it need not be tight (capacity moves
    about a tenth as much as GMSE in relative terms). ``z``: pruning margin in standard errors; a
    candidate is dropped at a level only if the frontier member that dominates it beats it by
    more than ``z`` standard errors of their *paired* difference (common random numbers), read
    as Student's t at the same confidence on the rows the difference was measured on.
    ``level_rows``: Gaussian rows of ``row_length`` used by the cheap pass and each refinement;
    the final Monte Carlo estimates use up to ``max_rows`` rows (4 * row_length bytes each).
    With ``checkpoint``, the objective is real-weight MSE on up to ``rows_per_layer`` rows of
    each layer selected by ``include``/``exclude``, and 128-block rotations join the space.
    ``min_gain``: the reported frontier lists a member only if its capacity beats the previous
    member's by this relative amount (an epsilon-Pareto thinning of near-duplicates such as
    fp32 vs bf16 row scales); the best format at the budget is always listed.
    ``progress(phase, done, total)`` is called as work proceeds. ``cache``: the final Gaussian
    estimates come from the shipped table and the on-disk cache where those hold them to
    ``rel_err`` and are cached when computed (``"use"``), are all computed and cached
    (``"refresh"``), or computed without the cache (``"off"``).
    """
    _validate(budget, rel_err, z, rows_per_layer, min_gain)
    seed = check_seed(seed)
    start = time.perf_counter()
    from gmse_cli.realmse import resolve_law

    law_obj = resolve_law(law)
    if law_obj is None:
        raise LawError("the search needs a law for capacity (give --law or use the shipped one)")
    space = space or SearchSpace()

    if checkpoint is not None:
        from gmse_cli.realmse import checkpoint_notes, open_checkpoint, select_layers

        ckpt = open_checkpoint(checkpoint)
        layers = select_layers(ckpt, include=include, exclude=exclude)
        for line in checkpoint_notes(ckpt, include):
            note(line)
        by_length: dict[int, int] = {}
        for info in layers:
            by_length[info.row_length] = by_length.get(info.row_length, 0) + info.params
        if not space.rotations:
            space = space.model_copy(update={"rotations": (128,)})
        lengths, weights = list(by_length), list(by_length.values())
        objective = "checkpoint"
    else:
        lengths, weights = [row_length], [1.0]
        objective = "gaussian"

    pool = build_pool(budget, space, lengths, weights)
    if pool.size == 0:
        raise _below_every_format(budget, space, lengths, weights)
    evaluator: Evaluator
    if checkpoint is not None:
        evaluator = CheckpointEvaluator(layers, rows_per_layer=rows_per_layer, seed=seed)
    else:
        evaluator = GaussianEvaluator(
            seed=seed, rel_err=rel_err, row_length=row_length, level_rows=level_rows, max_rows=max_rows,
            cache=cache,
        )
    race = _Race(law_obj, evaluator, objective=objective, lengths=lengths, z=z)

    singles, measured, pruned = _cheap_singles(race, pool, progress)
    pruned += _cheap_composites(race, pool, measured, progress)
    stages_measured = sum(1 for (_, level) in race.cache if level == 0)
    final = _refine(race, measured, min_gain, progress) if measured else []
    if not final:
        # a law without some family's curve (a hand-written one with quantization alone) leaves
        # nothing at a budget only that family's formats reach (0.5 bits: VQ and sparsity)
        unread = (f": law '{law_obj.name}' has no curve for the family of any of the {race.left_out:,} "
                  "candidates there" if race.left_out and not measured else "")
        raise SpecError(f"no format in the search space at or below {budget:g} bits could be measured{unread}")
    frontier_entries = thin(
        [final[i] for i in pareto_frontier((e.cand.bits_per_param, e.rho) for e in final)], min_gain
    )
    frontier = tuple(race.point(e) for e in frontier_entries)
    comparisons = compare_catalog(singles, final, race.evaluate, race.final_level)
    return SearchResult(
        budget=budget,
        objective=objective,
        law=law_obj.name,
        best=frontier[-1],
        frontier=frontier,
        comparisons=tuple(comparisons),
        candidates=pool.size,
        pruned_by_bound=pruned,
        left_out_by_law=race.left_out,
        stages_measured=stages_measured,
        refined=len(final),
        seconds=time.perf_counter() - start,
        points=tuple((e.cand.name, e.cand.bits_per_param, e.rho) for e in measured),
    )
