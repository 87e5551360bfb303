"""What a newcomer's path relies on: a fitted law file carries joint draws and the base law's
other families; dry-run estimates come from measured throughput; durations read sanely."""

from __future__ import annotations

import json

import numpy as np
import pytest


@pytest.fixture(scope="module")
def fitted(quest_unified_fit):
    from gmse_cli.law import load_law

    return quest_unified_fit, load_law(None)


def _fitted_column(name: str, result) -> str:
    """The fit's draws behind a law's column: a family copied from the quantization curve (VQ) has its."""
    return name if name in result.draws else "quantization." + name.split(".")[1]


def test_a_fitted_law_carries_its_bootstrap_as_joint_draws(fitted):
    from gmse_cli.fit.results import LAW
    from gmse_cli.law.model import draws_in_domain

    result, base = fitted
    law = result.to_law("mine", base=base)
    assert law.draws is not None and 2 <= law.draws.rows <= 12
    # The columns are the replicates themselves: each row is one refit, within the law's domain.
    columns = law.draws.constants
    assert set(LAW) <= set(columns)
    for name, column in columns.items():
        assert draws_in_domain(name, column, law.constants()[name].value).all()
        replicates = np.asarray(result.draws[_fitted_column(name, result)])
        assert set(np.round(column, 12)) <= set(np.round(replicates, 12))
    assert "bootstrap refits" in law.draws.provenance


def test_a_runaway_bootstrap_writes_open_intervals_and_drops_its_draws(fitted, tmp_path):
    """A replicate that ran off to 1e39 (seen on a sweep whose runs barely differ) leaves the law
    file writable: that interval end is open, that row is not a joint draw."""
    from gmse_cli.law import law_to_toml, load_law
    from gmse_cli.law.model import MAX_CONSTANT

    result, base = fitted
    fam = next(iter(result.families))
    key = f"{fam}.F"
    est = result.constants[key]
    draws = {k: list(v) for k, v in result.draws.items()}
    draws[key][0] = 2.2e39
    runaway = result.model_copy(update={
        "constants": {**result.constants, key: est.model_copy(update={"high": 2.2e39, "sigma": 9e38})},
        "draws": {k: tuple(v) for k, v in draws.items()},
    })
    law = runaway.to_law("mine", base=base)
    F = law.families[next(f for f in law.families if f.value == fam)].F
    assert F.high is None and F.sigma is None and F.low == est.low and F.value == est.value
    assert "left open" in F.provenance
    normal = result.to_law("mine", base=base).draws
    was_kept = any(all(column[i] == result.draws[_fitted_column(k, result)][0] for k, column in normal.constants.items())
                   for i in range(normal.rows))
    assert law.draws.rows == normal.rows - was_kept
    assert all(abs(x) <= MAX_CONSTANT for column in law.draws.constants.values() for x in column)
    path = tmp_path / "mine.toml"
    path.write_text(law_to_toml(law))
    assert load_law(path) == law
    beyond = result.model_copy(update={"constants": {**result.constants, key: est.model_copy(update={"value": 3e31})}})
    assert "beyond what a law file holds" in beyond.law_problem()


def test_families_without_evidence_are_held_from_the_base_law_with_provenance(fitted):
    from gmse_cli.spec import Family

    result, base = fitted
    law = result.to_law("mine", base=base)
    fitted_families = {Family(f) for f in result.families}
    assert Family.VQ not in fitted_families and Family.QUANTIZATION in fitted_families
    assert "families_from_base" not in law.meta
    # The base law gives VQ its quantization curve (the unified law's claim): VQ follows the
    # quantization curve fitted here, where it kept the paper's (7-9% more capacity at 2 bits).
    vq = law.families[Family.VQ]
    assert [vq.L.value, vq.F.value, vq.C.value] == [result.constants[f"quantization.{k}"].value for k in "LFC"]
    assert vq.F.provenance.startswith("copied from the quantization curve fitted here (no vq runs in this fit")
    if law.draws is not None:
        for k in "LFC":
            assert law.draws.constants[f"vq.{k}"] == law.draws.constants[f"quantization.{k}"]
    # Without a base law the file has only the fitted families (the old behaviour).
    assert Family.VQ not in result.to_law("mine").families


def test_predict_with_a_fitted_law_draws_whole_rows(fitted, tmp_path, run_cli):
    from gmse_cli.law import save_law

    result, base = fitted
    law = result.to_law("mine", base=base)
    joint, independent = tmp_path / "joint.toml", tmp_path / "independent.toml"
    save_law(law, joint)
    save_law(law.model_copy(update={"draws": None}), independent)
    rows = [json.loads(run_cli("predict", "int4", "--law", str(p), "--json").stdout)["results"][0]
            for p in (joint, independent)]
    # The same point prediction; the interval comes from other draws (joint rows vs marginals).
    assert rows[0]["predicted_loss"] == pytest.approx(rows[1]["predicted_loss"], rel=1e-12)
    assert (rows[0]["loss_low"], rows[0]["loss_high"]) != (rows[1]["loss_low"], rows[1]["loss_high"])


def test_fit_out_writes_draws_and_every_family(run_cli, shared_data, tmp_path):
    from gmse_cli.law import load_law
    from gmse_cli.spec import catalog

    out = tmp_path / "my-law.toml"
    res = run_cli("fit", str(shared_data / "quest_runs.json"), "--model", "unified", "--bootstrap", "6",
                  "--no-heldout", "--out", str(out), "--csv")
    assert res.code == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith("constant,value,sigma,value_low,value_high")
    law = load_law(out)
    assert law.draws is not None
    needed = {fam for fmt in catalog().values() for fam in fmt.families}
    assert needed <= set(law.families)
    res = run_cli("rank", "--law", str(out), "--json")
    assert res.code == 0 and "skipping" not in res.stderr
    assert len(json.loads(res.stdout)["results"]) == len(catalog())


def test_durations_read_at_a_glance():
    from gmse_cli.cli.train_output import duration as _duration

    assert [_duration(x) for x in (None, 45, 600, 3 * 3600, 4 * 86400, 65128315.8 * 3600)] == [
        "?", "45 s", "10 min", "3.0 h", "4.0 days", "7,430 years"
    ]


def test_dry_run_estimates_from_finished_runs_before_anything_else(tmp_path):
    pytest.importorskip("torch")
    from gmse_cli.training.sweep import SweepSpec, expand_sweep, plan_sweep
    from gmse_cli.training.throughput import estimate_plans, step_key

    spec = SweepSpec.model_validate({"name": "t", "presets": ["tiny-100k"], "tokens_per_param": [2, 4],
                                     "weights": ["int4"], "data": {"source": "x.txt", "tokenizer": "bpe:512"}})
    runs = expand_sweep(spec)
    plans = plan_sweep(runs, vocab_size=512, flops_per_second=1e9)

    class Record:  # what estimate_plans reads of a RunRecord
        def __init__(self, cfg, tokens, seconds):
            preset, weights, acts, context, batch = step_key(cfg)
            self.model = type("M", (), {"preset": preset, "context": context})()
            self.training = type("T", (), {"batch_size": batch})()
            self.weights, self.activations, self.status = weights, acts, "ok"
            self.tokens, self.wall_time_s = tokens, seconds

    # A finished run at 1,000 tokens/s: both runs are estimated at that rate, nothing is timed.
    records = [Record(runs[0], 200_000, 200.0)]
    out, how = estimate_plans(plans, runs, vocab_size=512, device="cpu", flops_per_second=1e9, records=records,
                              progress=False)
    assert how == "finished runs' throughput"
    assert [p.est_seconds for p in out] == pytest.approx([p.plan.tokens / 1000.0 for p in plans])


def test_timing_bar_names_each_configuration_by_its_formats(monkeypatch):
    # the bar's detail printed the whole Format model (name=..., description=..., stages=(Quantize(...)))
    # and 'a:None', one ~700-character line per timed configuration on a log
    from contextlib import contextmanager

    import gmse_cli.progress as progress
    import gmse_cli.training.throughput as throughput
    from gmse_cli.training.sweep import SweepSpec, expand_sweep, plan_sweep

    spec = SweepSpec.model_validate({"name": "t", "presets": ["tiny-100k"], "tokens_per_param": [2],
                                     "weights": ["int2"], "activations": ["none", "had32+int3"],
                                     "data": {"source": "x.txt", "tokenizer": "bpe:512"}})
    runs = expand_sweep(spec)
    plans = plan_sweep(runs, vocab_size=512, flops_per_second=1e9)
    details: list[str] = []

    class Bar:
        def update(self, detail=""):
            details.append(detail)

        def advance(self):
            pass

    @contextmanager
    def task(*args, **kwargs):
        yield Bar()

    monkeypatch.setattr(progress, "task", task)
    monkeypatch.setattr(throughput, "time_steps", lambda cfg, **kw: 0.1)
    throughput.estimate_plans(plans, runs, vocab_size=512, device="cpu", flops_per_second=1e9)
    assert sorted(details) == ["tiny-100k w:int2 a:had32+int3", "tiny-100k w:int2 a:none"]


def test_a_step_slowed_by_another_process_does_not_set_the_timed_estimate(monkeypatch):
    """Timed steps of tiny-100k int2 on a shared 2-core machine: 0.25, 1.47, 0.25 s. The mean of two
    timed steps put the run 3-6x off (a 24-run sweep estimated at 30 hours, 3.4x its recorded time)."""
    pytest.importorskip("torch")
    import gmse_cli.training.throughput as throughput
    from gmse_cli.training.sweep import SweepSpec, expand_sweep

    spec = SweepSpec.model_validate({"name": "t", "presets": ["tiny-100k"], "tokens_per_param": [2],
                                     "weights": ["int2"], "data": {"source": "x.txt", "tokenizer": "bpe:512"}})
    durations = iter([0.25, 1.47, 0.25, 0.25, 0.25])
    clock = {"now": 0.0, "calls": 0}

    def fake_perf_counter():  # each timed step reads the clock twice: start, then end
        clock["calls"] += 1
        if clock["calls"] % 2 == 0:
            clock["now"] += next(durations)
        return clock["now"]

    monkeypatch.setattr(throughput.time, "perf_counter", fake_perf_counter)
    assert throughput.time_steps(expand_sweep(spec)[0], vocab_size=512) == 0.25
    assert clock["calls"] == 6  # three steps: 1.97 s is past min_seconds


def test_a_gpu_sweep_plans_on_a_machine_without_one(run_cli, tmp_path):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    res = run_cli("train", "--preset", "30m", "--max-steps", "10", "--out", str(tmp_path / "r.jsonl"), "--dry-run",
                  "--device", "cuda", "--json")
    assert res.code == 0, res.stderr
    plan = json.loads(res.stdout)["results"][0]
    # No step can be timed here: the FLOPs at the assumed H100 rate (989 TFLOP/s x 40%).
    assert plan["est_seconds"] == pytest.approx(plan["plan"]["flops"] / (0.4 * 989e12), rel=1e-9)


def test_the_readme_quick_sweep_is_designed_so_a_unified_law_can_be_fitted():
    """train/cpu-quick.toml's planned runs (its N, D and formats), with losses from a known law,
    give a unified fit that recovers the law: the README's train -> fit -> rank path cannot end
    in "needs at least 3 model sizes" again."""
    from pathlib import Path

    from gmse_cli.fit import GmseCache, fit, run_stages
    from gmse_cli.law import capacity, load_law, predicted_loss
    from gmse_cli.runs import Run
    from gmse_cli.training.sweep import expand_sweep, load_sweep, plan_sweep

    spec = load_sweep(Path(__file__).resolve().parents[1] / "train" / "cpu-quick.toml")
    configs = expand_sweep(spec)
    plans = plan_sweep(configs, vocab_size=2048)
    truth = {"A": 30.0, "alpha": 0.3, "B": 60.0, "beta": 0.3, "E": 1.0}
    cache = GmseCache(seed=0)
    rng = np.random.default_rng(3)
    runs = []
    for cfg, p in zip(configs, [q.plan for q in plans], strict=True):
        name = cfg.weights.name
        run = Run(scheme=name, weights=name, N=p.params, D=p.tokens, loss=3.0)
        rho = float(np.prod([capacity(g, 1.0, 0.41, 1.39) for _, g in run_stages(run, cache)]))
        loss = predicted_loss(p.params, p.tokens, rho, **truth) * np.exp(rng.normal(0, 0.002))
        runs.append(run.model_copy(update={"loss": float(loss)}))
    assert len({r.N for r in runs}) >= 3 and len({round(r.D / r.N, 3) for r in runs}) >= 2
    result = fit(runs, model="unified", base_law=load_law(), profile=False, sensitivity=False, loso=False)
    assert result.fit_error < 0.01
    assert result.alpha == pytest.approx(truth["alpha"], rel=0.35)
