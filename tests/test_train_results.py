"""Training backend, torch-free parts: presets, run configs and plans, sweep specs, the results
schema and its atomic appends, and the CLI paths that fail before any training starts."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_record

from gmse_cli.errors import DataError, SpecError, TrainError
from gmse_cli.training.config import RunConfig, plan_run
from gmse_cli.training.presets import PRESETS, get_preset, llama_ffn_dim
from gmse_cli.training.results import RunRecord, append_record, finished_keys, load_records
from gmse_cli.training.sweep import expand_sweep, load_sweep, plan_sweep

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------


def test_paper_presets_match_quest_published_parameter_counts(shared_data):
    # QuEST's published runs carry their architecture and N: an independent record of the
    # convention (all non-embedding weights, norms included).
    runs = json.loads((shared_data / "quest_runs.json").read_text())
    published = {
        (r["args"]["n_layer"], r["args"]["n_head"], r["args"]["n_embd"]): r["non_embedding_parameters"]
        for r in runs
    }
    by_shape = {(p.layers, p.heads, p.d_model): p for p in PRESETS.values()}
    checked = 0
    for shape, n in published.items():
        if shape in by_shape:
            assert by_shape[shape].non_embedding_params == n, shape
            checked += 1
    assert checked >= 3  # 30M, 100M, 200M (and 50M, 430M, 800M when present)


def test_preset_table_matches_paper():
    # paper.md section 3: layers, heads, d_model, lr.
    table = {"30m": (6, 5, 640, 1.2e-3), "50m": (7, 6, 768, 1.2e-3), "100m": (8, 8, 1024, 6e-4),
             "200m": (10, 10, 1280, 3e-4), "430m": (13, 13, 1664, 1.5e-4), "800m": (16, 16, 2048, 7.5e-5)}
    for name, (layers, heads, d, lr) in table.items():
        p = get_preset(name)
        assert (p.layers, p.heads, p.d_model, p.lr) == (layers, heads, d, lr)
        assert p.context == 512 and p.batch_size * p.context == 262_144
    # SwiGLU width of QuEST's llama: 8/3 d rounded up to 256 (640 -> 1706.67 -> 1792).
    assert llama_ffn_dim(640) == 1792 and llama_ffn_dim(768) == 2048 and llama_ffn_dim(1024) == 2816
    tiny = get_preset("tiny")
    assert tiny.non_embedding_params < 1_000_000
    # by hand: 2 layers x (4*128^2 + 3*128*384 + 2*128) + 128
    assert tiny.non_embedding_params == 2 * (65536 + 147456 + 256) + 128


def test_unknown_preset_lists_valid_names():
    with pytest.raises(TrainError, match=r"unknown preset 'tinyy' \(did you mean 'tiny'\?\).*30m"):
        get_preset("tinyy")


# --------------------------------------------------------------------------------------------
# Run configs and plans
# --------------------------------------------------------------------------------------------


def test_run_config_defaults_and_key():
    cfg = RunConfig(preset="tiny", weights="int4", activations="int4", tokens_per_param=3)
    assert (cfg.context, cfg.batch_size) == (128, 32)  # the preset's
    assert cfg.lr == 1e-3
    assert cfg.weights.name == "int4" and cfg.activations is not None
    again = RunConfig.model_validate(cfg.model_dump())
    assert again == cfg and again.run_key() == cfg.run_key()
    assert RunConfig(preset="tiny", weights="int4", activations="int4", tokens_per_param=3, seed=1).run_key() != cfg.run_key()
    # checkpoint cadence does not change the result, so not the key
    assert cfg.model_copy(update={"checkpoint_every": 7}).run_key() == cfg.run_key()
    # fp32 activations mean no activation compression at all
    assert RunConfig(preset="tiny", activations="fp32", tokens_per_param=1).activations is None


def test_plan_budget_and_steps():
    cfg = RunConfig(preset="tiny", tokens_per_param=3, batch_size=16, context=128)
    plan = plan_run(cfg, vocab_size=2048)
    # D target = 3 x 426,624 = 1,279,872 tokens; 2,048 per step -> 624 whole steps.
    assert plan.steps == 624 and plan.tokens == 624 * 2048 and plan.warmup_steps == 62
    capped = plan_run(cfg.model_copy(update={"max_steps": 10}), vocab_size=2048)
    assert capped.steps == 10 and capped.tokens == 20480


@pytest.mark.parametrize("tpp", [1e308, 1e302])
def test_budget_whose_flops_overflow_is_an_error(tpp):
    # 1e308 x N is inf tokens (math.floor raised OverflowError); 1e302 x N is finite but its
    # FLOPs are not (the plan's time estimate failed validation with a traceback).
    cfg = RunConfig(preset="tiny", tokens_per_param=tpp)
    with pytest.raises(TrainError, match="overflow a float"):
        plan_run(cfg, vocab_size=2048)


def test_budget_smaller_than_one_step_is_an_error():
    cfg = RunConfig(preset="tiny", tokens_per_param=0.001, batch_size=32, context=128)
    with pytest.raises(TrainError, match=r"less than one step of 4,096 tokens.*--tokens-per-param"):
        plan_run(cfg, vocab_size=512)


def test_rbbm_needs_a_sparse_format():
    with pytest.raises(TrainError, match="rbbm_p=0.2 needs a sparse format"):
        RunConfig(preset="tiny", weights="int4", tokens_per_param=1, estimator={"rbbm_p": 0.2})
    RunConfig(preset="tiny", weights="sparse-50", tokens_per_param=1, estimator={"rbbm_p": 0.2})


# --------------------------------------------------------------------------------------------
# Sweep specs
# --------------------------------------------------------------------------------------------


def test_shipped_sweeps_load_and_expand():
    paper = load_sweep(REPO / "train" / "paper-c4.toml")
    runs = expand_sweep(paper)
    assert len(runs) == 4 * 3 * 22
    assert {r.preset for r in runs} == {"30m", "50m", "100m", "200m"}
    assert {r.tokens_per_param for r in runs} == {50, 100, 200}
    assert all(r.tokens_per_step == 262_144 for r in runs)
    names = {(r.weights.display_name, r.activations.display_name if r.activations else None) for r in runs}
    assert ("int2", "int2") in names and ("int2", None) in names and ("2:4+int4", None) in names
    plans = plan_sweep(runs)
    p30 = next(p.plan for p in plans if p.plan.preset == "30m" and "tpp100" in p.plan.name)
    # D = 100 x N (the exact N, 30,482,560): 3,048,256,000 tokens = 11,628.3 steps of 262,144.
    # (QuEST budgeted the nominal 30M x 100 = 3e9 tokens, 11,444 steps.)
    assert p30.steps == 11_628 and p30.tokens == 11_628 * 262_144

    mini = load_sweep(REPO / "train" / "cpu-mini.toml")
    runs = expand_sweep(mini)
    assert len(runs) == 5  # fp32 x {none, same} collapses to one run
    assert all(r.preset == "tiny" for r in runs)


@pytest.mark.parametrize(("text", "error", "match"), [
    ('presets = ["tiny"]\ntokens_per_param = [1]\nweigths = ["int4"]\n', TrainError, r"bad.toml: weigths: unknown key"),
    ('presets = ["tiny"]\ntokens_per_param = [1]\nweights = ["int44x"]\n', (TrainError, SpecError), "int44x"),
    ('presets = ["huge"]\ntokens_per_param = [1]\n', TrainError, "unknown preset 'huge'"),
    ("presets = [\n", SpecError, "malformed TOML"),
    # an empty seed or activation list made a sweep of no runs that printed an empty table, exit 0
    ('presets = ["tiny"]\ntokens_per_param = [1]\nseeds = []\n', TrainError, r"bad.toml: seeds: .*at least 1"),
    ('presets = ["tiny"]\ntokens_per_param = [1]\nactivations = []\n', TrainError, r"'activations' is empty"),
])
def test_sweep_spec_errors_name_the_field(tmp_path, text, error, match):
    bad = tmp_path / "bad.toml"
    bad.write_text(text)
    with pytest.raises(error, match=match):
        expand_sweep(load_sweep(bad))


@pytest.mark.parametrize(("weights", "acts"), [("2:4x2+int4", "none"), ("2:4+int4", "1:4x8")])
def test_rbbm_on_blocks_is_refused_when_the_sweep_is_planned(tmp_path, weights, acts):
    # RBBM's thresholds are entry magnitudes; N:MxK ranks blocks. The model builder refused
    # it, but only when that run started: after the sweep's earlier runs had trained (a dry
    # run said nothing).
    spec = tmp_path / "s.toml"
    spec.write_text(f'presets = ["tiny"]\ntokens_per_param = [1]\nweights = ["2:4+int4", "{weights}"]\n'
                    f'activations = ["{acts}"]\n[estimator]\nrbbm_p = 0.2\n')
    with pytest.raises(TrainError, match=r"rbbm_p=0.2 .* not for the blocks of '(2:4x2\+int4|1:4x8)'"):
        expand_sweep(load_sweep(spec))


def test_a_sweep_resolves_each_format_name_once(tmp_path, monkeypatch):
    # Every run re-read and re-parsed its formats' catalog files: 70% of a 25,500-run dry run.
    import gmse_cli.training.config as config

    spec = tmp_path / "s.toml"
    spec.write_text('presets = ["tiny"]\ntokens_per_param = [1, 2]\nweights = ["int4", "2:4+int4"]\n'
                    'activations = ["none", "int4"]\nseeds = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n')
    sweep = load_sweep(spec)
    calls = []
    real = config.resolve_format
    monkeypatch.setattr(config, "resolve_format", lambda text: calls.append(text) or real(text))
    runs = expand_sweep(sweep)
    monkeypatch.undo()
    assert len(runs) == 2 * 2 * 2 * 10
    assert sorted(calls) == ["2:4+int4", "int4", "int4"]  # int4 as weights and as activations
    # the same runs as each configuration validated from its names alone
    by_hand = [RunConfig.model_validate({"preset": "tiny", "tokens_per_param": t, "weights": w,
                                         "activations": a, "seed": s})
               for t in (1, 2) for w in ("int4", "2:4+int4") for a in (None, "int4") for s in range(10)]
    assert [r.run_key() for r in runs] == [r.run_key() for r in by_hand]


def test_files_a_sweep_names_are_found_beside_it(tmp_path, monkeypatch):
    # Its corpus was found beside the spec, but a tokenizer.json or a format file beside it was
    # looked for in the working folder only: "does not exist" from any other folder.
    spec_dir = tmp_path / "sweeps"
    spec_dir.mkdir()
    (spec_dir / "corpus.txt").write_text("hello world\n")
    (spec_dir / "tok.json").write_text("{}")
    (spec_dir / "mine.toml").write_text(
        'name = "mine"\n[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 3\nscale = "absmax"\ngroup = 16\n')
    (spec_dir / "s.toml").write_text(
        'presets = ["tiny"]\ntokens_per_param = [1]\nweights = ["mine.toml"]\nactivations = ["mine.toml"]\n'
        '[[schemes]]\nweights = "mine.toml"\n'
        '[data]\nsource = "corpus.txt"\ntokenizer = "tok.json"\n')
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    spec = load_sweep(Path("..") / "sweeps" / "s.toml")
    assert Path(spec.data.tokenizer).resolve() == (spec_dir / "tok.json").resolve()
    runs = expand_sweep(spec)
    assert {(r.weights.display_name, r.activations and r.activations.display_name) for r in runs} == {
        ("mine", "mine"), ("mine", None)}


def test_a_missing_sweep_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_sweep(tmp_path / "missing.toml")


# --------------------------------------------------------------------------------------------
# Results schema and atomic appends
# --------------------------------------------------------------------------------------------


def test_record_round_trip_and_schema():
    rec = run_record()
    assert RunRecord.model_validate(rec.model_dump()) == rec
    assert RunRecord.model_validate_json(rec.model_dump_json()) == rec
    with pytest.raises(ValueError):
        RunRecord.model_validate(rec.model_dump() | {"extra_field": 1})
    with pytest.raises(ValueError):
        RunRecord.model_validate(rec.model_dump() | {"status": "running"})


def test_append_load_and_skip_keys(tmp_path):
    out = tmp_path / "runs.jsonl"
    assert finished_keys(out) == set()
    append_record(out, run_record("a"))
    append_record(out, run_record("b", loss=None, status="diverged"))
    lines = out.read_text().splitlines()
    assert len(lines) == 2 and all(json.loads(line)["run_key"] in "ab" for line in lines)
    assert [r.run_key for r in load_records(out)] == ["a", "b"]
    assert finished_keys(out) == {"a", "b"}  # a diverged run counts as finished: no rerun


def test_a_run_already_recorded_is_not_appended_again(tmp_path):
    # Two sweeps writing one results file both finished a run: it was recorded twice, and a fit
    # counted it twice.
    out = tmp_path / "runs.jsonl"
    assert append_record(out, run_record("a")) is True
    assert append_record(out, run_record("a", loss=3.5)) is False
    assert [(r.run_key, r.val_loss) for r in load_records(out)] == [("a", 3.25)]


def test_a_sweep_skips_a_run_another_process_finished_meanwhile(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import gmse_cli.training.loop as loop
    from gmse_cli.training.launch import run_local

    out = tmp_path / "runs.jsonl"
    runs = [RunConfig(preset="tiny", tokens_per_param=3, seed=s) for s in (0, 1)]
    trained = []

    def fake_train_run(cfg, **_):
        trained.append(cfg.seed)
        # while this run trains, another sweep on the same results file finishes the next one
        append_record(out, run_record(runs[1].run_key()))
        return None

    monkeypatch.setattr(loop, "train_run", fake_train_run)
    outcome = run_local(runs, out=out, checkpoint_root=tmp_path / "ckpt", progress=False)
    assert trained == [0] and outcome.skipped == [runs[1].name]


def test_results_readable_by_the_fitter(tmp_path):
    runs_mod = pytest.importorskip("gmse_cli.runs")
    out = tmp_path / "runs.jsonl"
    append_record(out, run_record("a", loss=3.25))
    append_record(out, run_record("b", loss=None, status="diverged"))
    with pytest.warns(Warning):
        runs = runs_mod.load_train_jsonl(out)
    assert len(runs) == 1
    assert (runs[0].N, runs[0].D, runs[0].loss, runs[0].weights) == (426624, 1277952, 3.25, "int4")


def test_killed_mid_append_leaves_a_valid_file(tmp_path):
    out = tmp_path / "runs.jsonl"
    append_record(out, run_record("a"))
    before = out.read_bytes()
    # A child process appends and is SIGKILLed after its temporary file is written, before the
    # rename: the moment a naive append would leave a torn line.
    child = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        import gmse_cli.atomic as atomic
        import gmse_cli.training.results as results
        from tests.conftest import run_record
        real = os.fsync
        def fsync_then_die(fd):
            real(fd)
            os.kill(os.getpid(), signal.SIGKILL)
        atomic.os.fsync = fsync_then_die
        results.append_record({str(out)!r}, run_record("b"))
    """)
    proc = subprocess.run([sys.executable, "-c", child], cwd=REPO, capture_output=True)
    assert proc.returncode == -9, proc.stderr.decode()
    assert out.read_bytes() == before  # the old file, whole
    assert [r.run_key for r in load_records(out)] == ["a"]
    append_record(out, run_record("c"))  # and appends go on
    assert [r.run_key for r in load_records(out)] == ["a", "c"]


def test_interrupted_append_in_process_cleans_up(tmp_path, monkeypatch):
    import gmse_cli.atomic as atomic

    out = tmp_path / "runs.jsonl"
    append_record(out, run_record("a"))

    def boom(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(KeyboardInterrupt):
        append_record(out, run_record("b"))
    assert [r.run_key for r in load_records(out)] == ["a"]
    assert not list(tmp_path.glob(".runs.jsonl.*.tmp"))


def test_not_json_lines_is_a_data_error(tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello\n")
    with pytest.raises(DataError, match=r"notes.txt:1: not a JSON line"):
        load_records(bad)
    bad.write_text('{"a": 1}\n')
    with pytest.raises(DataError, match=r"notes.txt:1: not a uscl run record"):
        finished_keys(bad)
    torn = tmp_path / "torn.jsonl"
    torn.write_text(run_record("a").model_dump_json() + "\n" + '{"run_key": "b", "na')
    with pytest.raises(DataError, match="torn.jsonl: the last line is incomplete"):
        append_record(torn, run_record("c"))


# --------------------------------------------------------------------------------------------
# CLI paths that fail (or plan) before training
# --------------------------------------------------------------------------------------------


def _one_error_line(result, pattern: str) -> None:
    import re

    assert result.code == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and re.search(pattern, lines[0]), result.stderr


def test_cli_bad_input_before_training(run_cli, tmp_path):
    _one_error_line(run_cli("train", "--preset", "gigantic", "--dry-run"), r"unknown preset 'gigantic'")
    _one_error_line(run_cli("train", "--dry-run"), r"give a SWEEP spec file, or --preset")
    _one_error_line(
        run_cli("train", "--preset", "tiny", "--tokens-per-param", "0.0001", "--dry-run"),
        r"less than one step",
    )
    _one_error_line(run_cli("train", "--preset", "tiny", "--format", "block8-50"), r"cannot differentiate block sparsity")
    _one_error_line(run_cli("train", "--preset", "tiny", "--format", "had256+int4"), r"does not fit preset 'tiny'")
    bad = tmp_path / "notes.txt"
    bad.write_text("not json\n")
    _one_error_line(run_cli("train", "--preset", "tiny", "--out", str(bad), "--dry-run"), r"not a JSON line")
    _one_error_line(run_cli("train", str(tmp_path / "nope.toml")), r"sweep file .* does not exist")
    _one_error_line(run_cli("train", "--preset", "tiny", "--launcher", "mpi"), r"--launcher 'mpi'")


def test_cli_refuses_one_folder_for_checkpoints_and_kept_models(run_cli, tmp_path):
    # The kept model was written into the run's checkpoint folder, then deleted with it once the
    # result line (naming the model's folder) was durable.
    out, both = tmp_path / "r.jsonl", tmp_path / "both"
    _one_error_line(run_cli("train", "--preset", "tiny", "--out", str(out), "--checkpoint-dir", str(both),
                            "--models-dir", str(both) + "/"), r"cannot write models folder .*both.* it is also")
    _one_error_line(run_cli("train", "--preset", "tiny", "--out", str(out), "--checkpoint-dir", str(out)),
                    r"cannot write checkpoint folder .*r.jsonl.* it is also")
    # A dry run plans the same outputs, so it refuses them too (it used to print a plan).
    _one_error_line(run_cli("train", "--preset", "tiny", "--out", str(out), "--checkpoint-dir", str(both),
                            "--models-dir", str(both), "--dry-run"), r"cannot write models folder .*both.* it is also")
    assert not out.exists() and not both.exists()


def test_cli_dry_run_json(run_cli, tmp_path):
    result = run_cli("train", str(REPO / "train" / "cpu-mini.toml"), "--dry-run", "--json",
                     "--out", str(tmp_path / "r.jsonl"))
    assert result.code == 0, result.stderr
    plans = json.loads(result.stdout)["results"]
    assert len(plans) == 5
    assert {p["plan"]["steps"] for p in plans} == {624}
    assert all(p["plan"]["params"] == 426_624 and not p["done"] for p in plans)


def _word_level_tokenizer(path: Path, size: int) -> None:
    # A tokenizer whose vocabulary size is known by construction: `size` words, no added tokens.
    tk = pytest.importorskip("tokenizers")
    tok = tk.Tokenizer(tk.models.WordLevel({f"w{i}": i for i in range(size)}, unk_token="w0"))
    tok.pre_tokenizer = tk.pre_tokenizers.Whitespace()
    tok.save(str(path))


def test_plan_vocab_reads_a_local_tokenizer_file(tmp_path):
    from gmse_cli.training.sweep import DEFAULT_VOCAB_FOR_PLANS, plan_vocab

    _word_level_tokenizer(tmp_path / "tokenizer.json", 3000)
    assert plan_vocab(str(tmp_path / "tokenizer.json")) == 3000
    assert plan_vocab(str(tmp_path)) == 3000  # a model folder holding tokenizer.json
    assert plan_vocab("bpe:2048") == 2048
    assert plan_vocab("hf-internal-testing/llama-tokenizer") == DEFAULT_VOCAB_FOR_PLANS == 32000


def test_cli_dry_run_counts_flops_with_the_tokenizer_files_vocabulary(run_cli, tmp_path):
    # The run builds its embedding and head from the file's 3,000 tokens (padded to 3,008 rows);
    # the plan counted Llama-2's 32,000, six times a tiny model's FLOPs (and then skipped timing
    # steps, estimating the README's 146 s run at 3 hours).
    _word_level_tokenizer(tmp_path / "tok.json", 3000)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("w1 w2 w3\n" * 100)
    # torchrun on cuda: planned at an assumed rate, never timed, on any machine
    result = run_cli("train", "--preset", "tiny", "--tokenizer", str(tmp_path / "tok.json"), "--data", str(corpus),
                     "--tokens-per-param", "3", "--dry-run", "--json", "--device", "cuda", "--launcher", "torchrun",
                     "--out", str(tmp_path / "r.jsonl"))
    assert result.code == 0, result.stderr
    (plan,) = [r["plan"] for r in json.loads(result.stdout)["results"]]
    tiny = get_preset("tiny")
    layers, d, f, ctx, rows = tiny.layers, tiny.d_model, tiny.ffn_dim, 128, 3008
    # 6 x (weights touched per token, head included) + PaLM's attention term 12 x layers x d x context
    per_token = 6 * (layers * (4 * d * d + 3 * d * f) + rows * d) + 12 * layers * d * ctx
    assert plan["flops"] == pytest.approx(per_token * plan["tokens"], rel=1e-12)
