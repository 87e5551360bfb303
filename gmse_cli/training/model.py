"""The Llama model trained over compressed weights and activations.

``transformers``' LlamaForCausalLM with every linear layer of the decoder blocks (q, k, v, o,
gate, up, down) replaced by a :class:`CompressedLinear`: its forward pass multiplies the input,
compressed by the activation format (if any), with the weight compressed by the weight format;
gradients follow the estimator rules of :mod:`gmse_cli.training.torch_compress`. Embeddings, the
output head and the norms stay in full precision (as in QuEST and the paper).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from gmse_cli.errors import BackendMissing
from gmse_cli.spec import Format
from gmse_cli.training.config import EstimatorConfig, is_identity_format
from gmse_cli.training.presets import ModelPreset, padded_vocab
from gmse_cli.training.torch_compress import TorchCompressor

__all__ = [
    "CompressedLinear",
    "build_model",
    "compress_linears",
    "non_embedding_params",
    "padded_vocab",
    "COMPRESSED_LINEARS",
]

COMPRESSED_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class CompressedLinear(nn.Linear):
    """y = C_a(x) @ C_w(W)^T; rows of W (its input dimension) are the compression rows."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        weights: Format | None,
        activations: Format | None,
        estimator: EstimatorConfig,
    ) -> None:
        super().__init__(in_features, out_features, bias=False)
        live = weights is not None and not is_identity_format(weights)
        self.weight_compressor = TorchCompressor(weights, estimator) if live else None
        self.act_compressor = TorchCompressor(activations, estimator) if activations is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight
        if self.weight_compressor is not None:
            w = self.weight_compressor(w)
        if self.act_compressor is not None:
            shape = x.shape
            x = self.act_compressor(x.reshape(-1, shape[-1])).reshape(shape)
        return F.linear(x, w)

    def extra_repr(self) -> str:
        w = self.weight_compressor.fmt.display_name if self.weight_compressor else "none"
        a = self.act_compressor.fmt.display_name if self.act_compressor else "none"
        return f"{super().extra_repr()}, weights={w}, activations={a}"


def build_model(
    preset: ModelPreset,
    *,
    vocab_size: int,
    context: int,
    weights: Format | None = None,
    activations: Format | None = None,
    estimator: EstimatorConfig | None = None,
    seed: int = 0,
) -> nn.Module:
    """A freshly initialized LlamaForCausalLM (seeded) with compressed decoder linears."""
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError:
        raise BackendMissing("training needs the [train] extra: pip install 'uscl[train]'") from None
    estimator = estimator or EstimatorConfig()
    config = LlamaConfig(
        vocab_size=padded_vocab(vocab_size),
        hidden_size=preset.d_model,
        intermediate_size=preset.ffn_dim,
        num_hidden_layers=preset.layers,
        num_attention_heads=preset.heads,
        num_key_value_heads=preset.heads,
        max_position_embeddings=context,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.02,
        use_cache=False,
        attn_implementation="sdpa",
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    compress_linears(model, weights=weights, activations=activations, estimator=estimator)
    return model


def compress_linears(
    model: nn.Module,
    *,
    weights: Format | None,
    activations: Format | None,
    estimator: EstimatorConfig | None = None,
) -> nn.Module:
    """Replace the decoder linears (q, k, v, o, gate, up, down) of a Llama model, in place, by
    :class:`CompressedLinear` layers with the same weights (a trained model's compressed forward)."""
    estimator = estimator or EstimatorConfig()
    for layer in model.model.layers:
        for parent in (layer.self_attn, layer.mlp):
            for name in COMPRESSED_LINEARS:
                old = getattr(parent, name, None)
                if old is None:
                    continue
                new = CompressedLinear(
                    old.in_features,
                    old.out_features,
                    weights=weights,
                    activations=activations,
                    estimator=estimator,
                ).to(device=old.weight.device, dtype=old.weight.dtype)
                with torch.no_grad():
                    new.weight.copy_(old.weight)  # keep the given (seeded or trained) weights
                setattr(parent, name, new)
    return model


def non_embedding_params(model: nn.Module) -> int:
    """Every parameter except the token embedding and the output head."""
    return sum(
        p.numel()
        for name, p in model.named_parameters()
        if not (name.endswith("embed_tokens.weight") or name.startswith("lm_head"))
    )
