"""The optional training backend (extra ``[train]``): QAT pretraining of Llama models over any
declared format, producing the runs that recalibrate the law.

Modules (torch is imported only by the ones that need it):

- :mod:`.presets`        model sizes (paper 30M-200M, QuEST 430M/800M, tiny CPU ones)  [no torch]
- :mod:`.config`         :class:`RunConfig`: one run as validated data                 [no torch]
- :mod:`.results`        :class:`RunRecord`, the results-file schema; atomic appends    [no torch]
- :mod:`.sweep`          sweep specs (TOML) and their expansion into runs              [no torch]
- :mod:`.data`           corpora, tokenizers, the token cache, C4, deterministic batches [no torch]
- :mod:`.torch_compress` differentiable compressors, one module per stage family, and their
                         CPU numba kernels
- :mod:`.gmse_backend`   the GMSE engine's ``--backend torch`` (registers itself on import)
- :mod:`.model`          LlamaForCausalLM with compressed linears
- :mod:`.loop`           one training run (:func:`train_run`)
- :mod:`.checkpoint`     safetensors checkpoints
- :mod:`.launch`         local, torchrun and Slurm launchers
- :mod:`.submitit_jobs`  a Slurm job's submitit parameters, preemption signal and failure text

``python -m gmse_cli.training ARGS`` is ``uscl ARGS`` (the entry point torchrun workers run).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# numpy before torch: torch's C extension imports numpy itself and swallows a Ctrl-C landing in
# that import, leaving numpy half-initialized; the command then failed later with a RecursionError
# or "training needs the [train] extra" instead of stopping with "aborted".
import numpy  # noqa: F401

_EXPORTS = {
    "RunConfig": "gmse_cli.training.config",
    "RunRecord": "gmse_cli.training.results",
    "SweepSpec": "gmse_cli.training.sweep",
    "load_sweep": "gmse_cli.training.sweep",
    "expand_sweep": "gmse_cli.training.sweep",
    "PRESETS": "gmse_cli.training.presets",
    "get_preset": "gmse_cli.training.presets",
    "train_run": "gmse_cli.training.loop",
    "compress_torch": "gmse_cli.training.torch_compress",
    "build_model": "gmse_cli.training.model",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gmse_cli.training' has no attribute {name!r}")
    return getattr(import_module(module), name)
