"""The lossy stages of runs: their GMSE (cached per fit) and their incidence over runs.

A run's capacity under the unified law is a product over the lossy stages of its weights and
activations; :func:`run_stages` lists (family, GMSE) per stage, and :func:`stage_structure`
turns those lists into unique stages and an incidence matrix the capacity part sums over.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError
from gmse_cli.runs import Run
from gmse_cli.spec import Family, Format

__all__ = ["GmseCache", "run_stages", "stage_structure", "stage_tensors"]


class GmseCache:
    """GMSE of stage formats, computed once per distinct stage within a fit.

    ``values`` pre-seeds the cache by stage display name or format name (tests, or GMSEs a
    training record already carries). Monte Carlo estimates share one sample bank.
    """

    def __init__(self, *, rel_err: float = 1e-3, seed: int = 0, values: Mapping[str, float] | None = None,
                 estimator: Callable[[Format], float] | None = None):
        self.rel_err = rel_err
        self.seed = seed
        self.values = dict(values or {})
        self.estimator = estimator
        self._cache: dict[str, float] = {}
        self._bank = None

    def __call__(self, fmt: Format) -> float:
        key = fmt.model_dump_json(exclude={"name", "description"})
        if key in self._cache:
            return self._cache[key]
        for name in (fmt.name, fmt.display_name):
            if name in self.values:
                self._cache[key] = float(self.values[name])
                return self._cache[key]
        if self.estimator is not None:
            value = float(self.estimator(fmt))
        else:
            from gmse_cli.gmse import SampleBank, estimate_gmse

            if self._bank is None:
                self._bank = SampleBank(seed=self.seed)
            value = estimate_gmse([fmt], rel_err=self.rel_err, seed=self.seed, bank=self._bank)[0].gmse
        self._cache[key] = value
        return value


def run_stages(run: Run, gmse: Callable[[Format], float], *, use_recorded: bool = True) -> list[tuple[Family, float]]:
    """(family, GMSE) of every lossy stage of a run's weights and activations.

    GMSEs a training record carries (``run.stage_gmse``) are used as recorded unless
    ``use_recorded`` is False; everything else goes through ``gmse``.
    """
    parts = [(fam, part) for fmt in (run.weight_format(), run.activation_format()) if fmt is not None
             for fam, part in fmt.stage_formats()]
    recorded = run.stage_gmse if use_recorded else None
    if recorded is not None and [Family(f) for f, _ in recorded] != [f for f, _ in parts]:
        recorded = None  # the record does not match the format's stages: recompute
    stages: list[tuple[Family, float]] = []
    for k, (family, part) in enumerate(parts):
        value = recorded[k][1] if recorded is not None else gmse(part)
        if not value < 1.0:
            raise FitError(
                f"scheme '{run.scheme}': stage {part.display_name} has GMSE {value:.3g} >= 1 "
                "(it keeps nothing), so its capacity is 0 and log-loss cannot be fitted"
            )
        stages.append((family, value))
    return stages


def stage_tensors(weights: Format, activations: Format | None) -> list[str]:
    """The tensor of each stage :func:`run_stages` lists, in its order: 'weights', then 'activations'."""
    return (["weights"] * len(weights.stage_formats())
            + ["activations"] * (len(activations.stage_formats()) if activations is not None else 0))


def _bits(gmse: float) -> float:
    return math.inf if gmse <= 0 else -math.log(gmse) / math.log(4.0)


def stage_structure(items: Sequence[Sequence[tuple[Family, float]]], families: Sequence[str]):
    """Unique (family, GMSE) stages and their incidence counts over items."""
    keys: dict[tuple[str, float], int] = {}
    entries: list[tuple[int, int]] = []
    for i, stages in enumerate(items):
        for family, value in stages:
            key = (Family(family).value, float(value))
            if key not in keys:
                keys[key] = len(keys)
            entries.append((keys[key], i))
    U = len(keys)
    incidence = np.zeros((U, len(items)))
    for u, i in entries:
        incidence[u, i] += 1.0
    fam_index = {f: j for j, f in enumerate(families)}
    stage_family = np.array([fam_index[f] for f, _ in keys], dtype=int)
    stage_bits = np.array([_bits(v) for _, v in keys])
    return stage_family, stage_bits, incidence
