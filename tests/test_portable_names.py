"""Output names that Windows would not keep as given are refused there, before any work.

On Windows 'law.' is written as 'law' (a trailing dot or space is dropped), 'a:b.toml' is an NTFS
stream hidden inside a file 'a', and 'NUL' or 'aux.json' is a device: the "written" law is gone.
Linux keeps every one of these names, so they are checked only on Windows
(:data:`gmse_cli.atomic.ON_WINDOWS`, switched on here).
"""

from __future__ import annotations

import conftest  # noqa: F401  (the shared fixtures)
import pytest

from gmse_cli import atomic
from gmse_cli.atomic import check_output_path, windows_name_problem
from gmse_cli.errors import SpecError

REFUSED = ["CON", "nul", "aux.json", "Com1.toml", "lpt9.csv", "law.", "law ", "law. .", "a:b.toml", "what?.toml",
           'say"so.toml', "a<b.toml", "a>b.toml", "a|b.toml", "star*.toml", "tab\there.toml"]
KEPT = ["law.toml", "console.toml", "com10.toml", "nuls.json", "CONTENTS", "sp ace.toml", "ü né.toml", ".hidden",
        "a.b.c.toml", "2of4+int4.toml"]


@pytest.mark.parametrize("name", REFUSED)
def test_names_windows_would_change_are_named(name):
    assert windows_name_problem(name) is not None


@pytest.mark.parametrize("name", KEPT)
def test_names_windows_keeps_pass(name):
    assert windows_name_problem(name) is None


@pytest.mark.parametrize("name", ["NUL", "aux.json", "law.", "a:b.toml"])
def test_on_windows_the_output_check_refuses_in_one_line(tmp_path, monkeypatch, name):
    monkeypatch.setattr(atomic, "ON_WINDOWS", True)
    with pytest.raises(SpecError) as caught:
        check_output_path(tmp_path / name, what="law file", error=SpecError)
    message = str(caught.value)
    assert "\n" not in message and "Windows" in message and name in message
    assert list(tmp_path.iterdir()) == []  # nothing written, not even the probe


def test_elsewhere_those_names_are_ordinary_files(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "ON_WINDOWS", False)
    for name in ["NUL", "aux.json", "law.", "a:b.toml"]:
        assert check_output_path(tmp_path / name, what="law file", error=SpecError) == tmp_path / name
