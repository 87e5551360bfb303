"""What every command prints as data: one JSON envelope with one vocabulary, or CSV.

``--json`` prints ``{"schema_version": N, "command": "...", "results": [...], ...}`` (the
JSON Schema ``gmse_cli/schema/uscl-output.schema.json`` describes it). The library's models
keep their own field names; the keys users read are made uniform here, in one table, so that
the same quantity has the same key in every command:

* an interval is ``<quantity>_low`` / ``<quantity>_high`` (``gmse_low``, ``mse_low``,
  ``rho_low``, ``value_low`` for a fitted constant, ``slope_low`` for a capacity drift), its
  standard error ``<quantity>_std_err``;
* what gave a GMSE (table, cache, exact, monte-carlo) is ``gmse_method``;
* a format's name is ``name``;
* real-weight MSE is ``mse``, never ``gmse``.

``--csv`` prints ``results`` as one CSV table: scalar fields as columns (a nested object's
fields as ``object.field``), lists left out; a text cell a spreadsheet would run as a formula
starts with ``'`` (``--json`` keeps the text as it is).
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from gmse_cli.errors import visible

__all__ = ["SCHEMA_VERSION", "envelope", "print_json", "print_csv", "csv_rows"]

SCHEMA_VERSION = 1

_GMSE = {"ci_low": "gmse_low", "ci_high": "gmse_high", "std_err": "gmse_std_err", "method": "gmse_method"}
_MSE = {"format": "name", "ci_low": "mse_low", "ci_high": "mse_high", "std_err": "mse_std_err"}
_DIFFERENCE = {"ci_low": "difference_low", "ci_high": "difference_high", "std_err": "difference_std_err"}
_CONSTANT = {"low": "value_low", "high": "value_high"}
_DRIFT_SLOPE = {"low": "slope_low", "high": "slope_high", "stderr": "slope_std_err"}
_DRIFT_SCHEME = {"low": "slope_log_n_low", "high": "slope_log_n_high"}
# Under a checkpoint objective, search's "gmse" fields hold real-weight MSE.
_REAL = {"gmse": "mse", "gmse_std_err": "mse_std_err", "gmse_method": "mse_method"}


def _renamed(item: Any, names: Mapping[str, str]) -> Any:
    if not isinstance(item, dict):
        return item
    return {names.get(k, k): v for k, v in item.items()}


def _deep(item: Any, names: Mapping[str, str]) -> Any:
    """``item`` with ``names`` applied to the keys of every dict inside it."""
    if isinstance(item, dict):
        return {names.get(k, k): _deep(v, names) for k, v in item.items()}
    if isinstance(item, list):
        return [_deep(v, names) for v in item]
    return item


def _gmse(item: dict) -> dict:
    out = _renamed(item, _GMSE)
    if isinstance(out.get("vs"), dict):
        out["vs"] = _renamed(out["vs"], _DIFFERENCE)
    return out


def _fit(item: dict) -> dict:
    if "constant" in item:  # a row of --csv's constants table
        return _renamed(item, _CONSTANT)
    out = dict(item)
    if isinstance(out.get("constants"), dict):
        out["constants"] = {k: _renamed(v, _CONSTANT) for k, v in out["constants"].items()}
    if isinstance(out.get("drift"), dict):
        drift = dict(out["drift"])
        drift["slopes"] = [_renamed(s, _DRIFT_SLOPE) for s in drift.get("slopes", [])]
        drift["schemes"] = [_renamed(s, _DRIFT_SCHEME) for s in drift.get("schemes", [])]
        out["drift"] = drift
    if isinstance(out.get("capacities"), list):
        out["capacities"] = [_capacity(c) for c in out["capacities"]]
    return out


def _capacity(item: Any) -> Any:
    """A scheme's stages as rank and predict print them, ``stages[]`` of ``tensor``, ``family``,
    ``gmse``; ``stage_gmse`` ([family, gmse] pairs) and ``stage_tensor`` stay for schema 1's readers."""
    if not isinstance(item, dict) or not item.get("stage_gmse"):
        return item
    tensors = item.get("stage_tensor") or [None] * len(item["stage_gmse"])
    stages = [{"tensor": t, "family": f, "gmse": g} for t, (f, g) in zip(tensors, item["stage_gmse"], strict=True)]
    return {**item, "stages": stages}


def _search_point(item: Any, real: bool) -> Any:
    if not isinstance(item, dict):
        return item
    out = _renamed(item, _REAL) if real else dict(item)
    stage = ({"gmse": "mse", "std_err": "mse_std_err", "method": "mse_method"} if real
             else {"std_err": "gmse_std_err", "method": "gmse_method"})
    out["stages"] = [_renamed(s, stage) for s in out.get("stages", [])]
    return out


def _train(item: Any) -> Any:
    """A run record's per-stage GMSEs (``stage_gmse.<tensor>[]``) in the names gmse, rank and
    predict print them under; the results file itself keeps the record's own names."""
    if not isinstance(item, dict) or not isinstance(item.get("stage_gmse"), dict):
        return item
    stages = {tensor: [_renamed(s, _GMSE) for s in entries] if isinstance(entries, list) else entries
              for tensor, entries in item["stage_gmse"].items()}
    return {**item, "stage_gmse": stages}


# Per command: how one result item's keys become the shared vocabulary.
_ITEMS: dict[str, Callable[[Any], Any]] = {
    "gmse": _gmse,
    "mse": lambda item: _deep(item, _MSE),
    "fit": _fit,
    "train": _train,
}


def envelope(command: str, results: Iterable[Any], **extra: Any) -> dict[str, Any]:
    """The JSON object ``command`` prints: version, command, results (renamed), then ``extra``."""
    fix = _ITEMS.get(command, lambda item: item)
    items = [fix(r) for r in results]
    if command == "mse":  # --activations: the weight formats beside the results speak the same way
        extra = {k: _deep(v, _MSE) for k, v in extra.items()}
    if command == "search":
        real = extra.get("objective") == "checkpoint"
        items = [_search_point(r, real) for r in items]
        if isinstance(extra.get("best"), dict):
            extra["best"] = _search_point(extra["best"], real)
    return {"schema_version": SCHEMA_VERSION, "command": command, "results": items, **extra}


def current_context() -> Any:
    """The click context of the command being run, or None outside one."""
    try:  # typer >= 0.20 runs commands in its own vendored copy of click
        from typer._click.globals import get_current_context
    except ImportError:  # pragma: no cover - older typer runs them in click itself
        from click import get_current_context

    return get_current_context(silent=True)


def current_command() -> str:
    """The running command's name without the program: ``rank``, ``tokenizer train``."""
    ctx = current_context()
    if ctx is None:
        return "uscl"
    path = ctx.command_path.split()
    return " ".join(path[1:]) or path[0]


def print_json(results: Any, *, command: str | None = None, **extra: Any) -> None:
    """Print ``results`` (a list of plain dicts, or one dict) in the envelope to stdout, and
    nothing else; ``command`` defaults to the command being run (from click's context).

    JSON has no nan or inf: a result holding one is one clear error naming where it is (the
    libraries name the tensor or constant first where they can), never invalid JSON.
    """
    import json

    where = _non_finite(results) or _non_finite(extra)
    if where is not None:
        from gmse_cli.errors import DataError

        raise DataError(f"result {where[0]} is {where[1]}; JSON cannot carry it (check the inputs that lead to it)")
    items = results if isinstance(results, list) else [results]
    payload = envelope(command or current_command(), items, **extra)
    sys.stdout.write(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    sys.stdout.flush()


def _non_finite(payload: Any) -> tuple[str, float] | None:
    """(path, value) of the first nan or inf in ``payload``, as ``[0].rho``; None if none."""
    stack: list[tuple[str, Any]] = [("", payload)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float) and not math.isfinite(item):
            return path or "value", item
        if isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), value) for key, value in reversed(item.items()))
        elif isinstance(item, list | tuple):
            stack.extend((f"{path}[{i}]", value) for i, value in reversed(list(enumerate(item))))
    return None


def csv_rows(results: Iterable[Mapping[str, Any]]) -> tuple[list[str], list[dict[str, Any]]]:
    """Columns (every scalar key, in first-seen order) and rows of ``results``."""
    columns: dict[str, None] = {}
    rows = []
    for item in results:
        row = dict(_scalars(item))
        columns.update(dict.fromkeys(row))
        rows.append(row)
    return list(columns), rows


def _scalars(item: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(key, value) of every scalar in ``item``; a nested object's keys are dotted (plan.steps)."""
    for key, value in item.items():
        if isinstance(value, Mapping):
            yield from _scalars(value, f"{prefix}{key}.")
        elif value is None or isinstance(value, str | int | float | bool):
            yield f"{prefix}{key}", value


def _cell(value: Any) -> Any:
    return "" if value is None else _inert(visible(value)) if isinstance(value, str) else value


# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) from a
# shared format file's name, say); numbers are written as numbers and keep their minus sign.
_FORMULA_START = ("=", "+", "-", "@", "\t")


def _inert(text: str) -> str:
    """``text`` with a ``'`` before it if a spreadsheet would read it as a formula, as OWASP
    advises; text that is a number ('-1.5') stays as it is."""
    if not text.startswith(_FORMULA_START):
        return text
    try:
        float(text)
    except ValueError:
        return "'" + text
    return text


def print_csv(results: Iterable[Any], *, command: str | None = None, **context: Any) -> None:
    """Print ``results`` (renamed as for JSON; ``context``: the envelope's other keys that the
    renaming reads, e.g. search's objective) as CSV to stdout: one row each, scalar columns."""
    items = envelope(command or current_command(), list(results), **context)["results"]
    columns, rows = csv_rows(items)
    # A name read from a file (a tensor's, a layer's) reaches the terminal or the next tool: its
    # control characters are escapes here as in the tables (newline and tab are quoted by CSV).
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow([_inert(visible(c)) for c in columns])
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    sys.stdout.flush()
