"""Progress where long work is really run: stderr redirected to a log file (`2> log`, nohup, CI,
a Slurm .err file) or a dumb terminal. There a bar cannot be redrawn, so it is whole plain lines,
a few a minute, ending in a "done" line (gmse_cli.progress._Lines); rich's bar drew nothing at
all there, so a 78 s `uscl fit ... --json 2> log` left an empty log."""

from __future__ import annotations

import os
import pty
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import conftest
import pytest

from gmse_cli import progress

REPO = Path(__file__).resolve().parents[1]

# A child that shows one bar of 5 steps advanced 100,000 times, its first line due at once and
# the next an hour later (so at most the first and the done line), then exits.
_BAR = """
from gmse_cli import progress
progress.FIRST_LINE_S, progress.LINE_EVERY_S = {first}, 3600.0
with progress.task("GMSE", 5, columns=("loss {{loss}}",)) as bar:
    for i in range(100_000):
        bar.update(detail="int4[x]", loss="2.5")
        bar.advance(5 / 100_000)
"""


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
                                                            "FORCE_TERMINAL", "NO_COLOR", "COLUMNS")}
    env.update(PYTHONPATH=str(REPO), PYTHONDONTWRITEBYTECODE="1", **extra)
    return env


def _stderr_to_file(script: str, tmp_path: Path, **env: str) -> str:
    log = tmp_path / "err.log"
    with open(log, "wb") as err:
        res = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                             stderr=err, env=_env(**env), timeout=120)
    text = log.read_bytes().decode()
    assert res.returncode == 0, text
    return text


def _stderr_to_pty(script: str, **env: str) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=slave, env=_env(**env))
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    return b"".join(chunks).decode()


def _assert_whole_plain_lines(text: str) -> list[str]:
    assert text.endswith("\n"), repr(text[-200:])
    assert "\x1b[" not in text and "\r" not in text.replace("\r\n", "\n"), repr(text[:300])
    return text.replace("\r\n", "\n").splitlines()


@pytest.mark.parametrize("no_color", [False, True])
def test_a_bar_in_a_log_file_is_whole_lines_ending_done(tmp_path, no_color):
    text = _stderr_to_file(_BAR.format(first=0.0), tmp_path, **({"NO_COLOR": "1"} if no_color else {}))
    lines = _assert_whole_plain_lines(text)
    # 100,000 updates: the first line and the done line, never one per update
    assert 1 <= len(lines) <= 2, lines
    assert re.fullmatch(r"GMSE int4\[x\]: 5/5 \(100%\), loss 2\.5, done in \d+:\d\d:\d\d", lines[-1]), lines
    # the in-process CLI runner leaves these lines out of what tests compare
    assert conftest.PROGRESS_LINE.sub("", text) == ""


def test_a_bar_on_a_dumb_terminal_is_whole_lines_too():
    # rich draws nothing on TERM=dumb (it cannot move the cursor): the log lines stand in
    text = _stderr_to_pty(_BAR.format(first=0.0), TERM="dumb")
    lines = _assert_whole_plain_lines(text)
    assert 1 <= len(lines) <= 2, lines
    assert re.fullmatch(r"GMSE int4\[x\]: 5/5 \(100%\), loss 2\.5, done in \d+:\d\d:\d\d", lines[-1]), lines


def test_a_short_bar_in_a_log_file_prints_nothing(tmp_path):
    # work that ends before the first line is due leaves the log as it was
    assert _stderr_to_file(_BAR.format(first=3600.0), tmp_path) == ""


def test_a_bar_on_a_real_terminal_is_still_drawn_by_rich():
    text = _stderr_to_pty(_BAR.format(first=0.0), TERM="xterm-256color")
    assert "\r" in text and "done in" not in text  # redrawn in place, then erased


def test_the_line_counts_its_eta_from_this_run_s_own_pace():
    # a run resumed at step 100 of 200 that made 50 steps in 10 s has 50 left: 10 s, not 3.3 s
    lines = progress._Lines("train", 200, 100, "steps", ("loss {loss}",), ("loss",))
    lines._started_at = time.monotonic() - 10.2
    lines.update(completed=150, loss="3.1")
    assert lines.line() == "train: 150/200 (75%), loss 3.1, 0:00:10 elapsed, about 0:00:10 left"
    assert lines.line(done=True) == "train: 150/200 (75%), loss 3.1, done in 0:00:10"
    pulse = progress._Lines("fitting dense law to 12 runs ...", None, 0, "none", (), ())
    pulse._started_at = time.monotonic() - 75.5
    assert pulse.line() == "fitting dense law to 12 runs: 0:01:15 elapsed"
    share = progress._Lines("measuring", 4_000_000, 0, "percent", (), ())
    share._started_at = time.monotonic() - 2.2
    share.advance(amount=1_000_000)
    assert share.line() == "measuring: 25%, 0:00:02 elapsed, about 0:00:06 left"


def test_an_interrupted_bar_says_no_done(tmp_path):
    script = _BAR.format(first=0.0).replace("bar.advance(5 / 100_000)", "bar.advance(5 / 100_000)\n"
                                             "        if i == 50_000: raise KeyboardInterrupt")
    script = f"try:\n{''.join('    ' + line + chr(10) for line in script.strip().splitlines())}" \
             "except KeyboardInterrupt:\n    pass\n"
    text = _stderr_to_file(script, tmp_path)
    assert "done" not in text
    assert text == "" or _assert_whole_plain_lines(text)


def test_a_fit_in_a_log_file_reports_progress(tmp_path):
    # `fit` turned its bars off when stderr was not a terminal: a 78 s fit with held-out refits
    # left an empty log; now its status is a line there too, under --json as well
    runs = conftest.dense_runs_csv(tmp_path / "runs.csv", "bf16")
    script = ("from gmse_cli import progress\nprogress.FIRST_LINE_S = 0.0\nfrom gmse_cli.cli import main\n"
              f"main(['fit', {str(runs)!r}, '--json'])\n")
    log = tmp_path / "err.log"
    with open(log, "wb") as err:
        res = subprocess.run([sys.executable, "-c", script], stdin=subprocess.DEVNULL, capture_output=False,
                             stdout=subprocess.PIPE, stderr=err, env=_env(USCL_CACHE_DIR=str(tmp_path / "c")),
                             timeout=300)
    text = log.read_text()
    assert res.returncode == 0, text
    lines = _assert_whole_plain_lines(text)
    assert any(re.fullmatch(r"fitting dense law to 12 runs: done in \d+:\d\d:\d\d", line) for line in lines), lines
    assert res.stdout.lstrip().startswith(b"{")  # stdout is still the JSON alone


def test_a_long_command_interrupted_in_a_log_file_ends_with_one_line(tmp_path):
    # a Monte Carlo GMSE with stderr to a file: its first progress line comes, then SIGINT
    log = tmp_path / "err.log"
    argv = [sys.executable, "-m", "gmse_cli", "gmse", "int4", "nvfp4", "mxfp4", "int8", "--recompute",
            "--monte-carlo", "--rel-err", "1e-5", "--max-samples", "4000000000"]
    with open(log, "wb") as err:
        # Ctrl-C's default action in the child even where this process ignores SIGINT (started
        # with `&` from a script, or under nohup): an ignored SIGINT stays ignored across exec,
        # and the child then ran on for the whole wait below.
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, cwd=tmp_path,
                                env=_env(USCL_CACHE_DIR=str(tmp_path / "c")),
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        try:
            for _ in range(1200):  # up to 2 min for the first line (kernels may compile first)
                if "elapsed" in log.read_text():
                    break
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
            assert proc.poll() is None, log.read_text()
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    lines = _assert_whole_plain_lines(text)
    assert code == 130, text
    assert "Traceback" not in text and "done in" not in text
    assert re.search(r"GMSE[^\n]*: \d+/4 \(\d+%\), \d+:\d\d:\d\d elapsed", text), text
    assert "elapsed" not in lines[-1]  # the command's own one closing line comes last


def test_train_says_it_loads_torch_before_its_first_run(tmp_path, docs_file):
    # torch's import took 3-5 s before `train` printed its first line ("[1/1] ...")
    pytest.importorskip("torch")
    spec = tmp_path / "sweep.toml"
    spec.write_text(conftest.tiny_sweep_text(docs_file(200_000)))
    script = ("from gmse_cli import progress\nprogress.FIRST_LINE_S = 0.0\nfrom gmse_cli.cli import main\n"
              f"main(['train', {str(spec)!r}, '--out', {str(tmp_path / 'runs.jsonl')!r}])\n")
    text = _stderr_to_file(script, tmp_path, USCL_CACHE_DIR=str(tmp_path / "c"))
    lines = _assert_whole_plain_lines(text)
    loaded = [i for i, line in enumerate(lines) if re.fullmatch(r"loading torch: done in \d+:\d\d:\d\d", line)]
    first_run = [i for i, line in enumerate(lines) if line.startswith("[1/1] ")]
    assert loaded and first_run and loaded[0] < first_run[0], lines
    assert re.search(r": 2/2 \(100%\), [^\n]*done in \d+:\d\d:\d\d", text), lines


def test_each_search_phase_reports_its_total_last():
    # search's bar ended at 'refine 3/3: 40/43' (its callbacks every 8th or 16th item only), so
    # a log's last line read "40/43 (93%), done in 0:00:38"
    from gmse_cli.search import SearchSpace, search_formats

    space = SearchSpace(grids=("int", "fp"), max_element_bits=4, scale_rules=("rms", "absmax"), groups=("row", 32),
                        scale_formats=("fp32",), sparsity=("2:4",), vq_dims=(2,), vq_max_codewords=16,
                        vq_groups=("row",), vq_scale_formats=("fp32",), include_catalog=False)
    calls: list[tuple[str, int, int]] = []
    search_formats(3.3, space=space, rel_err=2e-3, progress=lambda phase, done, total: calls.append((phase, done, total)))
    phases = list(dict.fromkeys(phase for phase, _, _ in calls))
    assert "cheap pass" in phases and any(p.startswith("refine ") for p in phases), phases
    for phase in phases:
        counts = [(done, total) for p, done, total in calls if p == phase]
        assert [d for d, _ in counts] == sorted(d for d, _ in counts), (phase, counts)
        assert counts[-1][0] == counts[-1][1], (phase, counts)
