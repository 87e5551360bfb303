"""Ctrl-C inside a real command prints 'aborted' (with where a stopped training run's checkpoint
is) and exits 130. Typer turns a KeyboardInterrupt into a silent exit 130 on its own, so the
checkpoint line a stopped `uscl train` raises was never printed (test_cli_core's version of
this test replaces the command, and with it Typer's handling); inside a numba kernel (`uscl fit`)
Ctrl-C became a SystemError traceback and exit 1."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("raised, said", [
    (KeyboardInterrupt(), "aborted\n"),
    (KeyboardInterrupt("stopped at step 7; checkpoint in runs/x"), "aborted: stopped at step 7; checkpoint in runs/x\n"),
    ("numba", "aborted\n"),
])
def test_ctrl_c_inside_a_command_says_aborted(monkeypatch, capsys, raised, said):
    import gmse_cli.spec
    from gmse_cli.cli import main

    def interrupted():
        if raised == "numba":  # how Ctrl-C inside a compiled kernel (the fit's loss) reaches Python
            try:
                try:
                    raise KeyboardInterrupt
                except KeyboardInterrupt as exc:
                    raise SystemError("<function _numba_unpickle> returned a result with an exception set") from exc
            except SystemError as exc:
                raise SystemError("CPUDispatcher(...) returned a result with an exception set") from exc
        raise raised

    monkeypatch.setattr(gmse_cli.spec, "catalog", interrupted)  # what `uscl formats` calls first
    with pytest.raises(SystemExit) as exit_info:
        main(["formats"])
    assert exit_info.value.code == 130
    captured = capsys.readouterr()
    assert captured.err == said and captured.out == ""
