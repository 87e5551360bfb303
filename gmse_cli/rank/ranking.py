"""The public entry points: rank, predict and compare, over one shared signature.

:func:`compare` reads the evaluation's draws jointly: how often each format wins.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Unpack

import numpy as np

from gmse_cli.law import DEFAULT_DRAWS, Law
from gmse_cli.rank.evaluate import evaluate_all
from gmse_cli.rank.pareto import pareto_mask
from gmse_cli.rank.results import DEFAULT_PARAMS, Comparison, Prediction, RankRow
from gmse_cli.spec import Family, Format, Scheme, as_format_list, catalog, resolve_format

if TYPE_CHECKING:
    from gmse_cli.gmse import CacheMode, GmseOptions

__all__ = ["rank", "predict", "compare", "select_formats"]


def rank(
    formats: Sequence[Format | Scheme | str | Path] | None = None,
    *,
    law: Law | str | Path | None = None,
    params: float = DEFAULT_PARAMS,
    tokens: float | None = None,
    act: Format | str | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    level: float = 0.95,
    progress: bool = False,
    vary_L: bool = False,
    cache: CacheMode = "use",
    **options: Unpack[GmseOptions],
) -> list[RankRow]:
    """One :class:`RankRow` per format or scheme, in the order given, Pareto frontier marked.

    ``formats``: catalog names, shorthand, .toml paths, :class:`Format` or :class:`Scheme`
    (``None``: the whole catalog). ``law``: a :class:`Law`, a law file or a shipped law name
    (``None``: the shipped default). ``params`` N and ``tokens`` D (default
    ``DEFAULT_TOKENS_PER_PARAM * params``) set the model the loss is predicted for. ``act`` is an
    activation format applied to every row. ``seed`` and the GMSE ``options`` (``rel_err``,
    ``row_length``, ``method``, ``backend``, ``device``, ``max_samples``, ``bank``: see
    :class:`~gmse_cli.gmse.GmseOptions`) go to :func:`~gmse_cli.gmse.estimate_gmse`; ``seed`` also
    seeds the ``draws`` Monte Carlo draws behind every ``level`` interval; ``vary_L`` also
    draws each curve's L the law's joint draws do not carry (see :mod:`gmse_cli.law` for why it
    is held by default). ``cache``: ``"use"`` (default) takes GMSEs from the shipped table and
    the on-disk cache where they hold them, ``"refresh"`` recomputes them all (and caches
    them), ``"off"`` recomputes without touching the cache (:func:`~gmse_cli.gmse.estimate_gmse`).

    Raises :class:`LawError` for a family the law does not cover or a non-positive N or D,
    :class:`SpecError` for a format that does not resolve.
    """
    _rank_keywords("rank", options)  # an unknown keyword named as rank's, as predict and compare do
    items = list(catalog().values()) if formats is None else as_format_list(formats)
    preds, _ = evaluate_all(
        items, law=law, params=params, tokens=tokens, act=act, seed=seed, draws=draws, level=level,
        progress=progress, vary_L=vary_L, cache=cache, **options,
    )
    return _rows(preds)


def select_formats(formats: Sequence[str] | None, *, law: Law,
                   family: Family | None = None) -> tuple[list[Format], list[Format]]:
    """(the formats to rank, the catalog formats skipped), as ``uscl rank`` chooses them.

    ``formats`` (catalog names, shorthand, .toml paths) resolved in order, or (``None``) the
    whole catalog less the formats of families ``law`` does not cover (returned second, so a
    caller can say so; :func:`rank` would refuse them). ``family`` keeps only the formats with
    a stage of that family (:attr:`Family.NONE`: the lossless ones); what is left may be empty.
    """
    if formats:
        items = [resolve_format(f) for f in formats]
        skipped: list[Format] = []
    else:
        items = list(catalog().values())
        skipped = [f for f in items if any(fam not in law.families for fam in f.families)]
        items = [f for f in items if f not in skipped]
    if family is not None:
        items = [f for f in items if family in f.families or (family is Family.NONE and not f.families)]
    return items, skipped


def _rank_keywords(caller: str, given: dict[str, Any], **fixed: Any) -> dict[str, Any]:
    """rank's keywords with rank's defaults, updated by ``given`` (checked) and ``fixed``: the
    one signature compare and predict share, so the three cannot drift apart."""
    from gmse_cli.gmse import GmseOptions

    own = {k: p.default for k, p in inspect.signature(rank).parameters.items() if p.kind is p.KEYWORD_ONLY}
    allowed = (set(own) | GmseOptions.__optional_keys__) - set(fixed)
    if unknown := set(given) - allowed:
        raise TypeError(f"{caller}() got unexpected keywords {sorted(unknown)}")
    return own | given | fixed


def _rows(preds: Sequence[Prediction]) -> list[RankRow]:
    front = pareto_mask(np.array([p.bits_per_param for p in preds]), np.array([p.rho for p in preds]))
    return [
        RankRow(**p.model_dump(exclude={"stages", "params_term", "data_term", "irreducible", "dense_loss"}),
                pareto=bool(on))
        for p, on in zip(preds, front, strict=True)
    ]


def compare(formats: Sequence[Format | Scheme | str | Path], **kwargs: Any) -> Comparison:
    """Rank ``formats`` (one or a list; keywords as in :func:`rank`) and say how often each wins:
    a :class:`Comparison` with the :class:`RankRow` of each (``rows``) and, per row in that
    order, the share of the law's draws in which its rho is the highest (``p_most_capacity``)
    and in which its memory to match bf16 is the least (``p_least_memory``), each in [0, 1].
    Raises as :func:`rank` does.

    Marginal intervals overstate how uncertain a comparison is: formats of one family share a
    curve, so a draw of F and C that lowers one raises no other -- their order follows their
    GMSE in every draw. The shares here are computed on the shared draws, so they carry that
    correlation (ties count for every tied row, so shares may sum to more than 1).
    """
    preds, rho = evaluate_all(as_format_list(formats), **_rank_keywords("compare", kwargs))
    if not preds:  # nothing to compare, as rank([]) ranks nothing
        return Comparison(rows=(), p_most_capacity=(), p_least_memory=())
    bits = np.array([p.bits_per_param for p in preds])[:, None]
    with np.errstate(divide="ignore"):
        memory = np.where(rho > 0, bits / np.where(rho > 0, rho, 1.0), np.inf)  # (rows, draws), up to N / 8
    return Comparison(
        rows=tuple(_rows(preds)),
        p_most_capacity=tuple(float(x) for x in np.mean(rho >= rho.max(axis=0), axis=1)),
        p_least_memory=tuple(float(x) for x in np.mean(memory <= memory.min(axis=0), axis=1)),
    )


def predict(
    scheme: Format | Scheme | str | Path,
    params: float = DEFAULT_PARAMS,
    tokens: float | None = None,
    law: Law | str | Path | None = None,
    **kwargs: Any,
) -> Prediction:
    """The law's prediction for one format or scheme, with each stage's GMSE and capacity and
    the three loss terms (other keywords as in :func:`rank`, ``progress`` aside).

    ``scheme``: a :class:`Format`, a :class:`Scheme`, or a name :func:`resolve_format` takes
    (``act=`` pairs an activation format with it). ``params``: N, the model's non-embedding
    parameters (a count, default 200e6). ``tokens``: D, training tokens (a count; default
    ``DEFAULT_TOKENS_PER_PARAM * params``, 100 tokens per parameter). ``law``: a :class:`Law`, a
    law file or a shipped law name (default the shipped one). Returns a :class:`Prediction`:
    ``predicted_loss`` = ``params_term`` + ``data_term`` + ``irreducible``, ``rho`` and every
    ``stages`` entry with their intervals at ``level``.

    Raises :class:`LawError` for N or D that is not a finite count of at least 1 and for a
    family the law does not cover, :class:`SpecError` for a format that does not resolve.
    """
    keywords = _rank_keywords("predict", kwargs, params=params, tokens=tokens, law=law, progress=False)
    (pred,), _ = evaluate_all([scheme], **keywords)
    return pred
