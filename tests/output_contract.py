"""What every command's --json output must keep, shared by the tests that check it: the shipped
schema, its version, and none of the key names the shared vocabulary retired."""

from __future__ import annotations

import json

RETIRED_KEYS = frozenset({"ci_low", "ci_high", "low", "high", "format"})
"""Names the vocabulary replaced (``gmse_low``, ``<quantity>_low``, ``name``, ...)."""


def output_keys(item, skip=("spec", "weights_spec", "activations_spec")):
    """Every key of a JSON document, depth first; a format's own spec (its TOML fields) is not output vocabulary."""
    if isinstance(item, dict):
        for k, v in item.items():
            yield k
            if k not in skip:
                yield from output_keys(v)
    elif isinstance(item, list):
        for v in item:
            yield from output_keys(v)


def checked_output(validator, res, retired=RETIRED_KEYS) -> dict:
    """``res``'s stdout parsed, after checking exit 0, the schema, its version and the vocabulary."""
    assert res.code == 0, res.stderr
    data = json.loads(res.stdout)
    errors = [f"{list(e.path)}: {e.message[:200]}" for e in validator.iter_errors(data)]
    assert not errors, errors
    assert data["schema_version"] == 1
    stale = set(retired) & set(output_keys(data["results"]))
    assert not stale, stale
    return data
