"""The GMSE engine's ``--backend torch``: :func:`compress_torch` over the sample bank.

Importing this module registers the backend with :mod:`gmse_cli.gmse.backends`, which
imports it the first time ``torch`` is asked for (the engine never imports the training
extra itself). The import fails without torch, and the engine turns that into a clear
"install the training extra" error.
"""

from __future__ import annotations

import numpy as np
import torch

from gmse_cli.errors import BackendMissing
from gmse_cli.gmse.backends import Compressor, register_backend
from gmse_cli.spec import Format
from gmse_cli.training.torch_compress import compress_torch

__all__ = ["torch_compressor"]


def torch_compressor(device: str) -> Compressor:
    """A compressor running :func:`compress_torch` on ``device`` (float32 numpy in and out)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BackendMissing(f"--device {device}: no CUDA device is available")

    def run(fmt: Format, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            y = compress_torch(fmt, torch.from_numpy(x).to(device))
        return y.float().cpu().numpy()

    return run


register_backend("torch", torch_compressor)
