"""A plain CSV of runs (and the Chinchilla points, whose D comes from their training FLOP)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from gmse_cli.errors import DataError
from gmse_cli.inputs import is_file
from gmse_cli.runs.fields import check_spec, number, read_text
from gmse_cli.runs.model import MetaValue, Run, check_run_numbers, scheme_name
from gmse_cli.spec import Format

__all__ = ["load_csv"]

_CSV_N = ("n", "params", "model size", "model_size", "parameters")
_CSV_D = ("d", "tokens", "training tokens", "training_tokens")
_CSV_FLOP = ("training flop", "training_flop", "flop", "flops", "c", "compute")
_CSV_LOSS = ("loss", "final_loss", "val_loss")
_CSV_W = ("weights", "weight_format", "w_format")
_CSV_A = ("activations", "activation_format", "a_format")


def _format_cell(cell: str | None, where: str, key: str) -> tuple[str | None, Format | None]:
    """A format cell, checked, as (scheme name, spec). A format file's scheme is the name the file
    holds, as uscl train's records name it (so fit, rank and predict call it one thing), and the
    file is read once here; a catalog name or shorthand stays as written. The cell itself stays
    the run's ``weights`` / ``activations``, which --where matches."""
    if cell is None:
        return None, None
    fmt = check_spec(cell, where, key)
    if not (cell.endswith(".toml") or is_file(cell)):
        return cell, None
    return fmt.display_name, fmt


def load_csv(path: str | Path) -> list[Run]:
    """A CSV of runs: N, D (or training FLOP, D = FLOP / 6N), loss, optional format columns.

    Without format columns every run is the dense ``bf16`` scheme (capacity 1).
    """
    path = Path(path)
    reader = csv.DictReader(read_text(path).splitlines())
    rows = list(reader)
    if not rows:
        raise DataError(f"{path}: no data rows (expected a header with N, D and loss)")
    # a repeated column name keeps only its last column's cells: which one was meant is unknown
    names = [name.strip().lower() for name in reader.fieldnames or () if name and name.strip()]
    if repeated := sorted({name for name in names if names.count(name) > 1}):
        raise DataError(f"{path}: the header names column '{repeated[0]}' more than once; rename or drop one")
    header = {name.strip().lower(): name for name in rows[0] if name is not None}

    def column(options: Sequence[str]) -> str | None:
        return next((header[o] for o in options if o in header), None)

    col_n, col_d, col_flop, col_loss = column(_CSV_N), column(_CSV_D), column(_CSV_FLOP), column(_CSV_LOSS)
    col_w, col_a, col_s = column(_CSV_W), column(_CSV_A), column(("scheme",))
    if col_n is None or col_loss is None or (col_d is None and col_flop is None):
        raise DataError(
            f"{path}: needs columns N, loss and D (or 'Training FLOP'); found {', '.join(header.values())}"
        )
    runs = []
    known = {c for c in (col_n, col_d, col_flop, col_loss, col_w, col_a, col_s) if c}
    for lineno, row in enumerate(rows, start=2):
        where = f"{path}:{lineno}"
        if None in row:  # cells past the header: an unquoted comma shifts every later column
            raise DataError(f"{where}: {len(header) + len(row[None])} fields for the header's {len(header)}; "
                            "quote a cell that holds a comma")
        short = [name for name in header.values() if row.get(name) is None]
        if short:  # csv gives None past a short row's end: a missing weights cell would read as bf16
            raise DataError(f"{where}: {len(row) - len(short)} fields for the header's "
                            f"{len(header)} (no {', '.join(short)}); write an empty cell for a blank value")
        n = number(row[col_n], "N", where)
        if not (math.isfinite(n) and n > 0):  # D = FLOP / 6N below, and every run needs N > 0
            raise DataError(f"{where}: N = {row[col_n]} must be a positive number")
        if col_d:
            d = number(row[col_d], "D", where)
        else:  # name the cell as written: D = FLOP / 6N would name a number the file does not hold
            flop = number(row[col_flop], "Training FLOP", where)
            if not (math.isfinite(flop) and flop > 0):
                raise DataError(f"{where}: Training FLOP = {row[col_flop].strip()} must be a positive number")
            d = flop / (6.0 * n)
        loss = number(row[col_loss], "loss", where)
        check_run_numbers(n, d, loss, where)
        weights = (row.get(col_w) or "").strip() if col_w else ""
        activations = (row.get(col_a) or "").strip() if col_a else ""
        weights = weights or "bf16"
        act = None if activations.lower() in ("", "none", "bf16", "16") else activations
        (w_name, w_spec), (a_name, a_spec) = _format_cell(weights, where, "weights"), _format_cell(act, where, "activations")
        meta: dict[str, MetaValue] = {}
        for key, value in row.items():
            if key is None or key in known or value is None:
                continue
            try:
                meta[key] = float(value)
            except ValueError:
                meta[key] = value
        scheme = (row.get(col_s) or "").strip() if col_s else ""
        runs.append(
            Run(
                scheme=scheme or scheme_name(w_name, a_name),
                weights=weights,
                activations=act,
                weights_spec=w_spec,
                activations_spec=a_spec,
                N=n,
                D=d,
                loss=loss,
                source=str(path),
                location=where,
                meta=meta,
            )
        )
    return runs
