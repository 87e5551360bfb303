"""The search space: what is enumerated, and every candidate it holds at a bit budget.

Candidates are named by the shorthand they parse from, so every name can be typed back into
any command. Composites (a sparsity stage, then a scalar quantizer) stay index pairs in a
:class:`Pool` until one survives the search's bounds: there are thousands of them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from gmse_cli.errors import SpecError
from gmse_cli.frozen import Frozen
from gmse_cli.limits import MEMO_ENTRIES
from gmse_cli.spec import (
    DEFAULT_ROW_LENGTH,
    Format,
    Quantize,
    ScaleFormat,
    ScaleRule,
    catalog,
    parse_shorthand,
)

Group = Literal["row"] | int


class SearchSpace(Frozen):
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

    @field_validator("scale_rules")
    @classmethod
    def _searched_rules(cls, rules: tuple[ScaleRule, ...]) -> tuple[ScaleRule, ...]:
        # else a rule the enumeration has no name for yields no candidate, without a word
        left = [rule.value for rule in rules if rule not in _RULE_TOKEN]
        if left:
            raise ValueError(f"scale rule {', '.join(left)} is not searched (searched: rms, absmax, mse)")
        return rules


class Candidate(Frozen):
    """One point of the search space."""

    name: str = Field(description="shorthand that parses back to this format")
    spec: Format
    bits_per_param: float
    source: Literal["search", "catalog"] = "search"


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


@lru_cache(maxsize=4 * MEMO_ENTRIES)  # a search's few thousand names, kept between searches
def _parse(name: str) -> Format | None:
    """The format a shorthand names, or None when the combination is invalid (cached: the
    same few thousand names come back in every search of a process)."""
    try:
        return parse_shorthand(name)
    except SpecError:
        return None


@dataclass
class Pool:
    """The search space at one budget, composites kept as (sparsity, quantizer) index pairs so
    that the thousands of them cost nothing until one survives the bounds."""

    singles: list[Candidate]  # dense quantizers, vector quantizers, catalog formats
    quantizers: list[tuple[str, Format, float]]  # scalar quantizers composites draw from
    sparsifiers: list[tuple[str, Format, float, float]]  # name, format, mask bits, kept fraction
    pair_s: np.ndarray  # composite i = sparsifiers[pair_s[i]] then quantizers[pair_q[i]]
    pair_q: np.ndarray
    pair_bits: np.ndarray  # mask + density * element bits + scale bits (the format's own cost up to rounding)
    cost: Callable[[Format], float]

    @property
    def size(self) -> int:
        return len(self.singles) + len(self.pair_bits)

    def pair(self, i: int) -> Candidate:
        s_name, s_fmt, _, _ = self.sparsifiers[self.pair_s[i]]
        q_name, q_fmt, _ = self.quantizers[self.pair_q[i]]
        spec = _composite(s_name, s_fmt, q_name, q_fmt)
        return Candidate(name=spec.name, spec=spec, bits_per_param=self.cost(spec))


def _composite(s_name: str, s_fmt: Format, q_name: str, q_fmt: Format) -> Format:
    """A sparsifier then a quantizer, named as the shorthand writes them."""
    return Format(name=f"{s_name}+{q_name}", stages=(*s_fmt.stages, *q_fmt.stages))


_ROUNDING = 1e-9  # far above the sum's rounding, far below any two formats' difference in bits


def build_pool(budget: float, space: SearchSpace, lengths: Sequence[int], weights: Sequence[float]) -> Pool:
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
        if bits <= budget:  # the cost reported, so no tolerance: 4.25 bits never fit --bits 4.2499999999999
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
            # mask bits and kept fraction as each row length rounds them, weighted as cost() is
            stage = fmt.sparsifier
            mask = sum(stage.mask_bits(n) * w for n, w in zip(lengths, weights, strict=True)) / total
            kept = sum(stage.kept_fraction(n) * w for n, w in zip(lengths, weights, strict=True)) / total
            sparsifiers.append((name, fmt, mask, kept))
    # Kept values cost density * element bits and scales their dense cost (one per group of
    # positions), so quantizers up to (budget - mask) / density dense bits can still fit (any,
    # where short rows round the kept count to none).
    room = max(((budget - m) / d if d > 0 else float("inf") for _, _, m, d in sparsifiers), default=0.0)
    quantizers = []
    unique: set[tuple] = set()
    for q in _quantizer_names(space, room, vq=False):
        fmt = _parse(q)
        if fmt is not None and fmt.stages not in unique and fits(fmt):
            unique.add(fmt.stages)
            quantizers.append((q, fmt, cost(fmt)))
    q_elements = np.array([fmt.quantizer.element_bits for _, fmt, _ in quantizers], dtype=float)
    q_scales = np.array([b for _, _, b in quantizers]) - q_elements
    ps, pq, pb = [], [], []
    for i, (_, _, mask, density) in enumerate(sparsifiers):
        bits = mask + density * q_elements + q_scales
        # The sum above can round a few ulps off the format's own cost (the one reported), so
        # pairs within rounding of the budget are decided by that cost, exactly.
        (ok,) = np.nonzero(bits <= budget + _ROUNDING)
        near = ok[bits[ok] > budget - _ROUNDING]
        if len(near):
            s_name, s_fmt = sparsifiers[i][:2]
            over = [j for j in near if cost(_composite(s_name, s_fmt, *quantizers[j][:2])) > budget]
            ok = np.setdiff1d(ok, over)
        ps.append(np.full(len(ok), i))
        pq.append(ok)
        pb.append(bits[ok])

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype) if parts else np.empty(0, dtype)

    return Pool(singles=singles, quantizers=quantizers, sparsifiers=sparsifiers,
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
    pool = build_pool(budget, space or SearchSpace(), list(row_lengths), weights)
    return pool.singles + [pool.pair(i) for i in range(len(pool.pair_bits))]
