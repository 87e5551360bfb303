"""fit --json lists why each run it read but did not fit was skipped (a program reading the JSON
could not see skipped runs before: only the stderr warnings named them)."""

from __future__ import annotations

import json


def _record(n: float, tpp: float, **extra) -> str:
    loss = 1.7 + 400 / n**0.34 + 410 / (n * tpp) ** 0.28  # Chinchilla's form, so the fit is quick
    return json.dumps({"weights": "bf16", "N": n, "D": n * tpp, "loss": loss, "seed": 0, **extra})


def test_fit_json_lists_each_skipped_run(tmp_path, run_cli):
    lines = [_record(n, tpp) for n in (1e6, 3e6, 1e7, 3e7) for tpp in (5, 10, 20, 40)]
    lines.insert(3, _record(2e6, 10, status="diverged"))  # line 4
    lines.append(_record(5e6, 10, loss="nan"))  # line 18: a diverged loss
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(lines) + "\n" + lines[0][:30])  # line 19: torn
    result = run_cli("fit", str(path), "--model", "dense", "--no-heldout", "--json")
    assert result.code == 0, result.stderr
    skipped = json.loads(result.stdout)["results"][0]["runs_skipped"]
    assert [s.split(": ", 1)[0] for s in skipped] == [f"{path}:4", f"{path}:18", f"{path}:19"]
    warned = [line.removeprefix("warning: ") for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert warned == skipped


def test_nothing_skipped_is_an_empty_list(tmp_path, run_cli):
    path = tmp_path / "runs.jsonl"
    path.write_text("\n".join(_record(n, tpp) for n in (1e6, 3e6, 1e7, 3e7) for tpp in (5, 10, 20, 40)) + "\n")
    result = run_cli("fit", str(path), "--model", "dense", "--no-heldout", "--json")
    assert result.code == 0, result.stderr
    assert json.loads(result.stdout)["results"][0]["runs_skipped"] == []
