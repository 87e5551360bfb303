"""Resuming from a checkpoint whose files parse but do not fit the run's model (a tensor left out,
the optimizer's state of another model) is one error line naming the checkpoint, not torch's
RuntimeError or ValueError as a traceback from load_state_dict."""

from __future__ import annotations

import lzma

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")


@pytest.fixture
def run_cfg(tmp_path, monkeypatch, shared_data):
    from gmse_cli.training.config import RunConfig

    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path / "cache"))
    with lzma.open(shared_data / "python-docs-3.11.txt.xz", "rt", encoding="utf-8") as handle:
        text = handle.read(100_000)
    corpus = tmp_path / "docs.txt"
    corpus.write_text(text, encoding="utf-8")
    return RunConfig.model_validate(dict(
        preset="tiny", tokens_per_param=1000, batch_size=4, context=32, eval_tokens=1024, max_steps=3,
        checkpoint_every=1, data={"source": str(corpus), "tokenizer": "bpe:300", "val_fraction": 0.1}))


@pytest.mark.parametrize("damage", ["model key dropped", "optimizer of another model"])
def test_a_checkpoint_that_does_not_fit_the_model_is_one_error_line(run_cfg, tmp_path, monkeypatch, damage):
    from safetensors.torch import load_file, save_file

    from gmse_cli.errors import DataError
    from gmse_cli.training import checkpoint
    from gmse_cli.training.checkpoint import latest_checkpoint
    from gmse_cli.training.loop import train_run

    # stop after the first checkpoint: the run is left to resume
    calls = []
    original = checkpoint.save_checkpoint

    def save_once(*args, **kwargs):
        folder = original(*args, **kwargs)
        calls.append(folder)
        raise KeyboardInterrupt

    import gmse_cli.training.loop.run as run_module

    monkeypatch.setattr(run_module, "save_checkpoint", save_once)
    with pytest.raises(KeyboardInterrupt):
        train_run(run_cfg, run_dir=tmp_path / "ck", progress=False)
    monkeypatch.setattr(run_module, "save_checkpoint", original)
    folder = latest_checkpoint(tmp_path / "ck")
    assert folder is not None
    if damage == "model key dropped":
        weights = load_file(str(folder / "model.safetensors"))
        weights.pop(sorted(weights)[0])
        save_file(weights, str(folder / "model.safetensors"))
    else:
        save_file({"state.0.exp_avg": torch.zeros(3), "state.0.exp_avg_sq": torch.zeros(3),
                   "state.0.step": torch.zeros(())}, str(folder / "optimizer.safetensors"))
    with pytest.raises(DataError, match=r"checkpoint .* is unreadable .*delete it to start over"):
        train_run(run_cfg, run_dir=tmp_path / "ck", progress=False)
