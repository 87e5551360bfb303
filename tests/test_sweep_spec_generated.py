"""Sweep specs a generator would write: plans checked against counts derived here from the README
(runs = sizes x budgets x schemes x seeds less duplicates; N of a Llama from its dims; D = whole
steps of the tokens-per-parameter budget), and near-valid specs refused in one line naming the key."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from conftest import SHARED_DATA

CORPUS = SHARED_DATA / "python-docs-3.11.txt.xz"


@pytest.fixture(autouse=True)
def _corpus(shared_data):
    """Every spec here names the shared corpus: with no ../shared/data (an unpacked sdist) the tests skip."""


def _llama_n(layers: int, d: int, ffn: int) -> int:
    """Non-embedding parameters: q, k, v, o (d x d), gate/up/down (d x ffn), 2 norms a layer, final norm."""
    return layers * (4 * d * d + 3 * d * ffn + 2 * d) + d


def _write(tmp_path: Path, body: str) -> Path:
    spec = tmp_path / "spec.toml"
    spec.write_text(body + f'\n[train]\ncontext = 16\nbatch_size = 2\n[data]\nsource = "{CORPUS.as_posix()}"\n'
                    'tokenizer = "bpe:512"\n', encoding="utf-8")
    return spec


def _plan(run_cli, spec: Path, tmp_path: Path) -> list[dict]:
    res = run_cli("train", str(spec), "--dry-run", "--device", "cuda", "--json", "--no-progress",
                  "--out", str(tmp_path / "out" / "r.jsonl"))
    assert res.code == 0, res.stderr
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    return json.loads(res.stdout)["results"]


@pytest.mark.parametrize(("weights", "distinct"), [
    (["lm3", "lloyd-max-3"], 1),
    (["fp4", "e2m1", "int4"], 2),
    (["mxfp4", "e2m1-g32-absmax-se8m0", "INT4", "int4"], 2),
])
def test_one_format_under_two_spellings_is_one_run(run_cli, tmp_path, weights, distinct):
    """README: 'One format, one spelling' (lmB and lloyd-max-B give the same spec) and a sweep drops
    duplicate schemes; the same training spelled twice was planned (and trained) twice."""
    spec = _write(tmp_path, f'name = "alias"\npresets = ["tiny-100k"]\ntokens_per_param = [8]\n'
                  f"weights = {json.dumps(weights)}\nseeds = [0, 1]\n")
    plans = _plan(run_cli, spec, tmp_path)
    assert len(plans) == distinct * 2
    n = _llama_n(2, 64, 192)
    steps = math.floor(8 * n / (2 * 16))
    assert {p["plan"]["params"] for p in plans} == {n}
    assert {p["plan"]["tokens"] for p in plans} == {steps * 32}
    # the spelling that sorts first names the run, whatever the order in the spec
    assert plans[0]["plan"]["name"].startswith(f"tiny-100k/w:{min(weights[:2])}/")
    spec.write_text(spec.read_text(encoding="utf-8").replace(json.dumps(weights), json.dumps(weights[::-1])),
                    encoding="utf-8")
    again = _plan(run_cli, spec, tmp_path)
    assert sorted(p["plan"]["run_key"] for p in again) == sorted(p["plan"]["run_key"] for p in plans)


def test_the_same_training_in_schemes_and_product_is_one_run(run_cli, tmp_path):
    spec = _write(tmp_path, 'name = "dup"\npresets = ["tiny-100k"]\ntokens_per_param = [8]\n'
                  'weights = ["lm3"]\nactivations = ["none", "same"]\n'
                  '[[schemes]]\nweights = "lloyd-max-3"\nactivations = "lm3"\n'
                  '[[schemes]]\nweights = "lloyd-max-3"\nactivations = "fp32"\n')
    names = [p["plan"]["name"] for p in _plan(run_cli, spec, tmp_path)]
    assert names == ["tiny-100k/w:lloyd-max-3/a:none/tpp8/s0", "tiny-100k/w:lloyd-max-3/a:lm3/tpp8/s0"]


def test_run_keys_of_a_committed_sweep_are_planned_again(run_cli, tmp_path, monkeypatch):
    """Deduplicating by content leaves run keys (results files, checkpoints) as they were: every run
    key recorded in examples/cpu-law.jsonl, trained before that change, is planned again from
    train/cpu-law.toml, so a rerun of the sweep skips all 34 finished runs."""
    repo = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(repo)  # the spec names its corpus from the repository root
    recorded = {json.loads(line)["run_key"] for line in
                (repo / "examples" / "cpu-law.jsonl").read_text(encoding="utf-8").splitlines() if line.strip()}
    planned = {r["plan"]["run_key"] for r in _plan(run_cli, repo / "train" / "cpu-law.toml", tmp_path)}
    assert len(recorded) == 34 and recorded <= planned, sorted(recorded - planned)


@pytest.mark.parametrize("key", ["source", "tokenizer"])
def test_empty_data_setting_names_the_key(run_cli, tmp_path, key):
    spec = _write(tmp_path, 'name = "e"\npresets = ["tiny-50k"]\ntokens_per_param = [8]\n')
    text = spec.read_text(encoding="utf-8")
    lines = [f'{key} = ""' if line.startswith(f"{key} =") else line for line in text.splitlines()]
    spec.write_text("\n".join(lines) + "\n", encoding="utf-8")
    res = run_cli("train", str(spec), "--dry-run", "--device", "cuda", "--out", str(tmp_path / "o" / "r.jsonl"))
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert f"data.{key}" in lines[0] and str(spec) in lines[0]
    assert not (tmp_path / "o").exists()



@pytest.mark.parametrize(("tpp", "context", "batch"), [("4.1", 8, 4), ("2.05", 8, 4), ("32.8", 512, 1)])
def test_a_budget_of_whole_steps_is_not_a_step_short(run_cli, tmp_path, tpp, context, batch):
    """tokens_per_param x N tokens (30m: N = 30,482,560, README) that make whole steps train all of
    them: 4.1 x N = 124,978,496 = 3,905,578 steps of 32 tokens; the float product planned one fewer."""
    from fractions import Fraction

    n = _llama_n(6, 640, 1792)
    assert n == 30_482_560
    exact = Fraction(tpp) * n / (context * batch)
    assert exact.denominator == 1  # the cases chosen: whole steps
    spec = tmp_path / "spec.toml"
    spec.write_text(f'name = "r"\npresets = ["30m"]\ntokens_per_param = [{tpp}]\n[train]\ncontext = {context}\n'
                    f'batch_size = {batch}\n[data]\nsource = "c4"\ntokenizer = "bpe:512"\n', encoding="utf-8")
    plan = _plan(run_cli, spec, tmp_path)[0]["plan"]
    assert plan["params"] == n
    assert plan["steps"] == exact.numerator
    assert plan["tokens"] == exact.numerator * context * batch
    from gmse_cli.training.config import RunConfig, budget_steps

    # the trainer's own count (what a streamed source is asked for) agrees
    cfg = RunConfig(preset="30m", tokens_per_param=float(tpp), context=context, batch_size=batch)
    assert budget_steps(cfg) == exact.numerator


@pytest.mark.parametrize("tokenizer", ["bpe:257", "bpe:\u0663\u0660\u0660", "bpe:\u00b2"])
def test_a_bpe_vocabulary_the_tokenizer_refuses_is_refused_when_planned(run_cli, tmp_path, tokenizer):
    """README: tokenizer vocabulary 258 to 1,048,576, ASCII digits. bpe:257 was planned by --dry-run
    and failed only once its run had started ('vocab size 257 must exceed 257'); bpe:<Arabic-Indic
    300> was read as bpe:300."""
    spec = _write(tmp_path, 'name = "v"\npresets = ["tiny-50k"]\ntokens_per_param = [8]\n')
    spec.write_text(spec.read_text(encoding="utf-8").replace("bpe:512", tokenizer), encoding="utf-8")
    res = run_cli("train", str(spec), "--dry-run", "--device", "cuda", "--out", str(tmp_path / "o" / "r.jsonl"))
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and tokenizer in lines[0] and "258..1048576" in lines[0]


def test_the_smallest_bpe_vocabulary_is_planned(run_cli, tmp_path):
    spec = _write(tmp_path, 'name = "v"\npresets = ["tiny-50k"]\ntokens_per_param = [8]\n')
    spec.write_text(spec.read_text(encoding="utf-8").replace("bpe:512", "bpe:258"), encoding="utf-8")
    assert len(_plan(run_cli, spec, tmp_path)) == 1


def test_two_spellings_of_one_name_keep_their_run_key_in_either_order(run_cli, tmp_path):
    """A format file that calls itself 'int4' (the catalog's stages, its own description) and the
    catalog's int4 train the same and print the same name, but their run keys differ (the
    description is part of the hashed config). The name alone cannot pick one, so the run key
    depended on the spec's order; the README promises 'whatever the spec's order'."""
    catalog = (Path(__file__).resolve().parents[1] / "formats" / "int4.toml").read_text(encoding="utf-8")
    own = tmp_path / "int4.toml"
    own.write_text("\n".join('description = "my own int4"' if line.startswith("description =") else line
                             for line in catalog.splitlines()) + "\n", encoding="utf-8")
    keys = []
    for weights in (["int4", own.as_posix()], [own.as_posix(), "int4"]):
        spec = _write(tmp_path, f'name = "tie"\npresets = ["tiny-100k"]\ntokens_per_param = [8]\n'
                      f"weights = {json.dumps(weights)}\n")
        (plan,) = _plan(run_cli, spec, tmp_path)
        assert plan["plan"]["name"] == "tiny-100k/w:int4/a:none/tpp8/s0"
        keys.append(plan["plan"]["run_key"])
    assert keys[0] == keys[1]
