"""Reading weight matrices out of safetensors checkpoints, one tensor and a few rows at a time.

A checkpoint is a ``.safetensors`` file, a sharded model's ``model.safetensors.index.json``, a
folder of them (shards, or a Hugging Face model folder whose index names the shards), a Hugging
Face hub-cache folder (``models--org--name``: the snapshot ``refs/main`` names, or one of its
``snapshots/<commit>`` folders), or a ``uscl train`` run folder (its ``latest`` checkpoint's
``model.safetensors``; optimizer moments are skipped). Nothing is loaded whole: the
JSON header of each file is parsed (the format is a little-endian u64 header length, the
header, then the raw little-endian tensor bytes), and rows are read with plain file reads, a
block of at most one chunk at a time, decoded to float32 block by block. A memory map would
keep every page it touched resident until unmapped (a 1 GB tensor read through one counts
1 GB); reads leave the file to the page cache, so a multi-GB checkpoint costs a chunk of rows
of resident memory. No torch is involved; bf16 and fp8 tensors are decoded with ml_dtypes.

Rows are the last axis: a linear layer stored as ``(out, in)`` (PyTorch's ``nn.Linear``) gives
rows of the input dimension, one per output channel, which is how every format treats a weight
matrix. Tensors with more than two axes (convolutions) are viewed as
``(prod(shape[:-1]), shape[-1])``. GPT-2-style checkpoints store their linear layers with
transformers' ``Conv1D`` as ``(in, out)``; those tensors (:func:`open_checkpoint` finds them
from ``config.json``'s ``model_type`` or, without one, from their names and shapes) are read
transposed, so their rows are output channels too.

Which tensors are measured is :mod:`gmse_cli.realmse.layers`' business.
"""

from __future__ import annotations

import json
import math
import re
import stat
import struct
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import BinaryIO

import numpy as np
from pydantic import Field

from gmse_cli.errors import DataError
from gmse_cli.frozen import Frozen
from gmse_cli.inputs import exists, parse_nested, read_text_file

__all__ = [
    "TensorInfo",
    "Checkpoint",
    "open_checkpoint",
    "checkpoint_name",
    "read_rows",
    "iter_row_chunks",
    "read_tensor",
    "chunk_rows",
    "DEFAULT_CHUNK_BYTES",
]

DEFAULT_CHUNK_BYTES = 32 * 2**20
"""Float32 bytes per chunk of rows handed to a compressor (the resident-memory unit)."""

_MAX_HEADER_BYTES = 100 * 2**20  # the safetensors reference reader's own limit

# safetensors dtype code -> (numpy storage dtype, is floating point)
_DTYPES: dict[str, tuple[str, bool]] = {
    "F64": ("<f8", True),
    "F32": ("<f4", True),
    "F16": ("<f2", True),
    "BF16": ("bfloat16", True),
    "F8_E4M3": ("float8_e4m3fn", True),
    "F8_E5M2": ("float8_e5m2", True),
    "I64": ("<i8", False),
    "I32": ("<i4", False),
    "I16": ("<i2", False),
    "I8": ("i1", False),
    "U64": ("<u8", False),
    "U32": ("<u4", False),
    "U16": ("<u2", False),
    "U8": ("u1", False),
    "BOOL": ("?", False),
}


# Bits per element of the dtypes the safetensors reference reader knows but uscl cannot decode:
# such tensors are listed, never measured, and their byte counts are checked as the reference
# checks them.
_OTHER_BITS: dict[str, int] = {"F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "C64": 64}


def _storage_dtype(code: str) -> np.dtype:
    name, _ = _DTYPES[code]
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


class TensorInfo(Frozen):
    """Where one tensor lives inside a safetensors file."""

    name: str
    file: Path
    dtype: str = Field(description="safetensors dtype code: F32, BF16, F16, ...")
    shape: tuple[int, ...]
    offset: int = Field(ge=0, description="absolute byte offset of the data in the file")
    nbytes: int = Field(ge=0)
    transposed: bool = Field(
        default=False, description="stored (in, out) like GPT-2's Conv1D: measured rows are the stored columns"
    )

    @property
    def readable(self) -> bool:
        """Whether uscl can decode this dtype (others are listed but never measured)."""
        return self.dtype in _DTYPES

    @property
    def is_float(self) -> bool:
        return _DTYPES[self.dtype][1]

    @property
    def params(self) -> int:
        return math.prod(self.shape)

    @property
    def stored_shape(self) -> tuple[int, int]:
        """The data as the row-major matrix it is on disk: ``(prod(shape[:-1]), shape[-1])``."""
        cols = self.shape[-1] if self.shape else 1
        return (self.params // cols if cols else 0, cols)

    @property
    def row_length(self) -> int:
        return self.stored_shape[0 if self.transposed else 1]

    @property
    def rows(self) -> int:
        return self.stored_shape[1 if self.transposed else 0]


class Checkpoint(Frozen):
    """Every tensor of a checkpoint (one file or several shards), by name."""

    path: Path
    files: tuple[Path, ...]
    tensors: tuple[TensorInfo, ...]

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
    safetensors, a folder without safetensors files, or a tensor named in two shards.
    """
    path = Path(path).expanduser()
    if not exists(path):
        raise DataError(f"checkpoint {path} does not exist; give a .safetensors file or a folder of them")
    files = _checkpoint_files(path)
    tensors: list[TensorInfo] = []
    seen: dict[str, Path] = {}
    for file in files:
        for info in _read_header(file):
            if info.name in seen:
                raise DataError(
                    f"checkpoint {path}: tensor '{info.name}' is in both {seen[info.name].name} and "
                    f"{file.name}; pass one of the files"
                )
            seen[info.name] = file
            tensors.append(info)
    if _stores_conv1d(path, files, tensors):
        tensors = [t.model_copy(update={"transposed": True}) if _is_conv1d(t) else t for t in tensors]
    return Checkpoint(path=path, files=tuple(files), tensors=tuple(tensors))


# Hugging Face models built on transformers' Conv1D (GPT-2 and its descendants), which stores a
# linear layer's weight as (in, out), transposed from nn.Linear's (out, in).
_CONV1D_MODEL_TYPES = frozenset({"gpt2", "openai-gpt", "imagegpt", "decision_transformer", "clvp"})
_CONV1D_NAME = re.compile(r"(^|\.)(h|layers)\.\d+\.(attn|crossattention|mlp)\.(c_attn|q_attn|c_proj|c_fc)\.weight$")


def _is_conv1d(info: TensorInfo) -> bool:
    return len(info.shape) == 2 and _CONV1D_NAME.search(info.name) is not None


def _model_type(path: Path, files: Sequence[Path]) -> str | None:
    """``model_type`` of the Hugging Face ``config.json`` beside the checkpoint, if any."""
    for folder in dict.fromkeys([path if path.is_dir() else path.parent, *(f.parent for f in files)]):
        try:
            text = read_text_file(folder / "config.json", what="model config", error=DataError)
            config = parse_nested(json.loads, text, where="config.json", error=DataError)
        except (DataError, ValueError):
            continue  # no config, or not one we can read: decide from the tensors instead
        if isinstance(config, dict) and isinstance(config.get("model_type"), str):
            return config["model_type"]
    return None


def _stores_conv1d(path: Path, files: Sequence[Path], tensors: Sequence[TensorInfo]) -> bool:
    """Whether the checkpoint's GPT-2-style layers (``h.N.attn.c_attn`` ...) are Conv1D.

    The model type says so when a ``config.json`` names it. Without one, the shapes do: an
    up-projection (``c_fc``) or fused QKV (``c_attn``) has more outputs than inputs, so it is
    stored (in, out) when its first axis is the shorter. GPTBigCode uses the same names with
    nn.Linear layout, which this tells apart.
    """
    model_type = _model_type(path, files)
    if model_type is not None:
        return model_type in _CONV1D_MODEL_TYPES
    return any(
        _is_conv1d(t) and t.name.endswith((".c_fc.weight", ".c_attn.weight")) and t.shape[0] < t.shape[1]
        for t in tensors
    )


def _index_files(index: Path) -> list[Path]:
    """The shards a ``model.safetensors.index.json`` names, beside it."""
    try:
        text = read_text_file(index, what="safetensors index", error=DataError)
        weight_map = parse_nested(json.loads, text, where=str(index), error=DataError)["weight_map"]
        names = sorted(set(weight_map.values()))
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
        raise DataError(f"{index} names shards that are missing: {', '.join(missing)}")
    return files


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
            commit = ref.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DataError(f"cannot read {ref}: {exc.strerror or exc}") from None
        if (snapshots / commit).is_dir():
            return snapshots / commit
        raise DataError(f"{ref} names snapshot {commit}, which is not in {snapshots}; pass a snapshot folder")
    found = sorted(p for p in snapshots.iterdir() if p.is_dir()) if snapshots.is_dir() else []
    if len(found) == 1:
        return found[0]
    listed = ", ".join(p.name for p in found[:4]) or "none"
    raise DataError(f"hub cache {repo} has no refs/main and {len(found)} snapshots ({listed}); pass one of them")


def _checkpoint_files(path: Path, *, depth: int = 1) -> list[Path]:
    """The weight files of a checkpoint path (see :func:`open_checkpoint`)."""
    if path.is_file():
        return _index_files(path) if path.name.endswith(".json") else [path]
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
            step = path / latest.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise DataError(f"cannot read {latest}: {exc.strerror or exc}") from None
        if step.is_dir():
            return _checkpoint_files(step, depth=depth)
    index = path / "model.safetensors.index.json"
    if index.is_file():
        return _index_files(index)
    if (path / "model.safetensors").is_file():
        return [path / "model.safetensors"]
    # Optimizer moments (a training checkpoint's optimizer.safetensors) are not weights.
    files = sorted(p for p in path.glob("*.safetensors") if p.is_file() and not p.name.startswith("optimizer"))
    if files:
        return files
    if depth > 0:
        # A Hugging Face snapshot or a wheel keeps the model one folder down (model/...).
        for sub in sorted(p for p in path.iterdir() if p.is_dir()):
            try:
                return _checkpoint_files(sub, depth=depth - 1)
            except DataError:
                continue
    raise DataError(f"no .safetensors files in folder {path}")


def checkpoint_name(path: str | Path) -> str:
    """A short name for a checkpoint in titles: ``org/name`` inside a Hugging Face hub cache,
    else the path's last components (a file with its two folders, a folder with its parent)."""
    path = Path(path).expanduser()
    for part in reversed(path.parts):
        if part.startswith("models--"):
            return part.removeprefix("models--").replace("--", "/")
    return "/".join(path.parts[-3:] if path.suffix else path.parts[-2:])


def _whole(value: object) -> int:
    # A shape or offset is a JSON integer: 64.5 or true is a lie about the layout, never 64 or 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def _read_header(file: Path) -> list[TensorInfo]:
    """Parse one safetensors header and check every entry against the file's size."""
    try:
        if not stat.S_ISREG(file.stat().st_mode):  # a FIFO or /dev/zero may never end
            raise DataError(f"cannot read checkpoint file {file}: not a regular file (a pipe or a device)")
        with file.open("rb") as fh:
            head = fh.read(8)
            size = file.stat().st_size
            if len(head) < 8:
                raise DataError(f"{file} is not a safetensors file (only {len(head)} bytes)")
            (header_len,) = struct.unpack("<Q", head)
            if header_len > _MAX_HEADER_BYTES or 8 + header_len > size:
                raise DataError(
                    f"{file} is not a safetensors file (header length {header_len} does not fit its {size} bytes)"
                )
            raw = fh.read(header_len)
    except OSError as exc:
        raise DataError(f"cannot read checkpoint file {file}: {exc.strerror or exc}") from None
    try:
        header = parse_nested(json.loads, raw.decode("utf-8"), where=str(file), error=DataError)
    except (UnicodeDecodeError, ValueError):
        raise DataError(f"{file} is not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise DataError(f"{file} is not a safetensors file (its header is not a JSON object)")
    base = 8 + header_len
    infos: list[TensorInfo] = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            code = entry["dtype"]
            shape = tuple(_whole(s) for s in entry["shape"])
            begin, end = (_whole(v) for v in entry["data_offsets"])
            if not isinstance(code, str):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{file}: tensor '{name}' has a malformed header entry (shape, dtype or offsets): "
                            f"{str(entry)[:200]}") from None
        # Dtypes unknown to uscl (e.g. F8_E8M0, I4) are listed but never measured.
        bits = 8 * _storage_dtype(code).itemsize if code in _DTYPES else _OTHER_BITS.get(code)
        if any(s < 0 for s in shape):
            raise DataError(f"{file}: tensor '{name}' has a negative dimension in its shape {list(shape)}")
        if not 0 <= begin <= end or base + end > size:
            raise DataError(f"{file}: tensor '{name}' lies outside the file (offsets {begin}..{end}); the file is truncated")
        if bits is not None and 8 * (end - begin) != math.prod(shape) * bits:
            raise DataError(
                f"{file}: tensor '{name}' has {end - begin} bytes, but {code} {list(shape)} needs "
                f"{math.prod(shape) * bits / 8:g}"
            )
        infos.append(
            TensorInfo(name=name, file=file, dtype=code, shape=shape, offset=base + begin, nbytes=end - begin)
        )
    infos.sort(key=lambda t: (t.offset, t.nbytes))
    _check_layout(file, infos, base, size)
    return infos


def _check_layout(file: Path, infos: Sequence[TensorInfo], base: int, size: int) -> None:
    """Raise :class:`DataError` unless the tensors' data, in ``infos``' order (by begin, then
    end offset), tile the bytes from ``base`` to the end of the file exactly.

    This is the safetensors reference reader's rule (its ``InvalidOffset`` and
    ``MetadataIncompleteBuffer``): two tensors sharing bytes would measure one tensor on the
    other's data, and bytes that belong to no tensor (a hole, data not starting at 0, a tail)
    mean the header does not describe the file.
    """
    at, prev = 0, None
    for info in infos:
        begin = info.offset - base
        if begin < at:
            assert prev is not None
            raise DataError(f"{file}: tensors '{prev.name}' and '{info.name}' overlap in the file (their data "
                            f"offsets share bytes); the header is corrupt")
        if begin > at:
            after = f"tensor '{prev.name}' ends at {at}" if prev is not None else "the data starts at 0"
            raise DataError(f"{file}: tensor '{info.name}' begins at data offset {begin}, but {after}: "
                            f"{begin - at} bytes belong to no tensor; the header is corrupt")
        at, prev = begin + info.nbytes, info
    if base + at != size:
        where = f"after tensor '{prev.name}' (data offset {at})" if prev is not None else "after a header naming no tensor"
        raise DataError(f"{file}: {size - base - at} bytes {where} belong to no tensor; a safetensors file "
                        f"ends with its last tensor's data")


# --------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------


def _open(info: TensorInfo) -> BinaryIO:
    if info.dtype not in _DTYPES:
        raise DataError(f"tensor '{info.name}' has dtype {info.dtype}, which uscl cannot read")
    try:
        return info.file.open("rb", buffering=0)
    except OSError as exc:
        raise DataError(f"cannot read tensor '{info.name}' from {info.file}: {exc.strerror or exc}") from None


def _read_block(fh: BinaryIO, info: TensorInfo, start: int, stop: int) -> np.ndarray:
    """Stored rows ``[start, stop)`` of ``info`` (see :attr:`TensorInfo.stored_shape`), as stored."""
    dtype = _storage_dtype(info.dtype)
    block = np.empty((stop - start, info.stored_shape[1]), dtype=dtype)
    view = memoryview(block.reshape(-1).view(np.uint8))
    done = 0
    try:
        fh.seek(info.offset + start * info.stored_shape[1] * dtype.itemsize)
        while done < len(view):  # a read may return fewer bytes than asked
            n = fh.readinto(view[done:])
            if not n:
                raise DataError(f"{info.file} ended inside tensor '{info.name}'; the file changed or is truncated")
            done += n
    except OSError as exc:
        raise DataError(f"cannot read tensor '{info.name}' from {info.file}: {exc.strerror or exc}") from None
    return block


def _runs(rows: slice | np.ndarray) -> list[tuple[int, int]]:
    """``(first, stop)`` of each run of consecutive rows in a step-1 slice or sorted indices."""
    if isinstance(rows, slice):
        return [(rows.start, rows.stop)] if rows.stop > rows.start else []
    breaks = np.flatnonzero(np.diff(rows) != 1) + 1
    return [(int(run[0]), int(run[-1]) + 1) for run in np.split(rows, breaks) if len(run)]


def _fill(fh: BinaryIO, info: TensorInfo, out: np.ndarray, rows: slice | np.ndarray, chunk_bytes: int) -> None:
    """Write the measured rows ``rows`` (a step-1 slice or sorted indices) into float32 ``out``,
    reading at most ``chunk_bytes`` of float32-sized stored rows at a time."""
    # An F64 value beyond float32's range casts to inf, which _check_finite reports.
    with np.errstate(over="ignore"):
        _fill_blocks(fh, info, out, rows, chunk_bytes)
    _check_finite(info, out)


def _fill_blocks(fh: BinaryIO, info: TensorInfo, out: np.ndarray, rows: slice | np.ndarray, chunk_bytes: int) -> None:
    step = chunk_rows(info.stored_shape[1], chunk_bytes)
    if info.transposed:
        # Measured rows are stored columns: stream the stored rows, keep the selected columns
        # (each chunk of measured rows reads the tensor once more; Conv1D layers are GPT-2 sized).
        for start in range(0, info.stored_shape[0], step):
            stop = min(start + step, info.stored_shape[0])
            out[:, start:stop] = _read_block(fh, info, start, stop)[:, rows].T
        return
    done = 0
    for first, last in _runs(rows):
        for start in range(first, last, step):
            stop = min(start + step, last)
            out[done : done + stop - start] = _read_block(fh, info, start, stop)
            done += stop - start


def _check_finite(info: TensorInfo, values: np.ndarray) -> None:
    """Raise :class:`DataError` naming the tensor if it holds nan or inf: no MSE is defined.

    A float64 sum of float32 values cannot overflow, so it is finite exactly when every value
    is, at no extra memory."""
    with np.errstate(invalid="ignore"):  # inf + -inf: the error below says it
        total = float(values.sum(dtype=np.float64)) if values.size else 0.0
    if not math.isfinite(total):
        beyond = " (or F64 values beyond float32's range, which uscl measures in)" if info.dtype == "F64" else ""
        raise DataError(f"tensor '{info.name}' in {info.file} holds nan or inf values{beyond}; its MSE is undefined")


def _row_selection(info: TensorInfo, rows: slice | np.ndarray) -> slice | np.ndarray:
    """``rows`` as a step-1 slice or sorted in-range indices."""
    if isinstance(rows, slice):
        start, stop, step = rows.indices(info.rows)
        return slice(start, max(start, stop)) if step == 1 else np.arange(start, stop, step)
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and (rows[0] < 0 or rows[-1] >= info.rows or np.any(np.diff(rows) < 0)):
        raise IndexError(f"row indices of '{info.name}' must be sorted and within 0..{info.rows - 1}")
    return rows


def _count(rows: slice | np.ndarray) -> int:
    return rows.stop - rows.start if isinstance(rows, slice) else len(rows)


def read_rows(info: TensorInfo, rows: slice | np.ndarray, *, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> np.ndarray:
    """Rows of ``info`` as one float32 ``(k, row_length)`` array: a slice, or sorted row indices.

    The array is filled a block of stored rows at a time, so reading costs the result plus
    one block of ``chunk_bytes``, never a second copy of the tensor.
    """
    rows = _row_selection(info, rows)
    out = np.empty((_count(rows), info.row_length), dtype=np.float32)
    with _open(info) as fh:
        _fill(fh, info, out, rows, chunk_bytes)
    return out


def read_tensor(info: TensorInfo) -> np.ndarray:
    """The whole tensor as float32 ``(rows, row_length)`` (for formats with per-tensor scales)."""
    return read_rows(info, slice(None))


def chunk_rows(row_length: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so a float32 chunk stays within ``chunk_bytes`` (at least one row)."""
    return max(1, chunk_bytes // (4 * row_length))


def iter_row_chunks(
    info: TensorInfo, *, rows: np.ndarray | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[np.ndarray]:
    """Float32 chunks of consecutive rows (or of the sorted row indices ``rows``), each of at
    most ``chunk_bytes``; each is a fresh array, read when the iteration reaches it."""
    step = chunk_rows(info.row_length, chunk_bytes)
    selection = _row_selection(info, slice(None) if rows is None else rows)
    with _open(info) as fh:
        for start in range(0, _count(selection), step):
            if isinstance(selection, slice):
                piece = slice(start, min(start + step, info.rows))
            else:
                piece = selection[start : start + step]
            out = np.empty((_count(piece), info.row_length), dtype=np.float32)
            _fill(fh, info, out, piece, chunk_bytes)
            yield out
