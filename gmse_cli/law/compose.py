"""Composition: a format's or a scheme's capacity from its stages' GMSE.

Composite formats and weight x activation schemes multiply per-stage capacities (the paper's
factorization, rho(R1 and R2) = rho(R1) * rho(R2)): :func:`capacity_parts` lists the lossy
stages of a :class:`~gmse_cli.spec.Format` or :class:`~gmse_cli.spec.Scheme` (each with its
family and a standalone format to measure), :func:`factorized_capacity` multiplies. The
"single-GMSE" alternative -- the whole pipeline's GMSE through the curve of its last lossy
stage -- is :func:`single_gmse_capacity`; it equals the factorized value for one-stage formats.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Sequence
from typing import Any, Literal, NamedTuple

from gmse_cli.errors import LawError, described
from gmse_cli.law.model import Law
from gmse_cli.limits import is_real
from gmse_cli.spec import Family, Format, Scheme, resolve_format

__all__ = [
    "Tensor", "CapacityPart", "capacity_parts", "tensor_parts", "factorized_capacity",
    "scheme_capacity", "single_gmse_capacity", "checked_law", "stage_list",
]

Tensor = Literal["weights", "activations"]


class CapacityPart(NamedTuple):
    """One factor of a capacity product: which tensor, which curve, what to measure GMSE on."""

    tensor: Tensor
    family: Family
    format: Format


def _tensors(item: Format | Scheme) -> list[tuple[Tensor, Format]]:
    if not isinstance(item, Format | Scheme):
        raise LawError(f"expected a Format or a Scheme (resolve_format gives one), not {described(item)}")
    if isinstance(item, Format):
        return [("weights", item)]
    pairs: list[tuple[Tensor, Format]] = [("weights", item.weights)]
    if item.activations is not None:
        pairs.append(("activations", item.activations))
    return pairs


def capacity_parts(item: Format | Scheme) -> list[CapacityPart]:
    """The lossy stages the factorized capacity multiplies over (empty for a lossless format).

    Each part's format is the stage alone (rotations ride along with the quantizer), as
    :meth:`Format.stage_formats` gives it: 2:4+int4 is rho_sparsity(GMSE(2:4)) *
    rho_quantization(GMSE(int4)).
    """
    return [
        CapacityPart(tensor, family, stage)
        for tensor, fmt in _tensors(item)
        for family, stage in fmt.stage_formats()
    ]


def tensor_parts(item: Format | Scheme) -> list[CapacityPart]:
    """One part per tensor: the whole pipeline, read through the curve of its last lossy stage.

    This is the single-GMSE alternative to :func:`capacity_parts`; a lossless tensor gets
    family ``none`` (capacity 1).
    """
    return [
        CapacityPart(tensor, fmt.families[-1] if fmt.families else Family.NONE, fmt)
        for tensor, fmt in _tensors(item)
    ]


def checked_law(law: object) -> Law:
    """``law`` itself, or one LawError naming what was passed instead of a :class:`Law`."""
    if not isinstance(law, Law):
        raise LawError(f"law must be a Law (load_law() gives one), not {described(law)}")
    return law


def stage_list(stages: object, width: int) -> list[Sequence[Any]]:
    """``stages`` as a list of (family, GMSE[, standard error]) tuples of ``width`` items, or one
    LawError naming ``stages`` or the first entry that is no such tuple (not a TypeError from
    unpacking it)."""
    what = "(family, GMSE)" if width == 2 else "(family, GMSE, GMSE standard error)"
    items: list[Any] | None = None
    if isinstance(stages, Iterable) and not isinstance(stages, str | bytes):
        try:
            items = list(stages)
        except TypeError:  # a 0-d numpy array says it is iterable, then refuses
            items = None
    if items is None:
        raise LawError(f"stages must be a list of {what} tuples, not {described(stages)}")
    for item in items:
        if isinstance(item, str | bytes) or not isinstance(item, Sequence) or len(item) != width:
            raise LawError(f"stages must be a list of {what} tuples; got {described(item)} among them")
    return items


def factorized_capacity(law: Law, stages: Iterable[tuple[Family | str, float]]) -> float:
    """prod over (family, GMSE) of rho_family(GMSE): the paper's factorization rule."""
    law = checked_law(law)
    rho = 1.0
    for family, gmse in stage_list(stages, 2):
        rho *= float(law.rho(family, gmse))
    return rho


def _measured(parts: list[CapacityPart], gmse: Any) -> list[tuple[Family, float]]:
    if callable(gmse):
        given = [gmse(p.format) for p in parts]
    elif isinstance(gmse, numbers.Real):
        given = [gmse]  # one lossy stage: its GMSE alone
    elif isinstance(gmse, Iterable) and not isinstance(gmse, str | bytes) and _listable(gmse):
        given = list(gmse)
    else:
        raise LawError(f"gmse = {gmse!r} must be a callable Format -> GMSE, a number or a list of numbers")
    if len(given) != len(parts):
        names = ", ".join(p.format.display_name for p in parts) or "none"
        raise LawError(f"got {len(given)} GMSE values for {len(parts)} lossy stages ({names})")
    return [(p.family, _gmse_value(g, p)) for p, g in zip(parts, given, strict=True)]


def _listable(items: Iterable[Any]) -> bool:
    """Whether ``list(items)`` works: a 0-d numpy array says it is iterable, then refuses."""
    try:
        iter(items)
    except TypeError:
        return False
    return True


def _gmse_value(value: Any, part: CapacityPart) -> float:
    """One stage's GMSE as a float, or a LawError naming it (text and booleans are no GMSE, nor
    an integer beyond any float)."""
    if not is_real(value):
        raise LawError(f"GMSE of stage {part.format.display_name} = {value!r} must be a number")
    try:
        return float(value)
    except OverflowError:
        raise LawError(f"GMSE of stage {part.format.display_name} = {value!r} must be a finite number") from None


def scheme_capacity(item: Format | Scheme, law: Law, gmse: Any) -> float:
    """Factorized capacity of a format or scheme: the product over its lossy stages of the
    law's family curve at that stage's GMSE (a fraction of the parameters, 0 ... L).

    ``item``: a :class:`Format`, a :class:`Scheme` or a name :func:`resolve_format` takes.
    ``gmse`` is a callable ``Format -> float`` (for example
    ``lambda f: gmse_of(f).gmse``) or the GMSE values in the order of :func:`capacity_parts`.
    Raises :class:`SpecError` for a format that does not resolve, :class:`LawError` for a
    family the law does not cover or a GMSE it cannot read.
    """
    item, law = _resolved(item, law)
    parts = capacity_parts(item)
    law.check_covers(p.family for p in parts)
    return factorized_capacity(law, _measured(parts, gmse))


def _resolved(item: Any, law: Any) -> tuple[Format | Scheme, Law]:
    """A format name or path resolved as :func:`resolve_format` does; a LawError for no Law."""
    if not isinstance(item, Format | Scheme):
        item = resolve_format(item)  # the SpecError naming anything that is no format
    return item, checked_law(law)


def single_gmse_capacity(item: Format | Scheme, law: Law, gmse: Any) -> float:
    """Capacity from each tensor's whole-pipeline GMSE (values in :func:`tensor_parts` order)."""
    parts = tensor_parts(item)
    law.check_covers(p.family for p in parts)
    return factorized_capacity(law, _measured(parts, gmse))

