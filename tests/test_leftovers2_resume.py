"""A hand-damaged newest checkpoint beside a complete older one: resuming falls back to the older
one with one note naming the damaged one (left in place), instead of refusing to resume."""

from __future__ import annotations

import shutil

import conftest
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")


def _two_checkpoints(tmp_path):
    """run/step-000000002 (complete) and run/step-000000005 (newest, named by ``latest``)."""
    run = tmp_path / "run"
    older = conftest.tiny_checkpoint(tmp_path / "a", step=2)
    run.mkdir()
    shutil.copytree(older, run / older.name)
    newest = conftest.tiny_checkpoint(run, step=5)  # keep=1 removes step 2: copy it back
    shutil.copytree(older, run / older.name, dirs_exist_ok=True)
    assert sorted(p.name for p in run.glob("step-*")) == ["step-000000002", "step-000000005"]
    assert (run / "latest").read_text() == newest.name
    return run, newest


def _restore_into_linear(folder, weights, optim_state, state):
    from gmse_cli.errors import DataError

    layer = torch.nn.Linear(4, 3)
    try:
        layer.load_state_dict(weights)
    except RuntimeError as exc:
        raise DataError(f"checkpoint {folder} is unreadable ({exc}); delete it to start over") from None


def test_a_damaged_newest_checkpoint_falls_back_to_the_older_one_with_one_note(tmp_path):
    from gmse_cli.training.checkpoint import resume_checkpoint

    run, newest = _two_checkpoints(tmp_path)
    (newest / "model.safetensors").write_bytes(b"\x00garbage")
    notes: list[str] = []
    folder, state = resume_checkpoint(run, _restore_into_linear, notes.append)
    assert folder == run / "step-000000002" and state.step == 2
    assert len(notes) == 1 and notes[0].startswith(f"note: checkpoint {newest} is unreadable (")
    assert "step-000000002" in notes[0] and "\n" not in notes[0]
    assert (newest / "model.safetensors").read_bytes() == b"\x00garbage"  # left in place


def test_a_newest_checkpoint_that_does_not_fit_falls_back_too(tmp_path):
    from safetensors.torch import load_file, save_file

    from gmse_cli.training.checkpoint import resume_checkpoint

    run, newest = _two_checkpoints(tmp_path)
    weights = load_file(str(newest / "model.safetensors"))
    weights.pop("bias")
    save_file(weights, str(newest / "model.safetensors"))
    notes: list[str] = []
    folder, state = resume_checkpoint(run, _restore_into_linear, notes.append)
    assert (folder.name, state.step, len(notes)) == ("step-000000002", 2, 1)


def test_a_sound_newest_checkpoint_is_taken_without_a_note(tmp_path):
    from gmse_cli.training.checkpoint import resume_checkpoint

    run, _ = _two_checkpoints(tmp_path)
    notes: list[str] = []
    folder, state = resume_checkpoint(run, _restore_into_linear, notes.append)
    assert (folder.name, state.step, notes) == ("step-000000005", 5, [])
    assert resume_checkpoint(tmp_path / "none", _restore_into_linear, notes.append) is None


def test_when_no_checkpoint_loads_it_is_one_error_without_notes(tmp_path):
    from gmse_cli.errors import DataError
    from gmse_cli.training.checkpoint import resume_checkpoint

    run, newest = _two_checkpoints(tmp_path)
    for folder in run.glob("step-*"):
        (folder / "state.json").write_text("not json")
    notes: list[str] = []
    with pytest.raises(DataError, match=rf"checkpoint {newest} is unreadable .*and so are the 1 older .*delete {run}"):
        resume_checkpoint(run, _restore_into_linear, notes.append)
    assert notes == []
    shutil.rmtree(run / "step-000000002")  # the newest alone: the message it always gave
    with pytest.raises(DataError, match=rf"checkpoint {newest} is unreadable .*; delete it to start over$"):
        resume_checkpoint(run, _restore_into_linear, notes.append)
    assert notes == []
