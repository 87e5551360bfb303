"""Frontiers of measured candidates: the Pareto rule of `uscl rank`, the frontier the search
prunes against (queried by bit cost), and the epsilon-Pareto thinning of the reported one."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from gmse_cli.search.space import Candidate
from gmse_cli.spec import Family, Format


def pareto_frontier(points: Iterable[tuple[float, float]]) -> list[int]:
    """Indices of the (bits, rho) points that no other point beats (fewer-or-equal bits and
    more-or-equal capacity, one strictly), in increasing bits; the rule of `uscl rank`."""
    from gmse_cli.rank import pareto_mask

    pts = list(points)
    if not pts:
        return []
    bits = np.array([p[0] for p in pts], dtype=float)
    rho = np.array([p[1] for p in pts], dtype=float)
    on = np.flatnonzero(pareto_mask(bits, rho))
    return sorted(on.tolist(), key=lambda i: (bits[i], i))


def capacity_slope(law, family: Family, value: float) -> tuple[float, float]:
    """rho_family(value) and its derivative in the error (central difference, 1e-4 relative)."""
    value = max(value, 1e-300)
    rho = float(law.rho(family, value))
    h = 1e-4 * value
    return rho, (float(law.rho(family, value + h)) - float(law.rho(family, value - h))) / (2 * h)


@dataclass
class Entry:
    """A candidate in the race: its lossy stages and its capacity at the level last measured."""

    cand: Candidate
    stages: list[tuple[Family, Format]]
    rho: float = math.nan
    rho_se: float = math.inf
    psi: np.ndarray | None = None  # influence of each shared row on rho (levels below final)
    level: int = -1


class Frontier:
    """The Pareto frontier of measured entries, queried by bit cost."""

    def __init__(self, entries: Sequence[Entry], z: float = 0.0) -> None:
        # z > 0: the frontier of conservative capacities rho - z*se, which a candidate's upper
        # bound must reach to be worth measuring.
        pts = [(e.cand.bits_per_param, e.rho - z * e.rho_se) for e in entries]
        keep = pareto_frontier(pts)
        self.members = [entries[i] for i in keep]
        self.bits = np.array([pts[i][0] for i in keep])
        self.rho = np.array([pts[i][1] for i in keep])

    def at(self, bits: np.ndarray | float) -> np.ndarray | float:
        """Best (conservative) capacity with at most ``bits`` (-inf where none)."""
        k = np.searchsorted(self.bits, np.asarray(bits) + 1e-12, side="right")
        out = np.concatenate([[-math.inf], self.rho])[k]
        return float(out) if np.ndim(out) == 0 else out


def thin(front: list[Entry], min_gain: float) -> list[Entry]:
    """Keep frontier members (in increasing bits) whose capacity beats the last kept one by a
    relative ``min_gain``; the last member (the best at the budget) is always kept.

    Every member dropped is then within ``min_gain`` of a kept one at fewer bits (an
    epsilon-Pareto set). The best never displaces the cheaper member it barely beats: that
    member would then be covered only from above, hiding the cheaper near-equal format."""
    kept: list[Entry] = []
    for entry in front[:-1]:
        if not kept or entry.rho > kept[-1].rho * (1 + min_gain):
            kept.append(entry)
    if kept and front and kept[-1].cand.bits_per_param == front[-1].cand.bits_per_param:
        # a tie at the best's bits (and so capacity): one format, not two spellings of it
        # ('row' and 'g32' groups on rows of 32), as ties below are listed once
        return kept
    return kept + front[-1:]
