"""A format (an ordered tuple of stages) and a scheme (weight and activation formats)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from gmse_cli.errors import SpecError, UsclError, is_control
from gmse_cli.spec.stages import VQ, Quantize, Rotate, Sparsify, Stage
from gmse_cli.spec.vocab import (
    DEFAULT_ROW_LENGTH,
    TENSOR_LEVEL_SCALE_FORMATS,
    Family,
    ScaleRule,
    ScaleStats,
    SpecModel,
    check_row_length,
    lowercase,
)

__all__ = ["Format", "Scheme", "validate_format", "validation_message", "check_name"]

_STAGE_ORDER = {"rotate": 0, "sparsify": 1, "quantize": 2, "vq": 2}


class Format(SpecModel):
    """A compressed representation: stages applied in order to each row."""

    name: str | None = None
    description: str = ""
    stages: tuple[Stage, ...] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _one_line_name(cls, name: str | None) -> str | None:
        return check_name(name, "format")

    @model_validator(mode="before")
    @classmethod
    def _stage_kinds_any_case(cls, data: Any) -> Any:
        # A stage's kind is a name like its grid or scale rule, read in any case ("QUANTIZE").
        stages = data.get("stages") if isinstance(data, dict) else None
        if isinstance(stages, list | tuple):
            data = {**data, "stages": [
                {**s, "kind": s["kind"].lower()} if isinstance(s, dict) and isinstance(s.get("kind"), str) else s
                for s in stages
            ]}
        return data

    @model_validator(mode="before")
    @classmethod
    def _kept_stats_without_pruning(cls, data: Any) -> Any:
        # With no sparsify stage, 'all' and 'kept' scale statistics are the same entries: read
        # as 'kept' (the default), so the two spellings are one format and one GMSE cache key.
        stages = data.get("stages") if isinstance(data, dict) else None
        if not isinstance(stages, list | tuple) or any(_kind(s) == "sparsify" for s in stages):
            return data
        return {**data, "stages": [_without_all_stats(s) for s in stages]}

    @model_validator(mode="after")
    def _check(self) -> Format:
        order = [_STAGE_ORDER[s.kind] for s in self.stages]
        if order != sorted(order):
            raise SpecError(
                "format: stages must run rotate, then sparsify, then quantize or vq "
                f"(got {' -> '.join(s.kind for s in self.stages)})"
            )
        if sum(s.kind == "sparsify" for s in self.stages) > 1:
            raise SpecError("format: at most one sparsify stage")
        if sum(s.kind in ("quantize", "vq") for s in self.stages) > 1:
            raise SpecError("format: at most one quantize or vq stage")
        return self

    # -- structure ----------------------------------------------------------------------------

    @property
    def display_name(self) -> str:
        return self.name or "+".join(s.label() for s in self.stages)

    @property
    def quantizer(self) -> Quantize | VQ | None:
        return next((s for s in self.stages if isinstance(s, Quantize | VQ)), None)

    @property
    def sparsifier(self) -> Sparsify | None:
        return next((s for s in self.stages if isinstance(s, Sparsify)), None)

    @property
    def rotations(self) -> tuple[Rotate, ...]:
        return tuple(s for s in self.stages if isinstance(s, Rotate))

    @property
    def families(self) -> tuple[Family, ...]:
        """Families of the lossy stages, in order (empty for a lossless format)."""
        out: list[Family] = []
        for stage in self.stages:
            if isinstance(stage, Sparsify):
                out.append(Family.SPARSITY)
            elif isinstance(stage, Quantize):
                out.append(Family.QUANTIZATION)
            elif isinstance(stage, VQ):
                out.append(Family.VQ)
        return tuple(out)

    @property
    def family(self) -> str:
        """One family name, or ``composite`` (e.g. ``sparsity+quantization``)."""
        fams = self.families
        if not fams:
            return Family.NONE.value
        return "+".join(f.value for f in fams)

    @property
    def rows_independent(self) -> bool:
        """Whether each row is compressed from its own entries alone: no stage has a
        per-tensor scale or pruning threshold, or a per-tensor second level of its scales
        (e4m3, int8, dq8). Rows are then i.i.d. units of the Monte Carlo standard error."""
        for stage in self.stages:
            if isinstance(stage, Quantize | VQ) and (
                stage.group == "tensor" or stage.scale_format in TENSOR_LEVEL_SCALE_FORMATS
            ):
                return False
            if isinstance(stage, Sparsify) and stage.granularity != "row":
                return False
        return True

    def stage_formats(self, *, keep_rotations: bool = False) -> list[tuple[Family, Format]]:
        """Each lossy stage as a standalone format, in order.

        The capacity law factorizes over these: rho(format) = prod rho_family(MSE(stage)).
        Rotations ride along with the quantizer. The sparsity stage drops them by default, for
        GMSE: a rotated i.i.d. Gaussian row is again i.i.d. Gaussian, so the rotation changes
        nothing there, and without it the stage shares its GMSE estimate (and cache entry) with
        the plain sparsity format. ``keep_rotations=True`` keeps them on every stage, for real
        weights (:func:`gmse_cli.realmse.stage_targets`): a rotated format sparsifies *rotated*
        weights, so its sparsity stage alone must see them rotated too.
        """
        rotations = self.rotations
        parts: list[tuple[Family, Format]] = []
        for family, stage in zip(self.families, (s for s in self.stages if s.kind != "rotate"), strict=True):
            prefix = rotations if keep_rotations or family is not Family.SPARSITY else ()
            parts.append(
                (family, Format(name=f"{self.display_name}[{stage.kind}]", stages=(*prefix, stage)))
            )
        return parts

    # -- cost ---------------------------------------------------------------------------------

    def bits_per_param(self, row_length: int = DEFAULT_ROW_LENGTH) -> float:
        """Storage bits per parameter: elements + amortized scales + mask/indices + codebooks.

        Scales of ``tensor`` granularity (and NVFP4's second-level fp32 scale) are amortized
        over a whole tensor and counted as zero.
        """
        density = 1.0
        bits = 0.0
        sparsifier = self.sparsifier
        if sparsifier is not None:
            # the entries the compressor keeps on these rows, not the nominal density: a row
            # of 10 under sparse15 stores 9 values, and its GMSE is that of 9 kept
            density = sparsifier.kept_fraction(row_length)
            bits += sparsifier.mask_bits(row_length)
        quantizer = self.quantizer
        if quantizer is None:
            return bits + density * 16.0  # kept values stay in bf16
        if isinstance(quantizer, Quantize):
            bits += density * quantizer.element_bits
        else:
            # The compressor codes slices of dim positions, pruned entries included: every slice
            # that keeps an entry stores an index (slices inside one pruned unit: the density).
            occupied = 1.0 if sparsifier is None else sparsifier.occupancy(quantizer.dim, row_length)
            bits += occupied * quantizer.bits
            bits += quantizer.codebook_bits(row_length * row_length)
        # Scales are per group of *positions* (the compressor's groups are g consecutive
        # entries, kept or not), so a sparsify stage leaves their count unchanged.
        bits += quantizer.scale_bits(row_length)
        return bits

    def check_row_length(self, row_length: int) -> None:
        """Raise :class:`SpecError` if a group, block or dimension does not divide the row (or
        the row length is no whole number from 1 to :data:`MAX_ROW_LENGTH`)."""
        check_row_length(row_length)
        for stage in self.stages:
            stage.check_row_length(row_length)

    def describe(self) -> str:
        return self.description or " -> ".join(s.label() for s in self.stages)


def check_name(name: str | None, what: str) -> str | None:
    """``name`` unless it holds a control character (a newline, an escape): a name is one line
    in every table, file and error that shows it."""
    if name is not None and any(is_control(c) for c in name):
        raise SpecError(f"{what} name {name!r} holds a control character; a name is one line of text")
    return name


def _kind(stage: Any) -> Any:
    return lowercase(stage.get("kind")) if isinstance(stage, dict) else getattr(stage, "kind", None)


def _without_all_stats(stage: Any) -> Any:
    """A quantize stage's 'all' scale statistics as the default 'kept' (a scale rule 'none',
    which takes no statistics, is left for its own check to refuse)."""
    if isinstance(stage, Quantize):
        return stage.model_copy(update={"scale_stats": ScaleStats.KEPT}) if stage.scale_stats is ScaleStats.ALL else stage
    if (
        isinstance(stage, dict) and _kind(stage) == "quantize"
        and lowercase(stage.get("scale_stats")) == ScaleStats.ALL
        and lowercase(stage.get("scale", ScaleRule.RMS)) != ScaleRule.NONE
    ):
        return {k: v for k, v in stage.items() if k != "scale_stats"}
    return stage


class Scheme(SpecModel):
    """A weight format with an optional activation format (capacities multiply)."""

    weights: Format
    activations: Format | None = None
    name: str | None = None

    @field_validator("name")
    @classmethod
    def _one_line_name(cls, name: str | None) -> str | None:
        return check_name(name, "scheme")

    @property
    def display_name(self) -> str:
        if self.name:
            return self.name
        if self.activations is None:
            return self.weights.display_name
        return f"W:{self.weights.display_name} A:{self.activations.display_name}"


def validate_format(data: Any, *, source: str) -> Format:
    """``data`` as a :class:`Format`; any validation error is a one-line :class:`SpecError` after ``source``."""
    try:
        return Format.model_validate(data)
    except SpecError:
        raise
    except ValidationError as exc:
        raise SpecError(f"{source}: {validation_message(exc)}") from None


def validation_message(exc: ValidationError) -> str:
    """The first error of ``exc`` as one line: where, what, and the value given (what every
    spec and training-config validation error says after its source)."""
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()) if not str(p).startswith("function-"))
    msg = err.get("msg", str(exc))
    ctx_error = (err.get("ctx") or {}).get("error")
    if isinstance(ctx_error, UsclError):
        msg = str(ctx_error)
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if err.get("type") == "extra_forbidden":
        msg = "unknown key (check its spelling)"
    given = err.get("input")
    shown = _got_suffix(msg, given) if isinstance(given, str | int | float) and err.get("type") != "extra_forbidden" else ""
    return f"{where}: {msg}{shown}" if where else f"{msg}{shown}"


def _got_suffix(message: str, given: object) -> str:
    """`` (got VALUE)`` to end an error line about ``given``, or nothing where ``message``
    already names it ("Hadamard block 11008 is not a power of two" needs no "(got 11008)")."""
    if isinstance(given, str):
        named = repr(given) in message or f'"{given}"' in message
    else:  # a number named as a whole token, not as a digit of "int4"
        named = re.search(rf"(?<![\w.]){re.escape(str(given))}(?![\w.])", message) is not None
    return "" if named else f" (got {given!r})"
