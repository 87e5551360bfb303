"""The vector quantization stage: each d-dimensional slice replaced by its nearest codeword."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from gmse_cli.errors import SpecError
from gmse_cli.spec.sizes import check_divides, checked_group_size, granularity_size
from gmse_cli.spec.vocab import (
    DEFAULT_ROW_LENGTH,
    MAX_ROW_LENGTH,
    SCALE_FORMAT_BITS,
    CaseInsensitive,
    ScaleFormat,
    SpecModel,
    lowercase,
)

__all__ = ["VQ", "is_codebook_file"]

_MAX_VQ_INDEX_BITS = 16  # at most 2^16 codewords


def is_codebook_file(value: Any) -> bool:
    """Whether a VQ stage's ``codebook`` names a .npy file (any case) rather than a codebook kind."""
    return isinstance(value, str) and value.lower().endswith(".npy")


class VQ(SpecModel):
    """Vector quantization: each d-dimensional slice is replaced by its nearest codeword."""

    kind: Literal["vq"] = "vq"
    dim: int = Field(ge=1, le=16)
    bits: float = Field(gt=0, description="bits per coordinate; bits * dim must be an integer")
    codebook: str = Field(
        default="gaussian",
        description="'gaussian' (Lloyd on Gaussian samples), 'e8' (E8 lattice, d=8, 2 bits), or a .npy path",
    )
    scale: Literal["rms"] = "rms"
    group: Literal["row"] | Annotated[int, Field(ge=1)] = "row"
    scale_format: Annotated[ScaleFormat, CaseInsensitive] = ScaleFormat.FP32
    codebook_shared: bool = Field(
        default=True,
        description="a universal codebook costs nothing per tensor; an unshared one is amortized",
    )

    @field_validator("group", mode="before")
    @classmethod
    def _group(cls, value: Any) -> Any:
        value = lowercase(value)
        if isinstance(value, str) and value.isascii() and value.isdigit():
            value = int(value)  # '64' reads as 64, as a quantize stage's group does
        if isinstance(value, str) and value != "row":  # 'tensor': one scale for the whole tensor has no VQ form
            raise SpecError(f"vq: group '{value}' must be 'row' or a whole number from 1 to {MAX_ROW_LENGTH:,}")
        return checked_group_size(value, "vq", "'row'")

    @field_validator("codebook", mode="before")
    @classmethod
    def _codebook(cls, value: Any) -> Any:
        # Named codebooks are case-insensitive; a file path is kept as written.
        return value if is_codebook_file(value) else lowercase(value)

    @model_validator(mode="after")
    def _check(self) -> VQ:
        index_bits = self.bits * self.dim
        if not math.isfinite(index_bits):  # bits = 1e308 at dim 2: round(inf) raised a traceback
            raise SpecError(f"vq: bits*dim = {self.bits:g}*{self.dim} is too large (codebook of 2^(bits*dim))")
        if abs(index_bits - round(index_bits)) > 1e-9:
            raise SpecError(f"vq: bits*dim = {index_bits:g} must be an integer (codebook of 2^(bits*dim))")
        if round(index_bits) < 1:  # bits = 1e-12: one codeword, no information
            raise SpecError(f"vq: bits*dim = {index_bits:g} must be at least 1 (codebook of 2^(bits*dim))")
        if round(index_bits) > _MAX_VQ_INDEX_BITS:
            # named by bits and dim as written: round() of a huge float prints digits nobody wrote
            raise SpecError(f"vq: bits*dim = {self.bits:g}*{self.dim} asks for 2^{index_bits:g} codewords, above "
                            f"the supported 2^{_MAX_VQ_INDEX_BITS}")
        if self.codebook == "e8" and (self.dim != 8 or round(index_bits) != 16):
            raise SpecError("vq: the e8 codebook is 8-dimensional with 2 bits per coordinate")
        if self.codebook not in ("gaussian", "e8") and not is_codebook_file(self.codebook):
            raise SpecError(f"vq: codebook '{self.codebook}' is not 'gaussian', 'e8' or a .npy file")
        if self.scale_format is ScaleFormat.DQ8:
            raise SpecError("vq: dq8 scales (bitsandbytes double quantization) apply to quantize stages only")
        return self

    @property
    def codewords(self) -> int:
        return 2 ** round(self.bits * self.dim)

    def scale_bits(self, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        return SCALE_FORMAT_BITS[self.scale_format] / granularity_size(self.group, row_length)

    def codebook_bits(self, tensor_elements: int) -> float:
        """Amortized cost of an unshared fp16 codebook over one tensor."""
        if self.codebook_shared:
            return 0.0
        return self.codewords * self.dim * 16 / tensor_elements

    def check_row_length(self, row_length: int) -> None:
        check_divides("vq dimension", self.dim, row_length)
        if isinstance(self.group, int):
            check_divides("vq group size", self.group, row_length)
            if self.group % self.dim:
                raise SpecError(f"vq: group size {self.group} is not a multiple of dim {self.dim}")

    def label(self) -> str:
        return f"vq d={self.dim} {self.bits:g} bits/coord ({self.codewords} {self.codebook} codewords)"
