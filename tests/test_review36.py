"""review36: names with rich-markup brackets print as written (the torchrun signal case found
with them lives in test_interrupts_torchrun.py)."""

from __future__ import annotations

import io

import conftest
import pytest


@pytest.mark.parametrize("scheme", ["run[/bold]", "run[red]x", "[/]"])
def test_a_scheme_name_with_markup_brackets_prints_as_written(tmp_path, run_cli, scheme):
    # Before: '[/bold]' in a runs file's scheme name ended `uscl fit` with rich's MarkupError
    # traceback (exit 1); '[red]' recoloured the cell and was dropped from it.
    result = run_cli("fit", str(conftest.dense_runs_csv(tmp_path / "runs.csv", scheme)), "--model", "dense")
    assert result.code == 0, result.stderr
    assert f"│ {scheme} " in result.stdout


def test_table_cells_are_text_as_written_and_a_text_cell_keeps_its_style():
    from rich.console import Console
    from rich.text import Text

    from gmse_cli.cli.table import Table

    table = Table()
    table.add_column("a")
    table.add_column("b")
    table.add_row("x[/b]\x1b[2J", Text("y", style="yellow"))
    out = io.StringIO()
    Console(file=out, width=60, force_terminal=True, color_system="standard").print(table)
    text = out.getvalue()
    assert "x[/b]\\x1b[2J" in text  # the escape character shown, the brackets kept
    assert "\x1b[33my" in text  # yellow: a styled cell is styled, not escaped
