"""`uscl fit`: a runs file's notes (skipped runs, duplicates) come only once nothing can fail.

Regression: the notes were printed once the fit stood but before `--out`'s law was built, and a
dense fit with `--out` reads `--law` only there: `--law nosuchlaw` gave the runs' warning line,
then the error line (two stderr lines for one bad input).
"""

from __future__ import annotations

import json

import conftest  # noqa: F401  (puts the package on the path like every test)

GOOD = {"weights": "int4", "N": 1e6, "D": 1e8, "loss": 3.5}


def test_a_bad_law_for_a_dense_fits_out_is_the_only_stderr_line(run_cli, tmp_path):
    grid = [dict(GOOD, N=n, D=d, loss=3 + 1e3 / n ** 0.3 + 1e3 / d ** 0.3) for n in (1e6, 3e6, 1e7) for d in (1e8, 1e9, 1e10)]
    runs = tmp_path / "r.jsonl"
    runs.write_text("".join(json.dumps(r) + "\n" for r in [*grid, dict(GOOD, loss=float("nan"))]))
    res = run_cli("fit", str(runs), "--model", "dense", "--out", str(tmp_path / "law.toml"), "--law", "nosuchlaw")
    assert res.code == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "nosuchlaw" in lines[0], res.stderr
    assert not (tmp_path / "law.toml").exists()
