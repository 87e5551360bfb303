"""Loading runs files of any source, the reader chosen by the file."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from gmse_cli.errors import DataError
from gmse_cli.inputs import exists
from gmse_cli.runs.csv_table import load_csv
from gmse_cli.runs.fields import read_text
from gmse_cli.runs.model import Run
from gmse_cli.runs.quest import load_quest_runs
from gmse_cli.runs.train_jsonl import load_train_jsonl

__all__ = ["load_runs"]


def load_runs(paths: str | Path | Iterable[str | Path]) -> list[Run]:
    """Load runs from one or more files, choosing the loader by content.

    ``.csv`` -> :func:`load_csv`; a JSON list of QuEST records -> :func:`load_quest_runs`;
    anything else is read as ``uscl train`` JSON lines.
    """
    if isinstance(paths, str | Path):
        paths = [paths]
    runs: list[Run] = []
    for raw in paths:
        path = Path(raw)
        if not exists(path):
            raise DataError(f"runs file {path} does not exist")
        if path.suffix.lower() == ".csv":
            runs.extend(load_csv(path))
            continue
        head = read_text(path).lstrip()[:1]
        if head == "[":
            runs.extend(load_quest_runs(path))
        else:
            runs.extend(load_train_jsonl(path))
    return runs
