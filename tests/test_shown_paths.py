"""A written file's name is shown as it is: brackets in it are text, not rich markup (`--out
'law[red]x.toml'` wrote that file but said `wrote law lawx.toml`), and a name's bytes that are not
UTF-8 are shown as \\xNN."""

from __future__ import annotations

import os

import conftest

RUNS = conftest.REPO_ROOT / "examples" / "cpu-law.jsonl"  # in the checkout and the sdist: no ../shared needed


def test_brackets_in_an_output_name_are_shown(run_cli, tmp_path):
    out = tmp_path / "law[red]x[bold].toml"
    res = run_cli("fit", str(RUNS), "--bootstrap", "0",
                  "--out", str(out))
    assert res.code == 0, res.stderr
    assert out.is_file()
    assert f"wrote law {out}" in res.stderr, res.stderr


def test_a_name_that_is_not_utf8_is_shown_escaped(run_cli, tmp_path):
    folder = os.fsdecode(os.fsencode(str(tmp_path)) + b"/l\xffaw.toml")
    res = run_cli("fit", str(RUNS), "--bootstrap", "0",
                  "--out", folder)
    assert res.code == 0, res.stderr
    assert "l\\xffaw.toml" in res.stderr, res.stderr
