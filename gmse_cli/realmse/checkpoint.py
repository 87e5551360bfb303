"""Which safetensors files make a checkpoint, and every tensor in them.

A checkpoint is a ``.safetensors`` file, a sharded model's ``model.safetensors.index.json``, a
folder of them (shards, or a Hugging Face model folder whose index names the shards), a Hugging
Face hub-cache folder (``models--org--name``: the snapshot ``refs/main`` names, or one of its
``snapshots/<commit>`` folders), or a ``uscl train`` run folder (its ``latest`` checkpoint's
``model.safetensors``; optimizer moments are skipped). Nothing is loaded whole: each file's
header is parsed and its rows read a block at a time (:mod:`gmse_cli.realmse.tensorfile`). No
torch is involved.

Rows are the last axis: a linear layer stored as ``(out, in)`` (PyTorch's ``nn.Linear``) gives
rows of the input dimension, one per output channel, which is how every format treats a weight
matrix. Convolutions (``(out, in, kh, kw)``, or a 1-D one's ``(out, in, k)`` named as a convolution) are
viewed as ``(out, in * kh * kw)``, one row per output channel; other three-axis tensors (stacked experts) as
``(prod(shape[:-1]), shape[-1])``. GPT-2-style checkpoints store their linear layers with
transformers' ``Conv1D`` as ``(in, out)``; those tensors (:func:`open_checkpoint` finds them
from ``config.json``'s ``model_type`` or, without one, from their names and shapes) are read
transposed, so their rows are output channels too. Stacked experts stored ``(experts, in, out)``
(gpt-oss's and Llama 4's ``experts.gate_up_proj`` / ``experts.down_proj``, which multiply as
``x @ W``; Mixtral's and Qwen's fused experts are ``(experts, out, in)``) are read transposed
per expert (:func:`_experts_in_out`). An fp8 checkpoint's weights are read as code x scale
(:mod:`gmse_cli.realmse.fp8_weights`); any other already-quantized checkpoint is marked so
(:mod:`gmse_cli.realmse.prequantized`).

Which tensors are measured is :mod:`gmse_cli.realmse.layers`' business.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath

from gmse_cli.errors import DataError, more_likewise
from gmse_cli.frozen import Frozen
from gmse_cli.inputs import does_not_exist, exists, parse_nested, read_text_file, user_path
from gmse_cli.realmse.fp8_weights import fp8_weights
from gmse_cli.realmse.prequantized import quantization_evidence
from gmse_cli.realmse.tensorfile import TensorInfo, read_header

__all__ = ["Checkpoint", "open_checkpoint", "checkpoint_name"]


class Checkpoint(Frozen):
    """Every tensor of a checkpoint (one file or several shards), by name."""

    path: Path
    files: tuple[Path, ...]
    tensors: tuple[TensorInfo, ...]
    quantized: str | None = None  # why the checkpoint is already quantized (None: it is not)
    dequantized: str | None = None  # how its fp8 weights are read as floats (None: it stores floats)

    @cached_property
    def by_name(self) -> dict[str, TensorInfo]:
        return {t.name: t for t in self.tensors}


# --------------------------------------------------------------------------------------------
# Discovery and headers
# --------------------------------------------------------------------------------------------


def open_checkpoint(path: str | Path) -> Checkpoint:
    """Find the safetensors files of ``path`` and parse their headers (no tensor data read).

    GPT-2-style Conv1D weights are marked ``transposed`` (see :func:`_stores_conv1d`).
    Raises :class:`DataError` for a missing path, an unreadable file, a file that is not
    safetensors, a folder without safetensors files (or with several subfolders holding
    checkpoints), a tensor named in two shards, or an index naming a tensor no shard holds.
    """
    path = user_path(path)
    if not exists(path):
        raise DataError(f"checkpoint {path} {does_not_exist(path)}; give a .safetensors file or a folder of them")
    files, weight_map = _checkpoint_files(path)
    tensors: list[TensorInfo] = []
    seen: dict[str, Path] = {}
    for file in files:
        for info in read_header(file):
            if info.name in seen:
                raise DataError(
                    f"checkpoint {path}: tensor '{info.name}' is in both {seen[info.name].name} and "
                    f"{file.name}; pass one of the files"
                )
            seen[info.name] = file
            tensors.append(info)
    _check_index(weight_map, seen)
    config = _config(path, files)
    model_type = config.get("model_type") if isinstance(config, dict) else None
    model_type = model_type if isinstance(model_type, str) else None
    conv1d = _stores_conv1d(model_type, tensors)
    in_out = _experts_in_out(model_type, tensors)
    tensors = [t.model_copy(update={"transposed": True}) if (conv1d and _is_conv1d(t)) or t.name in in_out else t
               for t in tensors]
    tensors = [t.model_copy(update={"kernel": True}) if _is_kernel(t) else t for t in tensors]
    fp8 = fp8_weights(config, tensors)
    if fp8 is not None:
        return Checkpoint(path=path, files=tuple(files), tensors=tuple(fp8.tensors), dequantized=fp8.description)
    return Checkpoint(path=path, files=tuple(files), tensors=tuple(tensors),
                      quantized=quantization_evidence(config, tensors))


# Hugging Face models built on transformers' Conv1D (GPT-2 and its descendants), which stores a
# linear layer's weight as (in, out), transposed from nn.Linear's (out, in).
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer", "clvp"})
_CONV1D_NAME = re.compile(r"(^|\.)(h|layers)\.\d+\.(attn|crossattention|mlp)\.(c_attn|q_attn|c_proj|c_fc)\.weight$")


def _is_conv1d(info: TensorInfo) -> bool:
    return len(info.shape) == 2 and _CONV1D_NAME.search(info.name) is not None


def _is_kernel(info: TensorInfo) -> bool:
    """A 1-D convolution's (out, in, k) kernel (Whisper's and wav2vec2's conv layers, Mamba's
    conv1d): three axes, named as a convolution, not as experts."""
    name = info.name.lower()
    return len(info.shape) == 3 and "conv" in name and "expert" not in name


def _config(path: Path, files: Sequence[Path]) -> dict | None:
    """The Hugging Face ``config.json`` beside the checkpoint (the first naming a model type or a
    quantization), if any can be read."""
    for folder in dict.fromkeys([path if path.is_dir() else path.parent, *(f.parent for f in files)]):
        try:
            text = read_text_file(folder / "config.json", what="model config", error=DataError)
            config = parse_nested(json.loads, text, where="config.json", error=DataError)
        except (DataError, ValueError):
            continue  # no config, or not one we can read: decide from the tensors instead
        if isinstance(config, dict) and config.keys() & {"model_type", "quantization_config", "compression_config"}:
            return config
    return None


# Fused expert weights of a MoE block, stored as one (experts, ., .) tensor without a .weight suffix.
EXPERTS_NAME = re.compile(r"(^|\.)experts\.(gate_up_proj|gate_proj|up_proj|down_proj)$")
_EXPERTS_IN_OUT_TYPES = frozenset({"gpt_oss", "llama4", "llama4_text"})


def _experts_in_out(model_type: str | None, tensors: Sequence[TensorInfo]) -> set[str]:
    """Names of the stacked expert tensors stored (experts, in, out).

    The model type says so when a ``config.json`` names it. Without one, a block's two tensors
    do: ``gate_up_proj`` has twice the outputs that ``down_proj`` takes as inputs, so (E, H, 2I)
    beside (E, I, H) is (experts, in, out) and (E, 2I, H) beside (E, H, I) is (experts, out, in).
    """
    experts = {t.name: t for t in tensors if len(t.shape) == 3 and EXPERTS_NAME.search(t.name)}
    if model_type is not None:
        return set(experts) if model_type in _EXPERTS_IN_OUT_TYPES else set()
    found: set[str] = set()
    for name, t in experts.items():
        if not name.endswith(".gate_up_proj"):
            continue
        down = experts.get(name.removesuffix("gate_up_proj") + "down_proj")
        if down is not None and t.shape[2] == 2 * down.shape[1]:
            found |= {name, down.name}
    return found


def _stores_conv1d(model_type: str | None, tensors: Sequence[TensorInfo]) -> bool:
    """Whether the checkpoint's GPT-2-style layers (``h.N.attn.c_attn`` ...) are Conv1D.

    The model type says so when a ``config.json`` names it. Without one, the shapes do: an
    up-projection (``c_fc``) or fused QKV (``c_attn``) has more outputs than inputs, so it is
    stored (in, out) when its first axis is the shorter. GPTBigCode uses the same names with
    nn.Linear layout, which this tells apart.
    """
    if model_type is not None:
        return model_type in _CONV1D_MODEL_TYPES
    return any(
        _is_conv1d(t) and t.name.endswith((".c_fc.weight", ".c_attn.weight")) and t.shape[0] < t.shape[1]
        for t in tensors
    )


_PICKLED = (".bin", ".pt", ".pth", ".ckpt")  # torch.save's suffixes: never unpickled (a pickle can run code)

_Found = tuple[list[Path], tuple[Path, dict] | None]
"""A checkpoint's weight files, and the index that named them with its weight_map (or None)."""


def _check_index(weight_map: tuple[Path, dict] | None, seen: dict[str, Path]) -> None:
    """Refuse an index whose weight_map names a tensor that none of its shards holds: the
    checkpoint lacks a layer it promises (an interrupted or mixed download), and measuring the
    rest would silently report fewer layers. Tensors a shard holds beyond the map are read, as
    transformers reads every tensor of every shard it loads."""
    if weight_map is None:
        return
    index, mapping = weight_map
    absent = [(name, shard) for name, shard in mapping.items() if name not in seen]
    if absent:
        name, shard = absent[0]
        more = more_likewise(len(absent) - 1, "tensor")
        raise DataError(f"{index}: weight_map puts tensor '{name}' in {shard}, but no shard holds it{more}; "
                        f"the checkpoint is incomplete")


def _index_files(index: Path) -> _Found:
    """The shards a ``model.safetensors.index.json`` names, beside it, and its weight_map."""
    try:
        text = read_text_file(index, what="safetensors index", error=DataError)
        weight_map = parse_nested(json.loads, text, where=str(index), error=DataError)["weight_map"]
        names = sorted(set(weight_map.values()))
        mapping = {str(k): v for k, v in weight_map.items()}
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DataError(f"{index}: not a safetensors index (needs a 'weight_map' object): {exc}") from None
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise DataError(f"{index}: weight_map names a shard {bad[0]!r}; it maps tensor names to shard file names")
    outside = [n for n in names if _leaves_folder(n)]
    if outside:
        raise DataError(f"{index}: weight_map names shard {outside[0]!r}, outside the model folder; shards are "
                        f"read only from the index's own folder, as transformers reads them")
    files = [index.parent / n for n in names]
    missing = [n for n, f in zip(names, files, strict=True) if not f.is_file()]
    if missing:
        # an index may name 10^5 shards: the line names a few, never megabytes of them
        more = f" and {len(missing) - 3:,} more" if len(missing) > 3 else ""
        raise DataError(f"{index} names shards that are missing: {', '.join(missing[:3])}{more}")
    return files, (index, mapping)


def _leaves_folder(name: str) -> bool:
    """Whether a shard name from an index points outside the index's folder: absolute (``/x``,
    ``C:x``, ``\\\\server``) or climbing out with ``..``. A symlink inside the folder is followed
    as the file system follows it."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or PureWindowsPath(name).drive:
        return True
    depth = 0
    for part in pure.parts:
        depth += -1 if part == ".." else part != "."
        if depth < 0:
            return True
    return False


def _hub_snapshot(repo: Path) -> Path:
    """The snapshot of a Hugging Face hub-cache repository folder (``models--org--name``) that
    ``refs/main`` names; the only snapshot when there is no such ref."""
    snapshots = repo / "snapshots"
    ref = repo / "refs" / "main"
    if ref.is_file():
        try:
            with ref.open("rb") as fh:  # a commit hash: 40 hex digits, never a file read whole
                commit = fh.read(256).decode("utf-8", "replace").strip()
        except OSError as exc:
            raise DataError(f"cannot read {ref}: {exc.strerror or exc}") from None
        # a commit hash names a folder in snapshots/, never '../..' or an absolute path elsewhere
        if commit not in ("", ".", "..") and (snapshots / commit).parent == snapshots and (snapshots / commit).is_dir():
            return snapshots / commit
        raise DataError(f"{ref} names snapshot {commit[:80]!r}, which is not in {snapshots}; pass a snapshot folder")
    found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    if len(found) == 1:
        return found[0]
    listed = ", ".join(p.name for p in found[:4]) or "none"
    raise DataError(f"hub cache {repo} has no refs/main and {len(found)} snapshots ({listed}); pass one of them")


def _checkpoint_files(path: Path, *, depth: int = 1) -> _Found:
    """The weight files of a checkpoint path (see :func:`open_checkpoint`), and the index that
    named them."""
    if path.is_file():
        return _index_files(path) if path.name.endswith(".json") else ([path], None)
    if not path.is_dir():
        raise DataError(f"checkpoint {path} is neither a file nor a folder")
    if path.name == "snapshots" and path.parent.name.startswith("models--"):
        path = path.parent
    if path.name.startswith("models--") and (path / "snapshots").is_dir():
        return _checkpoint_files(_hub_snapshot(path), depth=depth)
    latest = path / "latest"
    if latest.is_file():
        # a `uscl train` run folder: its newest complete checkpoint
        try:
            with latest.open("rb") as fh:  # a checkpoint's name, never a file read whole
                step = path / fh.read(256).decode("utf-8", "replace").strip()
        except OSError as exc:
            raise DataError(f"cannot read {latest}: {exc.strerror or exc}") from None
        # only a checkpoint of this run folder, as training resumes from (a `latest` naming
        # '../other-model' or an absolute path would measure weights the user never named)
        if step.name.startswith("step-") and step.parent == path and step.is_dir():
            return _checkpoint_files(step, depth=depth)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return _index_files(index)
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"], None
    # Optimizer moments (a training checkpoint's optimizer.safetensors) are not weights.
    files = sorted(p for p in path.glob("*.safetensors") if p.is_file() and not p.name.startswith("optimizer"))
    if files:
        return files, None
    if depth > 0:
        # A Hugging Face snapshot or a wheel keeps the model one folder down (model/...). A
        # folder of several models (a diffusers pipeline's text_encoder/, unet/, vae/) is
        # ambiguous: measuring the first would silently leave out the others.
        found: dict[Path, _Found] = {}
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            try:
                found[sub] = _checkpoint_files(sub, depth=depth - 1)
            except DataError:
                continue
        if len(found) == 1:
            return next(iter(found.values()))
        if found:
            names = ", ".join(sub.name for sub in found)
            raise DataError(f"folder {path} holds no .safetensors files but {len(found)} subfolders with "
                            f"checkpoints ({names}); pass one of them")
    pickled = sorted(p.name for p in path.iterdir() if p.suffix in _PICKLED and p.is_file())
    if pickled:
        raise DataError(f"no .safetensors files in folder {path}, only pickled PyTorch weights ({', '.join(pickled[:3])}), "
                        f"which uscl does not read; convert them to safetensors")
    raise DataError(f"no .safetensors files in folder {path}")


def checkpoint_name(path: str | Path) -> str:
    """A short name for a checkpoint in titles: ``org/name`` inside a Hugging Face hub cache,
    else the path's last components (a file with its two folders, a folder with its parent)."""
    path = user_path(path)
    for part in reversed(path.parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return "/".join(path.parts[-3:] if path.suffix else path.parts[-2:])
