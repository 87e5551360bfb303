"""SIGKILL (or a power cut) mid-write: what a killed writer leaves is removed once it is stale,
and a finished folder's rename is made durable.

A kill is ``os._exit`` in a child process at the patched point (no ``finally`` runs, as with
SIGKILL). "Stale" is an hour without a write (``STALE_TEMPORARY_SECONDS``): the files are aged
with ``os.utime`` instead of waiting.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from pathlib import Path

import conftest  # noqa: F401  (the shared fixtures; HF offline)
import pytest

REPO = Path(__file__).resolve().parents[1]
TWO_HOURS = 7200


def _age(path: Path, seconds: float = TWO_HOURS) -> None:
    """Set ``path`` (and, for a folder, everything in it) ``seconds`` into the past."""
    when = time.time() - seconds
    for item in [*(path.rglob("*") if path.is_dir() else ()), path]:
        os.utime(item, (when, when), follow_symlinks=False)


def _python(code: str, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "USCL_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


_KILLED_MID_WRITE = """
import os
real = os.replace
def dying(src, dst):  # the temporary file is whole, the rename never happens
    os._exit(137)
os.replace = dying
from gmse_cli.memo import remembered
remembered("crash-test", "key-1", lambda: 0.25)
"""

_READ = """
from gmse_cli.memo import remembered
print(remembered("crash-test", "key-1", lambda: float("nan")))
"""


def test_a_cache_temporary_left_by_a_kill_goes_once_stale(tmp_path):
    # killed between writing the temporary file and renaming it
    assert _python(_KILLED_MID_WRITE, tmp_path).returncode == 137
    folder = tmp_path / "crash-test"
    left = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and not any(p.suffix == ".json" for p in folder.iterdir())
    # the rerun at once: a miss, computed and stored; the young temporary stays (it could be a
    # live writer's)
    rerun = _python(_KILLED_MID_WRITE.replace("os.replace = dying", ""), tmp_path)
    assert rerun.returncode == 0, rerun.stderr
    assert left[0].exists()
    # an hour later every read is a hit, which writes nothing: the temporary went with the
    # first process to open the cache folder (it stayed for ever: no write of that key came again)
    _age(tmp_path)  # an hour on for everything the cache holds, the sweep's stamp too
    read = _python(_READ, tmp_path)
    assert read.returncode == 0 and float(read.stdout) == 0.25, read.stderr
    assert not left[0].exists()
    assert sorted(p.suffix for p in folder.iterdir()) == [".json"]


def test_the_cache_sweep_spares_young_temporaries_and_other_names(tmp_path):
    from gmse_cli.atomic import sweep_cache_folder

    old = tmp_path / ".abc.json.k2j4_x9q.tmp"
    young = tmp_path / ".def.json.a1b2c3d4.tmp"
    other = [tmp_path / ".notes.tmp", tmp_path / "abc.json", tmp_path / ".abc.json.toolongname.tmp"]
    for path in (old, young, *other):
        path.write_bytes(b"{")
    for path in (old, *other):
        _age(path)
    (tmp_path / ".dir.json.zzzzzzzz.tmp").mkdir()
    _age(tmp_path / ".dir.json.zzzzzzzz.tmp")
    sweep_cache_folder(tmp_path)
    assert not old.exists()
    assert young.exists() and all(p.exists() for p in other)
    assert (tmp_path / ".dir.json.zzzzzzzz.tmp").is_dir()


torch_needed = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("torch", "safetensors")),
    reason="torch and safetensors are the training extra's",
)


def write_checkpoint(run_dir: Path, step: int) -> None:
    """One AdamW step on a 4 x 4 linear layer, saved as the checkpoint of ``step``."""
    import torch

    from gmse_cli.training.checkpoint import TrainState, save_checkpoint

    model = torch.nn.Linear(4, 4)
    optim = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 4)).sum().backward()
    optim.step()
    save_checkpoint(run_dir, model_state=model.state_dict(), optim_state=optim.state_dict(),
                    state=TrainState(run_key="k", step=step))


_KILLED_IN_CHECKPOINT = """
import os, sys
import safetensors.torch as st
from pathlib import Path
real = st.save_file
def dying(tensors, path, **kw):  # one file written, then killed
    real(tensors, path, **kw)
    os._exit(137)
st.save_file = dying
sys.path.insert(0, sys.argv[3])
from test_crash_leftovers import write_checkpoint
write_checkpoint(Path(sys.argv[1]), int(sys.argv[2]))
"""


def _killed_in_checkpoint(run_dir: Path, step: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-c", _KILLED_IN_CHECKPOINT, str(run_dir), str(step), str(REPO / "tests")],
                          env=env, capture_output=True, text=True, timeout=300)


@torch_needed
def test_a_checkpoint_staging_folder_left_by_a_kill_goes_once_stale(tmp_path):
    from gmse_cli.training.checkpoint import latest_checkpoint

    run_dir = tmp_path / "run"
    write_checkpoint(run_dir, 10)
    killed = _killed_in_checkpoint(run_dir, 20)
    assert killed.returncode == 137, killed.stderr[-2000:]
    staged = [p for p in run_dir.iterdir() if p.name.startswith(".step-000000020.")]
    assert len(staged) == 1 and (staged[0] / "model.safetensors").is_file()  # a whole model's bytes
    assert latest_checkpoint(run_dir) == run_dir / "step-000000010"  # never the torn one
    young = run_dir / ".step-000000030.abcd1234"  # another process's, being written now
    young.mkdir()
    (young / "model.safetensors").write_bytes(b"x")
    _age(staged[0])
    write_checkpoint(run_dir, 30)  # the next save, in this process or any other
    assert latest_checkpoint(run_dir) == run_dir / "step-000000030"
    assert not staged[0].exists()  # it stayed until the run's end (or for ever, under --models-dir)
    assert young.is_dir()


@torch_needed
def test_a_final_models_rename_is_fsynced_before_it_returns(tmp_path, monkeypatch):
    import torch

    from gmse_cli.training import checkpoint

    synced: list[tuple[Path, bool]] = []
    real = checkpoint.fsync_dir

    def spy(folder):
        synced.append((Path(folder), (tmp_path / "models" / "key").is_dir()))
        real(folder)

    monkeypatch.setattr(checkpoint, "fsync_dir", spy)
    checkpoint.save_final_model(tmp_path / "models" / "key", model_state={"w": torch.ones(2)},
                                config_json={}, uscl_meta={})
    # the folder's rename is durable before the caller appends the record naming it and deletes
    # the checkpoints: else a power cut could keep the record and lose the model folder
    assert (tmp_path / "models", True) in synced


def test_a_token_cache_staging_folder_left_by_a_kill_goes_once_stale(tmp_path, monkeypatch, docs_file):
    pytest.importorskip("tokenizers")
    monkeypatch.setenv("USCL_CACHE_DIR", str(tmp_path))
    from gmse_cli.training.data.prepare import prepare_tokens

    tokens = tmp_path / "tokens"
    tokens.mkdir()
    stale = tokens / ".0123456789abcdef01234567.q1w2e3r4"  # a staging folder: mkdtemp's 8 characters
    aside = tokens / f".0123456789abcdef01234567.old-123-{'f' * 32}"  # a damaged entry set aside
    young = tokens / ".0123456789abcdef01234567.a1s2d3f4"
    user = tokens / ".keep-me"
    for folder in (stale, aside, young, user):
        folder.mkdir()
        (folder / "train.bin").write_bytes(b"\0" * 4096)
    for folder in (stale, aside, user):
        _age(folder)
    prepare_tokens(str(docs_file(20_000)), "bpe:300", val_fraction=0.1)
    assert not stale.exists() and not aside.exists()
    assert young.is_dir() and user.is_dir()
