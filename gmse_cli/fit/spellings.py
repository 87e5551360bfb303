"""One scheme per format pair, however a runs file spells the formats.

A scheme is named by its formats' names as the runs file writes them, so the same format under
two spellings (``fp4`` and ``e2m1``, ``int4`` and ``INT4``, ``bf16`` and ``BF16``) would be two
schemes: two free capacities in a decoupled fit, and a leave-one-scheme-out refit that keeps the
held-out format's runs under its other spelling (the held-out error then measures nothing held
out). :func:`pool_spellings` gives every run whose scheme is its formats' spelling the one name
of its formats' content; a scheme the file names itself (a CSV's ``scheme`` cell, a record's
``scheme_name`` that differs from its formats' names) is the user's label and stays.
"""

from __future__ import annotations

from collections.abc import Sequence

from gmse_cli.runs import Run, scheme_name
from gmse_cli.runs.identity import Spelled, format_content, labelled, run_spelled
from gmse_cli.spec.catalog import catalog_format

__all__ = ["format_content", "pool_spellings"]


def _catalog_spelling(spelling: str | None, found: Spelled) -> tuple[bool, str | None]:
    """(whether it is a catalog name, the name) for one tensor: a spelling whose format is a
    catalog format (``INT4``, ``fp4``) is that format's catalog name; any other is its format's
    own name (a shorthand's, lower case: ``HAD128+INT4`` is ``had128+int4``)."""
    if spelling is None or found.name is None:
        return True, None
    shipped = catalog_format(found.name)
    return shipped is not None and format_content(shipped) == found.content, found.name


def _spelling(run: Run) -> tuple[tuple[str, ...], tuple[bool, str | None, str | None]] | None:
    """(the run's formats' content, (all catalog formats, weights' name, activations' name)), or
    None for a format file's path (a scheme the file names)."""
    formats = run_spelled(run)
    if formats is None:
        return None
    w, a = formats
    (w_cat, w_name), (a_cat, a_name) = _catalog_spelling(run.weights, w), _catalog_spelling(run.activations, a)
    return (w.content, a.content), (w_cat and a_cat, w_name, a_name)


def pool_spellings(runs: Sequence[Run]) -> tuple[list[Run], list[str]]:
    """``runs`` with one scheme name per format pair among the runs named by their spellings, and
    a note per scheme that pools spellings. The name is the catalog's where every tensor's format
    is a catalog format, else the first in sorted order, so neither the runs' order nor which
    spelling comes first decides it."""
    named: dict[int, tuple[str, ...]] = {}
    spellings: dict[tuple[str, ...], set[tuple[bool, str | None, str | None]]] = {}
    seen: dict[tuple[str, str | None], tuple[tuple[str, ...], tuple[bool, str | None, str | None]] | None] = {}
    for i, run in enumerate(runs):
        if labelled(run):
            continue  # the file's own label
        key = (run.weights, run.activations)
        if run.weights_spec is not None or run.activations_spec is not None:
            found = _spelling(run)  # an inline format: its own, not its name's (nor cached under the name)
        elif key in seen:
            found = seen[key]  # resolved once per spelling
        else:
            found = seen[key] = _spelling(run)
        if found is not None:
            named[i] = found[0]
            spellings.setdefault(found[0], set()).add(found[1])
    chosen = {content: min(options, key=lambda o: (not o[0], o[1] or "", o[2] or ""))
              for content, options in spellings.items()}
    out, written = list(runs), {}
    for i, content in named.items():
        _, weights, activations = chosen[content]
        run = runs[i]
        name = scheme_name(weights or run.weights, activations)
        if run.scheme != name:
            written.setdefault(name, set()).add(run.scheme)
            out[i] = run.model_copy(update={"scheme": name, "weights": weights or run.weights,
                                            "activations": activations})
    notes = [f"scheme '{name}' also holds the runs written as {', '.join(repr(s) for s in sorted(others))} "
             "(the same format)" for name, others in sorted(written.items())]
    return out, notes
