"""The runs readers behind `uscl fit` (CSV dialects, JSON lines and lists, QuEST's records,
Chinchilla's points), the one error line of a bad runs file, --where, --exclude-worst or --fix,
and the selection they make, each re-read or re-selected here by plain csv/json/numpy code.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from fitmodels_reference import (
    CHINCHILLA,
    QUEST,
    shared,
    uscl,
)


def read_by_uscl(path: Path) -> list[tuple]:
    from gmse_cli.runs import load_runs

    return [(r.N, r.D, r.loss, r.weights, r.activations) for r in load_runs(path)]


def number_text(rng: np.random.Generator, value: float) -> str:
    """value written one of several ways (its float() is what a reader must get)."""
    style = rng.integers(6)
    text = [repr(value), f"{value:.6e}", f"{value:.6E}", f"{value:.9g}", f"{value:.4f}",
            str(int(value)) if value >= 1e3 else repr(value)][style]
    return f" {text} " if rng.random() < 0.2 else text


CSV_N, CSV_D, CSV_FLOP, CSV_LOSS = ("N", "n", " params ", "Model Size"), ("D", "tokens", "Training Tokens"), \
    ("Training FLOP", "flops", "compute"), ("loss", "Loss", "val_loss", "final_loss")
FORMATS_W = ("", "bf16", "int4", "had128+int3", "2:4+int4")
FORMATS_A = ("", "none", "had128+int4", "int8")


def csv_variant(rng: np.random.Generator) -> tuple[bytes, list[tuple]]:
    """A CSV of 2-7 runs in one of many dialects, and the runs it holds (read here)."""
    n = int(rng.integers(2, 8))
    use_flop = rng.random() < 0.4
    formats = rng.random() < 0.6
    cols = [rng.choice(CSV_N), rng.choice(CSV_FLOP if use_flop else CSV_D), rng.choice(CSV_LOSS)]
    cols += ["weights", "activations"] if formats else []
    cols += [c for c in ("seed", "note") if rng.random() < 0.5]
    order = rng.permutation(len(cols))
    rows, expected = [], []
    for _ in range(n):
        N = float(rng.choice([3e7, 1.25e8, 7.7e8])) * (1 + rng.random())
        D = N * float(rng.uniform(5, 200))
        loss = float(rng.uniform(2.0, 4.0))
        cell = {cols[0]: number_text(rng, N), cols[2]: number_text(rng, loss),
                cols[1]: number_text(rng, 6 * N * D if use_flop else D), "seed": str(int(rng.integers(3))),
                "note": "a, quoted \"note\""}
        w, a = str(rng.choice(FORMATS_W)), str(rng.choice(FORMATS_A))
        cell |= {"weights": w, "activations": a}
        Nv = float(cell[cols[0]])
        Dv = float(cell[cols[1]]) / (6 * Nv) if use_flop else float(cell[cols[1]])
        run = (Nv, Dv, float(cell[cols[2]]), (w or "bf16") if formats else "bf16",
               (None if a in ("", "none") else a) if formats else None)
        rows.append([cell[cols[i]] for i in order])
        expected.append(run)
    if rng.random() < 0.3:  # a duplicate run: read twice, as written
        rows.append(rows[0])
        expected.append(expected[0])
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n" if rng.random() < 0.5 else "\n",
                        quoting=csv.QUOTE_ALL if rng.random() < 0.3 else csv.QUOTE_MINIMAL)
    writer.writerow([cols[i] for i in order])
    writer.writerows(rows)
    text = out.getvalue() + ("\n" if rng.random() < 0.3 else "")
    if rng.random() < 0.3:
        text = text.rstrip("\r\n")  # no newline at the end
    return (b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + text.encode(), expected


JSON_N, JSON_D, JSON_LOSS = ("N", "n_params", "params", "non_embedding_params"), ("D", "tokens", "n_tokens"), \
    ("loss", "final_val_loss", "val_loss")


def record_variant(rng: np.random.Generator) -> tuple[dict | None, tuple | None]:
    """A uscl run record in one of many spellings, and the run it holds (None: one to skip)."""
    N = float(rng.choice([3e7, 1.25e8])) * (1 + rng.random())
    D, loss = N * float(rng.uniform(5, 200)), float(rng.uniform(2.0, 4.0))
    w, a = str(rng.choice(FORMATS_W)), str(rng.choice(FORMATS_A))
    values = {"N": N, "D": D, "loss": loss}
    as_text = rng.random() < 0.2  # numbers given as JSON strings
    body = {str(rng.choice(keys)): (repr(values[k]) if as_text else values[k])
            for k, keys in (("N", JSON_N), ("D", JSON_D), ("loss", JSON_LOSS))}
    if w:
        body[str(rng.choice(["weights", "weight_format"]))] = w
    if a:
        body[str(rng.choice(["activations", "acts"]))] = a
    rec = {"result": body} if rng.random() < 0.2 else body
    rec |= {"seed": int(rng.integers(3)), "note": "x", "status": str(rng.choice(["ok", "done", "finished"]))}
    skip = rng.random() < 0.1
    if skip:
        rec["status"] = "diverged"
    keys = list(rec)
    rng.shuffle(keys)
    return {k: rec[k] for k in keys}, None if skip else (N, D, loss, w or "bf16", None if a in ("", "none") else a)


def test_csv_dialects_read_as_written(tmp_path):
    import warnings

    rng = np.random.default_rng(11)
    for i in range(60):
        data, expected = csv_variant(rng)
        path = tmp_path / f"runs{i}.csv"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            got = read_by_uscl(path)
        assert got == expected, data[:300]


def test_json_lines_and_lists_read_as_written(tmp_path):
    import warnings

    from gmse_cli.runs import RunsWarning

    rng = np.random.default_rng(12)
    for i in range(40):
        pairs = [record_variant(rng) for _ in range(int(rng.integers(2, 7)))]
        if rng.random() < 0.3:  # a duplicate run: read twice, as written
            pairs.append(pairs[0])
        expected = [run for _, run in pairs if run is not None]
        recs = [rec for rec, _ in pairs]
        end = "\r\n" if rng.random() < 0.5 else "\n"
        text = "".join(json.dumps(r) + end + (end if rng.random() < 0.2 else "") for r in recs)
        for name, body in ((f"runs{i}.jsonl", text), (f"runs{i}.json", json.dumps(recs, indent=int(rng.integers(0, 3))))):
            path = tmp_path / name
            path.write_bytes((b"\xef\xbb\xbf" if rng.random() < 0.3 else b"") + body.encode())
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                got = read_by_uscl(path)
            assert got == expected, body[:300]
            assert len(caught) == len(recs) - len(expected)  # one warning per skipped (diverged) run
            assert all(issubclass(w.category, RunsWarning) and "diverged" in str(w.message) for w in caught)


def test_json_lines_non_finite_loss_is_a_skipped_run(tmp_path):
    import warnings

    path = tmp_path / "runs.jsonl"
    path.write_text('{"N": 1e8, "D": 2e9, "loss": NaN}\n{"N": 1e8, "D": 2e9, "loss": Infinity}\n'
                    '{"N": 2e8, "D": 4e9, "loss": 3.25}\n')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_by_uscl(path) == [(2e8, 4e9, 3.25, "bf16", None)]
    assert ["loss = nan" in str(w.message) for w in caught] == [True, False]
    assert "loss = inf" in str(caught[1].message)


def quest_records(n: int = 12) -> list[dict]:
    return json.loads(shared(QUEST).read_text())[:n]


def test_quest_records_read_as_written(tmp_path):
    rng = np.random.default_rng(13)
    recs = json.loads(shared(QUEST).read_text())
    for i in range(10):
        pick = [dict(recs[j]) for j in rng.choice(len(recs), size=8, replace=False)]
        for r in pick:
            r["extra"] = "kept aside"
            items = list(r.items())
            rng.shuffle(items)
            r.clear()
            r.update(items)
        path = tmp_path / f"quest{i}.json"
        path.write_text(json.dumps(pick, indent=1))
        got = read_by_uscl(path)
        assert [g[:3] for g in got] == [(float(r["non_embedding_parameters"]), float(r["tokens"]), float(r["loss"]))
                                         for r in pick]
        assert [g[4] is None for g in got] == [r["a_quant"] == "NoQuantizer" for r in pick]
        assert [("had128+" in g[3]) for g in got] == ["Hadamard" in r["w_quant"] for r in pick]


def test_quest_record_with_a_list_or_object_in_its_args_is_read(tmp_path):
    """Regression: a QuEST record whose args.seed, model_size, trust ... held a list or an object
    made the Run's metadata fail pydantic's validation: a traceback (exit 1), not a run."""
    from gmse_cli.runs import load_runs

    recs = quest_records(2)
    recs[0]["args"] = {**recs[0]["args"], "seed": [0, 1], "lr": {"peak": 1e-3}}
    recs[1]["model_size"] = {"layers": 7}
    recs[1]["trust"] = [1.0]
    path = tmp_path / "quest.json"
    path.write_text(json.dumps(recs))
    runs = load_runs(path)
    assert [(r.N, r.D, r.loss) for r in runs] == [(float(r["non_embedding_parameters"]), float(r["tokens"]), r["loss"])
                                                   for r in recs]
    assert "seed" not in runs[0].meta and "lr" not in runs[0].meta and "model_size" not in runs[1].meta
    assert runs[1].meta["n_layer"] == recs[1]["args"]["n_layer"]  # scalars are kept


def test_chinchilla_points_read_with_D_from_training_flop():
    rows = list(csv.DictReader(shared(CHINCHILLA).read_text().splitlines()))
    expected = [(float(r["Model Size"]), float(r["Training FLOP"]) / (6 * float(r["Model Size"])), float(r["loss"]),
                 "bf16", None) for r in rows]
    got = read_by_uscl(shared(CHINCHILLA))
    assert len(got) == len(expected) == 245
    assert got == expected


GOOD_CSV_ROWS = [("3e7", "6e8", "3.9"), ("6e7", "1.2e9", "3.6"), ("1.2e8", "2.4e9", "3.4"), ("2.4e8", "4.8e9", "3.2"),
                 ("4.8e8", "9.6e9", "3.05"), ("9.6e8", "1.92e10", "2.95"), ("3e7", "3e9", "3.7")]


def csv_with(cell: str, column: int, header=("N", "D", "loss"), row: int = 3) -> str:
    rows = [list(r) for r in GOOD_CSV_ROWS]
    rows[row][column] = cell
    return ",".join(header) + "\n" + "".join(",".join(r) + "\n" for r in rows)


def jsonl_with(key: str, value: str) -> str:
    lines = [f'{{"N": {n}, "D": {d}, "loss": {x}}}' for n, d, x in GOOD_CSV_ROWS]
    lines[2] = lines[2].replace(f'"{key}": ' + dict(zip("NDl", GOOD_CSV_ROWS[2], strict=True))[key[0]], f'"{key}": {value}')
    return "\n".join(lines) + "\n"


def quest_with(**changes) -> str:
    recs = quest_records(8)
    recs[5] = {k: v for k, v in {**recs[5], **changes}.items() if v != "<drop>"}
    return json.dumps(recs)


def bad_inputs():
    """(file name, contents, what the one error line must name)."""
    cases = []
    for column, field in ((0, "N"), (1, "D"), (2, "loss")):
        for cell in ("nan", "inf", "-4e8", "0", "abc", "", "1e999", "-inf"):
            shown = {"": "''", "abc": "'abc'"}.get(cell, cell)
            if field != "N":  # D and loss are checked as numbers: their float
                shown = {"": "''", "abc": "'abc'"}.get(cell, repr(float(cell)) if cell not in ("", "abc") else cell)
            cases.append((f"csv-{field}-{cell or 'empty'}.csv", csv_with(cell, column), [f"{field} = ", shown]))
    for cell in ("-1e18", "0", "nan", "inf", "x"):
        cases.append((f"csv-flop-{cell}.csv", csv_with(cell, 1, header=("N", "Training FLOP", "loss")),
                      ["Training FLOP = ", cell]))
    cases += [
        ("csv-no-loss.csv", "N,D,val\n1e8,2e9,3\n", ["loss"]),
        ("csv-short-row.csv", "N,D,loss\n1e8,2e9\n", ["fields"]),
        ("csv-long-row.csv", "N,D,loss\n1e8,2e9,3,4\n", ["fields"]),
        ("csv-empty.csv", "", ["no data rows"]),
        ("csv-header-only.csv", "N,D,loss\r\n", ["no data rows"]),
        ("csv-bad-format.csv", "N,D,loss,weights\n1e8,2e9,3,int99q\n", ["int99q"]),
        ("csv-repeated-column.csv", "N,D,loss,n\n1e8,2e9,3,4\n", ["'n'"]),
        ("csv-utf16.csv", "N,D,loss\n1e8,2e9,3\n".encode("utf-16").decode("latin-1"), ["UTF-16"]),
    ]
    for key, value in (("N", "NaN"), ("N", "-1"), ("N", "0"), ("N", '"abc"'), ("N", "true"), ("N", "[1]"),
                       ("N", "1" + "0" * 400), ("D", "Infinity"), ("D", "-2e9"), ("D", '"x"'), ("loss", "-3"),
                       ("loss", "0"), ("loss", '"three"'), ("loss", "false")):
        shown = {"NaN": "nan", "Infinity": "inf", '"abc"': "abc", '"x"': "x", '"three"': "three", "true": "True",
                 "false": "False", "[1]": "[1]"}.get(value, value[:20])
        if value in ("-1", "0", "-2e9", "-3"):
            shown = repr(float(value))
        cases.append((f"jsonl-{key}-{len(cases)}.jsonl", jsonl_with(key, value), [f"{key} = ", shown]))
    cases += [
        ("jsonl-missing.jsonl", '{"N": 1e8, "D": 2e9}\n', ["missing loss"]),
        ("jsonl-not-json.jsonl", '{"N": 1e8, "D": 2e9, "loss": 3\n', ["not a JSON line"]),
        ("jsonl-array-line.jsonl", "[1, 2]\n", ["record 0: expected an object"]),  # read as a JSON list
        ("jsonl-empty.jsonl", "", ["no runs to fit"]),
        ("jsonl-bad-format.jsonl", '{"N": 1e8, "D": 2e9, "loss": 3, "weights": "int99q"}\n', ["int99q"]),
        ("json-empty-list.json", "[]", ["no runs to fit"]),
    ]
    if not QUEST.is_file():  # collected with no ../shared/data (an unpacked sdist): the rest need QuEST's runs
        return cases
    cases += [
        ("quest-loss.json", quest_with(loss=-1.5), ["loss = -1.5"]),
        ("quest-tokens.json", quest_with(tokens="many"), ["tokens = 'many'"]),
        ("quest-params-null.json", quest_with(non_embedding_parameters=None), ["non_embedding_parameters = None"]),
        ("quest-bits.json", quest_with(w_quant="TrustQuantizer", w_bits=4.5), ["bits=4.5"]),
        ("quest-bits-text.json", quest_with(w_quant="TrustQuantizer", w_bits="4"), ["w_bits = '4'"]),
        ("quest-quantizer.json", quest_with(w_quant="MagicQuantizer"), ["MagicQuantizer"]),
        ("quest-missing.json", quest_with(a_quant="<drop>"), ["a_quant"]),
        ("quest-args.json", quest_with(args=[1]), ["args = [1]"]),
        ("quest-record.json", json.dumps([*quest_records(3), 7]), ["record 3"]),
    ]
    return cases


def assert_one_error_line(code: int, err: str, *names: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for name in names:
        assert name.lower() in lines[0].lower(), (name, lines[0])


@pytest.mark.parametrize("name, contents, names", bad_inputs(), ids=[c[0] for c in bad_inputs()])
def test_bad_runs_file_is_one_error_line(tmp_path, name, contents, names):
    path = tmp_path / name
    path.write_bytes(contents.encode("latin-1") if "utf16" in name else contents.encode())
    code, out, err = uscl("fit", str(path), "--model", "dense", "--no-heldout", "--json")
    assert out == ""
    assert_one_error_line(code, err, *names)


@pytest.mark.parametrize("option", [
    ("--where", "N>=abc", "abc"), ("--where", "nosuchkey=1", "nosuchkey"), ("--where", "N", "KEY OP VALUE"),
    ("--where", "N>1e30", "no runs left"), ("--exclude-worst", "7", "7"), ("--exclude-worst", "-2", "-2"),
    ("--exclude-worst", "two", "--exclude-worst"), ("--fix", "alpha=abc", "alpha=abc"), ("--fix", "A=-3", "A"),
    ("--fix", "E=nan", "E"), ("--fix", "beta=inf", "beta"), ("--fix", "gamma_w=2", "gamma_w"), ("--fix", "alpha", "alpha"),
])
def test_bad_selection_or_fix_is_one_error_line(tmp_path, option):
    path = tmp_path / "runs.csv"
    path.write_text(csv_with("3.5", 2))
    code, out, err = uscl("fit", str(path), "--model", "dense", "--no-heldout", option[0], option[1])
    assert out == ""
    assert_one_error_line(code, err, option[2])


def test_where_and_exclude_worst_keep_the_runs_a_plain_filter_keeps(tmp_path):
    from gmse_cli.runs import exclude_worst, load_runs, select

    rng = np.random.default_rng(14)
    rows = []
    for _ in range(60):
        N = float(rng.choice([3e7, 1e8, 3e8]))
        w, a = str(rng.choice(["bf16", "int4", "had128+int3"])), str(rng.choice(["", "had128+int4"]))
        rows.append({"N": N, "D": N * float(rng.choice([10, 25, 80])), "loss": float(rng.choice([2.5, 3.0, 3.1, 3.5])),
                     "weights": w, "activations": a, "seed": int(rng.integers(3)), "tag": str(rng.choice(["x", "yz"]))})
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights,activations,seed,tag\n" + "".join(
        f"{r['N']},{r['D']},{r['loss']},{r['weights']},{r['activations']},{r['seed']},{r['tag']}\n" for r in rows))
    runs = load_runs(path)

    def bits(spec: str) -> float:
        return 16.0 if spec in ("", "bf16") else float(spec[-1])

    filters = {
        "N>=1e8": lambda r: r["N"] >= 1e8, "N < 1e8": lambda r: r["N"] < 1e8, "scheme~INT": lambda r: "int" in r["weights"] + r["activations"],
        "weights!~had": lambda r: "had" not in r["weights"], "w_bits=4": lambda r: bits(r["weights"]) == 4,
        "a_bits!=16": lambda r: bits(r["activations"]) != 16, "activations=none": lambda r: r["activations"] == "",
        "tpp<=25": lambda r: r["D"] / r["N"] <= 25, "seed=2": lambda r: r["seed"] == 2, "tag=YZ": lambda r: r["tag"] == "yz",
        "loss>3": lambda r: r["loss"] > 3, "D==3e9": lambda r: r["D"] == 3e9,
    }
    for expr, keep in filters.items():
        got = select(runs, [expr])
        assert [(r.N, r.D, r.loss) for r in got] == [(r["N"], r["D"], r["loss"]) for r in rows if keep(r)], expr
    both = select(runs, ["N>=1e8", "w_bits=4"])
    assert len(both) == sum(r["N"] >= 1e8 and bits(r["weights"]) == 4 for r in rows)
    # dropping the k highest losses drops every run tied with the k-th highest
    for k in (1, 3, 10):
        cut = sorted(r["loss"] for r in rows)[-k]
        assert [r.loss for r in exclude_worst(runs, k)] == [r["loss"] for r in rows if r["loss"] < cut]
