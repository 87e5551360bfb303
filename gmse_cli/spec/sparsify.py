"""The pruning stage: unstructured magnitude, N:M (of entries or of blocks of K entries) or
block sparsity, with its validation, storage cost and label."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gmse_cli.errors import SpecError
from gmse_cli.spec.sizes import check_divides, round_count
from gmse_cli.spec.vocab import (
    DEFAULT_ROW_LENGTH,
    MAX_ROW_LENGTH,
    CaseInsensitive,
    SparsityPattern,
    SpecModel,
    lowercase,
)

__all__ = ["Sparsify"]


def _binary_entropy(p: float) -> float:
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


class Sparsify(SpecModel):
    """Pruning: unstructured magnitude, N:M (of entries, or of blocks of K entries), or blocks."""

    kind: Literal["sparsify"] = "sparsify"
    pattern: Annotated[SparsityPattern, CaseInsensitive] = SparsityPattern.MAGNITUDE
    sparsity: float | None = Field(default=None, description="fraction set to zero, in [0, 1)")
    n: int | None = Field(default=None, ge=1, description="n:m: units kept of every m")
    m: int | None = Field(default=None, ge=1)
    block: int | None = Field(
        default=None,
        ge=1,
        le=MAX_ROW_LENGTH,
        description="block pattern: block length; n:m: K, the entries of one unit (N:MxK keeps "
        "the N of every M consecutive blocks of K entries with the largest L2 norm; None = 1)",
    )
    granularity: Annotated[Literal["row", "tensor"], CaseInsensitive] = "row"

    @model_validator(mode="before")
    @classmethod
    def _one_entry_units(cls, data: Any) -> Any:
        # N:Mx1 is plain N:M: one spelling, so equal formats compare (and hash) equal.
        if (
            isinstance(data, dict)
            and lowercase(data.get("pattern")) == SparsityPattern.NM
            and data.get("block") == 1
            and not isinstance(data.get("block"), bool)
        ):
            data = {k: v for k, v in data.items() if k != "block"}
        return data

    @model_validator(mode="after")
    def _check(self) -> Sparsify:
        if self.pattern is SparsityPattern.NM:
            if self.n is None or self.m is None:
                raise SpecError("sparsify: pattern 'n:m' needs n and m")
            if self.n > self.m:
                raise SpecError(f"sparsify: N={self.n} > M={self.m}; N:M keeps N of every M")
            if self.m > 64:
                raise SpecError(f"sparsify: M={self.m} is above the supported 64")
            if self.sparsity is not None:
                raise SpecError("sparsify: pattern 'n:m' takes n, m and optionally block (K), not sparsity")
        else:
            if self.sparsity is None:
                raise SpecError(f"sparsify: pattern '{self.pattern}' needs 'sparsity' in [0, 1)")
            if not (0.0 <= self.sparsity < 1.0) or not math.isfinite(self.sparsity):
                raise SpecError(f"sparsify: sparsity={self.sparsity} is outside [0, 1)")
            if self.n is not None or self.m is not None:
                raise SpecError("sparsify: n and m only apply to pattern 'n:m'")
            if self.pattern is SparsityPattern.BLOCK and self.block is None:
                raise SpecError("sparsify: pattern 'block' needs 'block', the block length")
            if self.pattern is SparsityPattern.MAGNITUDE and self.block is not None:
                raise SpecError("sparsify: 'block' only applies to patterns 'block' and 'n:m'")
        return self

    @property
    def density(self) -> float:
        """Fraction of entries kept."""
        if self.pattern is SparsityPattern.NM:
            assert self.n is not None and self.m is not None
            return self.n / self.m
        assert self.sparsity is not None
        return 1.0 - self.sparsity

    @property
    def unit(self) -> int:
        """N:M: entries per ranked unit, K (1 for plain N:M); block pattern: the block length."""
        return self.block or 1

    def kept_units(self, row_length: int) -> tuple[int, int, int]:
        """(units kept, units, entries per unit) of each group the stage prunes on its own: N:MxK
        keeps N of M units of K entries; row-wise magnitude (K = 1) and block pruning keep theirs
        of the row's units, counted as the masks count them (round half up)."""
        if self.pattern is SparsityPattern.NM:
            assert self.n is not None and self.m is not None
            return self.n, self.m, self.unit
        units = row_length // self.unit
        if self.pattern is SparsityPattern.MAGNITUDE:
            return round_count(self.density, units), units, 1
        assert self.sparsity is not None
        return units - round_count(self.sparsity, units), units, self.unit

    def kept_fraction(self, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        """Fraction of the entries the compressor keeps on rows of ``row_length``: N/M, or for
        pruning per row the whole count it rounds to (sparse15 keeps 9 of 10 entries: 0.9, not
        0.85; block4-25 zeroes 3 of 10 blocks of a row of 40: 0.7). Pruning per tensor rounds
        one count over the whole tensor, which moves the fraction by under 1/(rows x row
        length): the density itself."""
        if self.pattern is not SparsityPattern.NM and self.granularity == "tensor":
            return self.density
        kept, units, _ = self.kept_units(row_length)
        return kept / units if units else self.density

    def mask_bits(self, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        """Bits per parameter to store which entries are kept, on rows of ``row_length``."""
        if self.pattern is SparsityPattern.NM:
            assert self.n is not None and self.m is not None
            # one of C(M, N) choices per group of M units of K entries
            return math.log2(math.comb(self.m, self.n)) / (self.m * self.unit)
        entropy = _binary_entropy(self.kept_fraction(row_length))
        if self.pattern is SparsityPattern.BLOCK:
            assert self.block is not None
            return entropy / self.block
        return entropy

    def occupancy(self, width: int, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        """Expected fraction of the aligned slices of ``width`` consecutive entries that keep at
        least one entry (a VQ stage codes each such slice), for rows whose pruning ranks
        exchangeable units (i.i.d. entries): the units a slice touches are all pruned with
        probability C(M - t, N) / C(M, N) for t units of one N:M group, s^t for t blocks or
        entries pruned at rate s (the rate kept on rows of ``row_length``). Slices inside one
        unit give the kept fraction itself."""
        kept = self.kept_fraction(row_length)
        if self.pattern is SparsityPattern.MAGNITUDE:
            return 1.0 - (1.0 - kept) ** width
        unit = self.unit
        group = self.m * unit if self.pattern is SparsityPattern.NM else unit
        period = math.lcm(width, group)  # the slices' pattern of units repeats after this
        pruned = 0.0
        for start in range(0, period, width):
            units = range(start // unit, (start + width - 1) // unit + 1)
            if self.pattern is SparsityPattern.BLOCK:
                pruned += (1.0 - kept) ** len(units)
                continue
            assert self.n is not None and self.m is not None
            per_group: dict[int, int] = {}
            for u in units:
                per_group[u // self.m] = per_group.get(u // self.m, 0) + 1
            pruned += math.prod(math.comb(self.m - t, self.n) / math.comb(self.m, self.n) for t in per_group.values())
        return 1.0 - pruned / (period // width)

    def check_row_length(self, row_length: int) -> None:
        if self.pattern is SparsityPattern.NM:
            assert self.m is not None
            if self.unit == 1:
                check_divides("N:M group M", self.m, row_length)
            else:
                check_divides(f"N:MxK group M*K = {self.m}*{self.unit} =", self.m * self.unit, row_length)
        if self.pattern is SparsityPattern.BLOCK:
            assert self.block is not None
            check_divides("sparsity block", self.block, row_length)

    def label(self) -> str:
        if self.pattern is SparsityPattern.NM:
            if self.unit > 1:
                return f"{self.n}:{self.m} sparsity of blocks of {self.unit} (by L2 norm)"
            return f"{self.n}:{self.m} sparsity"
        extra = f" blocks of {self.block}" if self.pattern is SparsityPattern.BLOCK else ""
        return f"{self.pattern} sparsity {self.sparsity:g}{extra} per {self.granularity}"
