"""Valid-syntax but extreme input: a finite answer or one clear line (exit 2), never inf, nan,
a traceback or a silently absurd number (found by fuzzing what tests/bad_inputs.py does not
generate)."""

from __future__ import annotations

import math

import pytest


def _one_line(res) -> str:
    assert res.code == 2, (res.code, res.stdout[-500:], res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    return lines[0]


@pytest.mark.parametrize("tokens", ["1e-9x", "5e-324x", "1e300x"])
def test_tokens_per_param_must_give_at_least_one_finite_token(tokens, run_cli):
    # 200M params x 1e-9 = 0.2 tokens: refused as the count '0.2' is, not a loss of 1e106
    line = _one_line(run_cli("predict", "int4", "--tokens", tokens, "--draws", "10"))
    assert tokens in line


def test_params_whose_default_tokens_overflow_names_params(run_cli):
    # 1e308 params x 100 tokens per parameter overflows; the message named a 'tokens = inf' never given
    line = _one_line(run_cli("rank", "int4", "--params", "1e308", "--draws", "10"))
    assert "--params 1e308" in line


def test_a_ratio_to_the_fitted_range_past_the_largest_float_is_no_inf():
    # D/N = 1e-308 is 2.4e309 times below the smallest fitted 24.3: beyond any float ('infx below')
    from gmse_cli.law import load_law

    fitted = load_law(None).fitted_range
    low = fitted.tokens_per_param[0]
    flag = fitted.beyond(1e308, 1.0)
    assert low / 1e-308 == math.inf
    assert "D/N" in flag and "inf" not in flag


_GOOD_RUN = '{"weights": "int4", "N": 1e6, "D": 1e8, "loss": 3.5}\n'


def test_an_integer_of_thousands_of_digits_is_one_line(tmp_path, run_cli):
    # Python refuses int('9' * 5000) with a bare ValueError: a runs line, a format file, a config
    runs = tmp_path / "r.jsonl"
    runs.write_text(_GOOD_RUN + '{"weights": "int4", "N": ' + "9" * 5000 + ', "D": 1e8, "loss": 3}\n')
    assert "r.jsonl" in _one_line(run_cli("fit", str(runs)))
    spec = tmp_path / "f.toml"
    spec.write_text('[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = ' + "9" * 5000 + "\n")
    assert "f.toml" in _one_line(run_cli("gmse", str(spec)))
    config = tmp_path / "c.json"
    config.write_text('{"config_groups": {"g": {"weights": {"num_bits": ' + "9" * 5000 + "}}}}")
    assert "c.json" in _one_line(run_cli("formats", "import", str(config)))


def test_formats_import_reads_its_config_as_every_input_is_read(tmp_path, run_cli):
    import os

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100000 + "]" * 100000)  # a RecursionError traceback before
    assert "nest" in _one_line(run_cli("formats", "import", str(deep)))
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"x": "\xff"}')  # a UnicodeDecodeError traceback before
    assert "UTF-8" in _one_line(run_cli("formats", "import", str(latin)))
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)  # read before: waited for a writer for ever
    assert "fifo.json" in _one_line(run_cli("formats", "import", str(fifo)))
    bom = tmp_path / "w4a16.json"  # a UTF-8 byte-order mark is a signature, as in every text input
    bom.write_bytes(b'\xef\xbb\xbf{"quant_method": "compressed-tensors", "config_groups": {"group_0": {"targets": ["Linear"], '
                    b'"weights": {"num_bits": 4, "type": "int", "symmetric": true, "strategy": "group", '
                    b'"group_size": 128}}}}')
    res = run_cli("formats", "import", str(bom))
    assert res.code == 0, res.stderr


@pytest.mark.parametrize(("stage", "needle"), [
    ('{"family": "bogus", "gmse": 0.01}', "bogus"),  # a ValueError traceback before
    ('{"family": "quantization", "gmse": -1}', "-1"),  # fitted before as a GMSE of 0 (infinite bits)
    ('{"family": "quantization", "gmse": NaN}', "nan"),  # named before as 'GMSE nan >= 1'
])
def test_a_recorded_stage_gmse_is_checked_where_it_is_read(stage, needle, tmp_path, run_cli):
    runs = tmp_path / "r.jsonl"
    record = '{"weights": "int4", "N": 1e6, "D": 1e8, "loss": 3.5, "stage_gmse": {"weights": [' + stage + "]}}\n"
    runs.write_text(_GOOD_RUN * 3 + record)
    line = _one_line(run_cli("fit", str(runs), "--model", "unified", "--no-heldout"))
    assert needle in line and "stage_gmse" in line


def _dense_runs(path):
    # runs on the law 15.45 N^-0.13 + 352.6 D^-0.33 + 1.3, at four sizes and two ratios
    lines = []
    for n in (1e6, 3e6, 1e7, 3e7):
        for per in (50, 100):
            loss = 15.45 * n ** -0.13 + 352.6 * (per * n) ** -0.33 + 1.3
            lines.append(f'{{"weights": "bf16", "N": {n}, "D": {per * n}, "loss": {loss}}}\n')
    path.write_text("".join(lines))
    return str(path)


def test_a_tiny_huber_delta_is_one_line_not_a_zero_division(tmp_path, run_cli):
    # delta 5e-324 drove alpha to 0 and the implied capacities divided by it (ZeroDivisionError)
    line = _one_line(run_cli("fit", _dense_runs(tmp_path / "r.jsonl"), "--huber-delta", "5e-324"))
    assert "alpha" in line


@pytest.mark.parametrize("fix", ["alpha=1e30", "beta=1e30"])
def test_an_extreme_held_exponent_is_one_line_without_numpy_warnings(fix, tmp_path, run_cli):
    # N^-1e30 underflows to 0 against an infinite A: RuntimeWarnings (two stderr lines each,
    # pytest catches them) preceded the error
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        line = _one_line(run_cli("fit", _dense_runs(tmp_path / "r.jsonl"), "--fix", fix))
    assert "inf" in line
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]


def _law_copy(path):
    from gmse_cli.paths import laws_dir

    path.write_bytes(next(iter(sorted(laws_dir().glob("*.toml")))).read_bytes())
    return str(path)


def test_fit_out_over_its_own_base_law_is_refused(tmp_path, run_cli):
    # --law L --out L replaced the base law before (the README: an output naming an input is refused)
    law = _law_copy(tmp_path / "law.toml")
    before = (tmp_path / "law.toml").read_bytes()
    line = _one_line(run_cli("fit", _dense_runs(tmp_path / "r.jsonl"), "--model", "unified", "--law", law,
                             "--out", law))
    assert "law.toml" in line
    assert (tmp_path / "law.toml").read_bytes() == before


def test_a_plot_never_replaces_an_input_whatever_its_name(tmp_path, run_cli):
    # inputs are read by content, so a checkpoint, law or format file may carry a plot's suffix
    import numpy as np
    from safetensors.numpy import save_file

    weights = tmp_path / "w.png"
    save_file({"layer.weight": np.ones((8, 64), dtype=np.float32)}, str(weights))
    law = _law_copy(tmp_path / "law.svg")
    spec = tmp_path / "f.pdf"
    spec.write_text('[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\n')
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    for args in (["mse", str(weights), "-f", "int4", "--plot", str(weights)],
                 ["search", "--bits", "4", "--checkpoint", str(weights), "--plot", str(weights)],
                 ["rank", str(spec), "--plot", str(spec)],
                 ["rank", "int4", "--act", str(spec), "--plot", str(spec)],
                 ["rank", "int4", "--law", law, "--plot", law]):
        assert "which this command reads" in _one_line(run_cli(*args)), args
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_an_rms_scale_constant_past_1e30_is_refused(tmp_path, run_cli):
    # c = 1e300: the exact GMSE's c^2 terms overflowed to nan, a pydantic traceback storing it
    spec = tmp_path / "f.toml"
    spec.write_text('[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\nscale_constant = 1e300\n')
    assert "scale_constant" in _one_line(run_cli("gmse", str(spec)))
    # at the bound every entry rounds to the midrise grid's innermost level +-c/15 (16 levels
    # over [-c, c]): GMSE = c^2/225 - 2 (c/15) E|x| + 1, the last two terms 1e-29 of the first
    res = run_cli("gmse", "int4-rms1" + "0" * 30, "--json")
    assert res.code == 0, res.stderr
    import json

    assert json.loads(res.stdout)["results"][0]["gmse"] == pytest.approx(1e60 / 225, rel=1e-9)


@pytest.mark.parametrize("seed", ["-1", "99999999999999999999999"])
def test_a_rotation_seed_is_a_seed(seed, tmp_path, run_cli):
    # random signs seeded -1 reached numpy's generator: "expected non-negative integer" traceback
    spec = tmp_path / "f.toml"
    spec.write_text(f'[[stages]]\nkind = "rotate"\nblock = 128\nrandom_signs = true\nseed = {seed}\n'
                    '[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\n')
    assert "seed" in _one_line(run_cli("gmse", str(spec), "--monte-carlo", "--rel-err", "0.05"))


def test_a_csv_column_named_twice_is_refused(tmp_path, run_cli):
    # 'loss' twice: csv's DictReader kept the last column (here -1), and the fit read that one
    runs = tmp_path / "r.csv"
    rows = [(n, per * n, 15.45 * n ** -0.13 + 352.6 * (per * n) ** -0.33 + 1.3)
            for n in (1e6, 3e6, 1e7, 3e7) for per in (50, 100)]
    runs.write_text("N,D,loss,Loss\n" + "".join(f"{n},{d},{loss},{2 * loss}\n" for n, d, loss in rows))
    assert "loss" in _one_line(run_cli("fit", str(runs))).lower()


@pytest.mark.filterwarnings("error::RuntimeWarning")  # a numpy warning is a second line on stderr
def test_weights_that_overflow_float32_under_a_rotation_are_one_line(tmp_path, run_cli):
    # finite weights of 1e38: a 128-block Hadamard sums them past float32's 3.4e38, inf - inf = nan;
    # mse printed nan in its table and CSV (JSON: a vague "check the inputs"), search a +nan row
    import numpy as np
    from safetensors.numpy import save_file

    weights = tmp_path / "w.safetensors"
    save_file({"layer.weight": np.full((8, 256), 1e38, dtype=np.float32)}, str(weights))
    line = _one_line(run_cli("mse", str(weights), "-f", "had128+int4", "--csv"))
    assert "had128+int4" in line and "layer.weight" in line
    assert "nan" in _one_line(run_cli("search", "--bits", "4", "--checkpoint", str(weights), "--rel-err", "0.05"))


def test_train_threads_beyond_any_machine_are_refused(tmp_path):
    # torch.set_num_threads(100000): OpenMP crashed the process (SIGSEGV); run apart so a crash
    # fails this test only
    import os
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    res = subprocess.run([sys.executable, "-m", "gmse_cli", "train", "--dry-run", "--preset", "tiny", "--out",
                          str(tmp_path / "runs.jsonl"), "--threads", "100000"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode == 2, (res.returncode, res.stderr[-500:])
    assert "--threads" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_the_last_shard_the_readme_names_is_accepted():
    # --shard 2/2 (README: '--shard 1/2 and --shard 2/2') was refused by the option check as "not
    # K/N with 0 <= K < N" while the command counts from 1: the second of two processes could
    # not start. (Checked on the option check and the command's split: a dry run times a matmul.)
    from gmse_cli.cli.train import _shard
    from gmse_cli.cli.validators import VALIDATORS, BadParameter

    runs = ["a", "b", "c"]
    for shard, mine in (("1/2", ["a", "c"]), ("2/2", ["b"]), ("3/3", ["c"])):
        VALIDATORS["shard"](shard)  # no error
        assert _shard(runs, shard) == mine
    for shard in ("0/2", "3/2", "1/0"):
        with pytest.raises(BadParameter, match="1 <= K <= N"):
            VALIDATORS["shard"](shard)


def test_a_row_length_a_catalog_format_cannot_take_names_the_format(run_cli):
    # rank's whole catalog at rows of 7: "quantize group size 128 does not divide ..." named no format
    line = _one_line(run_cli("gmse", "--all", "--row-length", "3"))
    assert "format '" in line and "row length 3" in line


@pytest.mark.parametrize("option", ["--params", "--tokens"])
@pytest.mark.parametrize("value", ["\u0667B", "\u0662\u0660\u0660M", "\uff17B", "\u0662\u0660x", "7 B", "1.5 b", "20 x",
                                   "2e8 k"])
def test_counts_take_ascii_digits_with_the_suffix_against_them(option, value, run_cli):
    # Regression: the count grammar's \d matched any script's digits (float() then read '\u0667B' as
    # 7e9) and a space was allowed before the suffix, so '\u0667B' and '7 B' ran as 7B, although
    # the README says --params and --tokens refuse another script's digits.
    for command in (["predict", "int4"], ["rank", "int4"]):
        line = _one_line(run_cli(*command, option, value, "--draws", "10", "--json"))
        assert value in line and option in line


@pytest.mark.parametrize("value, count", [(" 7B ", 7e9), ("+1.5b", 1.5e9), ("2.5E8", 2.5e8), (".5T", 5e11), ("30000000", 3e7)])
def test_counts_in_every_documented_spelling_still_parse(value, count, run_cli):
    import json

    res = run_cli("predict", "int4", "--params", value, "--tokens", value, "--draws", "10", "--json")
    assert res.code == 0, res.stderr
    row = json.loads(res.stdout)["results"][0]
    assert (row["params"], row["tokens"]) == (count, count)
