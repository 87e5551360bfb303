"""The capacity law and the scaling law, and the law files that carry their constants.

    rho(GMSE) = L * s(F * log_{1/4}(GMSE))^C               (one L, F, C per family; s tanh or erf)
    Loss(N, D) = A * (N * rho)^(-alpha) + B * D^(-beta) + E

Modules, each importing only those above it:

- :mod:`~gmse_cli.law.fitted_range` -- the N and D/N of the runs a law was fitted on, and
  whether a prediction lies beyond them
- :mod:`~gmse_cli.law.model`       -- the law as data (constants with provenance, curves, joint
  draws) and the two closed-form laws
- :mod:`~gmse_cli.law.files`       -- law files (TOML), read and written; the shipped law
- :mod:`~gmse_cli.law.compose`     -- a format's or scheme's capacity as the product of its
  stages' capacities (the paper's factorization)
- :mod:`~gmse_cli.law.uncertainty` -- capacity and loss intervals by Monte Carlo over the
  constants (the model of the draws, and why L is held, is documented there)
- :mod:`~gmse_cli.law.domain`      -- the law's validated domain (rotation, the blind spot) and
  the published evidence outside it
"""

from gmse_cli.law.compose import (
    CapacityPart,
    capacity_parts,
    factorized_capacity,
    scheme_capacity,
    single_gmse_capacity,
    tensor_parts,
)
from gmse_cli.law.domain import (
    DOMAIN,
    UNROTATED_EVIDENCE,
    UNROTATED_EVIDENCE_SOURCE,
    EvidenceRow,
    evidence_line,
    outside_domain,
    unrotated_evidence,
)
from gmse_cli.law.files import DEFAULT_LAW, law_to_toml, load_law, save_law, shipped_law
from gmse_cli.law.fitted_range import FittedRange, fitted_range_of
from gmse_cli.law.model import (
    CURVE_SHAPES,
    Constant,
    FamilyCurve,
    Law,
    LawDraws,
    capacity,
    curve_shape,
    effective_bits,
    predicted_loss,
)
from gmse_cli.law.uncertainty import (
    DEFAULT_DRAWS,
    MAX_DRAWS,
    Interval,
    LawSamples,
    capacity_interval,
    check_draws,
    check_level,
    check_scale,
    constants_fixed,
    interval_ends,
    loss_interval,
    sample_constant,
    sample_law,
)

__all__ = [
    "FittedRange",
    "fitted_range_of",
    "Constant",
    "FamilyCurve",
    "Law",
    "LawDraws",
    "effective_bits",
    "capacity",
    "curve_shape",
    "CURVE_SHAPES",
    "predicted_loss",
    "load_law",
    "save_law",
    "law_to_toml",
    "shipped_law",
    "DEFAULT_LAW",
    "CapacityPart",
    "capacity_parts",
    "factorized_capacity",
    "single_gmse_capacity",
    "scheme_capacity",
    "Interval",
    "LawSamples",
    "sample_constant",
    "sample_law",
    "capacity_interval",
    "loss_interval",
    "check_scale",
    "interval_ends",
    "constants_fixed",
    "DEFAULT_DRAWS",
    "MAX_DRAWS",
    "check_draws",
    "check_level",
    "tensor_parts",
    "DOMAIN",
    "outside_domain",
    "EvidenceRow",
    "UNROTATED_EVIDENCE",
    "UNROTATED_EVIDENCE_SOURCE",
    "unrotated_evidence",
    "evidence_line",
]
