"""The law's validated domain, and the published evidence for what lies outside it.

GMSE is measured on Gaussian tensors, and a Gaussian stays Gaussian under a rotation, so the
law cannot tell a rotated quantizer from an unrotated one. Real activations are not Gaussian
(a few channels carry outliers); quantizing them on an RMS-scaled grid *without* a rotation
loses far more than GMSE says. QuEST's runs show it: with one free capacity per scheme,
unrotated W2A2 keeps about half the capacity of the same grid behind a 128-block Hadamard
rotation (:data:`UNROTATED_EVIDENCE`).

No model we tried predicts the unrotated runs from the others held out (a separate capacity
curve for unrotated quantizers, a constant effective-bits penalty, a GMSE multiplier: each
fits in-sample and misses the bit widths it was not fitted on), so the law's validated domain
is stated instead: weights quantized or sparsified with or without a rotation, activations
kept in 16 bits or quantized behind a rotation. Sparsified activations lie outside it too:
the sparsity curve is fitted to weight sparsity, and the paper's own figure puts activation
sparsity well below it (:data:`ACTIVATION_SPARSITY_EVIDENCE`). :func:`outside_domain` says why
a scheme lies outside it; ``uscl fit`` fits only the runs inside and reports its error on the
others separately; ``uscl rank`` and ``uscl predict`` flag such a scheme and show the evidence.
"""

from __future__ import annotations

from typing import NamedTuple

from gmse_cli.errors import LawError, described
from gmse_cli.spec import Format, Scheme

__all__ = [
    "DOMAIN",
    "outside_domain",
    "EvidenceRow",
    "UNROTATED_EVIDENCE",
    "UNROTATED_EVIDENCE_SOURCE",
    "unrotated_evidence",
    "evidence_line",
    "ACTIVATION_SPARSITY_EVIDENCE",
]

DOMAIN = ("weights quantized or sparsified (rotated or not); activations unquantized or quantized behind a "
          "rotation (e.g. had128+int4), never sparsified")

# (sparsity, rho of activation sparsity, rho of the same weight sparsity), read off the paper's
# figure (shared/reference/paper.md, section 1): evidence to read beside the law, not a law.
ACTIVATION_SPARSITY_EVIDENCE: tuple[tuple[float, float, float], ...] = (
    (0.2, 0.76, 0.84), (0.4, 0.50, 0.65), (0.6, 0.32, 0.47), (0.8, 0.19, 0.27),
)


def outside_domain(weights: Format | Scheme, activations: Format | None = None) -> str | None:
    """Why a scheme lies outside the law's validated domain, or None when it lies inside.

    Outside: the activations carry a quantization (scalar or vector) stage of fewer than 16 bits
    per element and no rotation (a bf16 or fp16 cast is the uncompressed baseline), or a
    sparsify stage.
    """
    if not isinstance(weights, Format | Scheme):
        raise LawError(f"outside_domain takes a Format or a Scheme for the weights, not {described(weights)}")
    if not (activations is None or isinstance(activations, Format)):
        raise LawError(f"outside_domain takes a Format (or None) for the activations, not {described(activations)}")
    if isinstance(weights, Scheme):
        weights, activations = weights.weights, weights.activations
    if activations is None:
        return None
    if _quantized_unrotated(activations):
        return f"activations quantized without a rotation ({activations.display_name}), which GMSE cannot see"
    if _sparsified(activations):
        return (f"activations sparsified ({activations.display_name}): the sparsity curve was fitted "
                "to weight sparsity")
    return None


def _quantized_unrotated(activations: Format) -> bool:
    q = activations.quantizer
    return q is not None and not activations.rotations and float(getattr(q, "element_bits", q.bits)) < 16


def _sparsified(activations: Format) -> bool:
    # a stage that keeps every entry (sparse0, 4:4) prunes nothing: the tensor is not sparsified
    return any(stage.kind == "sparsify" and stage.density < 1 for stage in activations.stages)


class EvidenceRow(NamedTuple):
    """One published scheme outside the domain: its trained capacity beside its rotated twin's."""

    weights: str
    activations: str
    bits: int
    rho: float  # decoupled capacity of the unrotated scheme
    rho_low: float  # 95% bootstrap interval
    rho_high: float
    rho_rotated: float  # decoupled capacity of the same grids behind a 128-block Hadamard rotation
    n_runs: int


UNROTATED_EVIDENCE_SOURCE = (
    "QuEST's 104 public runs (IST-DASLab/QuEST, for_plots/runs_for_scaling.json; Llama/C4, 30M-800M "
    "parameters): one decoupled fit (uscl fit --model decoupled, Huber delta 1e-3, 200 bootstrap refits "
    "resampling runs within schemes, seed 0), bf16 pinned at rho = 1; regenerate with "
    "examples/unrotated_evidence.py"
)

# (weights, activations, bits, rho, 95% low, 95% high, rotated twin's rho, runs); the source above.
UNROTATED_EVIDENCE: tuple[EvidenceRow, ...] = (
    EvidenceRow("int1", "int1", 1, 0.0161, 0.0115, 0.0240, 0.0197, 5),
    EvidenceRow("int2", "int2", 2, 0.0815, 0.0689, 0.0977, 0.1560, 4),
    EvidenceRow("int3", "int3", 3, 0.3045, 0.2905, 0.3694, 0.4304, 5),
    EvidenceRow("int4", "int4", 4, 0.5887, 0.5664, 0.6730, 0.6904, 6),
    EvidenceRow("int8", "int8", 8, 0.9210, 0.9052, 1.0493, 1.0022, 4),
)


def unrotated_evidence(activations: Format | None) -> EvidenceRow | None:
    """The published row whose quantizer ``activations`` (unrotated) has, if any: QuEST's own
    grid, the catalog's ``intB`` (RMS-clipped per row). Another grid of the same width (absmax
    per group of 128, MX blocks) handles outliers otherwise, so QuEST's runs are not its runs."""
    if activations is None or activations.quantizer is None or activations.rotations:
        return None
    q = activations.quantizer
    row = next((row for row in UNROTATED_EVIDENCE if row.bits == getattr(q, "bits", None)), None)
    if row is None or getattr(getattr(q, "grid", None), "value", None) != "int":
        return None
    from gmse_cli.spec import catalog

    quest = catalog().get(row.activations)
    return row if quest is not None and q == quest.quantizer else None


def evidence_line(activations: Format | None) -> str:
    """One line of published evidence for activations outside the domain, beside the law."""
    if activations is not None and not _quantized_unrotated(activations) and _sparsified(activations):
        levels, acts, weights = ("/".join(f"{v:.0%}" if i == 0 else f"{v:.2f}" for v in column)
                                 for i, column in enumerate(zip(*ACTIVATION_SPARSITY_EVIDENCE, strict=True)))
        return (f"the paper's figure reads activation sparsity {levels} at rho {acts}, against {weights} for "
                "the same weight sparsity")
    row = unrotated_evidence(activations)
    if row is not None:
        return (f"QuEST trained W:{row.weights} A:{row.activations} (unrotated) to rho {row.rho:.3g} "
                f"[{row.rho_low:.3g}, {row.rho_high:.3g}] against {row.rho_rotated:.3g} with a Hadamard rotation "
                f"({row.rho / row.rho_rotated:.0%}; decoupled fit of its {row.n_runs} runs)")
    if not UNROTATED_EVIDENCE:
        return "no published evidence shipped"
    kept = ", ".join(f"{r.rho / r.rho_rotated:.0%} at {r.bits} bit{'s' if r.bits > 1 else ''}" for r in UNROTATED_EVIDENCE)
    return f"QuEST's unrotated W+A runs kept {kept} of the rotated capacity (decoupled fits)"
