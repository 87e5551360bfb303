"""Format search: the highest capacity at or below a bit budget, and the Pareto frontier.

The search space (:class:`SearchSpace`) is a grid over scalar grids (int midrise / signed /
asymmetric, fp ExMy, Lloyd-Max, lookup tables such as NF4), scale rules, group sizes and scale
storage formats; sparsity patterns composed with those quantizers; vector quantizers; and, on
real weights, Hadamard rotations. Every candidate is named by the shorthand it parses from
(``int4-absmax-g128-sbf16``, ``2:4+e2m1-mse-g32-se8m0``, ``vq2-b3.5-row-sfp32``; a duplicate
of a catalog format goes by the catalog name), so a frontier member can be typed back into any
command; it is also written out as a TOML file.

Capacity is the law's factorized one, as in the paper: rho = prod_k rho_family(k)(GMSE_k) over
the lossy stages, each stage measured alone. A composite candidate therefore shares its
quantizer's measurement with every other candidate using that quantizer, and the thousands of
(sparsity, quantizer) pairs are only index pairs until one survives the bounds.

How the search saves work:

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

``checkpoint=...`` replaces the Gaussian bank by rows sampled from a checkpoint's layers and
GMSE by the parameter-weighted real-weight MSE (see :mod:`gmse_cli.realmse`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gmse_cli.errors import LawError, SpecError
from gmse_cli.spec import (
    DEFAULT_ROW_LENGTH,
    Family,
    Format,
    Quantize,
    ScaleFormat,
    ScaleRule,
    catalog,
    format_to_toml,
    parse_shorthand,
)
from gmse_cli.tomlfile import write_text_atomic

__all__ = [
    "SearchSpace",
    "Candidate",
    "SearchPoint",
    "CatalogComparison",
    "SearchResult",
    "enumerate_candidates",
    "pareto_frontier",
    "search_formats",
    "write_frontier",
]

_Z95 = 1.959963984540054


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Group = Literal["row"] | int


class SearchSpace(_Model):
    """What to enumerate. Defaults cover the issue's axes at a cost of about a minute."""

    grids: tuple[Literal["int", "sint", "aint", "fp", "lloyd-max", "lut"], ...] = (
        "int", "sint", "aint", "fp", "lloyd-max", "lut",
    )
    max_element_bits: int = Field(default=8, ge=1, le=16, description="largest scalar element width")
    max_exponent_bits: int = Field(default=5, ge=1, le=8, description="fp grids: ExMy with X up to this")
    luts: tuple[str, ...] = Field(default=("nf4",), description="catalog names of lookup-table grids")
    scale_rules: tuple[ScaleRule, ...] = (ScaleRule.RMS, ScaleRule.ABSMAX, ScaleRule.MSE)
    groups: tuple[Group, ...] = ("row", 256, 128, 64, 32, 16)
    scale_formats: tuple[ScaleFormat, ...] = (ScaleFormat.FP32, ScaleFormat.BF16, ScaleFormat.E8M0, ScaleFormat.E4M3)
    sparsity: tuple[str, ...] = Field(
        default=("2:4", "4:8", "1:4", "sparse10", "sparse20", "sparse30", "sparse50"),
        description="sparsity stages (shorthand) composed with every quantizer",
    )
    vq_dims: tuple[int, ...] = (2, 4, 8)
    vq_max_codewords: int = Field(default=256, ge=2, description="larger codebooks are slow to search")
    vq_groups: tuple[Group, ...] = ("row", 128)
    vq_scale_formats: tuple[ScaleFormat, ...] = (ScaleFormat.FP32, ScaleFormat.BF16)
    rotations: tuple[int, ...] = Field(default=(), description="Hadamard blocks to try (real weights only)")
    include_catalog: bool = Field(default=True, description="catalog formats are candidates too")


class Candidate(_Model):
    """One point of the search space."""

    name: str = Field(description="shorthand that parses back to this format")
    spec: Format
    bits_per_param: float
    source: Literal["search", "catalog"] = "search"


class StagePoint(_Model):
    family: Family
    name: str
    gmse: float
    std_err: float


class SearchPoint(_Model):
    """A measured candidate (Gaussian objective: ``gmse`` is GMSE; checkpoint: real-weight MSE)."""

    name: str
    bits_per_param: float
    gmse: float = Field(description="the whole format's error (joint, all stages together)")
    gmse_std_err: float
    rho: float = Field(description="factorized capacity: prod of the stage capacities")
    rho_std_err: float
    spec: Format
    stages: tuple[StagePoint, ...]
    source: Literal["search", "catalog"]


class CatalogComparison(_Model):
    """A named catalog format against the best searched format at the same or fewer bits."""

    catalog: str
    catalog_bits: float
    catalog_rho: float
    best: str
    best_bits: float
    best_rho: float
    gain: float = Field(description="best_rho - catalog_rho")
    gain_relative: float = Field(description="best_rho / catalog_rho - 1")


class SearchResult(_Model):
    budget: float
    objective: Literal["gaussian", "checkpoint"]
    law: str
    best: SearchPoint
    frontier: tuple[SearchPoint, ...] = Field(description="Pareto frontier by bits, thinned by min_gain")
    comparisons: tuple[CatalogComparison, ...]
    candidates: int = Field(description="candidates within the budget")
    pruned_by_bound: int = Field(
        description="dropped unmeasured: capacity bound (rate-distortion, or the sparsity factor) below the frontier"
    )
    stages_measured: int = Field(description="distinct stage formats measured in the cheap pass")
    refined: int = Field(description="candidates given the full estimate")
    seconds: float
    points: tuple[tuple[str, float, float], ...] = Field(
        description="(name, bits, rho) of every measured candidate (cheap-pass values unless refined)"
    )


# --------------------------------------------------------------------------------------------
# Enumeration
# --------------------------------------------------------------------------------------------

_RULE_TOKEN = {ScaleRule.RMS: "rms", ScaleRule.ABSMAX: "absmax", ScaleRule.MSE: "mse"}
# Rules that make sense per grid: an asymmetric grid is min/max scaled by construction.
_GRID_RULES = {
    "int": (ScaleRule.RMS, ScaleRule.ABSMAX, ScaleRule.MSE),
    "sint": (ScaleRule.RMS, ScaleRule.ABSMAX, ScaleRule.MSE),
    "aint": (ScaleRule.ABSMAX, ScaleRule.MSE),
    "fp": (ScaleRule.RMS, ScaleRule.ABSMAX, ScaleRule.MSE),
    "lloyd-max": (ScaleRule.RMS, ScaleRule.ABSMAX, ScaleRule.MSE),
    "lut": (ScaleRule.RMS, ScaleRule.ABSMAX, ScaleRule.MSE),
}


def _group_token(group: Group) -> str:
    return "row" if group == "row" else f"g{group}"


def _grid_bases(space: SearchSpace) -> list[tuple[str, str, float]]:
    """(grid kind, shorthand base, element bits) of every scalar grid in the space."""
    out: list[tuple[str, str, float]] = []
    top = space.max_element_bits
    for kind in space.grids:
        if kind == "int":
            out += [(kind, f"int{b}", b) for b in range(1, top + 1)]
        elif kind == "sint":
            out += [(kind, f"sint{b}", b) for b in range(2, top + 1)]
        elif kind == "aint":
            out += [(kind, f"aint{b}", b) for b in range(1, top + 1)]
        elif kind == "lloyd-max":
            out += [(kind, f"lm{b}", b) for b in range(1, min(top, 8) + 1)]
        elif kind == "fp":
            for width in range(3, top + 1):
                for e in range(1, min(space.max_exponent_bits, width - 1) + 1):
                    out.append((kind, f"e{e}m{width - 1 - e}", width))
        else:
            for name in space.luts:
                fmt = catalog().get(name)
                if fmt is None or len(fmt.stages) != 1 or not isinstance(fmt.stages[0], Quantize):
                    raise SpecError(f"search space: luts entry '{name}' is not a single-stage catalog quantizer")
                out.append((kind, name, fmt.stages[0].element_bits))
    return out


def _quantizer_names(space: SearchSpace, max_bits: float, *, vq: bool = True) -> list[str]:
    """Shorthand of every scalar (and vector) quantizer whose element bits fit ``max_bits``."""
    names: list[str] = []
    for kind, base, element_bits in _grid_bases(space):
        if element_bits > max_bits:
            continue
        for rule in space.scale_rules:
            if rule not in _GRID_RULES[kind]:
                continue
            for group in space.groups:
                for sfmt in space.scale_formats:
                    # The rule comes first: "int4-g128" alone is a catalog name (a signed grid),
                    # which the shorthand's longest-prefix rule would read as the base.
                    names.append(f"{base}-{_RULE_TOKEN[rule]}-{_group_token(group)}-s{sfmt.value}")
    for dim in space.vq_dims if vq else ():
        for index_bits in range(1, 17):
            if 2**index_bits > space.vq_max_codewords:
                break
            bits = index_bits / dim
            if bits > max_bits:
                break
            for group in space.vq_groups:
                for sfmt in space.vq_scale_formats:
                    names.append(f"vq{dim}-b{bits:g}-{_group_token(group)}-s{sfmt.value}")
    return names


@cache
def _parse(name: str) -> Format | None:
    """The format a shorthand names, or None when the combination is invalid (cached: the
    same few thousand names come back in every search of a process)."""
    try:
        return parse_shorthand(name)
    except SpecError:
        return None


@dataclass
class _Pool:
    """The search space at one budget, composites kept as (sparsity, quantizer) index pairs so
    that the thousands of them cost nothing until one survives the bounds."""

    singles: list[Candidate]  # dense quantizers, vector quantizers, catalog formats
    quantizers: list[tuple[str, Format, float]]  # scalar quantizers composites draw from
    sparsifiers: list[tuple[str, Format, float, float]]  # name, format, mask bits, density
    pair_s: np.ndarray  # composite i = sparsifiers[pair_s[i]] then quantizers[pair_q[i]]
    pair_q: np.ndarray
    pair_bits: np.ndarray  # mask + density * quantizer bits (equal to the format's own cost up to rounding)
    cost: Callable[[Format], float]

    @property
    def size(self) -> int:
        return len(self.singles) + len(self.pair_bits)

    def pair(self, i: int) -> Candidate:
        s_name, s_fmt, _, _ = self.sparsifiers[self.pair_s[i]]
        q_name, q_fmt, _ = self.quantizers[self.pair_q[i]]
        name = f"{s_name}+{q_name}"
        spec = Format(name=name, stages=(*s_fmt.stages, *q_fmt.stages))
        return Candidate(name=name, spec=spec, bits_per_param=self.cost(spec))


def _build_pool(budget: float, space: SearchSpace, lengths: Sequence[int], weights: Sequence[float]) -> _Pool:
    total = float(sum(weights))

    def cost(fmt: Format) -> float:
        return sum(fmt.bits_per_param(n) * w for n, w in zip(lengths, weights, strict=True)) / total

    def fits(fmt: Format) -> bool:
        try:
            for n in lengths:
                fmt.check_row_length(n)
        except SpecError:
            return False
        return True

    seen: set[tuple] = set()
    singles: list[Candidate] = []

    def add(name: str, fmt: Format | None, source: str) -> None:
        if fmt is None or fmt.stages in seen or not fits(fmt):
            return
        bits = cost(fmt)
        if bits <= budget + 1e-12:
            seen.add(fmt.stages)
            singles.append(Candidate(name=name, spec=fmt, bits_per_param=bits, source=source))

    # Catalog first, so a searched duplicate goes by its catalog name.
    if space.include_catalog:
        for name, fmt in catalog().items():
            if fmt.quantizer is not None or fmt.sparsifier is not None:
                add(name, fmt, "catalog")
    prefixes = [""] + [f"had{k}+" for k in space.rotations]
    for q in _quantizer_names(space, budget):
        for prefix in prefixes:
            add(prefix + q, _parse(prefix + q), "search")

    sparsifiers = []
    for name in space.sparsity:
        fmt = _parse(name)
        if fmt is None or fmt.sparsifier is None or len(fmt.stages) != 1:
            raise SpecError(f"search space: sparsity entry '{name}' is not a sparsity shorthand (e.g. 2:4, sparse30)")
        if fits(fmt):
            stage = fmt.sparsifier
            sparsifiers.append((name, fmt, stage.mask_bits, stage.density))
    # Kept values cost density * (the quantizer's dense bits), so quantizers up to
    # (budget - mask) / density bits can still fit.
    room = max(((budget - m) / d for _, _, m, d in sparsifiers), default=0.0)
    quantizers = []
    unique: set[tuple] = set()
    for q in _quantizer_names(space, room, vq=False):
        fmt = _parse(q)
        if fmt is not None and fmt.stages not in unique and fits(fmt):
            unique.add(fmt.stages)
            quantizers.append((q, fmt, cost(fmt)))
    q_bits = np.array([b for _, _, b in quantizers])
    ps, pq, pb = [], [], []
    for i, (_, _, mask, density) in enumerate(sparsifiers):
        bits = mask + density * q_bits
        (ok,) = np.nonzero(bits <= budget + 1e-12)
        ps.append(np.full(len(ok), i))
        pq.append(ok)
        pb.append(bits[ok])

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

    return _Pool(singles=singles, quantizers=quantizers, sparsifiers=sparsifiers,
                 pair_s=cat(ps, np.int64), pair_q=cat(pq, np.int64), pair_bits=cat(pb, float), cost=cost)


def enumerate_candidates(
    budget: float,
    *,
    space: SearchSpace | None = None,
    row_lengths: Sequence[int] = (DEFAULT_ROW_LENGTH,),
    weights: Sequence[float] | None = None,
) -> list[Candidate]:
    """Every candidate of ``space`` at or below ``budget`` bits per parameter.

    Bits are ``Format.bits_per_param`` at each row length, weighted by ``weights`` (parameters
    per row length on a checkpoint). A candidate must split every row length. Duplicates
    (the same stages under two names) are kept once, under the catalog name if there is one.
    """
    weights = list(weights) if weights is not None else [1.0] * len(row_lengths)
    pool = _build_pool(budget, space or SearchSpace(), list(row_lengths), weights)
    return pool.singles + [pool.pair(i) for i in range(len(pool.pair_bits))]


# --------------------------------------------------------------------------------------------
# Capacity and the frontier
# --------------------------------------------------------------------------------------------


def pareto_frontier(points: Iterable[tuple[float, float]]) -> list[int]:
    """Indices of the (bits, rho) points that no other point beats (fewer-or-equal bits and
    more-or-equal capacity, one strictly), in increasing bits; the rule of `uscl rank`."""
    from gmse_cli.rank import pareto_mask

    pts = list(points)
    if not pts:
        return []
    bits = np.array([p[0] for p in pts], dtype=float)
    rho = np.array([p[1] for p in pts], dtype=float)
    on = np.flatnonzero(pareto_mask(bits, rho))
    return sorted(on.tolist(), key=lambda i: (bits[i], i))


def _capacity_slope(law, family: Family, value: float) -> tuple[float, float]:
    """rho_family(value) and its derivative in the error (central difference, 1e-4 relative)."""
    value = max(value, 1e-300)
    rho = float(law.rho(family, value))
    h = 1e-4 * value
    return rho, (float(law.rho(family, value + h)) - float(law.rho(family, value - h))) / (2 * h)


# --------------------------------------------------------------------------------------------
# Evaluators: the Gaussian bank, or rows of a checkpoint
# --------------------------------------------------------------------------------------------


class _Evaluator:
    """Measures a format's error at precision levels 0, 1, ...: ``measure`` returns the value
    and its per-row influence vector (see :func:`~gmse_cli.realmse.ratio_influence`) on rows
    shared by every format at that level; ``final`` returns the reported value and its
    standard error."""

    level_rows: tuple[int, ...]

    @property
    def levels(self) -> int:
        return len(self.level_rows)

    def measure(self, fmt: Format, level: int) -> tuple[float, np.ndarray]:
        raise NotImplementedError

    def final(self, fmt: Format, last: tuple[float, np.ndarray] | None = None) -> tuple[float, float]:
        raise NotImplementedError


class _GaussianEvaluator(_Evaluator):
    """The first rows of one shared :class:`~gmse_cli.gmse.SampleBank` (common random numbers:
    every candidate sees the same rows, so their differences are precise even on few rows).

    The final value is exact where quadrature exists (:func:`~gmse_cli.gmse.exact_gmse`),
    otherwise Monte Carlo on the same bank with as many rows as the ratio estimator needs for
    ``rel_err`` (projected from the last level's standard error, at most ``max_rows``).
    """

    def __init__(self, *, seed: int, rel_err: float, row_length: int, level_rows: Sequence[int], max_rows: int) -> None:
        from gmse_cli.gmse import SampleBank

        self.bank = SampleBank(seed=seed, row_length=row_length)
        self.rel_err = rel_err
        self.level_rows = tuple(level_rows)
        self.max_rows = max(max_rows, self.level_rows[-1])
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
        from gmse_cli.realmse import ratio_influence, row_errors

        x, norm = self._sample(rows)
        err, _ = row_errors(x, compress(fmt, x))
        return ratio_influence(err, norm)

    def measure(self, fmt: Format, level: int) -> tuple[float, np.ndarray]:
        return self._run(fmt, self.level_rows[level])

    def final(self, fmt: Format, last: tuple[float, np.ndarray] | None = None) -> tuple[float, float]:
        """``last``: the measurement at the last level, if made (it is not made again)."""
        from gmse_cli.gmse import exact_gmse, has_exact

        if has_exact(fmt):
            return exact_gmse(fmt), 0.0
        rows = self.level_rows[-1]
        g, psi = last if last is not None else self._run(fmt, rows)
        se = math.sqrt(float(psi @ psi))
        if g > 0 and se > self.rel_err * g and rows < self.max_rows:
            # The standard error falls as 1/sqrt(rows): one projected step, rounded up to a batch.
            per = self.bank.rows_per_batch
            need = rows * (se / (self.rel_err * g)) ** 2
            g, psi = self._run(fmt, min(self.max_rows, per * math.ceil(need * 1.05 / per)))
            se = math.sqrt(float(psi @ psi))
        return g, se


class _CheckpointEvaluator(_Evaluator):
    """Rows sampled once from each selected layer and held in memory; a format's error is the
    parameter-weighted mean over layers of ||W - C(W)||^2 / ||W||^2 on those rows. Each level
    uses a prefix of a random permutation of each layer's rows (itself a random sample), and
    the final value uses all ``rows_per_layer``. Row-local formats run once over the rows of
    all layers of one row length stacked together (one kernel call instead of one per layer);
    formats with a per-tensor statistic run layer by layer."""

    def __init__(self, layers, *, rows_per_layer: int, seed: int) -> None:
        from gmse_cli.checkpoint import read_rows

        rng = np.random.default_rng(seed)
        self.data: list[tuple[np.ndarray, float, int]] = []  # (sampled rows, weight, population)
        total = float(sum(info.params for info in layers))
        for info in layers:
            picked = rng.permutation(info.rows)[: min(info.rows, rows_per_layer)]
            order = np.argsort(picked)
            x = read_rows(info, picked[order])  # sorted: consecutive rows are read together
            self.data.append((np.ascontiguousarray(x[np.argsort(order)]), info.params / total, info.rows))
        self.level_rows = tuple(sorted({max(2, rows_per_layer // k) for k in (64, 16, 4)}))
        self.all_rows = rows_per_layer
        self._stacks: dict[int, list[tuple[np.ndarray, list[int]]]] = {}

    def _stacked(self, rows: int) -> list[tuple[np.ndarray, list[int]]]:
        """Per row length: the first ``rows`` rows of its layers stacked, and those layers."""
        if rows not in self._stacks:
            groups: dict[int, list[int]] = {}
            for i, (x, _, _) in enumerate(self.data):
                groups.setdefault(x.shape[1], []).append(i)
            self._stacks[rows] = [
                (np.ascontiguousarray(np.concatenate([self.data[i][0][:rows] for i in members])), members)
                for members in groups.values()
            ]
        return self._stacks[rows]

    def _run(self, fmt: Format, rows: int) -> tuple[float, np.ndarray]:
        from gmse_cli.compress import compress
        from gmse_cli.realmse import ratio_influence, row_errors, row_local

        per_layer: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if row_local(fmt):
            for stacked, members in self._stacked(rows):
                err, norm = row_errors(stacked, compress(fmt, stacked))
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
        return value, np.concatenate(psis)

    def measure(self, fmt: Format, level: int) -> tuple[float, np.ndarray]:
        return self._run(fmt, self.level_rows[level])

    def final(self, fmt: Format, last: tuple[float, np.ndarray] | None = None) -> tuple[float, float]:
        value, psi = self._run(fmt, self.all_rows)
        return value, math.sqrt(float(psi @ psi))


# --------------------------------------------------------------------------------------------
# The search
# --------------------------------------------------------------------------------------------


@dataclass
class _Entry:
    cand: Candidate
    stages: list[tuple[Family, Format]]
    rho: float = math.nan
    rho_se: float = math.inf
    psi: np.ndarray | None = None  # influence of each shared row on rho (levels below final)
    level: int = -1


class _Frontier:
    """The Pareto frontier of measured entries, queried by bit cost."""

    def __init__(self, entries: Sequence[_Entry], z: float = 0.0) -> None:
        # z > 0: the frontier of conservative capacities rho - z*se, which a candidate's upper
        # bound must reach to be worth measuring.
        pts = [(e.cand.bits_per_param, e.rho - z * e.rho_se) for e in entries]
        keep = pareto_frontier(pts)
        self.members = [entries[i] for i in keep]
        self.bits = np.array([pts[i][0] for i in keep])
        self.rho = np.array([pts[i][1] for i in keep])

    def at(self, bits: np.ndarray | float) -> np.ndarray | float:
        """Best (conservative) capacity with at most ``bits`` (-inf where none)."""
        k = np.searchsorted(self.bits, np.asarray(bits) + 1e-12, side="right")
        out = np.concatenate([[-math.inf], self.rho])[k]
        return float(out) if np.ndim(out) == 0 else out

    def dominator(self, bits: float) -> _Entry | None:
        """The member with the most capacity at or below ``bits``."""
        k = int(np.searchsorted(self.bits, bits + 1e-12, side="right"))
        return self.members[k - 1] if k else None


def _validate(budget: float, rel_err: float, z: float, rows_per_layer: int, min_gain: float) -> None:
    if not (math.isfinite(budget) and budget > 0):
        raise SpecError(f"--bits {budget} must be a positive number of bits per parameter (e.g. 4.25)")
    if not (0 < rel_err < 1):
        raise SpecError(f"--rel-err {rel_err} must be in (0, 1) (e.g. 1e-3)")
    if not z > 0:
        raise SpecError(f"z {z} must be positive (standard errors of margin when pruning)")
    if rows_per_layer < 2:
        raise SpecError(f"--rows-per-layer {rows_per_layer} must be at least 2")
    if not 0 <= min_gain < 1:
        raise SpecError(f"min_gain {min_gain} must be in [0, 1) (a relative capacity gain)")


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
    progress: Callable[[str, int, int], None] | None = None,
) -> SearchResult:
    """Search ``space`` for the highest capacity at or below ``budget`` bits per parameter.

    ``law``: a Law, a law file / shipped name, or ``"default"``. ``rel_err``: target relative
    standard error of the final (reported) GMSE estimates; candidates are *compared* far more
    precisely than that, on common random numbers, so it need not be tight (capacity moves
    about a tenth as much as GMSE in relative terms). ``z``: pruning margin in standard errors; a
    candidate is dropped at a level only if the frontier member that dominates it beats it by
    more than ``z`` standard errors of their *paired* difference (common random numbers).
    ``level_rows``: Gaussian rows of ``row_length`` used by the cheap pass and each refinement;
    the final Monte Carlo estimates use up to ``max_rows`` rows (4 * row_length bytes each).
    With ``checkpoint``, the objective is real-weight MSE on up to ``rows_per_layer`` rows of
    each layer selected by ``include``/``exclude``, and 128-block rotations join the space.
    ``min_gain``: the reported frontier lists a member only if its capacity beats the previous
    member's by this relative amount (an epsilon-Pareto thinning of near-duplicates such as
    fp32 vs bf16 row scales); the best format at the budget is always listed.
    ``progress(phase, done, total)`` is called as work proceeds.
    """
    _validate(budget, rel_err, z, rows_per_layer, min_gain)
    start = time.perf_counter()
    from gmse_cli.realmse import resolve_law, stage_targets

    law_obj = resolve_law(law)
    if law_obj is None:
        raise LawError("the search needs a law for capacity (give --law or use the shipped one)")
    space = space or SearchSpace()

    if checkpoint is not None:
        from gmse_cli.checkpoint import open_checkpoint, select_layers

        layers = select_layers(open_checkpoint(checkpoint), include=include, exclude=exclude)
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

    pool = _build_pool(budget, space, lengths, weights)
    if pool.size == 0:
        wide = _build_pool(64.0, space, lengths, weights)
        cheapest = min(wide.singles, key=lambda c: c.bits_per_param, default=None)
        if len(wide.pair_bits) and (cheapest is None or wide.pair_bits.min() < cheapest.bits_per_param):
            cheapest = wide.pair(int(np.argmin(wide.pair_bits)))
        hint = f"; the cheapest is {cheapest.name} at {cheapest.bits_per_param:.4g}" if cheapest else ""
        raise SpecError(f"--bits {budget:g} is below every format in the search space{hint}")
    evaluator: _Evaluator
    if checkpoint is not None:
        evaluator = _CheckpointEvaluator(layers, rows_per_layer=rows_per_layer, seed=seed)
    else:
        evaluator = _GaussianEvaluator(
            seed=seed, rel_err=rel_err, row_length=row_length, level_rows=level_rows, max_rows=max_rows
        )
    final_level = evaluator.levels

    # (stages, level) -> (value, influence) below the final level, (value, std err) at it
    cache: dict[tuple[tuple, int], tuple[float, object]] = {}
    refused: set[tuple] = set()

    def stage_value(fmt: Format, level: int):
        key = (fmt.stages, level)
        if key not in cache:
            if level == final_level:
                cache[key] = evaluator.final(fmt, cache.get((fmt.stages, final_level - 1)))
            else:
                cache[key] = evaluator.measure(fmt, level)
        return cache[key]

    def evaluate(entry: _Entry, level: int) -> bool:
        """Measure every stage at ``level`` and combine the capacities (the paper's product);
        False if a compressor refuses the combination."""
        parts = []
        for family, fmt in entry.stages:
            if fmt.stages in refused:
                return False
            try:
                parts.append((family, *stage_value(fmt, level)))
            except SpecError:
                refused.add(fmt.stages)  # a combination the compressors reject: not a candidate
                return False
        rhos = []
        for family, value, spread in parts:
            rho_k, slope = _capacity_slope(law_obj, family, value)
            rhos.append((rho_k, slope, spread))
        rho = math.prod(r for r, _, _ in rhos)
        if level == final_level:
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

    def rd_bound(family: Family, fmt: Format) -> float:
        # A stage of b bits per Gaussian entry has GMSE >= 4^-b (rate-distortion), hence
        # capacity <= rho(4^-b). Real weights obey no such bound.
        if objective != "gaussian":
            return 1.0
        return float(law_obj.rho(family, 4.0 ** (-min(fmt.bits_per_param(n) for n in lengths))))

    # -- cheap pass 1: single formats, cheapest first, pruned against the frontier so far ----
    singles = []
    for cand in pool.singles:
        stages = stage_targets(cand.spec)
        try:
            law_obj.check_covers(f for f, _ in stages)
        except LawError:
            continue  # a family the law cannot rank
        singles.append(_Entry(cand=cand, stages=stages))
    singles.sort(key=lambda e: (e.cand.bits_per_param, e.cand.name))
    measured: list[_Entry] = []
    pruned = 0
    front = _Frontier([], z)
    since = 0
    for n, entry in enumerate(singles):
        if progress and n % 16 == 0:
            progress("cheap pass", n, len(singles))
        if since >= 32:
            front, since = _Frontier(measured, z), 0
        bound = math.prod(rd_bound(f, fmt) for f, fmt in entry.stages)
        if bound < front.at(entry.cand.bits_per_param):
            pruned += 1
            continue
        if evaluate(entry, 0):
            measured.append(entry)
            since += 1

    # -- cheap pass 2: composites, bounded by (sparsity capacity) x (quantizer bound) --------
    n_pairs = len(pool.pair_bits)
    if n_pairs:
        law_obj.check_covers([Family.SPARSITY, Family.QUANTIZATION])

        def upper(family: Family, fmt: Format) -> float:
            value, psi = stage_value(fmt, 0)
            rho_k, slope = _capacity_slope(law_obj, family, value)
            return rho_k + z * abs(slope) * math.sqrt(float(psi @ psi))

        s_hi = np.array([upper(Family.SPARSITY, s_fmt) for _, s_fmt, _, _ in pool.sparsifiers])
        q_hi = np.array([rd_bound(Family.QUANTIZATION, q_fmt) for _, q_fmt, _ in pool.quantizers])
        order = np.argsort(pool.pair_bits, kind="stable")
        front, since = _Frontier(measured, z), 0
        # Most composites fall at once: their bound is below the frontier of single formats.
        alive = order[(s_hi[pool.pair_s[order]] * q_hi[pool.pair_q[order]]) >= front.at(pool.pair_bits[order])]
        pruned += n_pairs - len(alive)
        for n, i in enumerate(alive):
            if progress and n % 16 == 0:
                progress("composites", n, len(alive))
            if since >= 32:
                front, since = _Frontier(measured, z), 0
            qi = pool.pair_q[i]
            q_fmt = pool.quantizers[qi][1]
            if (q_fmt.stages, 0) in cache:  # measured already: its own upper value is sharper
                q_hi[qi] = min(q_hi[qi], upper(Family.QUANTIZATION, q_fmt))
            if s_hi[pool.pair_s[i]] * q_hi[qi] < front.at(pool.pair_bits[i]):
                pruned += 1
                continue
            cand = pool.pair(int(i))
            entry = _Entry(cand=cand, stages=stage_targets(cand.spec))
            if evaluate(entry, 0):
                measured.append(entry)
                since += 1
    stages_measured = sum(1 for (_, level) in cache if level == 0)

    # -- refinement: keep the thinned frontier and what could still join it or beat its best
    #    by z paired standard errors (common random numbers make the pairing tight) ---------
    survivors = measured
    for level in range(1, final_level + 1):
        thin = _thin(_Frontier(survivors).members, min_gain)
        on = {id(e) for e in thin}
        best = thin[-1]
        thin_bits = np.array([e.cand.bits_per_param for e in thin])
        kept_before = []
        for e in survivors:
            k = int(np.searchsorted(thin_bits, e.cand.bits_per_param + 1e-12, side="right")) - 1
            if id(e) in on or k < 0:
                kept_before.append(e)
                continue
            # Could it open a new step of the thinned frontier above the member covering it?
            t = thin[k]
            step = (1 + min_gain) * t.rho - e.rho
            d = e.psi - (1 + min_gain) * t.psi
            # ... or be the best at the budget?
            gap = best.rho - e.rho
            db = e.psi - best.psi
            if step <= z * math.sqrt(float(d @ d)) or gap <= z * math.sqrt(float(db @ db)):
                kept_before.append(e)
        survivors = []
        for n, entry in enumerate(kept_before):
            if progress and n % 8 == 0:
                progress(f"refine {level}/{final_level}", n, len(kept_before))
            if evaluate(entry, level):
                survivors.append(entry)
    final = survivors
    if not final:
        raise SpecError(f"no format in the search space at or below {budget:g} bits could be measured")
    frontier_entries = _thin(
        [final[i] for i in pareto_frontier((e.cand.bits_per_param, e.rho) for e in final)], min_gain
    )

    def to_point(entry: _Entry) -> SearchPoint:
        if len(entry.stages) == 1:
            joint = stage_value(entry.stages[0][1], final_level)
        else:
            # The joint error of a composite is reported beside the factorized capacity, not
            # ranked on: the last level's rows (and their standard error) are enough.
            value, psi = evaluator.measure(entry.cand.spec, final_level - 1)
            joint = (value, math.sqrt(float(psi @ psi)))
        stages = []
        for family, fmt in entry.stages:
            value, se = stage_value(fmt, final_level)
            stages.append(StagePoint(family=family, name=fmt.display_name, gmse=value, std_err=se))
        spec = entry.cand.spec.model_copy(update={"name": entry.cand.name})
        return SearchPoint(
            name=entry.cand.name, bits_per_param=entry.cand.bits_per_param, gmse=joint[0],
            gmse_std_err=joint[1], rho=entry.rho, rho_std_err=entry.rho_se, spec=spec,
            stages=tuple(stages), source=entry.cand.source,
        )

    frontier = tuple(to_point(e) for e in frontier_entries)
    comparisons = _compare_catalog(singles, final, evaluate, final_level)
    return SearchResult(
        budget=budget,
        objective=objective,
        law=law_obj.name,
        best=frontier[-1],
        frontier=frontier,
        comparisons=tuple(comparisons),
        candidates=pool.size,
        pruned_by_bound=pruned,
        stages_measured=stages_measured,
        refined=len(final),
        seconds=time.perf_counter() - start,
        points=tuple((e.cand.name, e.cand.bits_per_param, e.rho) for e in measured),
    )


def _thin(front: list[_Entry], min_gain: float) -> list[_Entry]:
    """Keep frontier members (in increasing bits) whose capacity beats the last kept one by a
    relative ``min_gain``; the last member (the best at the budget) is always kept."""
    kept: list[_Entry] = []
    for entry in front[:-1]:
        if not kept or entry.rho > kept[-1].rho * (1 + min_gain):
            kept.append(entry)
    if kept and front[-1].rho <= kept[-1].rho * (1 + min_gain):
        kept.pop()  # the best replaces a member it barely beats
    return kept + front[-1:]


def _compare_catalog(entries, final, evaluate, level) -> list[CatalogComparison]:
    """Each catalog candidate (fully measured, even if pruned) against the best final entry
    at the same or fewer bits."""
    out = []
    final_sorted = sorted(final, key=lambda e: e.cand.bits_per_param)
    for entry in entries:
        if entry.cand.source != "catalog":
            continue
        if entry.level != level and not evaluate(entry, level):
            continue
        pool = [e for e in final_sorted if e.cand.bits_per_param <= entry.cand.bits_per_param + 1e-12]
        best = max(pool + [entry], key=lambda e: (e.rho, -e.cand.bits_per_param))
        out.append(
            CatalogComparison(
                catalog=entry.cand.name, catalog_bits=entry.cand.bits_per_param, catalog_rho=entry.rho,
                best=best.cand.name, best_bits=best.cand.bits_per_param, best_rho=best.rho,
                gain=best.rho - entry.rho, gain_relative=best.rho / entry.rho - 1 if entry.rho > 0 else math.inf,
            )
        )
    out.sort(key=lambda c: (c.catalog_bits, c.catalog))
    return out


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-._" else {"+": "_", ":": "of"}.get(ch, "-") for ch in name)


def write_frontier(result: SearchResult, out_dir: str | Path) -> list[Path]:
    """Write each frontier member as ``NN-<name>.toml`` (a format file every command reads)."""
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpecError(f"--out-dir {out_dir}: cannot create it: {exc.strerror or exc}") from None
    paths = []
    for i, point in enumerate(result.frontier):
        spec = point.spec.model_copy(
            update={
                "description": (
                    f"uscl search --bits {result.budget:g}: {point.bits_per_param:.4f} bits/param, "
                    f"{'GMSE' if result.objective == 'gaussian' else 'real-weight MSE'} {point.gmse:.6g}, "
                    f"rho {point.rho:.4f} (law {result.law})"
                )
            }
        )
        path = out_dir / f"{i:02d}-{_slug(point.name)}.toml"
        try:
            write_text_atomic(path, format_to_toml(spec))
        except OSError as exc:
            raise SpecError(f"--out-dir: cannot write {path}: {exc.strerror or exc}") from None
        paths.append(path)
    return paths
