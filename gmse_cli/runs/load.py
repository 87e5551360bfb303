"""Loading runs files of any source, the reader chosen by the file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gmse_cli.errors import DataError, described
from gmse_cli.inputs import does_not_exist, exists
from gmse_cli.runs.csv_table import load_csv
from gmse_cli.runs.fields import read_json, read_text
from gmse_cli.runs.model import Run
from gmse_cli.runs.quest import quest_runs
from gmse_cli.runs.train_jsonl import load_train_jsonl, run_from_record

__all__ = ["load_runs"]


def load_runs(paths: str | Path | Iterable[str | Path]) -> list[Run]:
    """Load runs from one or more files, choosing the loader by content.

    ``.csv`` -> :func:`load_csv`; a JSON list of QuEST records -> :func:`~gmse_cli.runs.quest.quest_runs`; a
    JSON list of uscl run records (what ``uscl train`` writes one per line) -> those records;
    anything else is read as ``uscl train`` JSON lines. Returns every run of every file, in
    file order.

    Raises :class:`~gmse_cli.errors.DataError` for a file that does not exist or cannot be
    read as any of these (naming the file and line).
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    if not isinstance(paths, Iterable):
        raise DataError(f"runs files are paths, not {described(paths)}")
    runs: list[Run] = []
    for raw in paths:
        if not isinstance(raw, str | Path):
            raise DataError(f"a runs file is a path, not {described(raw)}")
        path = Path(raw)
        if not exists(path):
            raise DataError(f"runs file {path} {does_not_exist(path)}")
        if path.suffix.lower() == ".csv":
            runs.extend(load_csv(path))
            continue
        head = read_text(path).lstrip()[:1]
        if head == "[":
            runs.extend(_load_json_list(path))
        else:
            runs.extend(load_train_jsonl(path))
    return runs


_QUEST_KEYS = ("w_quant", "a_quant", "non_embedding_parameters")


def _load_json_list(path: Path) -> list[Run]:
    """A JSON list: QuEST's records when its first has one of QuEST's keys, else uscl's."""
    records = read_json(path)
    first = records[0] if isinstance(records, list) and records else None
    if not isinstance(first, dict) or any(key in first for key in _QUEST_KEYS):
        return quest_runs(records, path)  # its errors name what QuEST's records need
    runs = (run_from_record(rec, f"{path} record {i}", str(path)) for i, rec in enumerate(records))
    return [run for run in runs if run is not None]
