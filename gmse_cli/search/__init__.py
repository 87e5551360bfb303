"""Format search: the highest capacity at or below a bit budget, and the Pareto frontier.

The search space (:class:`SearchSpace`) is a grid over scalar grids (int midrise / signed /
asymmetric, fp ExMy, Lloyd-Max, lookup tables such as NF4), scale rules, group sizes and scale
storage formats; sparsity patterns composed with those quantizers; vector quantizers; and, on
real weights, Hadamard rotations. Every candidate is named by the shorthand it parses from
(``int4-absmax-g128-sbf16``, ``2:4+e2m1-mse-g32-se8m0``, ``vq2-b3.5-row-sfp32``; a duplicate
of a catalog format goes by the catalog name), so a frontier member can be typed back into any
command; it is also written out as a TOML file.

Capacity is the law's factorized one, as in the paper: rho = prod_k rho_family(k)(GMSE_k) over
the lossy stages, each stage measured alone. A composite candidate therefore shares its
quantizer's measurement with every other candidate using that quantizer, and the thousands of
(sparsity, quantizer) pairs are only index pairs until one survives the bounds.

``checkpoint=...`` replaces the Gaussian bank by rows sampled from a checkpoint's layers and
GMSE by the parameter-weighted real-weight MSE (see :mod:`gmse_cli.realmse`).

The package, one module per concept:

- ``space``: the search space and its candidates at a budget (:func:`enumerate_candidates`);
- ``evaluate``: measuring a candidate's error per level (Gaussian bank or checkpoint rows);
- ``frontier``: the Pareto rule, the frontier pruned against, epsilon-Pareto thinning;
- ``race``: :func:`search_formats`, how the search saves work (bounds, cheap pass, refinement);
- ``results``: what it reports, and :func:`write_frontier`;
- ``outfolder``: a folder of files that describes only the latest run (the manifest);
- ``plot``: capacity against bits for the candidates, both frontiers and the best format.
"""

from gmse_cli.search.frontier import pareto_frontier
from gmse_cli.search.plot import plot_search, search_figure
from gmse_cli.search.race import search_formats
from gmse_cli.search.results import (
    CatalogComparison,
    SearchPoint,
    SearchResult,
    StagePoint,
    check_frontier_dir,
    write_frontier,
)
from gmse_cli.search.space import Candidate, Group, SearchSpace, enumerate_candidates

__all__ = [
    "SearchSpace",
    "Group",
    "Candidate",
    "SearchPoint",
    "StagePoint",
    "CatalogComparison",
    "SearchResult",
    "enumerate_candidates",
    "pareto_frontier",
    "search_formats",
    "check_frontier_dir",
    "write_frontier",
    "plot_search",
    "search_figure",
]
