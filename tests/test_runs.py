"""Loading runs: QuEST's published runs, uscl train JSON lines, CSV (Chinchilla), selection."""

from __future__ import annotations

import json
import math
import warnings

import pytest

from gmse_cli.errors import DataError
from gmse_cli.runs import (
    Run,
    RunsWarning,
    exclude_worst,
    load_csv,
    load_quest_runs,
    load_runs,
    load_train_jsonl,
    parse_where,
    quest_scheme,
    select,
)
from gmse_cli.spec import resolve_format

# Every quantizer class in QuEST's file, with the catalog scheme it implements (written out by
# hand from QuEST's quantizer source: rms-scaled midrise grid, optional 128-block Hadamard;
# FourEight: the 2 smallest-norm of every 4 pairs zeroed, the int4 scale from the whole row).
QUEST_NAMES = [
    ("TrustQuantizer", 4, "int4"),
    ("ClipQuantizer", 1, "int1"),
    ("HadamardTrustQuantizer", 3, "had128+int3"),
    ("HalfHadamardTrustQuantizer", 2, "had128+int2"),
    ("HadamardClipQuantizer", 1, "had128+int1"),
    ("HalfHadamardClipQuantizer", 1, "had128+int1"),
    ("HadamardFourEightTrustQuantizer", 4, "had128+2:4x2+int4-allstats"),
    ("HalfHadamardFourEightTrustQuantizer", 4, "had128+2:4x2+int4-allstats"),
    ("FourEightTrustQuantizer", 4, "2:4x2+int4-allstats"),
    ("HalfHadamardFP4TrustQuantizer", 16, "had128+fp4"),
    ("NoQuantizer", 16, None),
]


@pytest.mark.parametrize("name, bits, expected", QUEST_NAMES)
def test_quest_quantizer_mapping(name, bits, expected):
    got = quest_scheme(name, bits)
    assert got == expected
    if got is not None:
        resolve_format(got)  # every mapped spec is a valid format


def test_quest_unknown_quantizer_is_named():
    with pytest.raises(DataError, match="'LSQQuantizer'"):
        quest_scheme("LSQQuantizer", 4)


def test_quest_unmappable_file_fails_with_its_name(tmp_path):
    path = tmp_path / "q.json"
    path.write_text(json.dumps([{"non_embedding_parameters": 3e7, "tokens": 3e9, "loss": 3.5,
                                 "w_quant": "StretchedElasticQuantizer", "a_quant": "NoQuantizer",
                                 "w_bits": 2, "a_bits": 16}]))
    with pytest.raises(DataError, match="StretchedElasticQuantizer"):
        load_runs(path)


def test_quest_runs_load(shared_data):
    path = shared_data / "quest_runs.json"
    raw = json.loads(path.read_text())
    runs = load_quest_runs(path)
    assert len(runs) == len(raw) == 104
    for run, rec in zip(runs, raw, strict=True):
        assert run.N == rec["non_embedding_parameters"]
        assert run.D == rec["tokens"]
        assert run.loss == rec["loss"]
        assert (run.activations is None) == (rec["a_quant"] == "NoQuantizer")
        assert (run.weights == "bf16") == (rec["w_quant"] == "NoQuantizer")
        assert ("had128" in run.weights) == ("Hadamard" in rec["w_quant"])
    bf16 = [r for r in runs if r.scheme == "bf16"]
    assert len(bf16) == sum(r["w_quant"] == "NoQuantizer" for r in raw) == 6
    assert all(r.is_dense for r in bf16)
    fp4 = [r for r in runs if "fp4" in r.weights]
    assert fp4 and all(r.w_bits == 4 and r.a_bits == 4 for r in fp4)  # QuEST records 16 for FP4
    weights_only = [r for r in runs if r.activations is None and r.weights != "bf16"]
    assert len(weights_only) == sum(r["a_quant"] == "NoQuantizer" and r["w_quant"] != "NoQuantizer" for r in raw)
    assert all(r.scheme == r.weights for r in weights_only)
    assert all(r.a_bits == 16 for r in weights_only)


def test_where_selection_matches_a_direct_count(shared_data):
    path = shared_data / "quest_runs.json"
    raw = json.loads(path.read_text())
    runs = load_quest_runs(path)
    # w_bits: QuEST's field, except FP4 runs (recorded 16, really 4 bits).
    expect_w4 = sum((r["w_bits"] == 4) or "FP4" in r["w_quant"] for r in raw)
    assert len(select(runs, ["w_bits=4"])) == expect_w4
    assert len(select(runs, ["N>=1e8"])) == sum(r["non_embedding_parameters"] >= 1e8 for r in raw)
    assert len(select(runs, ["scheme~had", "N<1e8"])) == sum(
        "Hadamard" in r["w_quant"] and r["non_embedding_parameters"] < 1e8 for r in raw)
    assert len(select(runs, ["activations=none"])) == sum(r["a_quant"] == "NoQuantizer" for r in raw)
    assert len(select(runs, ["w_quant=ClipQuantizer"])) == sum(r["w_quant"] == "ClipQuantizer" for r in raw)
    assert len(select(runs, ["scheme!~had"])) == sum("Hadamard" not in r["w_quant"] for r in raw)


def test_where_rejects_bad_expressions(shared_data):
    runs = load_quest_runs(shared_data / "quest_runs.json")
    with pytest.raises(DataError, match="KEY OP VALUE"):
        parse_where("w_bits")
    with pytest.raises(DataError, match="'colour' is not a field"):
        select(runs, ["colour=red"])


def test_parse_where_operators():
    assert parse_where("N >= 1e8") == ("N", ">=", "1e8")
    assert parse_where("w_bits==4") == ("w_bits", "=", "4")
    assert parse_where("scheme~had") == ("scheme", "~", "had")
    assert parse_where("scheme!~had") == ("scheme", "!~", "had")


def test_chinchilla_csv(shared_data):
    path = shared_data / "chinchilla_epoch_extracted.csv"
    runs = load_csv(path)
    assert len(runs) == 245
    # First data row of the file, by hand: D = FLOP / (6 N).
    first = runs[0]
    assert first.N == 6795600349.289497
    assert first.D == pytest.approx(9.993852799709755e18 / (6 * 6795600349.289497), rel=1e-15)
    assert first.loss == 5.005581996196243
    assert all(r.scheme == "bf16" and r.is_dense for r in runs)


def test_exclude_worst_drops_highest_losses(shared_data):
    runs = load_csv(shared_data / "chinchilla_epoch_extracted.csv")
    kept = exclude_worst(runs, 5)
    assert len(kept) == 240
    dropped = sorted(r.loss for r in runs)[-5:]
    assert max(r.loss for r in kept) < min(dropped)
    with pytest.raises(DataError, match="would drop all"):
        exclude_worst(runs, 245)


def test_plain_csv_with_formats(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights,activations,seed\n1e7,2e8,3.9,int4,,0\n2e7,4e8,3.6,int4,int4,1\n3e7,6e8,3.4,bf16,none,2\n")
    runs = load_csv(path)
    assert [r.scheme for r in runs] == ["int4", "W:int4 A:int4", "bf16"]
    assert runs[1].activations == "int4"
    assert runs[0].meta["seed"] == 0.0
    assert runs[0].w_bits == 4 and runs[0].a_bits == 16


def test_utf8_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    # Regression: Excel's "CSV UTF-8" starts with a byte-order mark, which became part of the
    # first column's name ('\ufeffN'), and a runs file with one was refused ("needs columns N").
    body = "N,D,loss,weights\n1e7,2e8,3.9,int4\n2e7,4e8,3.6,bf16\n"
    plain, marked = tmp_path / "plain.csv", tmp_path / "marked.csv"
    plain.write_text(body, encoding="utf-8")
    marked.write_bytes(b"\xef\xbb\xbf" + body.encode())
    strip = [r.model_copy(update={"source": "", "location": ""}) for r in load_csv(plain)]
    assert [r.model_copy(update={"source": "", "location": ""}) for r in load_csv(marked)] == strip
    line = tmp_path / "marked.jsonl"
    line.write_bytes(b"\xef\xbb\xbf" + b'{"weights": "int4", "N": 1e7, "D": 2e8, "loss": 3.9}\n')
    assert load_train_jsonl(line)[0].model_copy(update={"source": "", "location": ""}) == strip[0]


def test_csv_without_needed_columns(tmp_path):
    path = tmp_path / "runs.csv"
    path.write_text("params,loss\n1e7,3.9\n")
    with pytest.raises(DataError, match="needs columns N, loss and D"):
        load_csv(path)


@pytest.mark.parametrize("loss", [float("nan"), 0.0, -1.0, float("inf")])
def test_bad_losses_are_rejected(tmp_path, loss):
    path = tmp_path / "runs.csv"
    path.write_text(f"N,D,loss\n1e7,2e8,{loss}\n")
    with pytest.raises(DataError, match="loss"):
        load_csv(path)


def _train_record(**kw):
    rec = {
        "schema_version": 1, "run_key": "k", "name": "tiny-int4", "status": "ok",
        "weights": "int4", "weights_spec": resolve_format("int4").model_dump(mode="json"),
        "activations": None, "activations_spec": None,
        "stage_gmse": {"weights": [{"family": "quantization", "name": "int4[quantize]", "gmse": 0.0115,
                                    "ci_low": 0.0115, "ci_high": 0.0115, "method": "exact"}]},
        "format_gmse": {"weights": 0.0115}, "params": 1_000_000, "tokens": 20_000_000,
        "tokens_per_param": 20.0, "val_loss": 4.2, "val_tokens": 8192, "seed": 0,
    }
    rec.update(kw)
    return rec


def test_train_jsonl(tmp_path):
    path = tmp_path / "runs.jsonl"
    lines = [
        _train_record(),
        _train_record(status="diverged", val_loss=None, run_key="d"),
        _train_record(activations="int4", activations_spec=resolve_format("int4").model_dump(mode="json"),
                      stage_gmse={"weights": [{"family": "quantization", "gmse": 0.0115}],
                                  "activations": [{"family": "quantization", "gmse": 0.0115}]}, val_loss=4.4),
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    with pytest.warns(RunsWarning, match="diverged"):
        runs = load_runs(path)
    assert len(runs) == 2
    assert runs[0].N == 1_000_000 and runs[0].D == 20_000_000 and runs[0].loss == 4.2
    assert runs[0].weight_format() == resolve_format("int4")
    assert runs[0].stage_gmse == (("quantization", 0.0115),)
    assert runs[1].scheme == "W:int4 A:int4"
    assert runs[1].stage_gmse == (("quantization", 0.0115), ("quantization", 0.0115))



def test_a_json_list_of_run_records_reads_like_their_lines(tmp_path):
    records = [
        _train_record(),
        _train_record(status="diverged", val_loss=None, run_key="d"),
        _train_record(activations="int4", val_loss=4.4),
    ]
    lines, listed = tmp_path / "runs.jsonl", tmp_path / "runs.json"
    lines.write_text("\n".join(json.dumps(x) for x in records) + "\n")
    listed.write_text(json.dumps(records, indent=1))
    with pytest.warns(RunsWarning, match="diverged"):
        expected = load_runs(lines)
    with pytest.warns(RunsWarning, match=r"runs.json record 1: skipping run with status"):
        got = load_runs(listed)
    assert [r.model_copy(update={"source": "", "location": ""}) for r in got] == [r.model_copy(update={"source": "", "location": ""}) for r in expected]
    del records[0]["tokens"]
    listed.write_text(json.dumps(records[:1]))
    with pytest.raises(DataError, match=r"runs.json record 0: missing D"):
        load_runs(listed)

def test_train_jsonl_bad_line(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_train_record()) + "\nnot json\n")
    with pytest.raises(DataError, match=r"runs.jsonl:2: not a JSON line"):
        load_train_jsonl(path)


def test_train_jsonl_missing_fields(tmp_path):
    path = tmp_path / "runs.jsonl"
    rec = _train_record()
    del rec["tokens"]
    path.write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError, match="missing D"):
        load_train_jsonl(path)


def test_run_round_trip():
    run = Run(scheme="W:int4 A:int4", weights="int4", activations="int4", N=1e8, D=2e9, loss=3.1, meta={"seed": 1})
    assert Run.model_validate(run.model_dump()) == run
    assert run.tokens_per_param == 20.0
    with pytest.raises(DataError, match="N = -1"):
        Run(scheme="x", weights="int4", N=-1, D=1, loss=1)


def test_missing_file():
    with pytest.raises(DataError, match="does not exist"):
        load_runs("/nonexistent/runs.jsonl")


def test_no_warning_for_clean_file(tmp_path):
    path = tmp_path / "runs.jsonl"
    path.write_text(json.dumps(_train_record()) + "\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_train_jsonl(path)) == 1
    assert math.isclose(load_train_jsonl(path)[0].w_bits, 4.0)


def test_a_csv_row_short_of_the_header_is_named(tmp_path):
    """Regression: a row missing its last cells read them as blank, so an int4 run whose weights
    cell was cut off was fitted as bf16 (capacity 1), silently."""
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights\n1e7,2e8,3.9,int4\n2e7,4e8,3.6\n")
    with pytest.raises(DataError, match=r"runs.csv:3: 3 fields for the header's 4 \(no weights\)"):
        load_csv(path)
    path.write_text("N,D,loss,weights\n1e7,2e8,3.9,int4\n2e7,4e8,3.6,\n")  # an empty cell is blank: bf16
    assert [r.weights for r in load_csv(path)] == ["int4", "bf16"]


def test_a_csv_row_longer_than_the_header_is_named(tmp_path):
    # An unquoted comma in a cell shifts the later cells past the header: named, not ignored.
    path = tmp_path / "runs.csv"
    path.write_text("N,D,loss,weights\n1e7,2e8,3.9,int4\n2e7,4e8,3.6,int4,g128\n")
    with pytest.raises(DataError, match=r"runs.csv:3: 5 fields for the header's 4; quote a cell that holds a comma"):
        load_csv(path)
    path.write_text('N,D,loss,weights\n2e7,4e8,3.6,"int4"\n')
    assert [r.weights for r in load_csv(path)] == ["int4"]
