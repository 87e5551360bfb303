"""`uscl search --bits` takes a budget above 0 and at most 64; --help and the README say so.

Before: the limit was enforced (one exit-2 line) but written nowhere a user reads it: --help said
only "budget in bits per parameter (e.g. 4.25)". The Python API took 65 bits and raised a
TypeError for a budget given as text.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import REPO_ROOT

from gmse_cli.errors import UsclError
from gmse_cli.search import search_formats


def test_help_says_the_range(run_cli):
    result = run_cli("search", "--help")
    assert result.code == 0
    text = " ".join(result.stdout.replace("│", " ").split())
    assert "budget in bits per parameter, above 0 and at most 64" in text


def test_readme_says_the_range():
    text = " ".join((REPO_ROOT / "README.md").read_text(encoding="utf-8").split())
    limits = text[text.index("Limits (the Python API checks the same ones"):]
    assert re.search(r"`search --bits` above 0 and at most 64", limits[:3000])


@pytest.mark.parametrize("value", ["64.5", "65", "1e9"])
def test_a_budget_above_the_limit_is_one_exit_2_line(run_cli, value):
    result = run_cli("search", "--bits", value)
    assert result.code == 2 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(float(value)) in lines[0] and "(0, 64]" in lines[0]


def test_the_api_refuses_what_the_command_line_refuses():
    for bad in ("4", np.array([4.0]), None, True, 64.0001, 65, 0, float("nan")):
        with pytest.raises(UsclError, match=r"^budget=.* above 0 and at most 64"):
            search_formats(bad)
