"""A model run on text with the inputs of its linear layers captured (the torch side of
``uscl mse --activations``; :mod:`gmse_cli.realmse.activations` measures what is captured).

Loading is safe and offline by default:

- a local folder only (a Hugging Face model folder, or a ``uscl train`` model folder with its
  ``uscl.json``), read with ``local_files_only`` and the hub switched offline, never a hub id;
- the model class is the ``architectures`` entry of ``config.json`` when transformers ships
  it (else ``AutoModel``); ``trust_remote_code`` is never set, so no code from the folder runs;
- weights from safetensors only: pickled ``.bin`` files load only with ``allow_pickle``,
  because unpickling a file can run code from it.

The model runs in full precision by default (float32; the formats measure what they would do
to these activations). ``compressed_forward`` runs a ``uscl train`` model as it was trained --
its weight and activation formats applied in every linear layer -- so each layer sees the
inputs the compressed model produces (the hooks capture them before the layer's own
activation format).

A forward pre-hook on every selected linear layer (``nn.Linear``, and GPT-2's ``Conv1D``)
hands its input, viewed as ``(tokens, in_features)`` rows, to a callback as
:class:`CapturedRows`; nothing is kept after the callback returns.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from gmse_cli.errors import BackendMissing, DataError, SpecError, bad_value, more_likewise, one_line
from gmse_cli.inputs import exists, parse_nested, read_text_file, user_path
from gmse_cli.spec import Format

__all__ = [
    "DTYPES",
    "LoadedModel",
    "load_model",
    "LinearLayer",
    "linear_layers",
    "RowStats",
    "CapturedRows",
    "capture_inputs",
]

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

_STATS_CHUNK = 2**22  # values per chunk of rows in the statistics (16 MB per float32 array)


@dataclass
class LoadedModel:
    """A model ready to run, and what the measurement needs to know about it."""

    model: nn.Module
    path: Path
    device: torch.device
    forward: Literal["full", "compressed"]
    uscl: dict[str, Any] | None  # a uscl train folder's uscl.json (its formats), else None
    max_positions: int | None  # config.json's max_position_embeddings
    vocab_size: int  # rows of the input embedding: token ids must stay below


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """The Hugging Face hub switched offline while loading (local_files_only does the rest)."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {k: os.environ.get(k) for k in keys}
    os.environ.update(dict.fromkeys(keys, "1"))
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _weight_files(folder: Path) -> tuple[bool, bool]:
    """(has safetensors weights, has pickled .bin weights)."""
    safe = any(folder.glob("*.safetensors")) or (folder / "model.safetensors.index.json").is_file()
    pickled = any(folder.glob("*.bin")) or (folder / "pytorch_model.bin.index.json").is_file()
    return safe, pickled


def _uscl_formats(meta: dict[str, Any]) -> tuple[Format | None, Format | None, Any]:
    from gmse_cli.spec.format import validate_format
    from gmse_cli.training.config import EstimatorConfig

    weights = validate_format(meta["weights"], source="uscl.json weights") if meta.get("weights") else None
    acts = validate_format(meta["activations"], source="uscl.json activations") if meta.get("activations") else None
    return weights, acts, EstimatorConfig.model_validate(meta.get("estimator") or {})


_OUTPUT_ONLY = re.compile(r"(^|\.)(lm_head|embed_out|output_layer|pooler|classifier|score|qa_outputs)\.")


def load_model(
    path: str | Path,
    *,
    device: str = "auto",
    dtype: str = "float32",
    allow_pickle: bool = False,
    compressed_forward: bool = False,
) -> LoadedModel:
    """Load a local model folder for inference (see the module notes for the safety rules).

    Raises :class:`DataError` for a missing folder, no ``config.json``, no safetensors weights
    (without ``allow_pickle``), a model that needs remote code or fails to load, and
    :class:`SpecError` for ``compressed_forward`` on a folder without ``uscl.json``.
    """
    folder = user_path(path)
    if not exists(folder) or not folder.is_dir() or not (folder / "config.json").is_file():
        raise DataError(
            f"model '{path}' is not a local model folder with a config.json (a Hugging Face folder or a "
            "uscl train model folder; hub ids are not fetched)"
        )
    if dtype not in DTYPES:
        raise bad_value(SpecError, "dtype", dtype, f"is not one of {', '.join(DTYPES)}")
    safe, pickled = _weight_files(folder)
    if not safe and not (allow_pickle and pickled):
        hint = (" It has pickled .bin weights, which load only with --allow-pickle-code-execution "
                "(unpickling can run code from the file)." if pickled else "")
        raise DataError(f"model folder {folder} has no .safetensors weights.{hint}")
    meta = None
    if (folder / "uscl.json").is_file():
        try:
            text = read_text_file(folder / "uscl.json", what="model metadata", error=DataError)
            meta = parse_nested(json.loads, text, where=str(folder / "uscl.json"), error=DataError)
        except ValueError as exc:
            raise DataError(f"cannot read {folder / 'uscl.json'}: {exc}") from None
    if compressed_forward and meta is None:
        raise SpecError(f"--compressed-forward runs a uscl train model's own formats; {folder} has no uscl.json")
    # Imported only now: every input is checked first (importing transformers takes seconds).
    try:
        import transformers
    except ImportError:
        raise BackendMissing("measuring activations needs the [train] extra: pip install 'uscl[train]'") from None
    from gmse_cli.training.loop import dist_env, resolve_device

    dev = resolve_device(device, dist_env())
    transformers.utils.logging.disable_progress_bar()
    # its load report (tensors missing, unexpected) is checked below and said in one line
    verbosity = transformers.utils.logging.get_verbosity()
    transformers.utils.logging.set_verbosity_error()
    with _offline():
        try:
            config = transformers.AutoConfig.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
            arch = (getattr(config, "architectures", None) or [None])[0]
            cls = getattr(transformers, arch, None) if arch else None
            if not (isinstance(cls, type) and issubclass(cls, transformers.PreTrainedModel)):
                cls = transformers.AutoModel
            model, loading = cls.from_pretrained(
                folder, config=config, local_files_only=True, trust_remote_code=False,
                use_safetensors=True if not allow_pickle else None, dtype=DTYPES[dtype], output_loading_info=True,
            )
        except ImportError as exc:  # a quantized checkpoint's loader needs a package (accelerate, optimum, ...)
            raise BackendMissing(f"cannot load model folder {folder}: {one_line(exc)[:300]}") from None
        except Exception as exc:  # noqa: BLE001 - a bad folder raises transformers' and huggingface_hub's own classes
            message = one_line(exc)[:300]
            raise DataError(f"cannot load model folder {folder} ({type(exc).__name__}: {message})") from None
        finally:
            transformers.utils.logging.set_verbosity(verbosity)
    # transformers starts a weight the checkpoint lacks from random values and only logs it: the
    # activations would be those of another model. An output head or pooler (a BERT checkpoint
    # saved without its pooler) feeds no other layer: the inputs measured never depend on it.
    missing = sorted(k for k in loading.get("missing_keys") or () if not _OUTPUT_ONLY.search(k))
    if missing:
        more = more_likewise(len(missing) - 1, "tensor")
        raise DataError(f"model folder {folder} lacks tensor '{missing[0]}'{more} that its config's "
                        f"{type(model).__name__} needs; transformers would start it from random values")
    if compressed_forward:
        from gmse_cli.training.model import compress_linears

        weights, acts, estimator = _uscl_formats(meta)
        compress_linears(model, weights=weights, activations=acts, estimator=estimator)
    model.to(dev).eval()
    embed = model.get_input_embeddings()
    return LoadedModel(
        model=model, path=folder, device=dev, forward="compressed" if compressed_forward else "full",
        uscl=meta, max_positions=getattr(config, "max_position_embeddings", None),
        vocab_size=int(embed.num_embeddings) if embed is not None else 2**63 - 1,
    )


@dataclass(frozen=True)
class LinearLayer:
    """A linear layer of a model: its module name, input width and weight parameters."""

    name: str
    module: nn.Module
    in_features: int
    params: int


def linear_layers(model: nn.Module) -> list[LinearLayer]:
    """Every ``nn.Linear`` and transformers ``Conv1D`` (GPT-2, weight stored (in, out)), in
    module order."""
    found = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            found.append(LinearLayer(name, module, module.in_features, module.weight.numel()))
        elif type(module).__name__ == "Conv1D" and getattr(module, "weight", None) is not None:
            found.append(LinearLayer(name, module, module.weight.shape[0], module.weight.numel()))
    return found


@dataclass(frozen=True)
class RowStats:
    """Per-row statistics of captured rows (float64 numpy arrays, one value per row)."""

    mean_square: np.ndarray  # mean of x^2 (0: an all-zero row)
    crest: np.ndarray  # max |x| / RMS (nan for a zero row)
    kurtosis: np.ndarray  # Pearson kurtosis about the row's mean, 3 for a Gaussian (nan: constant row)


def _stats(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean square, max|x| / RMS, kurtosis) of each row of float32 ``v``."""
    ms = (v * v).mean(dim=1)
    z = v * torch.rsqrt(ms).nan_to_num(0.0, posinf=0.0)[:, None]  # unit RMS: z^4 cannot overflow
    c = z - z.mean(dim=1, keepdim=True)
    c2 = c * c
    m2 = c2.mean(dim=1)
    crest = torch.where(ms > 0, z.abs().amax(dim=1), torch.nan)
    return ms, crest, (c2 * c2).mean(dim=1) / (m2 * m2)


@functools.lru_cache(maxsize=8)
def _hadamard_matrix(block: int, device: torch.device) -> torch.Tensor:
    """The orthonormal Sylvester Hadamard matrix (symmetric), on ``device``.

    The statistics rotate every captured row, so they use one GEMM against this matrix rather
    than :func:`hadamard_torch`'s log2(block) butterfly passes (the same transform up to float
    rounding; 5x faster on a CPU, and a tensor-core GEMM on a GPU).
    """
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < block:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
    return (h / math.sqrt(block)).to(device=device, dtype=torch.float32)


class CapturedRows:
    """The input of one linear layer in one forward pass, as ``(tokens, in_features)`` rows,
    still on the model's device; valid only during the callback."""

    def __init__(self, x: torch.Tensor) -> None:
        self._source = x
        self._x = x.reshape(-1, x.shape[-1])  # (batch * tokens, in_features)

    @property
    def count(self) -> int:
        return int(self._x.shape[0])

    @property
    def row_length(self) -> int:
        return int(self._x.shape[1])

    def same_input(self, other: CapturedRows | None) -> bool:
        """Whether ``other`` captured the very same tensor (q, k and v share one input). While
        ``other`` is held its tensor stays alive, so no new tensor can take its memory."""
        return other is not None and other._source is self._source

    def statistics(self, block: int | None = None) -> RowStats:
        """Per-row statistics, of the rows turned by an orthonormal ``block`` Hadamard rotation
        first when given (the row length must be a multiple of it). Computed on the device in
        float32 over rows scaled to unit RMS, a chunk of rows at a time."""
        step = max(1, _STATS_CHUNK // max(1, self.row_length))
        parts = []
        for start in range(0, self.count, step):
            v = self._x[start : start + step].float()
            if block is not None:
                rows = v.shape[0]
                v = (v.reshape(-1, block) @ _hadamard_matrix(block, v.device)).reshape(rows, -1)
            parts.append(_stats(v))
        ms, crest, kurt = (torch.cat(p).double().cpu().numpy() for p in zip(*parts, strict=True))
        return RowStats(mean_square=ms, crest=crest, kurtosis=kurt)

    def take(self, rows: np.ndarray) -> np.ndarray:
        """The rows at the given local indices as a float32 numpy array (copied to the host)."""
        index = torch.as_tensor(rows, dtype=torch.long, device=self._x.device)
        return np.ascontiguousarray(self._x.index_select(0, index).float().cpu().numpy())

    def numpy(self) -> np.ndarray:
        """Every row as a float32 numpy array (copied to the host)."""
        return np.ascontiguousarray(self._x.float().cpu().numpy())


def capture_inputs(
    loaded: LoadedModel,
    windows: np.ndarray,
    layers: Sequence[LinearLayer],
    on_input: Callable[[int, CapturedRows], None],
    *,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> None:
    """Run the model over ``windows`` (int64 ``(count, length)`` token ids), ``batch_size``
    windows per forward pass, calling ``on_input(i, rows)`` each time ``layers[i]`` runs.

    Only the model's body runs (``base_model``: no output head, whose logits over a large
    vocabulary cost more memory than everything else) unless a selected layer lies outside it.
    ``on_batch(windows done)`` follows each forward pass. Raises :class:`DataError` when the
    model cannot run on token ids alone (an encoder-decoder, for example).
    """
    model = loaded.model
    base = getattr(model, "base_model", model)
    inside = {id(m) for m in base.modules()}
    runner = base if all(id(layer.module) in inside for layer in layers) else model
    handles = []

    def hook_for(i: int):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            x = args[0] if args else next(iter(kwargs.values()))
            on_input(i, CapturedRows(x))

        return hook

    try:
        for i, layer in enumerate(layers):
            handles.append(layer.module.register_forward_pre_hook(hook_for(i), with_kwargs=True))
        with torch.inference_mode():
            for start in range(0, len(windows), batch_size):
                ids = torch.from_numpy(np.ascontiguousarray(windows[start : start + batch_size])).to(loaded.device)
                try:
                    runner(input_ids=ids)
                except (TypeError, ValueError) as exc:
                    message = one_line(exc)[:200]
                    raise DataError(
                        f"model {loaded.path} does not run on token ids alone ({type(exc).__name__}: {message})"
                    ) from None
                if on_batch is not None:
                    on_batch(min(start + batch_size, len(windows)))
    finally:
        for handle in handles:
            handle.remove()
