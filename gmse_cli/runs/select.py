"""Choosing runs: ``--where`` expressions, dropping the worst runs and exact duplicates."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from gmse_cli.errors import DataError
from gmse_cli.runs.model import Run

__all__ = ["parse_where", "select", "exclude_worst", "drop_duplicates"]

_WHERE = re.compile(r"^\s*(?P<key>[A-Za-z_][\w.]*)\s*(?P<op>>=|<=|!=|!~|==|=|~|>|<)\s*(?P<value>.*?)\s*$")


def parse_where(expr: str) -> tuple[str, str, str]:
    """``'w_bits>=4'`` -> ``('w_bits', '>=', '4')``; raises DataError on a malformed expression."""
    match = _WHERE.match(expr)
    if match is None or match["value"] == "":
        raise DataError(
            f"--where '{expr}' is not KEY OP VALUE (OP one of = != < <= > >= ~ !~; e.g. 'w_bits=4', "
            "'scheme~had', 'N>=1e8')"
        )
    op = "=" if match["op"] == "==" else match["op"]
    return match["key"], op, match["value"]


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        return None


def _matches(run: Run, key: str, op: str, value: str) -> bool:
    try:
        got = run.field(key)
    except KeyError:
        return False
    if op in ("~", "!~"):
        found = value.lower() in str(got).lower()
        return found if op == "~" else not found
    left, right = _as_number(got), _as_number(value)
    if left is not None and right is not None:
        return {
            "=": left == right, "!=": left != right, "<": left < right,
            "<=": left <= right, ">": left > right, ">=": left >= right,
        }[op]
    if op in ("=", "!="):
        same = str(got).lower() == value.lower()
        return same if op == "=" else not same
    raise DataError(f"--where '{key}{op}{value}': '{got}' and '{value}' are not both numbers")


def select(runs: Sequence[Run], where: Sequence[str] = ()) -> list[Run]:
    """Runs satisfying every ``--where`` expression (AND).

    Keys: scheme, weights, activations ('none' when not compressed), N, D, loss, w_bits,
    a_bits, tokens_per_param (tpp), source, and any metadata key of the runs. ``~`` is a
    case-insensitive substring test; numbers compare numerically.
    """
    parsed = [parse_where(e) for e in where]
    for key, _, _ in parsed:
        if runs and not any(_has_key(r, key) for r in runs):
            known = sorted({"scheme", "weights", "activations", "N", "D", "loss", "w_bits", "a_bits",
                            "tokens_per_param", "source"} | {k for r in runs for k in r.meta})
            raise DataError(f"--where key '{key}' is not a field of these runs (known: {', '.join(known)})")
    return [r for r in runs if all(_matches(r, k, op, v) for k, op, v in parsed)]


def _has_key(run: Run, key: str) -> bool:
    try:
        run.field(key)
    except KeyError:
        return False
    return True


def exclude_worst(runs: Sequence[Run], k: int) -> list[Run]:
    """Drop the ``k`` highest-loss runs (ties at the cut go too, as Besiroglu et al. did)."""
    if k < 0:
        raise DataError(f"--exclude-worst {k} must not be negative")
    if k == 0:
        return list(runs)
    if k >= len(runs):
        raise DataError(f"--exclude-worst {k} would drop all {len(runs)} runs")
    cut = sorted(r.loss for r in runs)[-k]
    return [r for r in runs if r.loss < cut]


def drop_duplicates(runs: Sequence[Run]) -> tuple[list[Run], list[tuple[Run, Run]]]:
    """The runs with each exact duplicate kept once, and ``(copy, the run it repeats)`` for
    every copy dropped, in file order.

    Two runs are the same when everything but where they were read agrees: scheme, formats
    (inline specs too), N, D, loss, recorded stage GMSEs and every other recorded field. A
    record pasted twice, or a file given twice, is one run: counted twice it would weigh double
    in the fit and narrow every bootstrap interval as if it were independent evidence.
    """
    first: dict[str, Run] = {}
    kept: list[Run] = []
    copies: list[tuple[Run, Run]] = []
    for run in runs:
        key = json.dumps(_same_numbers(run.model_dump(mode="json", exclude={"source", "location"})), sort_keys=True)
        if key in first:
            copies.append((run, first[key]))
        else:
            first[key] = run
            kept.append(run)
    return kept, copies


def _same_numbers(value: Any) -> Any:
    """``value`` with each whole number that a float holds exactly written as that float: a
    record's ``"seed": 0`` and another's ``"seed": 0.0`` (or a CSV cell's 0, read as 0.0) are
    the same value, which ``json.dumps`` would spell apart. Larger ints stay as they are, so two
    seeds a float cannot tell apart are not merged."""
    if isinstance(value, dict):
        return {k: _same_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_same_numbers(v) for v in value]
    if isinstance(value, int) and not isinstance(value, bool) and float(value) == value:
        return float(value)
    return value
