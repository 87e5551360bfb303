"""One safetensors file: its header, checked the way the safetensors reference checks it, and
its rows, read a block at a time with plain file reads.

The format is a little-endian u64 header length, a JSON header (dtype, shape and data offsets
of each tensor), then the raw little-endian tensor bytes. The tensors' data ranges must cover
the data section from 0 to the end of the file with no overlap, no hole and no trailing bytes,
and each byte count must match its dtype and shape (the reference's ``InvalidOffset`` /
``MetadataIncompleteBuffer``). Rows are decoded to float32 block by block (bf16 and fp8 with
ml_dtypes); a memory map would keep every page it touched resident, plain reads leave the file
to the page cache. Which files make a checkpoint is :mod:`gmse_cli.realmse.checkpoint`'s
business.
"""

from __future__ import annotations

import functools
import json
import math
import stat
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

import numpy as np
from pydantic import Field

from gmse_cli.errors import DataError
from gmse_cli.frozen import Frozen
from gmse_cli.inputs import parse_nested

__all__ = [
    "TensorInfo",
    "read_header",
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
        default=False,
        description="stored (in, out) like GPT-2's Conv1D, or (experts, in, out) like gpt-oss's experts: "
        "measured rows are the stored columns (of each expert)",
    )
    kernel: bool = Field(
        default=False, description="a 1-D convolution's (out, in, k) kernel: one row per output channel over in*k"
    )
    scale: TensorInfo | None = Field(
        default=None, description="an fp8 weight's scale tensor: each value is read as its code times its scale",
    )
    scale_block: tuple[int, int] | None = Field(
        default=None, description="(rows, columns) of the weight that one value of ``scale`` covers",
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
        """The data as a row-major matrix of the bytes on disk: ``(prod(shape[:-1]), shape[-1])``,
        except a convolution's ``(out, in, kh, kw, ...)`` (4 or more axes), which is
        ``(out, prod(shape[1:]))``: one row per output channel over its whole fan-in, as PyTorch's
        per-channel quantization and GPTQ view it (rows of ``kw``, 3 entries, are no group a
        format quantizes), and a 1-D convolution's ``(out, in, k)`` (:attr:`kernel`). Other
        three-axis tensors stay rows of the last: stacked experts' ``(E, out, in)``."""
        whole = len(self.shape) >= 4 or (self.kernel and len(self.shape) == 3)
        cols = math.prod(self.shape[1:]) if whole else (self.shape[-1] if self.shape else 1)
        return (self.params // cols if cols else 0, cols)

    @property
    def row_length(self) -> int:
        return self.shape[-2] if self.transposed else self.stored_shape[1]

    @property
    def rows(self) -> int:
        if self.transposed:
            return self.params // self.shape[-2] if self.shape[-2] else 0
        return self.stored_shape[0]


def _whole(value: object) -> int:
    # A shape or offset is a JSON integer: 64.5 or true is a lie about the layout, never 64 or 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(value)
    return value


def read_header(file: Path) -> list[TensorInfo]:
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
                # torch.save's zip, or a bare pickle: their first 8 bytes read as a length far
                # beyond the limit; a safetensors file cut short (a download) may begin with 0x80 too
                if header_len > _MAX_HEADER_BYTES and head.startswith((b"PK\x03\x04", b"\x80")):
                    raise DataError(f"{file} is a pickle (as torch.save writes PyTorch weights), which uscl never unpickles "
                                    f"(a pickle can run code); convert it to safetensors")
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
        if info.scale is not None:
            _apply_scale(info, out, rows)
    _check_finite(info, out)


def _apply_scale(info: TensorInfo, out: np.ndarray, rows: slice | np.ndarray) -> None:
    """Multiply the rows ``rows`` of an fp8 weight, in ``out``, by their scales: one per
    ``scale_block`` of the weight, the product in float32 as DeepSeek's ``weight_dequant`` and
    compressed-tensors' fp32 path compute it."""
    assert info.scale is not None and info.scale_block is not None and not info.transposed
    block_rows, block_cols = info.scale_block
    grid = read_tensor(info.scale).reshape(-(-info.rows // block_rows), -1)
    wanted = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows
    factors = grid[wanted // block_rows]  # (measured rows, blocks of columns)
    whole = out.shape[1] // block_cols * block_cols
    if whole:
        blocks = out[:, :whole]
        blocks.shape = (len(out), whole // block_cols, block_cols)  # a view, never a copy (raises if not)
        blocks *= factors[:, : whole // block_cols, None]
    if whole < out.shape[1]:  # a last, partial block of columns
        out[:, whole:] *= factors[:, -1:]


@functools.lru_cache(maxsize=4)  # keyed by the fp8 dtypes alone
def _byte_values(dtype: np.dtype) -> np.ndarray:
    """The float32 value of each of a 1-byte float dtype's 256 codes (fp8): decoding by table
    is equal to ml_dtypes' cast, nan codes included, and 2-3x faster."""
    return np.arange(256, dtype=np.uint8).view(dtype).astype(np.float32)


def _store(dst: np.ndarray, block: np.ndarray) -> None:
    """Write stored values ``block`` into float32 ``dst`` (the same shape)."""
    if block.dtype.name.startswith("float8"):
        dst[...] = _byte_values(block.dtype)[block.view(np.uint8)]
    else:
        dst[...] = block


def _fill_blocks(fh: BinaryIO, info: TensorInfo, out: np.ndarray, rows: slice | np.ndarray, chunk_bytes: int) -> None:
    step = chunk_rows(info.stored_shape[1], chunk_bytes)
    if info.transposed:
        # Measured rows are stored columns of each (in, out) plane (one plane for a Conv1D, one
        # per expert for (experts, in, out)): stream the planes the rows lie in, keep the selected
        # columns (each chunk of measured rows reads its planes once more).
        plane, width = info.shape[-2], info.shape[-1]
        wanted = np.arange(rows.start, rows.stop) if isinstance(rows, slice) else rows
        experts = wanted // width
        for e in np.unique(experts):
            mine = np.flatnonzero(experts == e)  # consecutive: the rows are sorted
            at, cols = slice(int(mine[0]), int(mine[-1]) + 1), wanted[mine] - e * width
            for start in range(0, plane, step):
                stop = min(start + step, plane)
                _store(out[at, start:stop], _read_block(fh, info, e * plane + start, e * plane + stop)[:, cols].T)
        return
    done = 0
    for first, last in _runs(rows):
        for start in range(first, last, step):
            stop = min(start + step, last)
            _store(out[done : done + stop - start], _read_block(fh, info, start, stop))
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
