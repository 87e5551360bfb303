"""QuEST's published runs (``quest_runs.json``): each quantizer class mapped to the catalog
scheme it implements."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from gmse_cli.errors import DataError
from gmse_cli.runs.fields import number, read_json
from gmse_cli.runs.model import MetaValue, Run, scheme_name

__all__ = ["quest_scheme", "load_quest_runs", "quest_runs"]

_QUEST_NO_QUANT = "NoQuantizer"
_QUEST_PATTERN = re.compile(
    r"^(?P<rot>HalfHadamard|Hadamard)?(?P<kind>FourEightTrust|FP4Trust|Trust|Clip)Quantizer$"
)


def quest_scheme(quantizer: str, bits: int | float | None, *, tensor: str = "weights") -> str | None:
    """The catalog spec a QuEST quantizer class implements (None for ``NoQuantizer``).

    - ``TrustQuantizer`` / ``ClipQuantizer`` (B bits) -> ``intB``: the same RMS-scaled midrise
      grid; trust and clip only change which gradients pass, not the forward quantizer.
    - ``Hadamard...`` / ``HalfHadamard...`` -> ``had128+...``: a 128-block Hadamard transform
      first (GMSE is unchanged; the rotation is kept in the name because it matters on real
      tensors). "Half" keeps the output in the rotated basis; the forward error is the same.
    - ``...FourEightTrust...`` (B bits) -> ``2:4x2+intB-allstats``: QuEST rounds the whole row
      onto the midrise grid with scale a_B * RMS over *all* its entries, then zeroes the 2 of
      every 4 consecutive pairs with the smallest L2 norm (chosen from the values before
      rounding): pair-granular 2:4 (``2:4x2``) and a quantizer whose statistics cover every
      entry (``allstats``). uscl then quantizes the whole (rotated) row and zeroes the dropped
      entries after: QuEST's order. (QuEST adds 1e-8 to the RMS, and leaves ties between
      equal pair norms to ``torch.topk``; uscl keeps the earlier pair.)

      The factorized capacity reads two stage GMSEs: the sparsity stage, ``2:4x2`` alone
      (5/24 = 0.2083), and the quantization stage, ``had128+intB-allstats`` alone. With
      nothing pruned its statistics cover the whole row either way, so its GMSE is plain
      ``intB``'s (0.0115 for int4): the rounding error of a *dense* Gaussian row, as for
      every other composite (:meth:`gmse_cli.spec.Format.stage_formats`). Inside the
      composite the rounding adds less, 0.0069 (the composite's joint GMSE is 0.2152), since
      only the kept half of the entries carries rounding noise.
    - ``...FP4Trust...`` -> ``fp4`` (E2M1 grid, RMS scale); its ``w_bits`` field reads 16.
    """
    if quantizer == _QUEST_NO_QUANT:
        return None
    match = _QUEST_PATTERN.match(quantizer or "")
    if match is None:
        raise DataError(
            f"QuEST {tensor} quantizer '{quantizer}' has no catalog mapping (known: NoQuantizer, "
            "[Half]Hadamard{Trust,Clip,FourEightTrust,FP4Trust}Quantizer, TrustQuantizer, ClipQuantizer)"
        )
    prefix = "had128+" if match["rot"] else ""
    kind = match["kind"]
    if kind == "FP4Trust":
        return prefix + "fp4"
    if bits is None or not float(bits).is_integer() or not 1 <= int(bits) <= 8:
        raise DataError(f"QuEST {tensor} quantizer '{quantizer}' with bits={bits}: expected 1..8 bits")
    if kind == "FourEightTrust":
        return f"{prefix}2:4x2+int{int(bits)}-allstats"
    return f"{prefix}int{int(bits)}"


def _check_types(rec: dict, where: str) -> None:
    # Fields read below by their type: a wrong type is one line naming the field.
    for key in ("w_quant", "a_quant"):
        if not isinstance(rec[key], str):
            raise DataError(f"{where}: {key} = {rec[key]!r} is not a quantizer class name")
    for key in ("w_bits", "a_bits"):
        value = rec.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise DataError(f"{where}: {key} = {value!r} is not a number of bits")
    if not isinstance(rec.get("args") or {}, dict):
        raise DataError(f"{where}: args = {rec['args']!r} is not an object")


def load_quest_runs(path: str | Path) -> list[Run]:
    """QuEST's ``runs_for_scaling.json``: a JSON list of run records (see shared/data/README.md)."""
    path = Path(path)
    return quest_runs(read_json(path), path)


def quest_runs(records: Any, path: Path) -> list[Run]:
    """The runs of QuEST's records, already read from ``path`` (named in errors)."""
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of QuEST run records")
    runs = []
    for index, rec in enumerate(records):
        where = f"{path} record {index}"
        if not isinstance(rec, dict):
            raise DataError(f"{where}: expected an object, got {type(rec).__name__}")
        missing = [k for k in ("non_embedding_parameters", "tokens", "loss", "w_quant", "a_quant") if k not in rec]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        _check_types(rec, where)
        weights = quest_scheme(rec["w_quant"], rec.get("w_bits"), tensor="weight")
        activations = quest_scheme(rec["a_quant"], rec.get("a_bits"), tensor="activation")
        weights = weights or "bf16"  # NoQuantizer on weights: the bf16 baseline
        args = rec.get("args") or {}
        meta: dict[str, MetaValue] = {
            "w_quant": rec["w_quant"],
            "a_quant": rec["a_quant"],
            "w_bits": rec.get("w_bits"),
            "a_bits": rec.get("a_bits"),
            "model_size": rec.get("model_size"),
            "clip_scale": rec.get("clip_scale"),
            "trust": rec.get("trust"),
            "seed": args.get("seed"),
            "lr": args.get("lr"),
            "n_layer": args.get("n_layer"),
            "n_embd": args.get("n_embd"),
            "iterations": args.get("iterations"),
        }
        if "FP4" in rec["w_quant"]:
            meta["w_bits"] = 4  # QuEST records 16 for its FP4 runs; the grid has 4 bits
        if "FP4" in rec["a_quant"]:
            meta["a_bits"] = 4
        if activations is None:
            meta["a_bits"] = 16
        runs.append(
            Run(
                scheme=scheme_name(weights, activations),
                weights=weights,
                activations=activations,
                N=number(rec["non_embedding_parameters"], "non_embedding_parameters", where),
                D=number(rec["tokens"], "tokens", where),
                loss=number(rec["loss"], "loss", where),
                source=str(path),
                location=where,
                # what a run records besides: scalars only (a list or object in a record's args
                # says nothing --where can compare), as the JSON lines reader keeps them
                meta={k: v for k, v in meta.items() if isinstance(v, str | int | float | bool)},
            )
        )
    return runs
