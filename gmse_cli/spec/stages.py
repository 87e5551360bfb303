"""The four stages a format is made of, one module each: :class:`Quantize`
(:mod:`~gmse_cli.spec.quantize`), :class:`Sparsify` (:mod:`~gmse_cli.spec.sparsify`),
:class:`VQ` (:mod:`~gmse_cli.spec.vq`) and :class:`Rotate` (:mod:`~gmse_cli.spec.rotate`), and
:data:`Stage`, any one of them told apart by its ``kind``."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from gmse_cli.spec.quantize import Quantize
from gmse_cli.spec.rotate import Rotate
from gmse_cli.spec.sparsify import Sparsify
from gmse_cli.spec.vq import VQ, is_codebook_file

__all__ = ["Quantize", "Sparsify", "VQ", "Rotate", "Stage", "is_codebook_file"]

Stage = Annotated[Quantize | Sparsify | VQ | Rotate, Field(discriminator="kind")]
