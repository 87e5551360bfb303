"""The public entry points: the GMSE of formats, exact where quadrature applies, Monte Carlo
on one shared sample bank everywhere else."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypedDict

from gmse_cli.errors import SpecError
from gmse_cli.gmse.bank import DEFAULT_MAX_SAMPLES, SampleBank
from gmse_cli.gmse.estimates import GmseEstimate, make_estimate
from gmse_cli.gmse.exact import exact_gmse, has_exact
from gmse_cli.progress import task
from gmse_cli.spec import DEFAULT_ROW_LENGTH, Family, Format, resolve_format

__all__ = ["Method", "GmseOptions", "estimate_gmse", "gmse_of", "stage_gmse"]

Method = Literal["auto", "exact", "monte-carlo"]


class GmseOptions(TypedDict, total=False):
    """Keywords of :func:`estimate_gmse` that callers pass through unchanged (``**options``):
    :func:`gmse_cli.rank.rank` and its siblings forward them. Defaults: estimate_gmse's."""

    rel_err: float
    row_length: int
    method: Method
    backend: str
    device: str
    max_samples: int
    bank: SampleBank | None


def _validate(rel_err: float, row_length: int, method: str, max_samples: int) -> None:
    if not (rel_err > 0 and math.isfinite(rel_err)):
        raise SpecError(f"--rel-err {rel_err} must be a positive number (e.g. 1e-3)")
    if rel_err >= 1:
        raise SpecError(f"--rel-err {rel_err} must be below 1 (it is a relative standard error)")
    if row_length < 1:
        raise SpecError(f"--row-length {row_length} must be positive")
    if method not in ("auto", "exact", "monte-carlo"):
        raise SpecError(f"unknown method '{method}' (expected auto, exact or monte-carlo)")
    if max_samples < 1:
        raise SpecError(f"max_samples {max_samples} must be positive")


def estimate_gmse(
    formats: Sequence[Format | str],
    *,
    rel_err: float = 1e-3,
    seed: int = 0,
    row_length: int = DEFAULT_ROW_LENGTH,
    method: Method = "auto",
    backend: str = "numba",
    device: str = "cpu",
    max_samples: int = DEFAULT_MAX_SAMPLES,
    progress: bool = False,
    bank: SampleBank | None = None,
) -> list[GmseEstimate]:
    """GMSE of each format, Monte Carlo on one shared sample bank unless exact applies.

    ``rel_err`` is the target relative standard error; ``max_samples`` caps the Gaussian
    elements per format (memory: 4 bytes each, shared across formats). ``backend`` names a
    compressor backend (numba, numpy, torch; see :mod:`gmse_cli.gmse.backends`) running on
    ``device``. ``progress`` shows a bar on stderr.
    """
    _validate(rel_err, row_length, method, max_samples)
    resolved = [resolve_format(f) for f in formats]
    for fmt in resolved:
        fmt.check_row_length(row_length)
        if method == "exact" and not has_exact(fmt):
            exact_gmse(fmt)  # raises the explanatory SpecError
    if bank is None:
        bank = SampleBank(seed=seed, row_length=row_length, backend=backend, device=device)
    results: list[GmseEstimate] = []
    with task("GMSE", len(resolved), enabled=progress) as bar:
        for fmt in resolved:
            bar.update(detail=fmt.display_name)
            if method == "exact" or (method == "auto" and has_exact(fmt)):
                results.append(make_estimate(fmt, row_length, exact_gmse(fmt), 0.0, "exact", 0))
            else:
                results.append(bank.estimate(fmt, rel_err=rel_err, max_samples=max_samples))
            bar.advance()
    return results


def gmse_of(fmt: Format | str, **kwargs) -> GmseEstimate:
    """GMSE of one format (same keywords as :func:`estimate_gmse`)."""
    return estimate_gmse([fmt], **kwargs)[0]


def stage_gmse(fmt: Format | str, **kwargs) -> list[tuple[Family, GmseEstimate]]:
    """GMSE of each lossy stage alone, for the factorized capacity prod rho_family(GMSE_stage)."""
    fmt = resolve_format(fmt)
    parts = fmt.stage_formats()
    estimates = estimate_gmse([f for _, f in parts], **kwargs)
    return [(family, est) for (family, _), est in zip(parts, estimates, strict=True)]
