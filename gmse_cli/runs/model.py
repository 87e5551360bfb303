"""The Run model: one finished training run as validated data, and how a scheme is named."""

from __future__ import annotations

import math
from typing import Any

from pydantic import Field, model_validator

from gmse_cli.errors import DataError
from gmse_cli.frozen import Frozen
from gmse_cli.spec import Format, resolve_format

__all__ = ["Run", "MetaValue", "DENSE_FORMATS", "MAX_LOSS", "RunsWarning", "check_run_numbers", "scheme_name",
           "tensor_bits"]

MetaValue = str | int | float | bool | None

DENSE_FORMATS = frozenset({"bf16", "fp16", "fp32"})
"""Plain casts that count as the uncompressed reference (capacity 1 in a decoupled fit)."""


MAX_LOSS = 100.0
"""Largest validation loss a run may report, in nats per token. Guessing uniformly over a
vocabulary of e^100 (2.7e43) words costs 100 nats; a larger number is no cross-entropy (a
perplexity, a sum over a sequence, a diverged run), and one such outlier would decide a
log-loss fit."""


class RunsWarning(UserWarning):
    """A run was skipped while loading (diverged, unfinished)."""


def check_run_numbers(N: float, D: float, loss: float, where: str) -> None:
    """A DataError naming ``where`` (a run, or a file's line) unless N and D are finite counts of
    at least 1 and loss is a positive cross-entropy of at most :data:`MAX_LOSS` nats: a loader
    checks before it makes the :class:`Run`, so the error names the line."""
    for key, value in (("N", N), ("D", D)):
        if not (math.isfinite(value) and value >= 1):
            raise DataError(f"{where}: {key} = {value} must be a count of at least 1 ({'parameters' if key == 'N' else 'tokens'})")
    if not (math.isfinite(loss) and loss > 0):
        raise DataError(f"{where}: loss = {loss} must be a positive finite number (drop diverged runs before fitting)")
    if loss > MAX_LOSS:
        raise DataError(f"{where}: loss = {loss} is over {MAX_LOSS:g} nats per token, so it is no validation "
                        "cross-entropy (a perplexity, or a loss summed over a sequence?)")


def scheme_name(weights: str, activations: str | None) -> str:
    """The scheme's display name, as :attr:`gmse_cli.spec.Scheme.display_name` writes it."""
    return weights if activations is None else f"W:{weights} A:{activations}"


def tensor_bits(spec: str | None, fmt: Format | None = None) -> float:
    """Element bits of a tensor's format: the quantizer's bits, 16 for none or a sparse-only format."""
    if spec is None and fmt is None:
        return 16.0
    fmt = fmt if fmt is not None else resolve_format(spec)  # type: ignore[arg-type]
    quantizer = fmt.quantizer
    if quantizer is None:
        return 16.0
    return float(quantizer.element_bits) if hasattr(quantizer, "element_bits") else float(quantizer.bits)


class Run(Frozen):
    """One finished training run: what was compressed, how big, how long, and the final loss."""

    scheme: str = Field(description="scheme display name: 'int4' (weights only) or 'W:int4 A:int4'")
    weights: str = Field(description="weight format spec (catalog name or shorthand)")
    activations: str | None = Field(default=None, description="activation format spec; None = not compressed")
    N: float = Field(description="non-embedding parameters")
    D: float = Field(description="training tokens")
    loss: float = Field(description="final validation loss (nats per token)")
    source: str = Field(default="", description="file the run was read from")
    location: str = Field(
        default="", description="where in its file: 'runs.csv:3', 'runs.json record 2' (for messages; not what the run is)"
    )
    weights_spec: Format | None = Field(default=None, description="full weight format when given inline")
    activations_spec: Format | None = Field(default=None, description="full activation format when given inline")
    stage_gmse: tuple[tuple[str, float], ...] | None = Field(
        default=None, description="(family, GMSE) of each lossy stage, weights first, as the run recorded them"
    )
    meta: dict[str, MetaValue] = Field(default_factory=dict, description="anything else recorded")

    @model_validator(mode="after")
    def _check(self) -> Run:
        where = f" ({self.source})" if self.source else ""
        check_run_numbers(self.N, self.D, self.loss, f"run '{self.scheme}'{where}")
        return self

    # -- derived ------------------------------------------------------------------------------

    def weight_format(self) -> Format:
        return self.weights_spec if self.weights_spec is not None else resolve_format(self.weights)

    def activation_format(self) -> Format | None:
        if self.activations_spec is not None:
            return self.activations_spec
        return None if self.activations is None else resolve_format(self.activations)

    @property
    def w_bits(self) -> float:
        """Weight element bits (16 when weights stay bf16)."""
        value = self.meta.get("w_bits")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return tensor_bits(self.weights, self.weights_spec)

    @property
    def a_bits(self) -> float:
        """Activation element bits (16 when activations are not compressed)."""
        value = self.meta.get("a_bits")
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if self.activations is None and self.activations_spec is None:
            return 16.0
        return tensor_bits(self.activations, self.activations_spec)

    @property
    def tokens_per_param(self) -> float:
        return self.D / self.N

    @property
    def is_dense(self) -> bool:
        """Uncompressed: a plain 16/32-bit cast of the weights and no activation format."""
        return self.activations is None and self.weights in DENSE_FORMATS

    def field(self, key: str) -> Any:
        """The value ``--where`` compares for ``key`` (case-insensitive for the built-in keys)."""
        lowered = key.lower()
        builtin = {
            "scheme": self.scheme,
            "weights": self.weights,
            "activations": "none" if self.activations is None else self.activations,
            "n": self.N,
            "d": self.D,
            "loss": self.loss,
            "source": self.source,
            "w_bits": self.w_bits,
            "a_bits": self.a_bits,
            "tokens_per_param": self.tokens_per_param,
            "tpp": self.tokens_per_param,
        }
        if lowered in builtin:
            return builtin[lowered]
        if key in self.meta:
            return self.meta[key]
        raise KeyError(key)
