"""The JSON lines ``uscl train`` appends, one record per finished run."""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from gmse_cli.errors import DataError, SpecError
from gmse_cli.inputs import parse_nested, strict_json
from gmse_cli.runs.fields import check_spec, number, read_text
from gmse_cli.runs.model import Run, RunsWarning, check_run_numbers, scheme_name
from gmse_cli.schema.versions import RESULTS_SCHEMA_VERSION, bad_schema
from gmse_cli.spec import Family, Format

__all__ = ["load_train_jsonl", "run_from_record"]

# Accepted spellings, first match wins: the training backend owns the schema, so the reader is
# liberal in the keys it recognizes and strict about what it needs.
_KEYS_N = ("N", "n_params", "params", "non_embedding_params", "non_embedding_parameters")
_KEYS_D = ("D", "tokens", "n_tokens", "train_tokens")
_KEYS_LOSS = ("loss", "final_val_loss", "val_loss", "validation_loss", "final_loss")
_KEYS_W = ("weights", "weight_format", "w_format", "weights_format")
_KEYS_A = ("activations", "activation_format", "a_format", "activations_format", "acts")
_OK_STATUS = {"ok", "done", "finished", "complete", "completed", "success", "succeeded"}
_FAMILIES = tuple(f.value for f in Family)
_SECTIONS = ("result", "results", "model", "scheme", "format", "formats", "config")


def _lookup(rec: dict[str, Any], keys: Sequence[str]) -> Any:
    for key in keys:
        if key in rec:
            return rec[key]
    for section in _SECTIONS:
        sub = rec.get(section)
        if isinstance(sub, dict):
            for key in keys:
                if key in sub:
                    return sub[key]
    return None


def _format_field(value: Any, where: str, key: str) -> tuple[str | None, Format | None]:
    """A format given by name, or inline as a spec object -> (name, spec or None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        return None, None
    if isinstance(value, str):
        return value.strip(), None
    if isinstance(value, dict):
        if "stages" not in value and isinstance(value.get("name"), str):
            return value["name"], None
        try:
            fmt = Format.model_validate(value)
        except (SpecError, ValueError) as exc:
            raise DataError(f"{where}: {key} is not a valid format spec: {' '.join(str(exc).split())}") from None
        return fmt.display_name, fmt
    raise DataError(f"{where}: {key} = {value!r} is neither a format name nor a format spec")


def load_train_jsonl(path: str | Path) -> list[Run]:
    """Runs written by ``uscl train``; diverged or unfinished runs, and a torn last line (half a
    JSON object without its newline), are skipped with a warning.

    Each line is one JSON object with at least the weight format (name or spec), N, D and the
    final validation loss; ``status`` other than ok/finished (e.g. ``diverged``) skips the run.
    """
    path = Path(path)
    runs: list[Run] = []
    text = read_text(path)
    lines = text.splitlines()
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = parse_nested(strict_json, line, where=where, error=DataError)
        except json.JSONDecodeError as exc:
            if lineno == len(lines) and not text.endswith(("\n", "\r")) and line.lstrip().startswith("{"):
                # a torn last line (half an object, no newline): a crash of a writer that did not
                # append atomically, or a hand edit -- no finished run; any other line is refused
                warnings.warn(f"{where}: skipping the torn last line (half a JSON object, no newline at its end)",
                              RunsWarning, stacklevel=2)
                continue
            raise DataError(f"{where}: not a JSON line ({exc.msg}); expected one JSON object per line") from None
        run = run_from_record(rec, where, str(path))
        if run is not None:
            runs.append(run)
    return runs


def run_from_record(rec: Any, where: str, source: str) -> Run | None:
    """One run record (a JSON object: a line of ``uscl train``'s results, or an element of a
    JSON list of them) as a :class:`Run`; None for a run skipped with a warning (diverged,
    unfinished). ``where`` names the record in errors."""
    if not isinstance(rec, dict):
        raise DataError(f"{where}: expected a JSON object per run, got {type(rec).__name__}")
    if "run_key" in rec or "uscl_version" in rec:  # uscl train's record: its fields may mean more later
        # the one refusal train's own reader gives (training.results.load_records): a version
        # that is no integer (2.0, "1", 0) was read as if it were 1
        newer = (bad_schema(rec["schema_version"], RESULTS_SCHEMA_VERSION, f"{where}: the run record")
                 if "schema_version" in rec else None)
        if newer:
            raise DataError(newer)
    status = rec.get("status")
    if isinstance(status, str) and status.lower() not in _OK_STATUS:
        warnings.warn(f"{where}: skipping run with status '{status}'", RunsWarning, stacklevel=2)
        return None
    n, d, loss = _lookup(rec, _KEYS_N), _lookup(rec, _KEYS_D), _lookup(rec, _KEYS_LOSS)
    missing = [name for name, v in (("N", n), ("D (tokens)", d), ("loss", loss)) if v is None]
    if missing:
        raise DataError(f"{where}: missing {', '.join(missing)} (a uscl train record needs N, D and loss)")
    loss_value = number(loss, "loss", where)
    if math.isnan(loss_value) or loss_value == math.inf:  # -inf is no diverged run: refused below
        warnings.warn(f"{where}: skipping diverged run (loss = {loss_value})", RunsWarning, stacklevel=2)
        return None
    weights, w_spec = _format_field(_lookup(rec, _KEYS_W), where, "weights")
    activations, a_spec = _format_field(_lookup(rec, _KEYS_A), where, "activations")
    # uscl train records carry the full specs beside the display names: prefer them.
    if isinstance(rec.get("weights_spec"), dict):
        w_spec = _format_field(rec["weights_spec"], where, "weights_spec")[1]
        weights = weights or (w_spec.display_name if w_spec else None)
    if isinstance(rec.get("activations_spec"), dict):
        a_spec = _format_field(rec["activations_spec"], where, "activations_spec")[1]
        activations = activations or (a_spec.display_name if a_spec else None)
    if weights is None:
        weights = "bf16"
    if w_spec is None:
        check_spec(weights, where, "weights")
    if activations is not None and a_spec is None:
        check_spec(activations, where, "activations")
    meta = {
        k: v for k, v in rec.items()
        if isinstance(v, str | int | float | bool) and k not in (*_KEYS_N, *_KEYS_D, *_KEYS_LOSS, *_KEYS_W, *_KEYS_A)
    }
    recorded = _recorded_gmse(rec.get("stage_gmse"), activations is not None, where)
    n_value, d_value = number(n, "N", where), number(d, "D", where)
    check_run_numbers(n_value, d_value, loss_value, where)
    return Run(
        scheme=str(rec["scheme_name"]) if isinstance(rec.get("scheme_name"), str) else scheme_name(weights, activations),
        weights=weights,
        activations=activations,
        N=n_value,
        D=d_value,
        loss=loss_value,
        source=source,
        location=where,
        weights_spec=w_spec,
        activations_spec=a_spec,
        stage_gmse=recorded,
        meta=meta,
    )


def _recorded_gmse(value: Any, has_activations: bool, where: str) -> tuple[tuple[str, float], ...] | None:
    """``stage_gmse`` of a uscl train record -> ((family, GMSE), ...), weights' stages first."""
    if not isinstance(value, dict):
        return None
    out: list[tuple[str, float]] = []
    for tensor in ("weights", "activations") if has_activations else ("weights",):
        stages = value.get(tensor)
        if not isinstance(stages, list):
            return None
        for stage in stages:
            if not isinstance(stage, dict) or "family" not in stage or "gmse" not in stage:
                raise DataError(f"{where}: stage_gmse.{tensor} entries need 'family' and 'gmse'")
            family, gmse = str(stage["family"]), number(stage["gmse"], "stage_gmse", where)
            if family not in _FAMILIES:
                raise DataError(f"{where}: stage_gmse.{tensor} family '{family[:40]}' is none of "
                                f"{', '.join(_FAMILIES)}")
            if not (math.isfinite(gmse) and gmse >= 0):  # a mean squared error: never negative
                raise DataError(f"{where}: stage_gmse.{tensor} gmse = {gmse} must be a finite number >= 0")
            out.append((family, gmse))
    return tuple(out)
