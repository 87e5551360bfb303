"""More generated bad inputs (the fuzz35 round), joined to ``bad_inputs.GENERATORS``:

- runs files whose format cells are lookalikes (a Cyrillic i, a zero-width joiner, fullwidth
  digits, a combining accent, a byte-order mark inside a cell), and exact duplicates or skipped
  diverged runs beside a bad row or a bad ``--where``/``--law``/``--exclude-worst`` (the notes
  on the runs once preceded the error line);
- law files damaged field by field: a constant missing, text, a boolean, nan, inf, negative,
  past 1e30, a table where a number goes; draws of the wrong length or holding nan; a fitted
  range reversed; binary garbage; a folder or a FIFO named as the law file;
- real-valued options written '3_0' (read as 30) or in another script's digits;
- format files with each field wrong in turn, a group written in other digits than ASCII, a
  codebook that is a FIFO or a folder (a FIFO was waited on for ever).
"""

from __future__ import annotations

import random
import tomllib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # bad_inputs imports this module: its names are taken when a case is made
    from bad_inputs import Case


def _grid_runs() -> list[dict]:
    from bad_inputs import GOOD_RUN

    return [dict(GOOD_RUN, N=n, D=d, loss=3 + 1e3 / n ** 0.3 + 1e3 / d ** 0.3) for n in (1e6, 3e6, 1e7)
            for d in (1e8, 1e9, 1e10)]


_LOOKALIKES = ["\u0456nt4", "int\u200d4", "in\u200bt4", "int\uff14", "\uff49nt4", "int4\u0301", "\ufeffint4", "int\u0664",
               "\u0131nt4", "nf\u2074", "2\u22364+int4", "int4\u2010g128"]


def runs_cells(rng: random.Random) -> Case:
    """A runs file of good runs with a copy or a diverged run, plus one bad cell or option."""
    from bad_inputs import Case, jsonl_bytes

    runs = _grid_runs()
    extra = rng.choice([[dict(runs[0])], [dict(runs[1], loss=float("nan"))], [dict(runs[2])] * 3, []])
    pick = rng.randrange(4)
    options: list[str] = []
    if pick == 0:  # a lookalike of a format name in a cell
        cell = rng.choice(_LOOKALIKES)
        bad = dict(runs[rng.randrange(len(runs))], **{rng.choice(["weights", "activations"]): cell})
        needles: tuple[str, ...] = (cell,)
    elif pick == 1:  # a malformed row among the copies
        bad, needles = rng.choice([(dict(runs[0], N="abc"), ("N",)), (dict(runs[0], D=-1), ("D",)),
                                   (dict(runs[0], loss="3,5"), ("loss",)), ("x", ("object", "record"))])
    else:  # the file is good: the option is bad
        bad = None
        options, needles = rng.choice([(["--where", "garbage"], ("garbage",)), (["--where", "nosuch>5"], ("nosuch",)),
                                       (["--exclude-worst", "99"], ("99",)), (["--where", "N>1e99"], ("no runs",)),
                                       (["--model", "unified", "--law", "{d}/nosuch.toml"], ("nosuch",)),
                                       (["--model", "unified", "--law", "{d}/fifo"], ("fifo",))])
    records: list[object] = [*runs, *extra] + ([bad] if bad is not None else [])
    if bad is not None:
        rng.shuffle(records)
    out = rng.choice([[], ["--out", "{d}/law.toml"], ["--json"]])
    return Case("runs cells", ["fit", "{d}/r.jsonl", *options, *out], {"r.jsonl": jsonl_bytes(records)}, needles)


def _law_table() -> dict:
    from gmse_cli.paths import laws_dir

    return tomllib.loads((laws_dir() / "paper-llama-c4.toml").read_text())


_CONSTANTS = [("A",), ("alpha",), ("B",), ("beta",), ("E",)] + [("families", f, c) for f in ("quantization", "sparsity")
                                                                for c in "LFC"]
_BAD_VALUES = [float("nan"), float("inf"), -float("inf"), -1.0, 1e31, "1.0", True, [1.0], {"x": 1.0}]


def _law_edit(rng: random.Random) -> tuple[dict, tuple[str, ...]]:
    law = _law_table()
    path = rng.choice(_CONSTANTS)
    table = law
    for key in path[:-1]:
        table = table[key]
    pick = rng.randrange(6)
    if pick == 0:
        table.pop(path[-1])
        return law, (path[-1],)
    if pick == 1:
        table[path[-1]].pop("value")
        return law, (path[-1], "value")
    if pick == 2:
        table[path[-1]]["sigma"] = rng.choice([float("nan"), -1.0, "x"])
        return law, (path[-1], "sigma")
    if pick == 3:
        columns = law["draws"]["constants"]
        name = rng.choice(sorted(columns))
        columns[name] = rng.choice([columns[name][:-1], [float("nan")] * len(columns[name]), []])
        return law, ("draws", name)
    if pick == 4:
        law["fitted_range"]["params"] = rng.choice([[8e8, 3e7], [float("nan"), 3e7], ["a", "b"], [1.0]])
        return law, ("fitted_range", "params")
    table[path[-1]]["value"] = rng.choice(_BAD_VALUES)
    return law, (path[-1],)


def law_fields(rng: random.Random) -> Case:
    from bad_inputs import Case

    from gmse_cli.tomlfile import dumps_toml

    pick = rng.randrange(8)
    where = "{d}/bad.toml"
    if pick == 0:
        data, needles = bytes(rng.randrange(256) for _ in range(rng.randint(1, 400))), ("bad.toml",)
    elif pick == 1:
        data, needles, where = b"", ("fifo",), "{d}/fifo"
    elif pick == 2:
        data, needles, where = b"", ("frontier",), "{d}/frontier"
    else:
        law, needles = _law_edit(rng)
        data = dumps_toml(law).encode()
    command = rng.choice([["predict", "int4", "--law", where], ["rank", "int4", "nvfp4", "--law", where, "--json"],
                          ["search", "--bits", "4.5", "--law", where, "--json"]])
    return Case("law fields", command, {"bad.toml": data}, needles)


_STAGES = {
    "quantize": {"kind": "quantize", "grid": "int", "bits": 4, "scale": "rms", "group": 32, "scale_format": "fp32"},
    "fp": {"kind": "quantize", "grid": "fp", "exponent_bits": 2, "mantissa_bits": 1, "scale": "absmax", "group": 16,
           "scale_format": "e4m3"},
    "sparsify": {"kind": "sparsify", "pattern": "n:m", "n": 2, "m": 4},
    "vq": {"kind": "vq", "dim": 2, "bits": 2, "codebook": "gaussian", "group": "row"},
    "rotate": {"kind": "rotate", "transform": "hadamard", "block": 128},
}

_WRONG = [float("nan"), float("inf"), -1, 0, 10**30, True, "x", "", [], {}, "\u0456nt", "\u200d"]


def format_fields(rng: random.Random) -> Case:
    from bad_inputs import Case

    from gmse_cli.tomlfile import dumps_toml

    files: dict[str, bytes] = {}
    pick = rng.randrange(4)
    if pick == 0:  # a group in digits other than ASCII's, or spelled as no number is
        group = rng.choice(["\uff13\uff12", "\u0663\u0662", "3_2", "32.0", "+32", "1e1", "0x20", "g32"])
        stage, needles = dict(_STAGES["quantize"], group=group), ("group",)
    elif pick == 1:  # a codebook that is no regular file
        name = rng.choice(["fifo.npy", "dir.npy", "nosuch.npy", "garbage.npy"])
        stage, needles = dict(_STAGES["vq"], codebook=name), (name,)
        files = {"dir.npy/x": b"", "garbage.npy": b"\x93NUMPY garbage"}
    else:
        kind = rng.choice(sorted(_STAGES))
        stage = dict(_STAGES[kind])
        field = rng.choice(sorted(k for k in stage if k != "kind"))
        stage[field] = rng.choice([v for v in _WRONG if v != stage[field] and (field, v) != ("mantissa_bits", 0)])  # e2m0 is one
        needles = (field,)
    wrong = next((v for v in stage.values() if isinstance(v, float)), None)  # nan, inf: TOML's own words
    text = dumps_toml({"stages": [{k: ("@" if isinstance(v, float) else v) for k, v in stage.items()}]})
    text = text.replace('"@"', str(wrong)) if wrong is not None else text
    files["f.toml"] = text.encode()
    command = rng.choice([["formats", "show", "{d}/f.toml"], ["gmse", "{d}/f.toml", "--rel-err", "0.3"],
                          ["rank", "{d}/f.toml"], ["predict", "{d}/f.toml"]])
    if pick == 1 and command[0] == "formats":  # showing a spec reads no codebook
        command = ["gmse", "{d}/f.toml", "--rel-err", "0.3"]
    return Case("format fields", command, files, needles)


_REAL_OPTIONS = [["gmse", "int4", "--rel-err"], ["rank", "int4", "--rel-err"], ["predict", "int4", "--rel-err"],
                 ["rank", "int4", "--level"], ["search", "--bits"], ["fit", "{d}/good.jsonl", "--huber-delta"]]
_REAL_TEXTS = ["3_0", "0.0_5", "1_0e-2", "\u0660.05", "\u0664", "\uff10.05", "\u0968.5", "4\u066b25", "1e\u0663"]


def real_options(rng: random.Random) -> Case:
    """A real-valued option in text Python's float reads but no one means: '3_0' was 30."""
    from bad_inputs import Case, base_files

    value = rng.choice(_REAL_TEXTS)
    return Case("real options", [*rng.choice(_REAL_OPTIONS), value], base_files(), (repr(value),))


MORE: dict[str, Callable[[random.Random], Case]] = {
    "runs cells": runs_cells, "law fields": law_fields, "format fields": format_fields, "real options": real_options,
}
