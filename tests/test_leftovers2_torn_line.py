"""A runs file whose last line was torn (half a JSON object, no newline: a crash of a writer that
did not append atomically, or a hand edit) was refused whole; the torn last line is no finished
run, so it is skipped with one warning, while a damaged line anywhere else is still refused."""

from __future__ import annotations

import json
import warnings

import pytest

from gmse_cli.errors import DataError
from gmse_cli.runs import RunsWarning, load_train_jsonl


def _lines(count: int) -> list[str]:
    return [json.dumps({"weights": "bf16", "N": 1e6 * (i + 1), "D": 2e7 * (i + 1), "loss": 3.0 + i / 10, "seed": i})
            for i in range(count)]


def test_a_torn_last_line_is_skipped_with_one_warning(tmp_path):
    lines = _lines(4)
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[0][:25])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs = load_train_jsonl(path)
    assert [r.N for r in runs] == [1e6, 2e6, 3e6, 4e6] and [r.loss for r in runs] == [3.0, 3.1, 3.2, 3.3]
    assert [str(w.message) for w in caught if issubclass(w.category, RunsWarning)] == [
        f"{path}:5: skipping the torn last line (half a JSON object, no newline at its end)"]


@pytest.mark.parametrize("text", [
    "\n".join(_lines(2)[:1] + [_lines(2)[1][:25]] + _lines(3)[2:]) + "\n",  # torn in the middle
    "\n".join(_lines(2)) + "\n" + _lines(1)[0][:25] + "\n",  # the last line, but it has its newline
    "\n".join(_lines(2)) + "\nnot json",  # no newline, but no half object either
])
def test_any_other_damaged_line_is_still_refused(tmp_path, text):
    path = tmp_path / "runs.jsonl"
    path.write_text(text)
    with pytest.raises(DataError, match=r"runs.jsonl:\d: not a JSON line"):
        load_train_jsonl(path)


def test_fit_reads_the_runs_before_a_torn_last_line(tmp_path, run_cli):
    lines = []
    for i, n in enumerate((1e6, 3e6, 1e7, 3e7)):
        for tpp in (5, 10, 20, 40):
            loss = 1.7 + 400 / n**0.34 + 410 / (n * tpp) ** 0.28
            lines.append(json.dumps({"weights": "bf16", "N": n, "D": n * tpp, "loss": loss, "seed": i}))
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[0][:40])
    result = run_cli("fit", str(path), "--no-heldout")
    assert result.code == 0, result.stderr
    torn = [line for line in result.stderr.splitlines() if "torn" in line]
    assert torn == [f"warning: {path}:17: skipping the torn last line (half a JSON object, no newline at its end)"]
