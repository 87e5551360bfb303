"""The rotation stage: a blockwise Hadamard transform of each row, undone after compression."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from gmse_cli.errors import SpecError
from gmse_cli.limits import MAX_SEED
from gmse_cli.spec.sizes import check_divides
from gmse_cli.spec.vocab import MAX_ROW_LENGTH, SpecModel

__all__ = ["Rotate"]


class Rotate(SpecModel):
    """Blockwise orthonormal Hadamard transform of each row (undone after compression)."""

    kind: Literal["rotate"] = "rotate"
    transform: Literal["hadamard"] = "hadamard"
    block: int = Field(default=128, ge=2, le=MAX_ROW_LENGTH)
    random_signs: bool = Field(default=False, description="randomized Hadamard (QuIP#-style)")
    seed: int = Field(default=0, ge=0, le=MAX_SEED, description="seed of the random signs (as every seed)")

    @field_validator("block")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise SpecError(f"rotate: Hadamard block {value} is not a power of two")
        return value

    @model_validator(mode="after")
    def _seed_needs_signs(self) -> Rotate:
        # An inert seed would run the plain Hadamard silently, and compare (and cache) unequal
        # to it: refused, as every setting that does nothing is.
        if self.seed and not self.random_signs:
            raise SpecError(
                f"rotate: seed {self.seed} only applies with random_signs = true "
                "(without random signs the rotation is the plain Hadamard)"
            )
        return self

    def check_row_length(self, row_length: int) -> None:
        check_divides("Hadamard block", self.block, row_length)

    def label(self) -> str:
        signs = " with random signs" if self.random_signs else ""
        return f"hadamard {self.block}{signs}"
