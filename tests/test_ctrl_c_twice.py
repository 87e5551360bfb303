"""Ctrl-C at the edges of a command: pressed a second time while the first one's 'aborted' line
is printed or while the process exits, while Typer parses the command line, or while `python -m
gmse_cli` imports it. Each gave a traceback (or no line at all) instead of the one line and exit
130 (`uscl train` killed with two SIGINTs 0-0.4 s apart: 2 of 12 printed a traceback).

The second SIGINT is sent by the process to itself at the exact point, so the tests are
deterministic; they run the real entry point (`python -m gmse_cli`) in a child process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# `uscl formats` with the catalog interrupted (the first Ctrl-C), then `second` (the second).
_CHILD = """
import atexit, os, signal, sys
import gmse_cli.spec
from gmse_cli.cli import console, run

def second_ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)
    sum(range(10_000))  # Python runs the handler here, after the kill returns

def first_ctrl_c():
    if {where!r} == "exit":
        atexit.register(second_ctrl_c)  # after run()'s own handler: runs before it
    raise KeyboardInterrupt

if {where!r} == "print":
    real = console.stderr_console
    def interrupted_console():
        second_ctrl_c()
        return real()
    console.stderr_console = interrupted_console
gmse_cli.spec.catalog = first_ctrl_c
sys.argv = ["uscl", "formats"]
run()
"""


def _uscl(script_or_args: str | list[str], pythonpath: list[Path]) -> subprocess.CompletedProcess:
    args = ["-c", script_or_args] if isinstance(script_or_args, str) else ["-m", "gmse_cli", *script_or_args]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath))}
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


def test_a_second_ctrl_c_during_the_aborted_line_is_ignored():
    child = _uscl(_CHILD.format(where="print"), [REPO])
    assert (child.returncode, child.stderr) == (130, "aborted\n")


def test_a_second_ctrl_c_in_an_exit_handler_is_ignored():
    child = _uscl(_CHILD.format(where="exit"), [REPO])
    assert (child.returncode, child.stderr) == (130, "aborted\n")


def test_ctrl_c_while_the_command_line_loads_says_aborted(tmp_path):
    (tmp_path / "typer.py").write_text("raise KeyboardInterrupt\n")  # Ctrl-C inside `import typer`
    child = _uscl(["formats"], [tmp_path, REPO])
    assert (child.returncode, child.stderr) == (130, "aborted\n")


def test_the_uscl_program_loads_the_command_line_under_the_same_guard(tmp_path):
    """The installed `uscl` script imported gmse_cli.cli (typer) before any handler existed: a
    Ctrl-C in its first 0.1 s was a traceback. Its entry point, from pyproject, is run as pip's
    generated script runs it."""
    import tomllib

    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["uscl"]
    module, function = target.split(":")
    script = f"import sys\nfrom {module} import {function}\nsys.argv = ['uscl', 'formats']\nsys.exit({function}())\n"
    (tmp_path / "typer.py").write_text("raise KeyboardInterrupt\n")
    child = _uscl(script, [tmp_path, REPO])
    assert (child.returncode, child.stderr) == (130, "aborted\n")


def test_ctrl_c_while_typer_parses_says_aborted(monkeypatch, capsys):
    import gmse_cli.cli as cli

    build = cli._cli

    def interrupted_parse(args):
        command = build(args)

        def make_context(*_args, **_kwargs):
            raise KeyboardInterrupt

        command.make_context = make_context
        return command

    monkeypatch.setattr(cli, "_cli", interrupted_parse)
    try:
        cli.main(["formats"])
    except SystemExit as exc:
        code = exc.code
    assert (code, capsys.readouterr().err) == (130, "aborted\n")


# Records which of numpy and torch starts importing first, then runs `uscl train` far enough to
# import torch (an unknown launcher is refused right after --threads is applied).
_ORDER = """
import sys
started = []

class Recorder:
    def find_spec(self, name, path=None, target=None):
        if name in ("numpy", "torch") and name not in started:
            started.append(name)
        return None

sys.meta_path.insert(0, Recorder())
sys.argv = ["uscl", "train", "--preset", "tiny", "--launcher", "none", *{threads}]
from gmse_cli.cli import main
try:
    main()
except SystemExit:
    pass
if {library}:
    import gmse_cli.training.loop  # the library's way in: train_run
print(" ".join(started))
"""


@pytest.mark.parametrize("threads, library", [(["--threads", "1"], False), ([], True)])
def test_numpy_is_imported_before_torch(threads, library):
    # torch imports numpy from C and swallows a Ctrl-C that lands in that import: numpy is left
    # half-initialized and the command later died of a RecursionError (exit 1) or said "training
    # needs the [train] extra" (exit 2) instead of "aborted" (`uscl train` with a fresh cache,
    # SIGINT 0.50-0.55 s after the start: 4 of 5 runs). Imported first, numpy's own import takes
    # the Ctrl-C, which then stops the command as anywhere else.
    pytest.importorskip("torch")
    child = _uscl(_ORDER.format(threads=threads, library=library), [REPO])
    assert child.stdout.split() == ["numpy", "torch"], child.stderr[-2000:]
