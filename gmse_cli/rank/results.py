"""What ranking returns: one stage's capacity, one format's outcome, and the rows built on it.

Every model here is frozen; :class:`Outcome` is the base that :class:`RankRow` (one row of
:func:`~gmse_cli.rank.rank`) and :class:`Prediction` (:func:`~gmse_cli.rank.predict`'s full
breakdown) share, so a column added to one is a column of both.
"""

from __future__ import annotations

from pydantic import Field

from gmse_cli.frozen import Frozen
from gmse_cli.spec import Family

__all__ = [
    "DEFAULT_PARAMS",
    "DEFAULT_TOKENS_PER_PARAM",
    "StageRow",
    "Outcome",
    "RankRow",
    "Prediction",
    "Comparison",
]

DEFAULT_PARAMS = 200e6  # the paper's largest Llama size of its own sweep (200M non-embedding)
DEFAULT_TOKENS_PER_PARAM = 100.0  # the middle of the paper's 50/100/200 tokens per parameter


class StageRow(Frozen):
    """One factor of a capacity product: a lossy stage of the weights or of the activations."""

    tensor: str = Field(description="weights or activations")
    family: Family
    name: str = Field(description="the stage as a standalone format")
    gmse: float
    gmse_low: float
    gmse_high: float
    gmse_method: str = Field(description="what gave the GMSE: table, cache, exact or monte-carlo")
    effective_bits: float | None = Field(description="log_{1/4}(GMSE); None when GMSE is 0")
    rho: float
    rho_low: float
    rho_high: float


class Outcome(Frozen):
    """What the law says about one format or scheme at one model size and token count."""

    name: str
    family: str = Field(description="the weight format's lossy families, e.g. sparsity+quantization")
    activations: str | None = Field(description="activation format, None for weight-only")
    bits_per_param: float = Field(description="stored bits per weight (elements, scales, masks)")
    gmse: float = Field(description="GMSE of the whole weight pipeline")
    gmse_low: float
    gmse_high: float
    gmse_method: str = Field(description="what gave the weights' GMSE: table, cache, exact or monte-carlo")
    effective_bits: float | None = Field(description="log_{1/4}(GMSE) of the weights")
    act_gmse: float | None = Field(description="GMSE of the whole activation pipeline")
    rho: float = Field(description="capacity: the product of the per-stage capacities")
    rho_low: float
    rho_high: float
    rho_single_gmse: float = Field(
        description="capacity read from each tensor's whole-pipeline GMSE instead (equal for one-stage formats)"
    )
    params: float = Field(description="N, non-embedding parameters")
    tokens: float = Field(description="D, training tokens")
    effective_params: float = Field(description="N * rho: the dense-equivalent parameter count")
    predicted_loss: float | None = Field(description="None when rho = 0 (infinite)")
    loss_low: float | None
    loss_high: float | None
    delta_loss_vs_bf16: float | None = Field(description="predicted loss minus the dense (rho = 1) model's")
    delta_loss_low: float | None
    delta_loss_high: float | None
    params_to_match: float | None = Field(description="N / rho: parameters needed to match the dense model")
    memory_to_match_bytes: float | None = Field(description="N / rho * bits_per_param / 8")
    law: str
    level: float = Field(description="coverage of every [low, high] interval")
    outside_domain: str | None = Field(
        default=None, description="why the scheme lies outside the law's validated domain (None: inside)")
    evidence: str | None = Field(
        default=None, description="published training evidence for such schemes, to read beside the law's rho")
    fitted_range_recorded: bool = Field(
        description="whether the law records the runs it was fitted on ([fitted_range]); False: nothing can say "
                    "whether N, D/N or a stage's GMSE lies beyond them, and the two fields below stay None")
    fitted_gmse_recorded: bool = Field(
        description="whether the law records the stage GMSEs its curves were fitted at ([fitted_range.gmse]); "
                    "False: no capacity can be flagged as read beyond them, and beyond_fitted_gmse stays None")
    beyond_fitted_range: str | None = Field(
        default=None, description="how N or D/N lies beyond the runs the law was fitted on (None: within them, "
                                  "or the law records no range: fitted_range_recorded)")
    beyond_fitted_gmse: str | None = Field(
        default=None, description="why a stage's capacity is read beyond the fitted runs' stages (a family none of "
                                  "them had, or a GMSE above its family's largest); None: within them, or not "
                                  "recorded (fitted_range_recorded, or a range without per-family GMSEs)")


class RankRow(Outcome):
    """One row of :func:`~gmse_cli.rank.rank`."""

    pareto: bool = Field(description="no other row has at most its bits per parameter and at least its rho, one of them strictly "
                         "(rows tied on both are all marked)")


class Prediction(Outcome):
    """:func:`~gmse_cli.rank.predict`: the outcome with its full breakdown."""

    stages: tuple[StageRow, ...] = Field(description="each lossy stage's GMSE and capacity")
    params_term: float | None = Field(description="A * (N rho)^-alpha (None when rho = 0)")
    data_term: float = Field(description="B * D^-beta")
    irreducible: float = Field(description="E")
    dense_loss: float = Field(description="the dense bf16 model's loss, rho = 1")


class Comparison(Frozen):
    """:func:`~gmse_cli.rank.compare`: rows and, draw by draw of the law's constants, which one wins."""

    rows: tuple[RankRow, ...]
    p_most_capacity: tuple[float, ...] = Field(
        description="per row: share of the draws in which its rho is at least every other row's"
    )
    p_least_memory: tuple[float, ...] = Field(
        description="per row: share of the draws in which it needs the least memory to match bf16"
    )
