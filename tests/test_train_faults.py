"""Fault injection in training: a process killed at every phase of a run's end loses nothing (the
rerun records it once, with the loss of an uninterrupted run, bit for bit), and unwritable or
full outputs are one clear error, found before training where they can be.

A kill is ``os._exit`` in a child process at the patched point: no ``finally`` runs, as with
SIGKILL.
"""

from __future__ import annotations

import errno
import json
import lzma
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("tokenizers")

from gmse_cli.errors import DataError, TrainError  # noqa: E402
from gmse_cli.training.config import RunConfig  # noqa: E402
from gmse_cli.training.launch import run_local  # noqa: E402
from gmse_cli.training.results import load_records  # noqa: E402


@pytest.fixture(scope="module")
def text(tmp_path_factory, shared_data) -> Path:
    """200K characters of the offline corpus as plain text."""
    with lzma.open(shared_data / "python-docs-3.11.txt.xz", "rt", encoding="utf-8") as handle:
        body = handle.read(200_000)
    path = tmp_path_factory.mktemp("faults") / "docs.txt"
    path.write_text(body, encoding="utf-8")
    return path


def _config(text: Path) -> RunConfig:
    return RunConfig.model_validate(dict(
        preset="tiny", weights="int4", tokens_per_param=1000, batch_size=8, context=64, eval_tokens=4096,
        max_steps=6, checkpoint_every=3, eval_every=0, data={"source": str(text), "tokenizer": "bpe:512", "val_fraction": 0.1}))


def _run(cfg: RunConfig, folder: Path):
    return run_local([cfg], out=folder / "runs.jsonl", checkpoint_root=folder / "ckpt", progress=False,
                     models_root=folder / "models")


@pytest.fixture(scope="module")
def reference(text, tmp_path_factory) -> float:
    torch.set_num_threads(1)
    outcome = _run(_config(text), tmp_path_factory.mktemp("reference"))
    return outcome.records[0].val_loss


# Each phase: (module, function) patched in the child so that reaching it kills the process,
# before the real call ("before") or right after it returns ("after").
PHASES = {
    "during a checkpoint": ("gmse_cli.training.loop.run", "save_checkpoint", "before", 2),
    "after the last checkpoint": ("gmse_cli.training.loop.run", "save_checkpoint", "after", 2),
    "during the final evaluation": ("gmse_cli.training.loop.run", "evaluate", "before", 1),
    "after the final evaluation": ("gmse_cli.training.loop.run", "evaluate", "after", 1),
    "during the final model export": ("gmse_cli.training.loop.run", "export_final_model", "before", 1),
    "during the append": ("gmse_cli.training.results", "write_atomic", "before", 1),
    "between the append and the clean-up": ("gmse_cli.training.launch", "discard_checkpoints", "before", 1),
}

def _killed_child(phase: tuple, text: str, folder: str) -> None:
    """A run in a child process whose patched ``phase`` ends it with ``os._exit``."""
    import importlib

    torch.set_num_threads(1)
    err = os.open(os.path.join(folder, "child.err"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(err, 2)  # its traceback, if any, for the test's message
    module, name, when, nth = phase
    target = importlib.import_module(module)
    real = getattr(target, name)
    calls = [0]

    def killed(*args, **kwargs):
        calls[0] += 1
        if calls[0] == nth and when == "before":
            os._exit(137)
        out = real(*args, **kwargs)
        if calls[0] == nth and when == "after":
            os._exit(137)
        return out

    setattr(target, name, killed)
    _run(_config(Path(text)), Path(folder))


@pytest.fixture(scope="module")
def child_processes():
    """Children forked from a server process that has only imported torch, transformers and the
    training code: each starts in a fraction of a second where a fresh interpreter spends about
    6 s importing, and (unlike a fork of this process) holds no thread pools or caches of the
    tests' (it ends with this process)."""
    import multiprocessing

    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__, "gmse_cli.training.launch", "gmse_cli.training.loop.run",
                                "transformers.models.llama.modeling_llama", "torch._dynamo"])
    yield ctx


@pytest.mark.parametrize("phase", list(PHASES))
def test_a_kill_at_any_phase_loses_no_finished_run(phase, text, reference, child_processes, tmp_path):
    child = child_processes.Process(target=_killed_child, args=(PHASES[phase], str(text), str(tmp_path)))
    child.start()
    child.join(timeout=600)
    assert child.exitcode == 137, (tmp_path / "child.err").read_text()[-2000:]
    (tmp_path / "child.err").unlink()
    _run(_config(text), tmp_path)  # the rerun after the kill
    records = load_records(tmp_path / "runs.jsonl")
    assert len(records) == 1 and records[0].val_loss == reference
    assert not (tmp_path / "ckpt" / records[0].run_key).exists()  # cleaned up once durable
    assert not [p for p in tmp_path.rglob("*.tmp")]  # no temporary file left behind


def _enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_a_full_disk_at_the_append_keeps_the_checkpoint(text, reference, tmp_path, monkeypatch):
    from gmse_cli.training import results

    (tmp_path / "runs.jsonl").write_text("")
    monkeypatch.setattr(results, "write_atomic", _enospc)
    with pytest.raises(DataError, match="No space left on device.*checkpoint is kept"):
        _run(_config(text), tmp_path)
    assert (tmp_path / "runs.jsonl").read_text() == ""
    monkeypatch.undo()
    record = _run(_config(text), tmp_path).records[0]  # resumes from the kept checkpoint
    assert record.val_loss == reference


def test_a_full_disk_for_checkpoints_is_one_clear_error(text, tmp_path, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", _enospc)
    with pytest.raises(TrainError, match="cannot write checkpoint .*No space left on device"):
        _run(_config(text), tmp_path)
    leftovers = [p.name for p in (tmp_path / "ckpt").rglob("*") if p.name.startswith(".")]
    assert leftovers == []  # the staging folder is gone


@pytest.mark.parametrize("where", ["folder", "fifo", "full"])
def test_an_unwritable_out_is_found_before_training(where, run_cli, text, tmp_path, monkeypatch):
    out = tmp_path / "runs.jsonl"
    if where == "folder":
        out.mkdir()
    elif where == "fifo":
        os.mkfifo(out)
    else:
        import shutil

        from gmse_cli import atomic

        monkeypatch.setattr(atomic.shutil, "disk_usage", lambda _: shutil._ntuple_diskusage(1 << 30, 1 << 30, 0))
    res = run_cli("train", "--preset", "tiny", "--max-steps", "2", "--data", str(text), "--tokenizer", "bpe:512",
                  "--out", str(out), "--no-progress")
    assert res.code == 2 and str(out) in res.stderr and res.stderr.strip().count("\n") == 0, res.stderr
    assert not (tmp_path / "runs.jsonl.ckpt").exists()  # nothing trained


def test_tokenizer_output_is_checked_first_and_written_whole(run_cli, text, tmp_path, monkeypatch):
    target = tmp_path / "tok.json"
    target.write_text('{"old": true}')
    res = run_cli("tokenizer", "train", str(text), "--vocab-size", "300", "--out", str(tmp_path))
    assert res.code == 2 and "it is a folder" in res.stderr and "training" not in res.stderr
    corpus = text.read_bytes()  # --out naming the corpus itself: refused before training, the corpus kept
    res = run_cli("tokenizer", "train", str(text), "--vocab-size", "300", "--out", str(text))
    assert res.code == 2 and "choose another path" in res.stderr and "training" not in res.stderr
    assert text.read_bytes() == corpus

    from gmse_cli import atomic

    real_replace = os.replace

    def full(src, dst):  # the disk fills as the new file is renamed in: the old one stays whole
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "replace", full)
    res = run_cli("tokenizer", "train", str(text), "--vocab-size", "300", "--out", str(target))
    monkeypatch.setattr(atomic.os, "replace", real_replace)
    assert res.code == 2 and "No space left" in res.stderr
    assert json.loads(target.read_text()) == {"old": True}
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_folders_get_the_umasks_permissions(tmp_path, umask):
    # Checkpoints and kept models were staged with mkdtemp, so they ended up 0700 whatever the
    # umask: a kept model (or a token cache entry) only its writer could open.
    from gmse_cli.training.checkpoint import TrainState, save_checkpoint, save_final_model

    old = os.umask(umask)
    try:
        step = save_checkpoint(tmp_path / "ckpt", model_state={"w": torch.zeros(2)}, optim_state={
            "state": {}, "param_groups": []}, state=TrainState(run_key="k", step=3))
        model = save_final_model(tmp_path / "model", model_state={"w": torch.zeros(2)}, config_json={},
                                 uscl_meta={})
    finally:
        os.umask(old)
    for folder in (step, model):
        assert folder.stat().st_mode & 0o777 == 0o777 & ~umask
