"""What ``uscl mse --activations`` reports: per-layer statistics of the real activations, the
formats' MSEs on them, and weights x activations schemes' capacities
(:func:`~gmse_cli.realmse.activations.measure_activations` measures them)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from pydantic import Field

from gmse_cli.frozen import Frozen
from gmse_cli.realmse.report import FormatMse

__all__ = ["ActivationLayer", "SchemeCapacity", "ActivationReport", "weighted_mean", "largest", "pair_schemes"]


class ActivationLayer(Frozen):
    """The inputs of one linear layer over the text: how far from Gaussian they are."""

    name: str = Field(description="module name")
    row_length: int = Field(description="the layer's input features")
    rows: int = Field(description="token rows with a nonzero input (the population measured)")
    zero_rows: int = Field(description="all-zero token rows, left out")
    params: int = Field(description="the layer's weight parameters (its weight in overall means)")
    kurtosis: float | None = Field(description="mean row kurtosis (Pearson, about the row mean; 3 for a Gaussian)")
    kurtosis_rotated: float | None = Field(description="the same after the Hadamard rotation (None: row length not a multiple of the block)")
    max_crest: float | None = Field(description="largest max|x| / RMS over the rows (None: no nonzero row)")
    max_crest_rotated: float | None


class SchemeCapacity(Frozen):
    """A weights x activations scheme: capacity from real MSEs beside capacity from GMSE."""

    weights: str
    activations: str
    hadamard: bool = Field(description="both formats rotate (a rotation of the layer's input dimension turns both)")
    weight_mse: float
    weight_gmse: float
    activation_mse: float
    activation_gmse: float
    rho: float | None = Field(description="rho_W(real weight MSE) x rho_A(real activation MSE)")
    rho_gmse: float | None = Field(description="rho_W(GMSE) x rho_A(GMSE)")


class ActivationReport(Frozen):
    """``uscl mse --activations``: formats on a model's real activations."""

    model: str
    forward: Literal["full", "compressed"] = Field(description="full precision, or the uscl model's own formats")
    data: str
    tokenizer: str
    tokens: int = Field(description="tokens per layer processed (windows x context)")
    windows: int
    context: int
    sample: float | None = Field(description="--sample, the fraction of rows asked for per layer (None: all); "
                                 "each format's `sample` is the fraction measured")
    seed: int
    hadamard_block: int
    layers: tuple[ActivationLayer, ...]
    kurtosis: float | None = Field(description="parameter-weighted mean of the layer kurtoses")
    kurtosis_rotated: float | None
    max_crest: float | None
    max_crest_rotated: float | None
    formats: tuple[FormatMse, ...] = Field(description="activation formats: per-row MSE, per layer and overall")
    weights: tuple[FormatMse, ...] = Field(description="weight formats on the same layers' weights (for schemes)")
    schemes: tuple[SchemeCapacity, ...]


def weighted_mean(layers: Sequence[ActivationLayer], name: str) -> float | None:
    """Parameter-weighted mean of a layer statistic over the layers that have it."""
    pairs = [(getattr(s, name), s.params) for s in layers if getattr(s, name) is not None]
    total = sum(p for _, p in pairs)
    return sum(v * p for v, p in pairs) / total if total else None


def largest(layers: Sequence[ActivationLayer], name: str) -> float | None:
    return max((getattr(s, name) for s in layers if getattr(s, name) is not None), default=None)


def pair_schemes(weights: Sequence[FormatMse], acts: Sequence[FormatMse]) -> list[SchemeCapacity]:
    """Each weight format with each activation format, rotated with rotated and plain with plain
    (a rotation of a layer's input dimension turns its weight rows and its input rows alike)."""
    out = []
    for w in weights:
        for a in acts:
            if bool(w.spec.rotations) != bool(a.spec.rotations):
                continue
            out.append(SchemeCapacity(
                weights=w.format, activations=a.format, hadamard=bool(a.spec.rotations),
                weight_mse=w.mse, weight_gmse=w.gmse, activation_mse=a.mse, activation_gmse=a.gmse,
                rho=None if w.rho is None or a.rho is None else w.rho * a.rho,
                rho_gmse=None if w.rho_gmse is None or a.rho_gmse is None else w.rho_gmse * a.rho_gmse,
            ))
    return out
