"""The GMSE engine: how much of a standard Gaussian a format destroys.

    GMSE(format) = E||x - C(x)||^2 / E||x||^2,   x i.i.d. standard normal

Two methods:

- **Monte Carlo** (:mod:`.bank`) over a bank of Gaussian rows (``row_length`` entries, 4096
  by default). One bank is shared by every format of an invocation (common random numbers),
  so differences between formats are estimated far more precisely than either value
  (:meth:`SampleBank.difference`). Sampling continues batch by batch until the relative
  standard error reaches ``rel_err`` (or ``max_samples``). Seeded and bit-reproducible.
- **Exact** quadrature (:mod:`.exact`) where a closed form exists: single-stage scalar grids
  with an RMS scale per row or tensor (the infinite-row limit) or no scale, unstructured
  magnitude sparsity and N:M sparsity. ``method="auto"`` uses it there and Monte Carlo
  everywhere else, and for rows shorter than 4096 wherever it is an infinite-row limit.

Stored values (``cache="use"``): the shipped table of every catalog format (:mod:`.table`,
computed once at high precision) and an on-disk cache of everything else computed on this
machine (:mod:`.cache`), both keyed by the format's stages, the row length and the
compressors' algorithm versions (:mod:`.stored`). The bank's Gaussian generator is
:mod:`.philox` (counter-based, parallel, bit-reproducible whatever the thread count).

Effective bits = log_{1/4}(GMSE). A format whose effective bits exceed its stored bits per
parameter breaks the rate-distortion bound (GMSE >= 4^-bits): that is a bug in its compressor
or its bit accounting, and :func:`estimate_gmse` raises instead of reporting it
(:mod:`.estimates`).

Compressor backends (numba, numpy, torch) live in a registry (:mod:`.backends`); the torch
one registers itself from the optional training package.
"""

from gmse_cli.gmse.backends import backend_names, register_backend
from gmse_cli.gmse.bank import SampleBank
from gmse_cli.gmse.engine import (
    CacheMode,
    GmseOptions,
    Method,
    estimate_gmse,
    gmse_of,
    lookup_gmse,
    remember_gmse,
    stage_gmse,
)
from gmse_cli.gmse.estimates import (
    Z95,
    GmseDifference,
    GmseEstimate,
    effective_bits_of,
    interval95,
    t95,
)
from gmse_cli.gmse.exact import exact_gmse, has_exact

__all__ = [
    "GmseEstimate",
    "GmseDifference",
    "SampleBank",
    "estimate_gmse",
    "gmse_of",
    "stage_gmse",
    "lookup_gmse",
    "remember_gmse",
    "exact_gmse",
    "has_exact",
    "effective_bits_of",
    "interval95",
    "Z95",
    "t95",
    "Method",
    "CacheMode",
    "GmseOptions",
    "register_backend",
    "backend_names",
]
