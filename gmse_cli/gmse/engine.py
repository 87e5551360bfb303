"""The public entry points: the GMSE of formats, exact where quadrature applies, Monte Carlo
on one shared sample bank everywhere else; stored values first when the caller asks.

``cache="use"`` reads the shipped table (:mod:`.table`), then the on-disk cache
(:mod:`.cache`), and computes (then caches) only what neither holds to ``rel_err``;
``"refresh"`` computes everything and caches it; ``"off"`` (the default here: this is the
measuring instrument) neither reads nor writes. Stored values serve ``method="auto"`` with
the default numba backend only: forcing a method or a backend asks for the engine itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, TypedDict

from gmse_cli.errors import SpecError, bad_value, described
from gmse_cli.gmse.backends import check_backend_name, check_device
from gmse_cli.gmse.bank import DEFAULT_MAX_SAMPLES, SampleBank, stored_dof
from gmse_cli.gmse.cache import read_cached, write_cached
from gmse_cli.gmse.estimates import GmseEstimate, make_estimate
from gmse_cli.gmse.exact import checked_format, exact_gmse, has_exact
from gmse_cli.gmse.stored import StoredGmse, algorithms_of, gmse_key
from gmse_cli.gmse.table import shipped_table
from gmse_cli.limits import check_seed, is_flag, is_real, is_whole
from gmse_cli.progress import task
from gmse_cli.spec import (
    DEFAULT_ROW_LENGTH,
    Family,
    Format,
    as_format_list,
    check_row_length,
    resolve_format,
)

__all__ = [
    "Method",
    "CacheMode",
    "GmseOptions",
    "estimate_gmse",
    "gmse_of",
    "stage_gmse",
    "lookup_gmse",
    "remember_gmse",
]

Method = Literal["auto", "exact", "monte-carlo"]
CacheMode = Literal["off", "use", "refresh"]


class GmseOptions(TypedDict, total=False):
    """Keywords of :func:`estimate_gmse` that callers pass through unchanged (``**options``):
    :func:`gmse_cli.rank.rank` and its siblings forward them. Defaults: estimate_gmse's, but
    for ``cache``, which rank, predict and compare take as ``"use"``."""

    rel_err: float
    row_length: int
    method: Method
    backend: str
    device: str
    max_samples: int
    bank: SampleBank | None
    cache: CacheMode


def _check_rel_err(rel_err: object) -> None:
    # text, None, a bool or an array is no relative error (a TypeError from '>' before); a huge
    # integer falls to "below 1", never to math.isfinite's OverflowError
    if not is_real(rel_err) or not rel_err > 0:
        raise bad_value(SpecError, "rel_err", rel_err, "must be a positive number (e.g. 1e-3)")
    if not rel_err < 1:
        raise bad_value(SpecError, "rel_err", rel_err, "must be below 1 (it is a relative standard error)")


def _validate(rel_err: float, row_length: int, method: str, max_samples: int, cache: str) -> None:
    _check_rel_err(rel_err)
    check_row_length(row_length)
    if not isinstance(method, str) or method not in ("auto", "exact", "monte-carlo"):
        raise SpecError(f"unknown method '{method}' (expected auto, exact or monte-carlo)")
    if not isinstance(cache, str) or cache not in ("off", "use", "refresh"):
        raise SpecError(f"unknown cache mode '{cache}' (expected off, use or refresh)")
    if not (is_whole(max_samples) and max_samples >= 1):
        raise bad_value(SpecError, "max_samples", max_samples, "must be a positive whole number")


def estimate_gmse(
    formats: Format | str | Sequence[Format | str],
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
    cache: CacheMode = "off",
) -> list[GmseEstimate]:
    """GMSE of each format, Monte Carlo on one shared sample bank unless exact applies.

    GMSE is the squared error the format makes on standard Gaussian rows of ``row_length``
    entries divided by the rows' squared norm: the MSE relative to their unit variance, a
    dimensionless fraction (0 is lossless, 1 keeps nothing). ``formats``: one format or a list of them, each a
    :class:`~gmse_cli.spec.Format` or a name :func:`~gmse_cli.spec.resolve_format` takes.
    Returns one :class:`GmseEstimate` per format, in the order given.

    ``rel_err`` is the target relative standard error; ``max_samples`` caps the Gaussian
    elements per format (memory: 4 bytes each, shared across formats), though never below
    the minimum a valid interval needs (:meth:`SampleBank.run`). ``backend`` names a
    compressor backend (numba, numpy, torch; see :mod:`gmse_cli.gmse.backends`) running on
    ``device``. ``progress`` shows a bar on stderr. ``cache``: whether stored values are
    read and computed ones stored (see the module); an estimate's ``method`` says which
    gave it (``table``, ``cache``, ``exact`` or ``monte-carlo``).

    Raises :class:`~gmse_cli.errors.SpecError` for a format that does not resolve or does not
    fit ``row_length``, and for a setting out of its range (``rel_err`` not positive, an
    unknown ``method``, ``backend`` or ``cache``).
    """
    _validate(rel_err, row_length, method, max_samples, cache)
    seed = check_seed(seed)
    check_backend_name(backend)
    check_device(device)  # read only by the torch backend, and only when a bank is drawn
    if not is_flag(progress):  # an array has no truth value
        raise SpecError(f"progress must be True or False, not {described(progress)}")
    if bank is not None and not isinstance(bank, SampleBank):
        raise SpecError(f"bank must be a SampleBank (or None), not {described(bank)}")
    resolved = [resolve_format(f) for f in as_format_list(formats)]
    for fmt in resolved:
        try:
            fmt.check_row_length(row_length)
        except SpecError as exc:  # name the format: --all or a ranking holds dozens
            raise SpecError(f"format '{fmt.display_name}': {exc}") from None
        if method == "exact" and not has_exact(fmt):
            exact_gmse(fmt)  # raises the explanatory SpecError
    stores = cache != "off" and method == "auto" and (bank.backend if bank else backend) == "numba"
    keys = [gmse_key(fmt, row_length) if stores else None for fmt in resolved]
    results: list[GmseEstimate | None] = [None] * len(resolved)
    if cache == "use":
        for i, (fmt, key) in enumerate(zip(resolved, keys, strict=True)):
            if key is not None:
                results[i] = lookup_gmse(fmt, row_length=row_length, rel_err=rel_err, key=key)
    todo = [i for i, r in enumerate(results) if r is None]
    if todo and bank is None:
        bank = SampleBank(seed=seed, row_length=row_length, backend=backend, device=device)
    with task("GMSE", len(todo), enabled=progress and bool(todo)) as bar:
        for i in todo:
            fmt = resolved[i]
            bar.update(detail=fmt.display_name)
            if method == "exact" or (method == "auto" and has_exact(fmt, row_length)):
                est = make_estimate(fmt, row_length, exact_gmse(fmt), 0.0, "exact", 0)
            else:
                est = bank.estimate(fmt, rel_err=rel_err, max_samples=max_samples)
            if keys[i] is not None:
                remember_gmse(fmt, est, row_length=row_length, seed=bank.seed if bank else seed, key=keys[i])
            results[i] = est
            bar.advance()
    return results  # type: ignore[return-value]  # every slot is filled


def lookup_gmse(fmt: Format, *, row_length: int, rel_err: float, key: str | None = None) -> GmseEstimate | None:
    """``fmt``'s GMSE from the shipped table, else from the on-disk cache, if either holds it
    at least as precisely as ``rel_err`` asks; None otherwise. ``key``: its
    :func:`~gmse_cli.gmse.stored.gmse_key`, if already known."""
    checked_format(fmt, "lookup_gmse")
    check_row_length(row_length, "row_length")
    _check_rel_err(rel_err)
    if not (key is None or isinstance(key, str)):
        raise SpecError(f"key must be a gmse_key (text) or None, not {described(key)}")
    key = key or gmse_key(fmt, row_length)
    if key is None:
        return None
    entry, source = shipped_table().get(key), "table"
    if entry is None or not entry.serves(rel_err):
        entry, source = read_cached(key), "cache"
        if entry is not None and not _computed_for(entry, fmt, row_length):
            entry = None
    if entry is None or not entry.serves(rel_err):
        return None
    if entry.method == "exact" and not has_exact(fmt, row_length):
        return None  # an infinite-row limit kept before such rows went to Monte Carlo
    # The interval the estimate had when computed: a regression's degrees of freedom (rows less
    # its columns) are not the sample count's, and a value read back must print the same ends.
    dof = (entry.dof or stored_dof(entry.samples, row_length, fmt)) if entry.std_err > 0 else math.inf
    if dof is None:
        return None  # too few tensors behind its standard error (see stored_dof)
    return make_estimate(fmt, row_length, entry.gmse, entry.std_err, source, entry.samples, dof=dof)


def _computed_for(entry: StoredGmse, fmt: Format, row_length: int) -> bool:
    """Whether a cached entry's own record matches what its key stands for (the row length and
    the compressors' algorithm versions) and holds the sample count a Monte Carlo interval takes
    its degrees of freedom from: a file edited, or left by another version under this key,
    reads as a miss."""
    counted = entry.method == "exact" or entry.samples > 0
    return counted and entry.row_length == row_length and entry.algorithms == algorithms_of(fmt)


def remember_gmse(fmt: Format, est: GmseEstimate, *, row_length: int, seed: int, key: str | None = None) -> None:
    """Store ``est``, computed for ``fmt`` at ``row_length`` (bank ``seed``), in the on-disk
    cache. ``key``: its :func:`~gmse_cli.gmse.stored.gmse_key`, if already known."""
    if est.method not in ("exact", "monte-carlo"):
        return  # read from the table or the cache: nothing new
    key = key or gmse_key(fmt, row_length)
    if key is None:
        return
    write_cached(StoredGmse(
        key=key, name=fmt.display_name, row_length=row_length, gmse=est.gmse, std_err=est.std_err,
        method=est.method, samples=est.samples, seed=seed, algorithms=algorithms_of(fmt),
        dof=int(est.dof) if est.dof is not None and est.std_err > 0 else None,
    ))


def gmse_of(fmt: Format | str, **kwargs) -> GmseEstimate:
    """GMSE of one format: its :class:`GmseEstimate` (``gmse``, the 95% interval ``ci_low`` ..
    ``ci_high``, ``method``), keywords and errors as in :func:`estimate_gmse`."""
    return estimate_gmse([fmt], **kwargs)[0]


def stage_gmse(fmt: Format | str, **kwargs) -> list[tuple[Family, GmseEstimate]]:
    """GMSE of each lossy stage alone, for the factorized capacity prod rho_family(GMSE_stage):
    one (family, :class:`GmseEstimate`) pair per lossy stage, in the format's order (a lossless
    stage such as a rotation has none). Keywords and errors as in :func:`estimate_gmse`."""
    fmt = resolve_format(fmt)
    parts = fmt.stage_formats()
    estimates = estimate_gmse([f for _, f in parts], **kwargs)
    return [(family, est) for (family, _), est in zip(parts, estimates, strict=True)]
