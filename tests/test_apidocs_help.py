"""Help texts as documentation: at COLUMNS=80 no line of prose, grammar or example is re-wrapped.

Before: the format grammar (`uscl gmse --help`, and every command taking a FORMAT) was laid
out for 100 columns, so at 80 rich broke each of its rows in two and the continuation started
at column 1 (``quantize/vq``, ``2^(B-1)-1, scale`` alone on a line); `uscl train --help`
broke its description after "activation"; and three examples (train x2, fit) ran past 80
columns, so a reader copying the first line ran a different command (`uscl train --preset
tiny ... --tokens-per-param 20` without its --data, which then streams C4).

The check: rendered at 4000 columns, where each prose paragraph is one line, a paragraph of
several lines outside the option panels was broken by hand (a grid, a list of examples), and
each of its lines is a line of the help rendered at 80 (nothing was folded to fit); and every
example under "Examples:" is one whole `uscl ...` command (over lines ending in a shell continuation, each of them under
80 columns) naming only options its command lists.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMANDS = [[], ["gmse"], ["rank"], ["predict"], ["fit"], ["train"], ["mse"], ["search"], ["formats"],
            ["formats", "show"], ["formats", "export"], ["formats", "import"], ["tokenizer"],
            ["tokenizer", "train"]]
PANEL = ("\u2502", "\u256d", "\u2570")  # a line of an option panel: the box draws its own wrapping


def _help(argv: list[str], columns: int, tmp_path: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_TERMINAL", "TTY_INTERACTIVE")}
    env.update(PYTHONPATH=str(REPO), COLUMNS=str(columns), NO_COLOR="1", USCL_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-m", "gmse_cli", *argv, "--help"], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a) or "uscl")
def test_help_at_80_columns_folds_no_line_of_text(argv, tmp_path):
    narrow, wide = _help(argv, 80, tmp_path), _help(argv, 4000, tmp_path)
    assert all(len(line.rstrip()) <= 80 for line in narrow.splitlines())
    narrow_lines = {line.strip() for line in narrow.splitlines()}
    text = "\n".join(line.rstrip() for line in wide.splitlines() if not line.lstrip().startswith(PANEL))
    hard = [line.strip() for block in re.split(r"\n\s*\n", text) if len(block.strip().splitlines()) > 1
            for line in block.splitlines() if line.strip()]
    folded = [line for line in hard if line not in narrow_lines]
    assert not folded, f"uscl {' '.join(argv)} --help folds these lines at 80 columns: {folded}"
    # arguments are named in capitals, as the texts refer to them (FORMAT, MODEL, SWEEP, FILES;
    # fit's usage once read `{files}...` above an epilog about FILES)
    usage = next(line for line in narrow.splitlines() if "Usage:" in line)
    assert not re.search(r"[\[{][a-z]", usage.split("[OPTIONS]")[-1]), usage


def _options(help_text: str) -> set[str]:
    return set(re.findall(r"(?:^|\s)(--[a-zA-Z][\w-]*|-[a-zA-Z])\b", "\n".join(
        line for line in help_text.splitlines() if line.lstrip().startswith("\u2502"))))


@pytest.mark.parametrize("argv", [a for a in COMMANDS if a not in ([], ["tokenizer"])],
                         ids=lambda a: " ".join(a))
def test_examples_are_whole_commands_with_options_their_command_lists(argv, tmp_path):
    text = _help(argv, 80, tmp_path)
    parts = re.split(r"^\s*Examples:\s*$", text, maxsplit=1, flags=re.M)
    if len(parts) == 1:
        return
    block = re.split(r"\n\s*\n", parts[1].strip("\n"), maxsplit=1)[0]
    # a long example goes on over lines that end in a shell continuation
    lines = [line.strip() for line in re.sub(r" \\\s*\n\s*", " ", block).splitlines() if line.strip()]
    assert lines, text
    options = _options(text)
    for line in lines:
        assert line.startswith("uscl "), f"an example line that is no whole command: {line!r}"
        words = line.split()
        assert words[1] == argv[0], line
        if words[1:1 + len(argv)] != argv:
            continue  # `formats show` shows the group's examples too: their options are the group's
        unknown = {w.split("=")[0] for w in words if w.startswith("-") and w.split("=")[0] not in options}
        assert not unknown, f"{line!r} names {unknown}, which `uscl {' '.join(argv)} --help` does not list"


def test_readme_grammar_is_the_help_text():
    """README (Formats) shows the shorthand grammar as `uscl formats --help` prints it."""
    from gmse_cli.grammar import SHORTHAND_HELP

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"```\n(A FORMAT is a catalog name.*?)\n```", readme, flags=re.S)
    assert block and block.group(1) == SHORTHAND_HELP
    assert max(len(line) for line in SHORTHAND_HELP.splitlines()) <= 78


def _shown_defaults(help_text: str) -> dict[str, str]:
    """option -> the text of its ``[default: ...]`` in a help rendered one option a line."""
    shown = {}
    for line in help_text.splitlines():
        found = re.match(r"\W*(--[\w-]+).*\[default: \(?(.*?)\)?\]", line)
        if found:
            shown[found.group(1)] = found.group(2)
    return shown


def test_train_help_shows_the_defaults_a_run_gets(tmp_path):
    """Before: `uscl train --help` showed no default for --seed, --eval-tokens, --eval-every,
    --checkpoint-every, --max-steps, --micro-batch-size, --tokenizer, --rbbm-p or --preset
    (README: every --help shows each option's default). Compared here with the values a run
    built from the flags alone gets (RunConfig, DataConfig, the single-run sweep)."""
    pytest.importorskip("pydantic")
    from gmse_cli.training.config import RunConfig, split_batch

    shown = _shown_defaults(_help(["train"], 400, tmp_path))
    cfg = RunConfig(preset="tiny", tokens_per_param=100.0)
    assert shown["--seed"] == str(cfg.seed) == "0"
    assert shown["--eval-tokens"] == str(cfg.eval_tokens) == str(2 ** 20)
    assert shown["--eval-every"] == str(cfg.eval_every) == "0"
    assert shown["--checkpoint-every"] == str(cfg.checkpoint_every)
    assert shown["--tokenizer"] == cfg.data.tokenizer
    assert cfg.max_steps is None and shown["--max-steps"].startswith("none")
    assert cfg.estimator.rbbm_p is None and shown["--rbbm-p"].startswith("none")
    assert split_batch(cfg, 1) == (cfg.batch_size, cfg.batch_size)
    assert shown["--micro-batch-size"] == "the whole per-process batch"
    assert "--preset" in shown and "--format" in shown and shown["--device"] == "auto"


def test_fit_help_examples_on_the_shared_data_run(run_cli, shared_data, tmp_path, monkeypatch):
    """Before: `uscl fit --help`'s second example, `uscl fit runs_for_scaling.json --model
    decoupled --where 'w_bits=4'`, exited 2: keeping 4-bit runs only drops the 16-bit runs a
    decoupled fit pins rho = 1 on. Run here on QuEST's file (shared as quest_runs.json) and the
    Chinchilla replication, as the help spells them."""
    import shutil

    shutil.copy(shared_data / "quest_runs.json", tmp_path / "runs_for_scaling.json")
    shutil.copy(shared_data / "chinchilla_epoch_extracted.csv", tmp_path / "chinchilla_epoch_extracted.csv")
    monkeypatch.chdir(tmp_path)
    text = run_cli("fit", "--help").stdout
    block = re.split(r"\n\s*\n", re.split(r"^\s*Examples:\s*$", text, maxsplit=1, flags=re.M)[1].strip("\n"))[0]
    commands = [line.strip() for line in re.sub(r" \\\s*\n\s*", " ", block).splitlines() if line.strip()]
    ran = 0
    for command in commands:
        words = [w.strip("'") for w in command.split()[1:]]
        if words[1] in ("runs_for_scaling.json", "chinchilla_epoch_extracted.csv"):
            result = run_cli(*words, "--no-heldout", "--json")
            assert result.code == 0, (command, result.stderr)
            ran += 1
    assert ran == 2


def test_mse_and_search_help_show_what_no_sample_or_include_means(tmp_path):
    """Before: `mse --sample` and `--include` (mse, search) showed no default."""
    mse = _shown_defaults(_help(["mse"], 400, tmp_path))
    assert mse["--sample"] == "none: every row"
    assert mse["--include"].startswith("every linear weight matrix")
    assert _shown_defaults(_help(["search"], 400, tmp_path))["--include"].startswith("as uscl mse")


@pytest.mark.parametrize("group,names", [(["formats"], ["show", "export", "import"]), (["tokenizer"], ["train"])])
def test_group_command_lists_show_each_summary_on_one_line(group, names, tmp_path):
    # rich markup kept a docstring's source line break in the group's Commands panel, so at any
    # width `formats import` and `tokenizer train` broke mid-sentence ("... weights to, as" / "TOML")
    text = _help(group, 4000, tmp_path)
    panel = text.split("Commands")[1].split("\u2570")[0]
    rows = [line.strip("\u2502 ") for line in panel.splitlines()[1:] if line.strip("\u2502 ")]
    assert [row.split()[0] for row in rows] == names, rows
