"""The format language: catalog, bit accounting, shorthand, TOML, and clean failures."""

from __future__ import annotations

import json
import math
import re
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmse_cli.errors import SpecError
from gmse_cli.spec import (
    Format,
    Quantize,
    Rotate,
    Sparsify,
    catalog,
    format_to_toml,
    load_format_toml,
    parse_shorthand,
    resolve_format,
)

REQUIRED = (
    [f"int{b}" for b in range(1, 9)]
    + ["ternary"]
    + [f"lloyd-max-{b}" for b in range(1, 5)]
    + ["fp4", "fp6-e2m3", "fp6-e3m2", "fp8-e4m3", "fp8-e5m2"]
    + ["mxfp4", "mxfp6-e2m3", "mxfp6-e3m2", "mxfp8-e4m3", "mxfp8-e5m2", "mxint8", "nvfp4", "nf4"]
    + ["int4-g128", "int8-g128", "int4-asym-g128", "int8-asym-g128"]
    + [f"sparse-{p}" for p in range(10, 100, 10)]
    + ["2:4", "1:4", "4:8", "2:4+int4", "sparse-50+int4", "2:4x2", "had128+2:4x2+int4-allstats"]
    + ["vq2-b2", "vq2-b3", "vq2-b4", "vq4-b1", "vq4-b2", "e8p", "bf16", "fp16", "fp32"]
)


def test_catalog_has_every_required_name():
    missing = [n for n in REQUIRED if n not in catalog()]
    assert not missing


@pytest.mark.parametrize("name", sorted(catalog()))
def test_catalog_round_trips(name, tmp_path):
    fmt = catalog()[name]
    assert Format.model_validate(fmt.model_dump()) == fmt
    path = tmp_path / "f.toml"
    path.write_text(format_to_toml(fmt))
    assert load_format_toml(path) == fmt
    assert resolve_format(name) == fmt


def test_written_format_files_keep_the_catalog_layout():
    text = format_to_toml(resolve_format("had128+2:4+int4"))
    assert text.startswith('name = "had128+2:4+int4"\n\n[[stages]]\nkind = "rotate"\n')
    assert text.count("[[stages]]") == 3 and "description" not in text  # empty: left out


@settings(max_examples=100, deadline=None)
@given(description=st.text(st.characters(blacklist_categories=("Cs",)), max_size=40))
def test_any_description_round_trips(description):
    fmt = resolve_format("nvfp4").model_copy(update={"description": description})
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "f.toml"
        path.write_text(format_to_toml(fmt), encoding="utf-8")
        assert load_format_toml(path) == fmt


# Bit accounting worked out by hand (row length 4096).
@pytest.mark.parametrize(
    "name, bits",
    [
        ("int4", 4 + 32 / 4096),
        ("mxfp4", 4 + 8 / 32),
        ("nvfp4", 4 + 8 / 16),
        ("nf4", 4 + 32 / 64),
        ("int4-g128", 4 + 16 / 128),
        ("int4-asym-g128", 4 + (16 + 4) / 128),
        ("mxint8", 8 + 8 / 32),
        ("ternary", math.log2(3) + 32 / 4096),
        ("bf16", 16.0),
        ("2:4", math.log2(6) / 4 + 0.5 * 16),
        ("sparse-50", 1.0 + 0.5 * 16),
        # a sparsify stage keeps the quantizer's scale count: one per group of positions
        ("2:4+int4", math.log2(6) / 4 + 0.5 * 4 + 32 / 4096),
        # N:MxK: one of C(M, N) masks per M*K entries
        ("2:4x2", math.log2(6) / 8 + 0.5 * 16),
        ("1:4x8", 2 / 32 + 0.25 * 16),
        ("3:32x4", math.log2(4960) / 128 + 3 / 32 * 16),
        ("had128+2:4x2+int4-allstats", math.log2(6) / 8 + 0.5 * 4 + 32 / 4096),
        ("vq4-b2", 2 + 32 / 4096),
        ("e8p", 2 + 32 / 4096),
    ],
)
def test_bits_per_param(name, bits):
    assert resolve_format(name).bits_per_param(4096) == pytest.approx(bits, rel=1e-12)


def test_sparse_mask_bits_are_binary_entropy():
    s = resolve_format("sparse-30")
    # a row of 4096 keeps round-half-up(0.7 x 4096 = 2867.2) = 2867 entries
    d = 2867 / 4096
    h = -(d * math.log2(d) + (1 - d) * math.log2(1 - d))
    assert s.bits_per_param() == pytest.approx(h + d * 16)


def test_shorthand_rebuilds_catalog_entries():
    assert parse_shorthand("e2m1-g32-absmax-se8m0").stages == catalog()["mxfp4"].stages
    assert parse_shorthand("e2m1-g16-absmax-se4m3").stages == catalog()["nvfp4"].stages
    assert parse_shorthand("sint4-g128-sfp16").stages == catalog()["int4-g128"].stages
    assert parse_shorthand("2:4+int4").stages == catalog()["2:4+int4"].stages
    assert parse_shorthand("sparse50+int4").stages == catalog()["sparse-50+int4"].stages


def test_nm_blocks_shorthand_and_round_trips(tmp_path):
    assert parse_shorthand("2:4x2").stages == (Sparsify(pattern="n:m", n=2, m=4, block=2),)
    assert parse_shorthand("2:4x2").stages == catalog()["2:4x2"].stages
    assert parse_shorthand("2:4x1").stages == catalog()["2:4"].stages  # K = 1 is plain N:M
    assert Sparsify(pattern="N:M", n=2, m=4, block=1) == Sparsify(pattern="n:m", n=2, m=4)
    quest = parse_shorthand("had128+2:4x2+int4-rms2.5139305786-allstats")
    assert quest.stages == catalog()["had128+2:4x2+int4-allstats"].stages
    q = quest.stages[2]
    assert isinstance(q, Quantize) and q.scale_stats == "all"
    assert parse_shorthand("2:4+int4-keptstats").stages == catalog()["2:4+int4"].stages
    for fmt in (parse_shorthand("1:8x16+e2m1-g32-absmax-se8m0-allstats"), quest):
        path = tmp_path / "f.toml"
        path.write_text(format_to_toml(fmt))
        assert load_format_toml(path) == fmt
        assert Format.model_validate(fmt.model_dump()) == fmt
        assert Format.model_validate_json(fmt.model_dump_json()) == fmt
    assert "over all entries" in quest.describe() and "blocks of 2" in quest.describe()


def test_default_scale_stats_is_left_out_of_dumps():
    # Specs written before the field existed keep their serialized form, so training run keys
    # (content hashes of the config) and results files stay valid.
    for name in ("int4", "2:4+int4", "mxfp4", "had128+int4"):
        fmt = catalog()[name]
        assert "scale_stats" not in json.dumps(fmt.model_dump(mode="json"))
        assert "scale_stats" not in fmt.model_dump_json()
    assert '"scale_stats":"all"' in catalog()["had128+2:4x2+int4-allstats"].model_dump_json()


def test_shorthand_composes_stages():
    fmt = parse_shorthand("had64+2:4+lm3-g128")
    assert isinstance(fmt.stages[0], Rotate) and fmt.stages[0].block == 64
    assert isinstance(fmt.stages[1], Sparsify) and (fmt.stages[1].n, fmt.stages[1].m) == (2, 4)
    q = fmt.stages[2]
    assert isinstance(q, Quantize) and q.grid == "lloyd-max" and q.bits == 3 and q.group == 128
    assert fmt.family == "sparsity+quantization"
    assert [f for f, _ in fmt.stage_formats()] == ["sparsity", "quantization"]


def test_stage_formats_carry_rotation_with_the_quantizer():
    parts = parse_shorthand("had+sparse30+int4").stage_formats()
    assert [len(f.stages) for _, f in parts] == [1, 2]
    assert isinstance(parts[1][1].stages[0], Rotate)


@pytest.mark.parametrize(
    "text, message",
    [
        ("inr4", "did you mean 'int4'"),
        ("int0", "bits=0"),
        ("int99", "bits=99"),
        ("5:4", "N=5 > M=4"),
        ("sparse-100", "outside [0, 1)"),
        ("int4-g0", "group"),
        ("int4-bogus", "unknown modifier 'bogus'"),
        ("int4+2:4", "stages must run rotate, then sparsify"),
        ("int4+int8", "at most one quantize"),
        ("vq4-b5", "2^20 codewords"),
        ("had100", "not a power of two"),
        ("", "empty format"),
        ("int4++int8", "empty stage"),
        ("lut[1,a]", "lut values must be numbers"),
        ("lut[1,0]", "strictly increasing"),
        ("2:4x0", "K='0' in N:MxK must be a whole number >= 1"),
        ("2:4x2.5", "K='2.5'"),
        ("2:4x", "K=''"),
        ("5:4x2", "N=5 > M=4"),
        ("2:4x2-allstats", "only applies to quantize or vq stages"),
        ("vq4-b2-allstats", "applies to quantize stages only"),
        ("2:4+bf16-allstats", "scale_stats 'all' needs a scale rule"),
        ("2:4+int4-somestats", "unknown modifier 'somestats'"),
    ],
)
def test_bad_shorthand_is_a_clean_error(text, message):
    with pytest.raises(SpecError, match=None) as info:
        resolve_format(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_group_must_divide_row_length():
    with pytest.raises(SpecError, match="does not divide the row length 4096"):
        resolve_format("int4-g3000").check_row_length(4096)
    with pytest.raises(SpecError, match="N:M group M 3"):
        resolve_format("2:3").check_row_length(4096)
    with pytest.raises(SpecError, match=r"M\*K = 4\*2 = 8 does not divide the row length 4100"):
        resolve_format("2:4x2").check_row_length(4100)
    resolve_format("2:4x2").check_row_length(4104)


@pytest.mark.parametrize(
    "body, message",
    [
        ("[[stages]]\nkind = 'quantize'\ngrid = 'int'\nbits = 4\ncolour = 'red'\n", "unknown key"),
        ("[[stages]]\nkind = 'quantize'\ngrid = 'int'\n", "needs 'bits'"),
        ("[[stages]]\nkind = 'nope'\n", "stages.0"),
        ("stages = [\n", "malformed TOML"),
        ("name = 'x'\n", "stages"),
        ("[[stages]]\nkind = 'sparsify'\npattern = 'n:m'\nn = 4\nm = 2\n", "N=4 > M=2"),
        ("[[stages]]\nkind = 'sparsify'\npattern = 'n:m'\nn = 2\nm = 4\nblock = 0\n", "stages.0.sparsify.block"),
        ("[[stages]]\nkind = 'sparsify'\npattern = 'n:m'\nn = 2\nm = 4\nblock = 2.5\n", "(got 2.5)"),
        ("[[stages]]\nkind = 'quantize'\ngrid = 'int'\nbits = 4\nscale_stats = 'some'\n", "(got 'some')"),
    ],
)
def test_bad_toml_is_a_clean_error(tmp_path, body, message):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(SpecError) as info:
        load_format_toml(path)
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["had11008+int4", "[[stages]]\nkind = 'rotate'\nblock = 11008\n"])
def test_an_error_that_names_its_value_does_not_repeat_it(tmp_path, text):
    """It said "Hadamard block 11008 is not a power of two (got 11008)"."""
    if text.startswith("["):
        (tmp_path / "r.toml").write_text(text)
        text = str(tmp_path / "r.toml")
    with pytest.raises(SpecError) as info:
        resolve_format(text)
    assert str(info.value).endswith("Hadamard block 11008 is not a power of two")


def test_toml_keys_are_case_normalized(tmp_path):
    path = tmp_path / "m.toml"
    path.write_text("[[stages]]\nkind='quantize'\ngrid='FP'\nexponent_bits=2\nmantissa_bits=1\nscale='ABSMAX'\ngroup=32\nscale_format='E8M0'\n")
    assert load_format_toml(path).stages == catalog()["mxfp4"].stages
    path.write_text(path.read_text().replace("kind='quantize'", "kind='Quantize'"))  # the kind too
    assert load_format_toml(path).stages == catalog()["mxfp4"].stages


_ALPHABET = string.ascii_lowercase + string.digits + "-+:[],."


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=_ALPHABET, max_size=24))
def test_any_string_parses_or_fails_cleanly(text):
    try:
        fmt = resolve_format(text)
    except SpecError as exc:
        assert str(exc) and "\n" not in str(exc)
    else:
        assert fmt.bits_per_param() > 0


_stage_dicts = st.one_of(
    st.fixed_dictionaries(
        {
            "kind": st.just("quantize"),
            "grid": st.sampled_from(["int", "fp", "lut", "lloyd-max", "bogus"]),
        },
        optional={
            "bits": st.integers(-2, 40),
            "exponent_bits": st.integers(-1, 10),
            "mantissa_bits": st.integers(-1, 25),
            "values": st.lists(st.floats(allow_nan=True), max_size=5),
            "scale": st.sampled_from(["absmax", "rms", "mse", "none", "x"]),
            "group": st.one_of(st.integers(-3, 300), st.sampled_from(["row", "tensor", "col"])),
            "scale_format": st.sampled_from(["fp32", "e8m0", "e4m3", "int8", "nope"]),
            "scale_constant": st.floats(-1, 5),
            "int_style": st.sampled_from(["midrise", "signed", "asymmetric", "odd"]),
        },
    ),
    st.fixed_dictionaries(
        {"kind": st.just("sparsify")},
        optional={
            "pattern": st.sampled_from(["magnitude", "n:m", "block", "random"]),
            "sparsity": st.floats(-1, 2),
            "n": st.integers(-1, 10),
            "m": st.integers(-1, 100),
            "block": st.integers(-1, 64),
        },
    ),
    st.fixed_dictionaries(
        {"kind": st.just("vq")},
        optional={
            "dim": st.integers(-1, 20),
            "bits": st.floats(-1, 6),
            "codebook": st.sampled_from(["gaussian", "e8", "x.npy", "other"]),
        },
    ),
    st.fixed_dictionaries({"kind": st.just("rotate")}, optional={"block": st.integers(-4, 4096)}),
)


def _toml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, list):
        return "[" + ", ".join(_toml_scalar(v) for v in value) + "]"
    return json.dumps(value)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stages=st.lists(_stage_dicts, min_size=0, max_size=3), extra_key=st.booleans())
def test_generated_specs_validate_or_fail_cleanly(stages, extra_key):
    lines = ['name = "gen"'] + (["unexpected = 1"] if extra_key else [])
    for stage in stages:
        lines.append("[[stages]]")
        lines += [f"{k} = {_toml_scalar(v)}" for k, v in stage.items()]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gen.toml"
        path.write_text("\n".join(lines) + "\n")
        try:
            fmt = load_format_toml(path)
        except SpecError as exc:
            assert str(exc) and "\n" not in str(exc)
        else:
            assert fmt.bits_per_param() > 0 and not extra_key


def test_one_catalog_name_resolves_from_its_own_file():
    """`uscl predict int4` reads int4's file, not all 72: the same Format the whole catalog gives."""
    from gmse_cli.spec.catalog import catalog, catalog_format

    everything = dict(catalog())
    catalog.cache_clear()
    try:
        for name, fmt in everything.items():
            assert catalog_format(name) == fmt
            assert catalog.cache_info().currsize == 0, name  # the whole catalog was not loaded
        assert catalog_format("no-such-format") is None
        assert catalog_format("x" * 300) is None  # no file can have that name: not an OSError
    finally:
        catalog.cache_clear()


def test_resolve_format_names_what_is_not_a_format():
    """Regression: a stage, a number or None was str()'d and parsed as a shorthand, so
    stage_gmse(fmt.stages[0]) said "unknown format 'kind='quantize' grid=<gridkind.int..."."""
    fmt = resolve_format("int4")
    assert resolve_format(Path("int4")) == resolve_format("int4") == resolve_format(fmt)
    for bad, kind in [(fmt.stages[0], "Quantize"), (4, "int"), (None, "NoneType"), (["int4"], "list")]:
        with pytest.raises(SpecError, match=f"not {kind} "):
            resolve_format(bad)


@pytest.mark.parametrize("text, first, second, field", [
    ("int4-g128-g64", "g128", "g64", "group"),  # 'int4-g128' is a catalog name: its g128 counts
    ("int4-g64-row", "g64", "row", "group"),
    ("2:4+int4-allstats-keptstats", "allstats", "keptstats", "scale stats"),
    ("mxfp4-floor-ceil", "floor", "ceil", "scale rounding"),
    ("int4-absmax-rms2.5", "absmax", "rms2.5", "scale"),
    ("nf4-se4m3-sbf16", "se4m3", "sbf16", "scale format"),
    ("sint8-g2-absmax-sfp16-sbf16", "sfp16", "sbf16", "scale format"),
])
def test_a_field_set_twice_is_refused_not_last_wins(text, first, second, field):
    with pytest.raises(SpecError, match=f"'{first}' and '{second}' both set the {field}; give one"):
        parse_shorthand(text)


@pytest.mark.parametrize("text", ["int4 + nf4", "2:4 +int4", "int4\t-g64", "mx fp4"])
def test_spaces_inside_a_shorthand_name_the_spelling_without_them(text):
    with pytest.raises(SpecError, match=re.escape(f"a shorthand has no spaces; write '{''.join(text.split())}'")):
        parse_shorthand(text)


@pytest.mark.parametrize("text", ["sint8-g2-absmax-sfp16", "sint4-sfp16", "int4-g128-absmax", "mxfp6-e2m3-even"])
def test_a_base_that_looks_like_a_modifier_is_no_second_setting(text):
    # 'sint8' (the signed int grid) also spells the scale format 'int8' behind an 's'
    assert parse_shorthand(text).stages


@pytest.mark.parametrize("spelling", ["vq2-b4-tensor", "vq2-b4-TENSOR"])
def test_a_vq_group_that_is_not_a_row_is_named_in_uscl_words(spelling):
    # Was pydantic's "group.literal['row']: Input should be 'row'".
    with pytest.raises(SpecError, match=r"vq: group 'tensor' must be 'row' or a whole number from 1 to 1,048,576"):
        resolve_format(spelling)
