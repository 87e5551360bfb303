"""resume_checkpoint's note called the checkpoint it fell back to 'the older' one, also where it
is newer than the damaged one ``latest`` names (a complete step past the pointer, which a failed
pointer write leaves behind): the note says 'older' only of an older one."""

from __future__ import annotations

import shutil

import conftest
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


def _restore(folder, weights, optim_state, state):
    torch.nn.Linear(4, 3).load_state_dict(weights)


def test_a_fallback_past_the_pointer_is_not_called_older(tmp_path):
    from gmse_cli.training.checkpoint import resume_checkpoint

    run = tmp_path / "run"
    pointed = conftest.tiny_checkpoint(tmp_path / "a", step=2)
    newer = conftest.tiny_checkpoint(run, step=5)
    shutil.copytree(pointed, run / pointed.name)
    (run / "latest").write_text(pointed.name)  # the pointer still names step 2
    (run / pointed.name / "model.safetensors").write_bytes(b"\x00garbage")
    notes: list[str] = []
    folder, state = resume_checkpoint(run, _restore, notes.append)
    assert (folder, state.step, len(notes)) == (newer, 5, 1)
    assert f"resuming from the {newer.name} instead" in notes[0] and "older" not in notes[0]


def test_a_fallback_to_an_older_one_still_says_so(tmp_path):
    from gmse_cli.training.checkpoint import resume_checkpoint

    run = tmp_path / "run"
    older = conftest.tiny_checkpoint(tmp_path / "a", step=2)
    newest = conftest.tiny_checkpoint(run, step=5)
    shutil.copytree(older, run / older.name)
    (newest / "model.safetensors").write_bytes(b"\x00garbage")
    notes: list[str] = []
    folder, _ = resume_checkpoint(run, _restore, notes.append)
    assert folder.name == older.name and f"resuming from the older {older.name} instead" in notes[0]
