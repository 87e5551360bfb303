"""What is measured: which tensors of a checkpoint, which of their rows, and in what pieces.

Layer selection (:func:`select_layers`): by default every floating-point weight matrix
(``*.weight``, at least 2-D, and stacked MoE experts' ``experts.gate_up_proj`` /
``experts.down_proj``) except embeddings, norms and the output head. ``include``
patterns, when given, replace that default; ``exclude`` patterns always remove. A pattern is a
shell glob matched against the whole tensor name (``*.mlp.*``), or a regular expression
searched in it when written ``re:PATTERN``.

Row sampling (:func:`sample_rows`, ``--sample``) and streaming (:func:`locality`): a format
whose stages act on each row alone streams a layer in chunks of rows; one with a per-tensor
second-level scale takes two passes; any other per-tensor statistic needs the whole tensor.
"""

from __future__ import annotations

import fnmatch
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

from gmse_cli.errors import DataError, more_likewise
from gmse_cli.realmse.checkpoint import EXPERTS_NAME, Checkpoint
from gmse_cli.realmse.tensorfile import TensorInfo, iter_row_chunks
from gmse_cli.spec import VQ, Format, Quantize, ScaleFormat, Sparsify

__all__ = [
    "DEFAULT_EXCLUDE",
    "VISION_ENCODER",
    "matches",
    "model_order",
    "layer_kind",
    "select_layers",
    "checkpoint_notes",
    "Locality",
    "locality",
    "row_local",
    "RowSample",
    "stratified_rows",
    "sample_rows",
]

# A vision-language model's image encoder and projector (LLaVA's and Gemma 3's vision_tower and
# multi_modal_projector, Qwen2-VL's visual, Llama 3.2 Vision's and Idefics3's vision_model,
# Phi-3-vision's vision_embed_tokens): deployments quantize the language model and keep these in
# bf16 (llm-compressor's VLM recipes ignore them), and the law is fitted to language models.
# The default rule leaves them out beside a language model (a vision model alone, CLIP's or
# SigLIP's tower, is measured); --include measures them.
VISION_ENCODER = r"re:(^|\.)(vision_tower|vision_model|visual|multi_modal_projector|mm_projector|vision_embed_tokens)\."

DEFAULT_EXCLUDE: tuple[str, ...] = (
    # Embeddings and the output head are not linear layers of the model body (the paper's N
    # counts non-embedding parameters); norms and biases are vectors.
    r"re:(?i)(^|[._])(embed\w*|wte|wpe|word_embeddings|position_embeddings|token_type_embeddings|lm_head|embed_out|output_layer)([._]|$)",
    r"re:(?i)(^|[._])(\w*norm\w*|ln_\w+|ln\d*|layernorm\w*)([._]|$)",
    r"re:position_ids|rotary|inv_freq",
    # A MoE router (Mixtral's block_sparse_moe.gate, Qwen's and DeepSeek's mlp.gate, gpt-oss's and
    # Llama 4's router) stays in full precision in GPTQ/compressed-tensors recipes and vLLM.
    r"re:(^|\.)(gate|router|shared_expert_gate)(\.weight)?$",
)

Locality = Literal["rows", "two-pass", "tensor"]


# --------------------------------------------------------------------------------------------
# Layers
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


def model_order(name: str) -> tuple[tuple[int, int, str], ...]:
    """Sort key for tensor names in model order: numbers compare as numbers, so
    ``layer.2`` comes before ``layer.10`` (files store names alphabetically)."""
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", name) if part)


def layer_kind(name: str) -> str:
    """The name with its block numbers as ``*`` (``layers.3.mlp.weight`` -> ``layers.*.mlp.weight``):
    one glob for the same layer in every block."""
    return re.sub(r"(?<=\.)\d+(?=\.)", "*", name)


def _default_layer(info: TensorInfo) -> bool:
    # gpt-oss, Llama 4 and transformers' fused Mixtral/Qwen experts name their (experts, ., .)
    # weights without a .weight suffix; they hold most of a MoE model's parameters.
    named = info.name.endswith("weight") or (len(info.shape) == 3 and EXPERTS_NAME.search(info.name) is not None)
    return named and not matches(info.name, DEFAULT_EXCLUDE)


def select_layers(
    checkpoint: Checkpoint, *, include: Sequence[str] = (), exclude: Sequence[str] = ()
) -> list[TensorInfo]:
    """The weight matrices to measure, in file order.

    Only floating-point tensors with at least two axes are candidates. With no ``include``
    patterns, the default rule picks ``*weight`` tensors that are not embeddings, norms or an
    output head; ``include`` patterns replace the default rule; ``exclude`` always removes.
    Raises :class:`DataError` when nothing is selected, listing a few tensor names, and for an
    already-quantized checkpoint (its packed codes are not weights; the layers it left in
    floating point are not the model).
    """
    for pattern in (*include, *exclude):
        _compile(pattern)  # a bad regex fails before anything is read
    if checkpoint.quantized is not None:
        raise DataError(f"checkpoint {checkpoint.path} is already quantized ({checkpoint.quantized}): uscl measures "
                        f"the error of quantizing floating-point weights; give it the original, unquantized model")
    chosen = []
    vision = {t.name for t in _vision_left_out(checkpoint, include)}
    for info in checkpoint.tensors:
        if not _matrix(info) or info.name in vision:
            continue
        picked = matches(info.name, include) if include else _default_layer(info)
        if picked and not matches(info.name, exclude):
            chosen.append(info)
    if not chosen:
        rule = f"--include {' '.join(include)}" if include else "the default rule (linear weights)"
        extra = f" and --exclude {' '.join(exclude)}" if exclude else ""
        hint = _dtype_hint(checkpoint, include, exclude) or _layer_hint(checkpoint)
        raise DataError(f"no layers in {checkpoint.path} match {rule}{extra}; {hint}")
    return chosen


def _matrix(info: TensorInfo) -> bool:
    """A floating-point tensor of at least two axes that uscl can read: a candidate layer."""
    return info.readable and info.is_float and len(info.shape) >= 2 and info.params > 0


def _vision_left_out(checkpoint: Checkpoint, include: Sequence[str]) -> list[TensorInfo]:
    """The default rule's layers that are a vision-language model's image encoder
    (:data:`VISION_ENCODER`), left out when the checkpoint has other layers; none with
    ``include`` patterns, which replace the rule."""
    if include:
        return []
    layers = [t for t in checkpoint.tensors if _matrix(t) and _default_layer(t)]
    vision = [t for t in layers if matches(t.name, (VISION_ENCODER,))]
    return vision if len(vision) < len(layers) else []


def checkpoint_notes(checkpoint: Checkpoint, include: Sequence[str] = ()) -> list[str]:
    """One-line notes on how a checkpoint is read: its fp8 weights dequantized, and the default
    rule leaving out a vision-language model's image encoder."""
    notes = [f"checkpoint {checkpoint.path}: {checkpoint.dequantized}"] if checkpoint.dequantized else []
    vision = _vision_left_out(checkpoint, include)
    if vision:
        notes.append(f"left out {len(vision)} weight matrices of the vision encoder ({vision[0].name}, ...): the "
                     f"language model is measured, as deployments quantize it; --include with their names measures them")
    return notes


def _dtype_hint(checkpoint: Checkpoint, include: Sequence[str], exclude: Sequence[str]) -> str | None:
    """Why tensors the patterns (or the default rule) name were not measured, when it is their
    dtype: already-quantized integer weights (I8, U8, packed I32) or a dtype uscl cannot decode.
    None when no such tensor matches."""
    refused = [
        t for t in checkpoint.tensors
        if not (t.readable and t.is_float) and len(t.shape) >= 2 and t.params
        and (matches(t.name, include) if include else _default_layer(t)) and not matches(t.name, exclude)
    ]
    if not refused:
        return None
    first = refused[0]
    more = more_likewise(len(refused) - 1)
    return (f"tensor '{first.name}' matches but holds {first.dtype} values{more}: uscl measures floating-point "
            f"weights only, not already-quantized (integer) ones")


def _layer_hint(checkpoint: Checkpoint, *, kinds: int = 6) -> str:
    """What the checkpoint's weight matrices are called, one glob per kind of layer (the block
    number as ``*``), so a pattern can be written from the message."""
    matrices = [t for t in checkpoint.tensors if _matrix(t)]
    linear = [t for t in matrices if _default_layer(t)]
    pool, what = (linear, "its linear layers") if linear else (matrices, "its weight matrices")
    if not pool:
        names = ", ".join(t.name for t in checkpoint.tensors[:kinds]) or "none"
        return f"it has no floating-point matrices (tensors: {names})"
    found = list(dict.fromkeys(layer_kind(t.name) for t in sorted(pool, key=lambda t: model_order(t.name))))
    more = f", ... ({len(found)} kinds)" if len(found) > kinds else ""
    return f"{what} are named like {', '.join(found[:kinds])}{more}; adjust --include/--exclude"


# --------------------------------------------------------------------------------------------
# Streaming
# --------------------------------------------------------------------------------------------


def locality(fmt: Format) -> Locality:
    """``rows``: every stage acts on each row alone; ``two-pass``: so does everything but a
    scalar quantizer's second-level scale (e4m3 as in NVFP4, int8), which one pass over the
    rows finds first; ``tensor``: the compressor needs the whole tensor at once (tensor
    groups, dq8 scales)."""
    found: Locality = "rows"
    for stage in fmt.stages:
        if isinstance(stage, Quantize | VQ):
            if stage.group == "tensor":
                return "tensor"
            # e4m3 (NVFP4) and int8 scales are stored relative to a per-tensor second-level scale.
            if stage.scale_format in (ScaleFormat.E4M3, ScaleFormat.INT8):
                found = "two-pass" if isinstance(stage, Quantize) else "tensor"
            # dq8: the tensor's mean scale and blocks of 256 scales that run across rows
            if stage.scale_format is ScaleFormat.DQ8:
                return "tensor"
        elif isinstance(stage, Sparsify) and stage.granularity == "tensor":
            return "tensor"
    return found


def row_local(fmt: Format) -> bool:
    """Whether every stage acts on each row alone (so rows can be processed in chunks)."""
    return locality(fmt) == "rows"


# --------------------------------------------------------------------------------------------
# Rows
# --------------------------------------------------------------------------------------------


@dataclass
class RowSample:
    """The rows of one layer to measure."""

    rows: np.ndarray | None  # sorted indices of the rows to measure; None: all of them
    certain: np.ndarray | None  # per measured row: in the stratum measured in full
    population: int  # rows the random part was drawn from (all rows when all are measured)


def _budget(n: int, sample: float | None) -> int | None:
    """Rows a ``sample`` of ``n`` measures; None when that is all of them."""
    if sample is None or sample >= 1.0:
        return None
    k = min(n, max(4, math.ceil(sample * n)))  # at least two random rows, so an interval exists
    return k if k < n else None


def stratified_rows(score: np.ndarray, sample: float | None, rng: np.random.Generator) -> RowSample:
    """``sample`` of the rows whose outlier ``score`` is given: half the budget on the rows
    with the largest scores, measured with certainty, half drawn at random from the rest.

    Real tensors put most of a format's error in a few outlier rows; a plain random sample
    misses them and reports a tight interval around a value far too low. A cheap per-row score
    (the largest |w| of a weight row, the largest |x| / RMS of an activation row) predicts the
    error, so those rows are taken whole (stratified sampling: unbiased, and the interval
    covers only the random stratum).
    """
    n = len(score)
    k = _budget(n, sample)
    if k is None:
        return RowSample(None, None, n)
    top = np.argpartition(-score, k // 2)[: k // 2]
    rest = np.setdiff1d(np.arange(n), top, assume_unique=True)
    picked = rng.choice(rest, size=k - len(top), replace=False)
    rows = np.sort(np.concatenate([top, picked]))
    return RowSample(rows, np.isin(rows, top), len(rest))


def sample_rows(info: TensorInfo, sample: float | None, rng: np.random.Generator, chunk_bytes: int) -> RowSample:
    """Rows of a weight tensor to measure for ``--sample`` (:func:`stratified_rows`, scored by
    each row's largest |w|, found in one cheap read)."""
    if _budget(info.rows, sample) is None:
        return RowSample(None, None, info.rows)
    amax = np.concatenate(
        [np.maximum(x.max(axis=1), -x.min(axis=1)) for x in iter_row_chunks(info, chunk_bytes=chunk_bytes)]
    )
    return stratified_rows(amax, sample, rng)
