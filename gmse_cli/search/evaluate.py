"""How a candidate's error is measured at each precision level of the race: on the first rows
of one shared Gaussian sample bank, or on rows sampled from a checkpoint's layers."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import Format


class Evaluator:
    """Measures a format's error at precision levels 0, 1, ...: ``measure`` returns the value
    and its per-row influence vector (see :func:`~gmse_cli.realmse.ratio_influence`) on rows
    shared by every format at that level; ``final`` returns the reported value and its
    standard error."""

    level_rows: tuple[int, ...]
    methods: dict[tuple, str]  # stages -> what gave the final value, where not monte-carlo

    @property
    def levels(self) -> int:
        return len(self.level_rows)

    def measure(self, fmt: Format, level: int) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def final(self, fmt: Format, last: tuple[float, np.ndarray] | None = None) -> tuple[float, float]:
        raise NotImplementedError


class GaussianEvaluator(Evaluator):
    """The first rows of one shared :class:`~gmse_cli.gmse.SampleBank` (common random numbers:
    every candidate sees the same rows, so their differences are precise even on few rows).

    The final value comes from the shipped table or the on-disk cache where either holds it to
    ``rel_err`` (``cache="use"``), else it is exact where quadrature exists
    (:func:`~gmse_cli.gmse.exact_gmse`), otherwise Monte Carlo on the same bank with as many
    rows as the ratio estimator needs for ``rel_err`` (projected from the last level's
    standard error, at most ``max_rows``); computed values are cached unless ``cache="off"``.
    :attr:`methods` says what gave each final value.
    """

    def __init__(self, *, seed: int, rel_err: float, row_length: int, level_rows: Sequence[int], max_rows: int,
                 cache: str = "use") -> None:
        from gmse_cli.gmse import SampleBank

        self.bank = SampleBank(seed=seed, row_length=row_length)
        self.rel_err = rel_err
        self.level_rows = tuple(level_rows)
        self.max_rows = max(max_rows, self.level_rows[-1])
        self.cache = cache
        self.methods: dict[tuple, str] = {}  # stages -> table, cache, exact or monte-carlo
        self._rows: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _sample(self, rows: int) -> tuple[np.ndarray, np.ndarray]:
        if rows not in self._rows:
            per = self.bank.rows_per_batch
            parts = [self.bank.batch(i) for i in range(-(-rows // per))]
            x = np.ascontiguousarray(np.concatenate([p[0] for p in parts])[:rows])
            self._rows[rows] = (x, np.concatenate([p[1] for p in parts])[:rows])
        return self._rows[rows]

    def _run(self, fmt: Format, rows: int) -> tuple[float, np.ndarray]:
        from gmse_cli.compress import compress
        from gmse_cli.gmse.clipping import clip_energy_for
        from gmse_cli.realmse import ratio_influence, row_errors

        x, norm = self._sample(rows)
        if fmt.rows_independent:
            q = compress(fmt, x, finite=True)
        else:
            # A second-level scale spans the tensor: the engine's tensor is one bank batch of
            # rows, so compress batch by batch, as it does (all rows at once gave NVFP4-style
            # e4m3-scaled formats a scale from a larger tensor: int6-absmax-g32-se4m3 0.000532
            # against the engine's 0.000537, 4 standard errors, and cached under its key).
            per = self.bank.rows_per_batch
            q = np.concatenate([compress(fmt, x[i:i + per], finite=True) for i in range(0, rows, per)])
        err, _ = row_errors(x, q)
        # As the GMSE engine measures it: each row's error less its clipping energy, whose exact
        # mean is added back (rare clipping of fine RMS grids, which few rows never see). The
        # value is cached under the key that says so.
        clip = clip_energy_for(fmt, x.shape[1]) if fmt.rows_independent else None
        if clip is None:
            return ratio_influence(err, norm)
        value, psi = ratio_influence(err - clip.rows(x), norm)
        return value + clip.mean_per_entry(x.shape[1]), psi

    def measure(self, fmt: Format, level: int) -> tuple[float, np.ndarray]:
        return self._run(fmt, self.level_rows[level])

    def _std_err(self, fmt: Format, psi: np.ndarray) -> float:
        """The delta-method standard error; rows of one tensor share its second-level scale, so
        for such formats the units are tensors (each the sum of its rows' influences)."""
        if not fmt.rows_independent:
            rows, per = len(psi), self.bank.rows_per_batch
            tensors = -(-rows // per)
            if tensors < 2:
                return math.inf
            # a row's influence carries ratio_influence's sqrt(m / (m - 1)) for m rows; a tensor's
            # is the sum of its rows' with that factor for the tensors instead
            psi = np.add.reduceat(psi, np.arange(0, rows, per)) * math.sqrt(
                tensors / (tensors - 1) * (rows - 1) / rows)
        return math.sqrt(float(psi @ psi))

    def final(self, fmt: Format, last: tuple[float, np.ndarray] | None = None) -> tuple[float, float]:
        """``last``: the measurement at the last level, if made (it is not made again)."""
        from gmse_cli.gmse import exact_gmse, has_exact, lookup_gmse, remember_gmse
        from gmse_cli.gmse.bank import MIN_BATCHES
        from gmse_cli.gmse.estimates import make_estimate

        row_length = self.bank.row_length
        if self.cache == "use" and (est := lookup_gmse(fmt, row_length=row_length, rel_err=self.rel_err)):
            self.methods[fmt.stages] = est.method
            return est.gmse, est.std_err
        rows = 0
        if has_exact(fmt, row_length):
            g, se, method = exact_gmse(fmt), 0.0, "exact"
            dof = math.inf
        else:
            per = self.bank.rows_per_batch
            rows = self.level_rows[-1]
            if not fmt.rows_independent and (rows % per or rows < MIN_BATCHES * per):
                # whole tensors, as the engine's, and as many as its minimum: a standard error
                # from 2 tensors (1 degree of freedom) came out 0.8% of the true one for
                # lm4-mse-g128-se4m3 at seed 0, and it was cached and served to `uscl gmse`
                rows, last = per * max(MIN_BATCHES, math.ceil(rows / per)), None
            g, psi = last if last is not None else self._run(fmt, rows)
            se = self._std_err(fmt, psi)
            # the cap in whole tensors too (1,024 rows of 13-row tensors would end on 10 rows)
            cap = max(self.max_rows, 2 * per) if fmt.rows_independent else per * (self.max_rows // per)
            if g > 0 and se > self.rel_err * g and rows < cap:
                # The standard error falls as 1/sqrt(rows): one projected step, rounded up to a batch.
                need = rows * (se / (self.rel_err * g)) ** 2
                rows = min(cap, per * math.ceil(need * 1.05 / per))
                g, psi = self._run(fmt, rows)
                se = self._std_err(fmt, psi)
            method = "monte-carlo"
            # the units of the standard error, less one (rows, or tensors of `per` rows)
            dof = (rows if fmt.rows_independent else -(-rows // per)) - 1
        self.methods[fmt.stages] = method
        if self.cache != "off":
            try:
                est = make_estimate(fmt, row_length, g, se, method, rows * row_length, dof=dof)
            except SpecError:
                return g, se  # beyond the rate-distortion bound: a value not worth keeping
            remember_gmse(fmt, est, row_length=row_length, seed=self.bank.seed)
        return g, se


class CheckpointEvaluator(Evaluator):
    """Rows sampled once from each selected layer and held in memory; a format's error is the
    parameter-weighted mean over layers of ||W - C(W)||^2 / ||W||^2 on those rows. Each level
    uses a prefix of a random permutation of each layer's rows (itself a random sample), and
    the final value uses all ``rows_per_layer``. Row-local formats run over the rows of all
    layers of one row length stacked together (few kernel calls instead of one per layer), a
    chunk of ``chunk_bytes`` at a time; formats with a per-tensor statistic run layer by layer.

    Memory: the sampled rows once (each layer's rows are a view of its row length's stack,
    so the final level copies nothing), the earlier levels' prefixes (a third of that) and
    one chunk's compression."""

    chunk_bytes: int | None = None  # None: realmse's DEFAULT_CHUNK_BYTES

    def __init__(self, layers, *, rows_per_layer: int, seed: int) -> None:
        from gmse_cli.realmse import read_rows

        rng = np.random.default_rng(seed)
        picks = [rng.permutation(info.rows)[: min(info.rows, rows_per_layer)] for info in layers]
        groups: dict[int, list[int]] = {}
        for i, info in enumerate(layers):
            groups.setdefault(info.row_length, []).append(i)
        stacks = {length: np.empty((sum(len(picks[i]) for i in members), length), dtype=np.float32)
                  for length, members in groups.items()}
        starts: dict[int, int] = {}
        for members in groups.values():
            start = 0
            for i in members:
                starts[i] = start
                start += len(picks[i])
        self.data: list[tuple[np.ndarray, float, int]] = []  # (sampled rows, weight, population)
        total = float(sum(info.params for info in layers))
        for i, (info, picked) in enumerate(zip(layers, picks, strict=True)):
            x = stacks[info.row_length][starts[i] : starts[i] + len(picked)]
            order = np.argsort(picked)
            x[order] = read_rows(info, picked[order])  # sorted: consecutive rows are read together
            self.data.append((x, info.params / total, info.rows))
        self.level_rows = tuple(sorted({max(2, rows_per_layer // k) for k in (64, 16, 4)}))
        self.all_rows = rows_per_layer
        self.methods = {}  # every value is measured on sampled rows: monte-carlo
        # every layer's rows, stacked: the final level's stacks, no copy
        self._stacks: dict[int, list[tuple[np.ndarray, list[int]]]] = {
            rows_per_layer: [(stacks[length], members) for length, members in groups.items()]}

    def _stacked(self, rows: int) -> list[tuple[np.ndarray, list[int]]]:
        """Per row length: the first ``rows`` rows of its layers stacked, and those layers."""
        if rows not in self._stacks:
            self._stacks[rows] = [
                (np.concatenate([self.data[i][0][:rows] for i in members]), members)
                for _, members in self._stacks[self.all_rows]
            ]
        return self._stacks[rows]

    def _row_errors(self, fmt: Format, stacked: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-row (error, norm) of a row-local format, a chunk of rows at a time (each row's
        values are those of the whole stack: its rows are compressed alone)."""
        from gmse_cli.compress import compress
        from gmse_cli.realmse import DEFAULT_CHUNK_BYTES, chunk_rows, row_errors

        step = chunk_rows(stacked.shape[1], self.chunk_bytes or DEFAULT_CHUNK_BYTES)
        parts = [row_errors(x, compress(fmt, x)) for x in (stacked[s : s + step] for s in range(0, len(stacked), step))]
        return np.concatenate([e for e, _ in parts]), np.concatenate([n for _, n in parts])

    def _run(self, fmt: Format, rows: int) -> tuple[float, np.ndarray]:
        from gmse_cli.compress import compress
        from gmse_cli.realmse import ratio_influence, row_errors, row_local

        per_layer: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if row_local(fmt):
            for stacked, members in self._stacked(rows):
                err, norm = self._row_errors(fmt, stacked)
                start = 0
                for i in members:
                    n = min(rows, len(self.data[i][0]))
                    per_layer[i] = (err[start : start + n], norm[start : start + n])
                    start += n
        else:
            for i, (x, _, _) in enumerate(self.data):
                x = x[:rows]
                per_layer[i] = row_errors(x, compress(fmt, x))
        value = 0.0
        psis = []
        for i, (_, weight, population) in enumerate(self.data):
            err, norm = per_layer[i]
            r, psi = ratio_influence(err, norm, population=population)
            value += weight * r
            psis.append(weight * psi)  # layers are independent strata
        if math.isnan(value):  # finite float32 weights near its largest value, summed by a rotation
            raise DataError(f"format '{fmt.display_name}' gives no defined error (nan) on the checkpoint's rows: "
                            "their values overflow float32 in the format's arithmetic")
        return value, np.concatenate(psis)

    def measure(self, fmt: Format, level: int) -> tuple[float, np.ndarray]:
        return self._run(fmt, self.level_rows[level])

    def final(self, fmt: Format, last: tuple[float, np.ndarray] | None = None) -> tuple[float, float]:
        value, psi = self._run(fmt, self.all_rows)
        return value, math.sqrt(float(psi @ psi))
