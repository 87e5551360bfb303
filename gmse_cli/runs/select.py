"""Choosing runs: ``--where`` expressions, dropping the worst runs and exact duplicates."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from gmse_cli.errors import DataError, UsclError
from gmse_cli.runs.identity import Spelled, is_format_file, labelled, named_content, spelled
from gmse_cli.runs.model import Run, scheme_name
from gmse_cli.spec import Format

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


def _compare(got: Any, op: str, value: str, key: str) -> bool:
    """``got OP value`` as written: numbers numerically, text case-insensitively."""
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


def _matches(run: Run, key: str, op: str, value: str, names: _Names) -> bool:
    try:
        got = run.field(key)
    except KeyError:
        return False
    if key.lower() not in _NAMED or op not in ("=", "!=", "~", "!~"):
        return _compare(got, op, value, key)
    identity = names.identity(run, key)
    if op in ("~", "!~"):  # a substring of any name the run's pooled format goes by
        found = any(value.lower() in name.lower() for name in names.names(key, identity, got))
        return found if op == "~" else not found
    same = _compare(got, "=", value, key) or (identity is not None and identity == names.named(key, value))
    return same if op == "=" else not same


_NAMED = ("weights", "activations", "scheme")


class _Names:
    """What a run's weights, activations or scheme are once ``uscl fit`` pools its spellings: the
    identity of its format(s) (:mod:`gmse_cli.runs.identity`; None for a format file's path or a
    scheme the file labels, matched as written), and every name the runs give that identity."""

    def __init__(self, runs: Sequence[Run]) -> None:
        self._runs = runs
        self._row = {id(run): i for i, run in enumerate(runs)}
        self._spelled: dict[tuple[str | None, int], Spelled | None] = {}
        self._ids: dict[str, list[Any]] = {}
        self._names: dict[str, dict[Any, set[str]]] = {}
        self._values: dict[tuple[str, str], Any] = {}

    def _tensor(self, spelling: str | None, inline: Format | None) -> Spelled | None:
        key = (spelling, id(inline))  # an inline format is its own, not its name's
        if key not in self._spelled:
            try:
                self._spelled[key] = spelled(spelling, inline)
            except UsclError:  # names no format: matched as written (the fit says so)
                self._spelled[key] = None
        return self._spelled[key]

    def _of(self, run: Run, key: str) -> tuple[Any, set[str]] | None:
        """(identity, names) of the run's ``key``; None where it is matched as written."""
        w, a = self._tensor(run.weights, run.weights_spec), self._tensor(run.activations, run.activations_spec)
        if key == "weights":
            return None if w is None else (w.content, {run.weights, w.name or run.weights})
        if key == "activations":
            return None if a is None else (a.content, {str(run.field(key)), a.name or "none"})
        if w is None or a is None or labelled(run):
            return None
        return (w.content, a.content), {run.scheme, scheme_name(w.name or run.weights, a.name)}

    def identity(self, run: Run, key: str) -> Any:
        key = key.lower()
        if key not in self._ids:
            found = [self._of(r, key) for r in self._runs]
            self._ids[key] = [None if f is None else f[0] for f in found]
            groups: dict[Any, set[str]] = {}
            for f in found:
                if f is not None:
                    groups.setdefault(f[0], set()).update(f[1])
            self._names[key] = groups
        row = self._row.get(id(run))
        return self._ids[key][row] if row is not None else None

    def names(self, key: str, identity: Any, got: Any) -> set[str]:
        """Every name the runs give the pooled ``identity`` (the run's own where there is none)."""
        return {str(got)} if identity is None else self._names[key.lower()][identity]

    def named(self, key: str, value: str) -> Any:
        """The identity a ``--where`` value names (a catalog name or shorthand in any spelling;
        a scheme as ``W:x A:y``), or None."""
        key = key.lower()
        if (key, value) not in self._values:
            self._values[key, value] = _named(key, value)
        return self._values[key, value]

    def check(self, expr: str, key: str, op: str, value: str) -> None:
        """A value that names no format, no format file and no run's value is one error line, not
        a selection silently empty (``=``) or everything (``!=``)."""
        if not self._runs or key.lower() not in _NAMED or op not in ("=", "!=") or is_format_file(value):
            return
        if self.named(key, value) is not None or any(_compare(r.field(key), "=", value, key) for r in self._runs):
            return
        raise DataError(f"--where '{expr.strip()}' {'matches' if op == '=' else 'excludes'} no run: '{value}' names "
                        f"no format and no run's {key.lower()} ({len(self._runs)} runs)")


def _named(key: str, value: str) -> Any:
    if key == "activations":
        return "" if value.lower() == "none" else named_content(value)
    if key == "weights":
        return named_content(value)
    weights, sep, activations = value.partition(" ")
    if sep:  # W:x A:y, as scheme names are written
        activations = activations.lstrip()
        if weights[:2].lower() != "w:" or activations[:2].lower() != "a:":
            return None
        w, a = named_content(weights[2:]), named_content(activations[2:])
        return None if w is None or a is None else (w, a)
    w = named_content(value)
    return None if w is None else (w, "")


def select(runs: Sequence[Run], where: Sequence[str] = ()) -> list[Run]:
    """Runs satisfying every ``--where`` expression (AND).

    Keys: scheme, weights, activations ('none' when not compressed), N, D, loss, w_bits,
    a_bits, tokens_per_param (tpp), source, and any metadata key of the runs. ``~`` is a
    case-insensitive substring test; numbers compare numerically.

    Formats are matched as ``uscl fit`` pools them (:mod:`gmse_cli.runs.identity`), so a
    selection keeps or drops a format whole however the file spells it: ``weights=fp4`` (or
    ``e2m1``, ``FP4``) keeps every run whose weight format is fp4, ``!=`` drops them all, and
    ``~`` looks for the text in any name the runs give the format. A scheme is matched by its
    formats (``scheme='W:e2m1 A:int4'``) unless the file labels it itself (a CSV's ``scheme``
    cell), and a format file's path as written. A ``=`` or ``!=`` value that names no format
    and no run's value is a DataError, not a silent selection.
    """
    parsed = [parse_where(e) for e in where]
    for key, _, _ in parsed:
        if runs and not any(_has_key(r, key) for r in runs):
            known = sorted({"scheme", "weights", "activations", "N", "D", "loss", "w_bits", "a_bits",
                            "tokens_per_param", "source"} | {k for r in runs for k in r.meta})
            raise DataError(f"--where key '{key}' is not a field of these runs (known: {', '.join(known)})")
    names = _Names(runs)
    for expr, (key, op, value) in zip(where, parsed, strict=True):
        names.check(expr, key, op, value)
    return [r for r in runs if all(_matches(r, k, op, v, names) for k, op, v in parsed)]


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
