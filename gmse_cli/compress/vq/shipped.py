"""The Gaussian codebooks shipped with the package, and how to make them again.

Training the larger Gaussian codebooks takes minutes (4-D and 8-D with 256 codewords: tens of
minutes on a busy 2-core machine), so the sizes of the catalog's vq formats and of ``uscl
search``'s space (2-, 4- and 8-D, 2 to 256 codewords: a first search trained 18 of them for
about 6 minutes) ship as package data (about 200 KB), in ``gmse_cli/compress/vq/shipped-codebooks/``,
under the same file names as the disk cache uses
(:func:`~gmse_cli.compress.vq.gaussian.codebook_stem`). They are exactly what
:func:`~gmse_cli.compress.vq.gaussian.train_gaussian_codebook` returns with its defaults; each
``.json`` record says how it was made (method, seed, samples, moves, training and held-out MSE).

Make them again (after a change of the trainer, which also bumps ``ALGORITHM_VERSION``)::

    python -m gmse_cli.compress.vq.shipped            # every size below
    python -m gmse_cli.compress.vq.shipped 2x8 4x4    # some: DIMxINDEX_BITS
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from gmse_cli.compress.vq.gaussian import codebook_stem, train_gaussian_codebook
from gmse_cli.compress.vq.store import save_codebook, shipped_dir

__all__ = ["SHIPPED", "regenerate"]

SHIPPED: tuple[tuple[int, int], ...] = tuple((dim, bits) for dim in (2, 4, 8) for bits in range(1, 9))
"""(dim, index bits) of the shipped codebooks: every size of ``uscl search``'s default space
(2^index bits <= 256 codewords in 2, 4 and 8 dimensions), the catalog's vq2-b2, vq2-b3, vq2-b4
(also HIGGS' three 2-D grids), vq4-b1, vq4-b2 and vq8-b1 among them."""


def regenerate(
    sizes: Sequence[tuple[int, int]] = SHIPPED,
    directory: Path | None = None,
    report: Callable[[str], None] = print,
) -> None:
    """Train each (dim, index bits) of ``sizes`` with the trainer's defaults and write it into
    ``directory`` (default: the package's shipped folder)."""
    directory = shipped_dir() if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    for dim, bits in sizes:
        start = time.perf_counter()
        cb, info = train_gaussian_codebook(dim, bits)
        info = info.model_copy(update={"source": "python -m gmse_cli.compress.vq.shipped"})
        save_codebook(codebook_stem(dim, bits), cb, info, directory=directory)
        report(
            f"d={dim} b={bits}: held-out MSE {info.mse:.6f} (training {info.train_mse:.6f}, "
            f"{info.train_moves} moves) in {time.perf_counter() - start:.0f} s"
        )


def _main(argv: Sequence[str]) -> None:
    sizes = [tuple(int(v) for v in a.split("x")) for a in argv] or list(SHIPPED)
    regenerate([(d, b) for d, b in sizes])


if __name__ == "__main__":
    _main(sys.argv[1:])
