"""Ranking formats by what they keep: capacity, effective parameters, predicted loss.

    rank(["int4", "fp4", "nvfp4"], params=200e6)   -> list[RankRow]   (one row per format)
    predict("2:4+int4", params=200e6, tokens=20e9) -> Prediction      (the full breakdown)
    compare(["fp4", "int4"])                        -> Comparison      (who wins, how often)

One module per concept:

- :mod:`.results`   the result models (StageRow, Outcome, RankRow, Prediction, Comparison)
                    and the default model size
- :mod:`.evaluate`  the engine: GMSE of every stage, capacities, the law and its draws
- :mod:`.ranking`   the entry points :func:`rank`, :func:`predict`, :func:`compare`;
                    :func:`select_formats` (what `uscl rank` ranks)
- :mod:`.pareto`    the Pareto frontier and sorting
- :mod:`.plot`      the two-panel ranking plot
"""

from __future__ import annotations

from gmse_cli.rank.pareto import SORT_COLUMNS, pareto_front, pareto_mask, sort_rows
from gmse_cli.rank.plot import check_plot_path, plot_rank, rank_figure
from gmse_cli.rank.ranking import compare, predict, rank, select_formats
from gmse_cli.rank.results import (
    DEFAULT_PARAMS,
    DEFAULT_TOKENS_PER_PARAM,
    Comparison,
    Outcome,
    Prediction,
    RankRow,
    StageRow,
)

__all__ = [
    "rank",
    "predict",
    "compare",
    "select_formats",
    "RankRow",
    "Prediction",
    "StageRow",
    "Outcome",
    "Comparison",
    "DEFAULT_PARAMS",
    "DEFAULT_TOKENS_PER_PARAM",
    "pareto_front",
    "pareto_mask",
    "sort_rows",
    "SORT_COLUMNS",
    "plot_rank",
    "rank_figure",
    "check_plot_path",
]
