"""Control characters in names read from files or arguments never reach the terminal raw.

Before: `uscl gmse $'\\x1b[31mfoo'` wrote the escape byte into its error line, a format file
named "my\\nfmt\\x1b[2J" printed a table row that cleared the screen, and a runs file's scheme
cell did the same in `uscl fit`'s tables.
"""

from __future__ import annotations

import conftest
import pytest

from gmse_cli.errors import SpecError, one_line, visible
from gmse_cli.spec import resolve_format
from gmse_cli.spec.format import validate_format

ESC = "\x1b"


@pytest.mark.parametrize(("text", "shown"), [
    ("int4", "int4"),
    ("naïve µ-law ü", "naïve µ-law ü"),  # printable non-ASCII stays as written
    ("a\x1b[31mb", "a\\x1b[31mb"),
    ("bell\x07", "bell\\x07"),
    ("del\x7f c1\x85", "del\\x7f c1\\x85"),
    ("two\nlines\tand tab", "two\nlines\tand tab"),  # a cell may have several lines
])
def test_visible_writes_control_characters_as_escapes(text, shown):
    assert visible(text) == shown


def test_one_line_collapses_whitespace_and_escapes_the_rest():
    assert one_line("bad  value\r\n'x\x1b[2Jy'\x00") == "bad value 'x\\x1b[2Jy'\\x00"


def test_an_error_line_carries_no_escape_byte(run_cli):
    result = run_cli("gmse", ESC + "[2Jint4")
    assert result.code == 2
    assert ESC not in result.stderr and "\\x1b[2j" in result.stderr.lower()
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("name", ["my\nfmt", "x\x1b[31m", "cr\rname", "nul\x00"])
def test_a_format_name_with_a_control_character_is_refused(name):
    stages = resolve_format("int4").model_dump(mode="json")["stages"]
    with pytest.raises(SpecError, match="holds a control character"):
        validate_format({"name": name, "stages": stages}, source="test")


def test_a_format_file_naming_a_control_character_gets_one_line(tmp_path, run_cli):
    path = tmp_path / "odd.toml"
    path.write_text('name = "my\\nfmt\\u001b[2J"\n[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\n')
    result = run_cli("gmse", str(path))
    assert result.code == 2
    assert result.stderr.count("\n") == 1 and ESC not in result.stderr and "control character" in result.stderr


def test_a_scheme_cell_with_an_escape_is_shown_escaped_in_fit_tables(tmp_path, run_cli):
    path = conftest.dense_runs_csv(tmp_path / "runs.csv", f"my{ESC}[2Jrun")
    result = run_cli("fit", str(path), "--model", "dense")
    assert result.code == 0, result.stderr
    assert ESC not in result.stdout + result.stderr
    assert "my\\x1b[2Jrun" in result.stdout
