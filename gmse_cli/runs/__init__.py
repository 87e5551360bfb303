"""Training runs as data: one validated record per finished run, from any of three sources.

- :func:`load_train_jsonl` -- the JSON lines ``uscl train`` appends (one record per run).
- :func:`load_quest_runs` -- QuEST's published runs (``quest_runs.json``), each quantizer
  class mapped to the catalog scheme it implements.
- :func:`load_csv` -- a plain CSV with columns ``N, D, loss`` and optional ``weights`` /
  ``activations`` / ``scheme`` columns; the Chinchilla points (``Model Size``,
  ``Training FLOP``, ``loss``) load with ``D = FLOP / (6 N)``.

:func:`load_runs` picks the loader from the file. :func:`select` applies ``--where``
expressions (``w_bits=4``, ``scheme~had``, ``N>=1e8``) and :func:`exclude_worst` drops the K
highest-loss runs (Besiroglu et al. 2024 dropped 5 of the Chinchilla points this way).

A run's *scheme* pairs a weight format with an optional activation format, each named by a
spec string that :func:`~gmse_cli.spec.resolve_format` understands (catalog name or shorthand).

Modules: :mod:`.model` (the :class:`Run`), one reader per source (:mod:`.train_jsonl`,
:mod:`.quest`, :mod:`.csv_table`) over the helpers they share (:mod:`.fields`),
:mod:`.load` (dispatch), :mod:`.identity` (which format a spelling names, shared with
:mod:`gmse_cli.fit.spellings`) and :mod:`.select` (``--where``, worst runs).
"""

from gmse_cli.runs.csv_table import load_csv
from gmse_cli.runs.load import load_runs
from gmse_cli.runs.model import DENSE_FORMATS, MetaValue, Run, RunsWarning, scheme_name, tensor_bits
from gmse_cli.runs.quest import load_quest_runs, quest_scheme
from gmse_cli.runs.select import drop_duplicates, exclude_worst, parse_where, select
from gmse_cli.runs.train_jsonl import load_train_jsonl

__all__ = [
    "Run",
    "MetaValue",
    "DENSE_FORMATS",
    "scheme_name",
    "tensor_bits",
    "load_runs",
    "load_train_jsonl",
    "load_quest_runs",
    "load_csv",
    "quest_scheme",
    "select",
    "parse_where",
    "exclude_worst",
    "drop_duplicates",
    "RunsWarning",
]
