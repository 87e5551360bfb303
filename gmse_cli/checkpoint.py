"""Reading weight matrices out of safetensors checkpoints, one tensor and a few rows at a time.

A checkpoint is a ``.safetensors`` file, a folder of them (shards, or a Hugging Face model
folder whose ``model.safetensors.index.json`` names the shards), or a ``uscl train`` run
folder (its ``latest`` checkpoint's ``model.safetensors``; optimizer moments are skipped). Nothing is loaded whole: the
JSON header of each file is parsed (the format is a little-endian u64 header length, the
header, then the raw little-endian tensor bytes), and rows are read through a read-only memory
map, so a multi-GB checkpoint costs one chunk of rows of resident memory plus the page cache.
No torch is involved; bf16 and fp8 tensors are decoded with ml_dtypes.

Rows are the last axis: a linear layer stored as ``(out, in)`` (PyTorch's ``nn.Linear``) gives
rows of the input dimension, which is how every format treats a weight matrix. Tensors with
more than two axes (convolutions) are viewed as ``(prod(shape[:-1]), shape[-1])``.

Layer selection (:func:`select_layers`): by default every floating-point weight matrix
(``*.weight``, at least 2-D) except embeddings, norms and the output head. ``include``
patterns, when given, replace that default; ``exclude`` patterns always remove. A pattern is a
shell glob matched against the whole tensor name (``*.mlp.*``), or a regular expression
searched in it when written ``re:PATTERN``.
"""

from __future__ import annotations

import fnmatch
import json
import math
import re
import struct
from collections.abc import Iterator, Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from gmse_cli.errors import DataError

__all__ = [
    "TensorInfo",
    "Checkpoint",
    "open_checkpoint",
    "select_layers",
    "read_rows",
    "iter_row_chunks",
    "read_tensor",
    "matches",
    "DEFAULT_EXCLUDE",
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

DEFAULT_EXCLUDE: tuple[str, ...] = (
    # Embeddings and the output head are not linear layers of the model body (the paper's N
    # counts non-embedding parameters); norms and biases are vectors.
    r"re:(?i)(^|[._])(embed\w*|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|lm_head|embed_out|output_layer)([._]|$)",
    r"re:(?i)(^|[._])(\w*norm\w*|ln_\w+|ln\d*|layernorm\w*)([._]|$)",
    r"re:position_ids|rotary|inv_freq",
)


def _storage_dtype(code: str) -> np.dtype:
    name, _ = _DTYPES[code]
    if name in ("bfloat16", "float8_e4m3fn", "float8_e5m2"):
        import ml_dtypes

        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


class TensorInfo(BaseModel):
    """Where one tensor lives inside a safetensors file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    file: Path
    dtype: str = Field(description="safetensors dtype code: F32, BF16, F16, ...")
    shape: tuple[int, ...]
    offset: int = Field(ge=0, description="absolute byte offset of the data in the file")
    nbytes: int = Field(ge=0)

    @property
    def is_float(self) -> bool:
        return _DTYPES[self.dtype][1]

    @property
    def params(self) -> int:
        return math.prod(self.shape)

    @property
    def row_length(self) -> int:
        return self.shape[-1] if self.shape else 1

    @property
    def rows(self) -> int:
        return self.params // self.row_length if self.row_length else 0


class Checkpoint(BaseModel):
    """Every tensor of a checkpoint (one file or several shards), by name."""

    model_config = ConfigDict(frozen=True, extra="forbid")

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

    Raises :class:`DataError` for a missing path, an unreadable file, a file that is not
    safetensors, a folder without safetensors files, or a tensor named in two shards.
    """
    path = Path(path).expanduser()
    if not path.exists():
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
    return Checkpoint(path=path, files=tuple(files), tensors=tuple(tensors))


def _checkpoint_files(path: Path, *, depth: int = 1) -> list[Path]:
    """The weight files of a checkpoint path (see :func:`open_checkpoint`)."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise DataError(f"checkpoint {path} is neither a file nor a folder")
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
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"{index}: not a safetensors index (needs a 'weight_map' object): {exc}") from None
        files = [path / n for n in names]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{index} names shards that are missing: {', '.join(missing)}")
        return files
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


def _read_header(file: Path) -> list[TensorInfo]:
    """Parse one safetensors header and check every entry against the file's size."""
    try:
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
        header = json.loads(raw.decode("utf-8"))
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
            shape = tuple(int(s) for s in entry["shape"])
            begin, end = (int(v) for v in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{file}: tensor '{name}' has a malformed header entry: {entry!r}") from None
        if code not in _DTYPES:
            # Unknown dtypes (e.g. F8_E8M0, I4) are listed but never measured.
            itemsize = None
        else:
            itemsize = _storage_dtype(code).itemsize
        if any(s < 0 for s in shape) or not 0 <= begin <= end or base + end > size:
            raise DataError(f"{file}: tensor '{name}' lies outside the file (offsets {begin}..{end}); the file is truncated")
        if itemsize is not None and (end - begin) != math.prod(shape) * itemsize:
            raise DataError(
                f"{file}: tensor '{name}' has {end - begin} bytes, but {code} {list(shape)} needs "
                f"{math.prod(shape) * itemsize}"
            )
        infos.append(
            TensorInfo(name=name, file=file, dtype=code, shape=shape, offset=base + begin, nbytes=end - begin)
        )
    infos.sort(key=lambda t: t.offset)
    return infos


# --------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    if pattern.startswith("re:"):
        try:
            return re.compile(pattern[3:])
        except re.error as exc:
            raise DataError(f"layer pattern '{pattern}' is not a valid regular expression: {exc}") from None
    # A glob must match the whole name.
    return re.compile(fnmatch.translate(pattern))


def matches(name: str, patterns: Sequence[str]) -> bool:
    """Whether ``name`` matches any glob (whole name) or ``re:`` regex (searched)."""
    for pattern in patterns:
        compiled = _compile(pattern)
        hit = compiled.search(name) if pattern.startswith("re:") else compiled.fullmatch(name)
        if hit:
            return True
    return False


def _default_layer(info: TensorInfo) -> bool:
    return info.name.endswith("weight") and not matches(info.name, DEFAULT_EXCLUDE)


def select_layers(
    checkpoint: Checkpoint, *, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[TensorInfo]:
    """The weight matrices to measure, in file order.

    Only floating-point tensors with at least two axes are candidates. With no ``include``
    patterns, the default rule picks ``*weight`` tensors that are not embeddings, norms or an
    output head; ``include`` patterns replace the default rule; ``exclude`` always removes.
    Raises :class:`DataError` when nothing is selected, listing a few tensor names.
    """
    for pattern in (*include, *exclude):
        _compile(pattern)  # a bad regex fails before anything is read
    chosen = []
    for info in checkpoint.tensors:
        if info.dtype not in _DTYPES or not info.is_float or len(info.shape) < 2 or info.params == 0:
            continue
        picked = matches(info.name, include) if include else _default_layer(info)
        if picked and not matches(info.name, exclude):
            chosen.append(info)
    if not chosen:
        sample = ", ".join(t.name for t in checkpoint.tensors[:5]) or "none"
        rule = f"--include {' '.join(include)}" if include else "the default rule (linear weights)"
        extra = f" and --exclude {' '.join(exclude)}" if exclude else ""
        raise DataError(
            f"no layers in {checkpoint.path} match {rule}{extra} (tensors include: {sample}); "
            "adjust --include/--exclude"
        )
    return chosen


# --------------------------------------------------------------------------------------------
# Reading rows
# --------------------------------------------------------------------------------------------


def _memmap(info: TensorInfo) -> np.ndarray:
    if info.dtype not in _DTYPES:
        raise DataError(f"tensor '{info.name}' has dtype {info.dtype}, which uscl cannot read")
    dtype = _storage_dtype(info.dtype)
    try:
        return np.memmap(info.file, dtype=dtype, mode="r", offset=info.offset, shape=(info.rows, info.row_length))
    except OSError as exc:
        raise DataError(f"cannot read tensor '{info.name}' from {info.file}: {exc.strerror or exc}") from None


def _as_float32(raw: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy (bf16 and fp8 widen exactly)."""
    return np.ascontiguousarray(raw, dtype=np.float32)


def read_rows(info: TensorInfo, rows: slice | np.ndarray) -> np.ndarray:
    """Rows of ``info`` as float32 ``(k, row_length)``: a slice, or sorted row indices."""
    mm = _memmap(info)
    try:
        return _as_float32(mm[rows])
    finally:
        del mm  # unmap now rather than at garbage collection


def read_tensor(info: TensorInfo) -> np.ndarray:
    """The whole tensor as float32 ``(rows, row_length)`` (for formats with per-tensor scales)."""
    return read_rows(info, slice(None))


def chunk_rows(row_length: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> int:
    """Rows per chunk so a float32 chunk stays within ``chunk_bytes`` (at least one row)."""
    return max(1, chunk_bytes // (4 * row_length))


def iter_row_chunks(
    info: TensorInfo, *, rows: np.ndarray | None = None, chunk_bytes: int = DEFAULT_CHUNK_BYTES
) -> Iterator[np.ndarray]:
    """Float32 chunks of consecutive rows (or of the sorted row indices ``rows``)."""
    step = chunk_rows(info.row_length, chunk_bytes)
    mm = _memmap(info)
    try:
        if rows is None:
            for start in range(0, info.rows, step):
                yield _as_float32(mm[start : start + step])
        else:
            for start in range(0, len(rows), step):
                yield _as_float32(mm[rows[start : start + step]])
    finally:
        del mm
