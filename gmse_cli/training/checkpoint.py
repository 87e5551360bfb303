"""Training checkpoints: safetensors weights and optimizer moments plus a small JSON state.

Layout of a run's folder::

    <run_dir>/
      latest                  # name of the newest complete checkpoint (written last, atomically)
      step-000120/
        model.safetensors     # full (unsharded) state dict
        optimizer.safetensors # AdamW moments and step counts, keyed state.<index>.<name>
        state.json            # step, elapsed time, loss trace, eval trace, config hash

A checkpoint folder is written under a temporary name and renamed into place, then ``latest``
is replaced; a run killed at any moment leaves the previous checkpoint intact and readable.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from gmse_cli.atomic import (
    fsync_dir,
    new_file_mode,
    staging_folder,
    write_atomic,
)
from gmse_cli.cleanup import remove_stale_folders
from gmse_cli.errors import DataError, TrainError

__all__ = [
    "TrainState",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "resume_checkpoint",
    "unreadable_checkpoint",
    "discard_checkpoints",
    "save_final_model",
    "FINAL_MODEL_FILES",
]

# What a kept final model folder holds: a Hugging Face model folder (LlamaForCausalLM loads it)
# plus the formats it was trained over, so its weights and activations can be measured later
# (and tokenizer.json, the run's tokenizer, when the run's tokenizer can be written as one).
FINAL_MODEL_FILES = ("config.json", "model.safetensors", "uscl.json")


@dataclass
class TrainState:
    """Everything besides weights and moments that a resumed run needs to continue exactly."""

    run_key: str
    step: int = 0  # optimizer steps completed; also the data position (batches are indexed)
    elapsed_s: float = 0.0
    train_loss: list[float] = field(default_factory=list)  # one per completed step
    eval_steps: list[int] = field(default_factory=list)
    eval_loss: list[float] = field(default_factory=list)
    world_sizes: list[int] = field(default_factory=list)  # processes of each session, changes only

    def to_json(self) -> dict[str, Any]:
        return {
            "run_key": self.run_key,
            "step": self.step,
            "elapsed_s": self.elapsed_s,
            "train_loss": self.train_loss,
            "eval_steps": self.eval_steps,
            "eval_loss": self.eval_loss,
            "world_sizes": self.world_sizes,
        }


def _optimizer_tensors(optim_state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, state in optim_state["state"].items():
        for name, value in state.items():
            key = f"state.{index}.{name}"
            if isinstance(value, torch.Tensor):
                tensors[key] = value.detach().cpu().contiguous()
            else:
                scalars[key] = value
    return tensors, scalars


def _split_key(key: str) -> tuple[int | str, str]:
    """'state.<index>.<name>' -> (index, name); the index is a number for plain optimizers and
    a parameter's dotted name for FSDP's full state dicts."""
    index, name = key.removeprefix("state.").rsplit(".", 1)
    return (int(index) if index.isdigit() else index), name


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, **kwargs: Any) -> None:
    """safetensors' ``save_file``, with its I/O failures raised as the OSError they are: it
    reports a full disk as its own SafetensorError ('I/O error: ... (os error 28)'), which got
    past the clean error of :func:`_staged_folder` as a traceback. The file gets the umask's
    mode, as every file uscl makes: safetensors makes it 0600, so a group sharing checkpoints
    or kept models (umask 002) could not read the weights beside their readable config."""
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), **kwargs)
    except SafetensorError as exc:
        code = re.search(r"os error (\d+)", str(exc))
        if code is None:
            raise
        raise OSError(int(code.group(1)), os.strerror(int(code.group(1))), str(path)) from None
    os.chmod(path, new_file_mode())


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as handle:
            os.fsync(handle.fileno())
    fsync_dir(folder)


_LEFT_BY_A_KILL = re.compile(r"\.(step-\d+|[0-9a-f]{16})\.[a-z0-9_]{8}")
"""The staging folder (:func:`_staged_folder`) of a checkpoint or of a kept final model
(``<models>/<run key>``) that a process killed while writing it left: a whole checkpoint's size
each time, kept for ever. One an hour old is removed before the next write. (A set-aside old
copy, ``.NAME.old.XXXXXXXX``, may be the only one left, and stays.)"""


@contextlib.contextmanager
def _staged_folder(final: Path, what: str) -> Iterator[Path]:
    """An empty staging folder beside ``final``; on success its files are fsync'd and it is
    renamed to ``final`` (replacing an older one), on failure removed: never a partial folder.
    A write that fails (a full disk, a read-only folder) is a :class:`TrainError` naming ``what``."""
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_folders(final.parent, _LEFT_BY_A_KILL)
        staging = staging_folder(final.parent, prefix=f".{final.name}.")
    except OSError as exc:
        raise TrainError(f"cannot write {what} in {final.parent}: {exc.strerror or exc}") from None
    try:
        yield staging
        _fsync_tree(staging)
        trash = None
        if final.exists():  # a folder cannot be renamed over a non-empty one: move it aside first
            trash = Path(tempfile.mkdtemp(prefix=f".{final.name}.old.", dir=final.parent))
            os.replace(final, trash / final.name)
        os.replace(staging, final)
        fsync_dir(final.parent)  # the rename survives a power cut before the run's record is written
        if trash is not None:
            shutil.rmtree(trash, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise TrainError(f"cannot write {what} {final}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def save_checkpoint(
    run_dir: Path,
    *,
    model_state: dict[str, torch.Tensor],
    optim_state: dict[str, Any],
    state: TrainState,
    keep: int = 1,
) -> Path:
    """Write a complete checkpoint atomically; keep the newest ``keep`` ones."""
    name = f"step-{state.step:09d}"
    final = run_dir / name
    with _staged_folder(final, "checkpoint") as staging:
        weights = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
        _save_tensors(weights, staging / "model.safetensors")
        tensors, scalars = _optimizer_tensors(optim_state)
        _save_tensors(tensors, staging / "optimizer.safetensors")
        payload = state.to_json() | {
            "optimizer_scalars": scalars,
            "param_groups": optim_state["param_groups"],
            "rng_cpu": torch.get_rng_state().tolist(),
        }
        (staging / "state.json").write_text(json.dumps(payload))
    try:
        write_atomic(run_dir / "latest", name.encode())
    except OSError as exc:  # the checkpoint itself is complete; latest_checkpoint finds it without
        raise TrainError(f"cannot write checkpoint pointer {run_dir / 'latest'}: {exc.strerror or exc}") from None
    old = sorted(p for p in run_dir.glob("step-*") if p.is_dir() and p.name != name)
    for stale in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(stale, ignore_errors=True)
    return final


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint ``latest`` names; if a kill left it missing, the newest complete one."""
    pointer = run_dir / "latest"
    try:
        name = pointer.read_text(encoding="utf-8").strip() if pointer.is_file() else ""
    except (OSError, ValueError):  # a damaged pointer: the newest complete checkpoint it is
        name = ""
    if name.startswith("step-") and (folder := run_dir / name).name == name and (folder / "state.json").is_file():
        return folder
    complete = sorted(p for p in run_dir.glob("step-*") if (p / "state.json").is_file())
    return complete[-1] if complete else None


_START_OVER = "; delete it to start over"


def unreadable_checkpoint(folder: Path, why: str) -> DataError:
    """The one error of a checkpoint that cannot be loaded (its files, or a model it does not
    fit): :func:`resume_checkpoint` reads its words to pass over it to an older one."""
    return DataError(f"checkpoint {folder} is unreadable ({why}){_START_OVER}")


def load_checkpoint(folder: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], TrainState]:
    """(model state dict, optimizer state dict, train state) of a checkpoint folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:  # a damaged file (garbage, truncated, keys missing) is one error line, not a traceback
        payload = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        weights = load_file(str(folder / "model.safetensors"))
        tensors = load_file(str(folder / "optimizer.safetensors"))
        state: dict[int | str, dict[str, Any]] = {}
        for key, value in [*tensors.items(), *payload["optimizer_scalars"].items()]:
            index, name = _split_key(key)
            state.setdefault(index, {})[name] = value
        optim_state = {"state": state, "param_groups": payload["param_groups"]}
        rng = torch.tensor(payload["rng_cpu"], dtype=torch.uint8)
        train_state = TrainState(
            run_key=payload["run_key"],
            step=payload["step"],
            elapsed_s=payload["elapsed_s"],
            train_loss=list(payload["train_loss"]),
            eval_steps=list(payload["eval_steps"]),
            eval_loss=list(payload["eval_loss"]),
            world_sizes=[int(n) for n in payload.get("world_sizes", [])],  # older checkpoints: not kept
        )
        torch.set_rng_state(rng)  # a state of the wrong size raised RuntimeError here, a traceback
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else f"{type(exc).__name__}: {exc}"
        raise unreadable_checkpoint(folder, why) from None
    return weights, optim_state, train_state


def resume_checkpoint(
    run_dir: Path, restore: Callable[[Path, dict[str, torch.Tensor], dict[str, Any], TrainState], None],
    note: Callable[[str], None],
) -> tuple[Path, TrainState] | None:
    """The checkpoint a run resumes from and its train state: the one ``latest`` names, or if
    that one is unreadable (or ``restore``, which applies it, raises :class:`DataError`), the
    newest older complete one that loads, with one ``note`` line per unreadable one passed over
    (left in place: the next checkpoint replaces it). None for no checkpoint; when none loads,
    the :class:`DataError` of the newest."""
    newest = latest_checkpoint(run_dir)
    if newest is None:
        return None
    older = sorted((p for p in run_dir.glob("step-*") if p != newest and (p / "state.json").is_file()), reverse=True)
    failed: list[tuple[Path, DataError]] = []
    for folder in (newest, *older):
        try:
            weights, optim_state, state = load_checkpoint(folder)
            restore(folder, weights, optim_state, state)
        except DataError as exc:
            failed.append((folder, exc))
            continue
        for bad, exc in failed:
            # 'older' only where it is: a complete one past what 'latest' names (a pointer left
            # behind by a failed write) is newer
            older_word = "older " if folder.name < bad.name else ""
            note(f"note: {str(exc).removesuffix(_START_OVER)}; resuming from the {older_word}{folder.name} instead "
                 f"({bad.name} is left in place until the next checkpoint replaces it)")
        return folder, state
    if len(failed) == 1:
        raise failed[0][1]
    raise DataError(f"{str(failed[0][1]).removesuffix(_START_OVER)}, and so are the {len(failed) - 1} older "
                    f"checkpoints beside it; delete {run_dir} to start over")


def discard_checkpoints(run_dir: Path) -> None:
    """Remove a run's checkpoint folder; call only once its result line is durable."""
    shutil.rmtree(run_dir, ignore_errors=True)


def save_final_model(
    folder: Path,
    *,
    model_state: dict[str, torch.Tensor],
    config_json: dict[str, Any],
    uscl_meta: dict[str, Any],
    tokenizer_json: str | None = None,
) -> Path:
    """Write a finished run's model folder atomically (staging folder, fsync, rename).

    ``model_state`` is the latent full-precision state dict (the weights the format compresses
    in every forward pass); ``uscl_meta`` records the run key and the weight and activation
    formats. ``tokenizer_json`` (a tokenizers JSON) is written as ``tokenizer.json``, so the
    folder alone is enough to run the model on text. An existing folder of the same name (a
    re-export after a kill) is replaced whole.
    """
    with _staged_folder(folder, "final model") as staging:
        weights = {k: v.detach().cpu().contiguous() for k, v in model_state.items()}
        _save_tensors(weights, staging / "model.safetensors", metadata={"format": "pt"})
        (staging / "config.json").write_text(json.dumps(config_json, indent=2, sort_keys=True))
        (staging / "uscl.json").write_text(json.dumps(uscl_meta, indent=2, sort_keys=True))
        if tokenizer_json is not None:
            (staging / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    return folder
