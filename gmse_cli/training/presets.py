"""Model size presets: the paper's Llama sizes, QuEST's larger ones, and tiny CPU models.

Pure data and arithmetic (no torch), so a dry run and the results schema can use them anywhere.
The non-embedding parameter count N is computed in closed form here and checked against the
built model in the tests; it counts every parameter except the token embedding and the output
head (attention, MLP and all RMSNorm weights), which is the convention of QuEST's published
runs (e.g. 30,482,560 for the 30M model).
"""

from __future__ import annotations

import difflib
import math

from pydantic import Field, model_validator

from gmse_cli.errors import TrainError
from gmse_cli.frozen import Frozen

__all__ = ["ModelPreset", "PRESETS", "get_preset", "llama_ffn_dim", "padded_vocab", "CPU_PRESETS"]


def llama_ffn_dim(d_model: int, multiple_of: int = 256) -> int:
    """The SwiGLU hidden size of QuEST's Llama (llm-baselines): 8/3 * d rounded up to 256."""
    hidden = int(2 * (4 * d_model) / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


def padded_vocab(vocab_size: int) -> int:
    """Embedding rows: the tokenizer's vocabulary rounded up to a multiple of 64 (as QuEST pads
    GPT-2's 50257 to 50304) for matmul efficiency; the extra rows are never targets."""
    return 64 * math.ceil(vocab_size / 64)


class ModelPreset(Frozen):
    """One Llama architecture; the learning rate is the paper's peak rate for that size."""

    name: str
    layers: int = Field(ge=1)
    heads: int = Field(ge=1)
    d_model: int = Field(ge=2)
    ffn_dim: int = Field(ge=1)
    lr: float = Field(gt=0)
    context: int = Field(default=512, ge=8, description="default sequence length (paper: 512)")
    batch_size: int = Field(
        default=512, ge=1, description="default sequences per step (paper: 512 x 512 = 262,144 tokens)"
    )
    fsdp: bool = Field(default=False, description="shard with FSDP under torchrun (large presets)")
    description: str = ""

    @model_validator(mode="after")
    def _check(self) -> ModelPreset:
        if self.d_model % self.heads:
            raise TrainError(f"preset {self.name}: d_model {self.d_model} is not divisible by heads {self.heads}")
        if (self.d_model // self.heads) % 2:
            raise TrainError(f"preset {self.name}: head dimension must be even for rotary embeddings")
        return self

    @property
    def non_embedding_params(self) -> int:
        """Exact N: q, k, v, o (d x d each), gate/up/down (d x ffn each), 2 norms per layer, final norm."""
        d, f = self.d_model, self.ffn_dim
        per_layer = 4 * d * d + 3 * d * f + 2 * d
        return self.layers * per_layer + d

    def embedding_params(self, vocab_size: int) -> int:
        """Input embedding plus the untied output head."""
        return 2 * vocab_size * self.d_model

    def flops_per_token(self, *, vocab_size: int, context: int) -> float:
        """Training FLOPs per token: 6 x (matmul weights incl. the head) + attention scores.

        The attention term 12 * layers * d_model * context is PaLM's (Appendix B), as nanoGPT
        uses it for model FLOPs utilization; norms and the embedding lookup are negligible.
        """
        d, f = self.d_model, self.ffn_dim
        matmul = self.layers * (4 * d * d + 3 * d * f) + vocab_size * d
        return 6.0 * matmul + 12.0 * self.layers * d * context


def _paper(name: str, layers: int, heads: int, d: int, lr: float, **kw: object) -> ModelPreset:
    return ModelPreset(name=name, layers=layers, heads=heads, d_model=d, ffn_dim=llama_ffn_dim(d), lr=lr, **kw)


# Paper Table (paper.md section 3); 430M and 800M from QuEST. lr is the peak AdamW rate.
_ALL = [
    _paper("30m", 6, 5, 640, 1.2e-3, description="paper 30M"),
    _paper("50m", 7, 6, 768, 1.2e-3, description="paper 50M"),
    _paper("100m", 8, 8, 1024, 6e-4, description="paper 100M"),
    _paper("200m", 10, 10, 1280, 3e-4, description="paper 200M"),
    _paper("430m", 13, 13, 1664, 1.5e-4, fsdp=True, description="QuEST 430M"),
    _paper("800m", 16, 16, 2048, 7.5e-5, fsdp=True, description="QuEST 800M"),
    # CPU presets: same shape rules (ffn about 8/3 d, rounded to 64), short contexts and batches
    # of 32 x 128 = 4,096 tokens so that a step takes well under a second on two cores. lr 1e-3:
    # measured on the tiny model (Python docs, 512-token steps), 3e-3 trained fp32 worse than
    # 2-bit weights (too large a step for unquantized weights) while 1e-3 ordered formats by
    # precision, as they should be.
    ModelPreset(name="tiny-50k", layers=2, heads=4, d_model=48, ffn_dim=128, lr=1e-3, context=128,
                batch_size=32, description="CPU quick sweeps, 0.06M non-embedding"),
    ModelPreset(name="tiny-100k", layers=2, heads=4, d_model=64, ffn_dim=192, lr=1e-3, context=128,
                batch_size=32, description="CPU law sweeps, 0.11M non-embedding"),
    ModelPreset(name="tiny-200k", layers=2, heads=4, d_model=96, ffn_dim=256, lr=1e-3, context=128,
                batch_size=32, description="CPU law sweeps, 0.22M non-embedding"),
    ModelPreset(name="tiny", layers=2, heads=4, d_model=128, ffn_dim=384, lr=1e-3, context=128,
                batch_size=32, description="CPU tests and sweeps, 0.43M non-embedding"),
    ModelPreset(name="tiny-1m", layers=3, heads=4, d_model=160, ffn_dim=448, lr=1e-3, context=128,
                batch_size=32, description="CPU, 0.95M non-embedding"),
    ModelPreset(name="tiny-3m", layers=4, heads=4, d_model=256, ffn_dim=704, lr=1e-3, context=128,
                batch_size=32, description="CPU, 3.2M non-embedding"),
]

PRESETS: dict[str, ModelPreset] = {p.name: p for p in _ALL}
CPU_PRESETS = ("tiny-50k", "tiny-100k", "tiny-200k", "tiny", "tiny-1m", "tiny-3m")


def get_preset(name: str) -> ModelPreset:
    """The preset called ``name`` (case-insensitive); unknown names list the valid ones."""
    key = name.strip().lower()
    if key in PRESETS:
        return PRESETS[key]
    close = difflib.get_close_matches(key, list(PRESETS), n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else ""
    raise TrainError(f"unknown preset '{name}'{hint}; choose one of: {', '.join(PRESETS)}")
