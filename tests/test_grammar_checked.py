"""The format language from the outside: equivalent spellings are one format (one GMSE cache
key), meaningless or foreign spellings are one error line, and the catalog and the torchao
import hold no silent redefinitions.

Each equivalence is justified independently of the spec code: the two spellings compress a
tensor to the same bits (numpy reference compressor), or the peer library's own enum says what
it can express.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmse_cli.compress import compress
from gmse_cli.errors import SpecError
from gmse_cli.gmse.stored import gmse_key
from gmse_cli.spec import catalog, load_format_toml, resolve_format
from gmse_cli.spec.format import validate_format

X = np.random.default_rng(7).standard_normal((4, 256)).astype(np.float32) * np.float32(3.0)

SAME = [
    ("mxfp4", "mxfp4-floor"),  # floor is absmax's default e8m0 rounding
    ("mxint8", "mxint8-floor"),
    ("e2m1-g32-rms-se8m0", "e2m1-g32-rms-se8m0-nearest"),  # nearest: the rms rule's default
    ("e4m3-g32-mse-se8m0", "e4m3-g32-mse-se8m0-nearest"),
    ("lm3", "lloyd-max-3"),  # the README's alias
    ("lm2-g64", "lloyd-max-2-g64"),
    ("int4", "int4-allstats"),  # no sparsify stage: all entries are the kept ones
    ("had64+sint3-g64", "had64+sint3-g64-allstats"),
]


@pytest.mark.parametrize(("a", "b"), SAME)
def test_equivalent_spellings_are_one_format_and_one_cache_key(a, b):
    fa, fb = resolve_format(a), resolve_format(b)
    ya, yb = compress(fa, X, backend="numpy"), compress(fb, X, backend="numpy")
    assert np.array_equal(ya, yb)  # the same format ...
    assert fa.stages == fb.stages  # ... so one spec
    assert gmse_key(fa, 256) == gmse_key(fb, 256)  # ... and one cache entry


def _stage_toml(**fields) -> str:
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in fields.items())
    return "[[stages]]\nkind = \"quantize\"\n" + body


@pytest.mark.parametrize(("name", "extra"), [
    ("int4", {"int_style": "midrise"}),
    ("fp4", {"fp_style": "finite", "bits": 4}),
    ("fp8-e4m3", {"fp_style": "FN"}),
    ("nf4", {"bits": 4}),
    ("mxfp4", {"scale_rounding": "floor"}),
])
def test_defaults_written_out_in_a_file_are_the_same_format(tmp_path, name, extra):
    shipped = catalog()[name]
    fields = {k: v for k, v in shipped.stages[0].model_dump(mode="json", exclude_none=True).items() if k != "kind"}
    path = tmp_path / "spelled.toml"
    path.write_text(_stage_toml(**fields, **extra))
    spelled = load_format_toml(path)
    assert np.array_equal(compress(spelled, X, backend="numpy"), compress(shipped, X, backend="numpy"))
    assert gmse_key(spelled, 256) == gmse_key(shipped, 256)


def test_a_lut_refuses_bits_that_are_not_its_size():
    with pytest.raises(SpecError, match="bits=7"):
        validate_format({"stages": [{"kind": "quantize", "grid": "lut", "values": [-1, 0, 1], "bits": 7}]}, source="t")


@pytest.mark.parametrize("spec", ["fp16-se8m0", "bf16-sbf16", "fp32-se4m3"])
def test_a_plain_cast_refuses_a_scale_format(spec):
    # a cast stores no scales: the scale format changed the cache key and nothing else
    with pytest.raises(SpecError, match="scale_format"):
        resolve_format(spec)


@pytest.mark.parametrize("spec", ["int\uff14", "int\u0664", "lut[\uff11,2]", "2:\uff14"])
def test_non_ascii_digits_are_refused(run_cli, spec):
    with pytest.raises(SpecError, match="ASCII"):
        resolve_format(spec)
    result = run_cli("formats", "show", spec)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error:")


def test_torchao_import_refuses_a_scaling_mode_torchao_lacks():
    from gmse_cli.interop import import_config

    config = {"_type": "MXDynamicActivationMXWeightConfig", "_version": 1,
              "_data": {"block_size": 32, "scaling_mode": {"_type": "ScaleCalculationMode", "_data": "NEAREST"}}}
    with pytest.raises(SpecError, match="NEAREST"):
        import_config(config)
    try:  # the peer's own list, where installed
        from torchao.prototype.mx_formats.config import ScaleCalculationMode
    except Exception:
        return
    assert "NEAREST" not in {m.name for m in ScaleCalculationMode}


def test_two_catalog_files_with_one_name_are_refused(tmp_path, monkeypatch):
    import importlib

    catalog_module = importlib.import_module("gmse_cli.spec.catalog")  # (the package's `catalog` is the function)

    (tmp_path / "int4.toml").write_text(_stage_toml(grid="int", bits=4))
    (tmp_path / "zz-mine.toml").write_text('name = "int4"\n' + _stage_toml(grid="int", bits=3))
    monkeypatch.setattr(catalog_module, "catalog_dir", lambda: tmp_path)
    catalog_module.catalog.cache_clear()
    try:
        with pytest.raises(SpecError, match="both hold 'int4'"):
            catalog_module.catalog()
    finally:
        catalog_module.catalog.cache_clear()


@pytest.mark.parametrize(("spec", "value"), [
    ("int4-g0", "group 0"),
    ("lloyd-max-8-g" + "9" * 30, "9" * 30),  # no row is that long: `formats show` printed it
    ("vq2-b2-g4194304", "4194304"),
    ("had2097152+int4", "2097152"),
    ("2:4x999999999", "999999999"),
])
def test_group_and_block_sizes_beyond_any_row_are_one_error_line(run_cli, spec, value):
    result = run_cli("formats", "show", spec)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and lines[0].startswith("error:") and value in lines[0]


def test_an_imported_config_with_a_huge_group_is_refused(tmp_path, run_cli):
    config = {"config_groups": {"group_0": {"targets": ["Linear"], "weights": {
        "num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 10**30}}}}
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    result = run_cli("formats", "import", str(path))
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and str(10**30) in lines[0]


def test_a_vq_group_reads_in_any_case(tmp_path):
    path = tmp_path / "vq.toml"
    path.write_text('[[stages]]\nkind = "vq"\ndim = 2\nbits = 2\ngroup = "ROW"\n')
    assert load_format_toml(path).stages == resolve_format("vq2-b2").stages


def test_export_refuses_to_overwrite_the_catalog_file_it_reads(tmp_path, monkeypatch, run_cli):
    import importlib
    import shutil

    from gmse_cli import paths

    catalog_module = importlib.import_module("gmse_cli.spec.catalog")
    shipped = tmp_path / "formats"
    shutil.copytree(paths.catalog_dir(), shipped)  # a copy: the real catalog is never at risk
    monkeypatch.setattr(paths, "catalog_dir", lambda: shipped)
    monkeypatch.setattr(catalog_module, "catalog_dir", lambda: shipped)
    catalog_module.catalog.cache_clear()
    target = shipped / "w4a16.toml"
    before = target.read_bytes()
    try:
        result = run_cli("formats", "export", "w4a16", "--to", "torchao", "-o", str(target))
    finally:
        catalog_module.catalog.cache_clear()
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.code == 2 and len(lines) == 1 and "w4a16.toml" in lines[0]
    assert target.read_bytes() == before


_BASES = ["int3", "int4", "sint4", "aint4", "fint4", "e2m1", "e4m3", "e5m2", "e3m2", "e1m0", "lm2", "lm3",
          "lloyd-max-4", "lut[-1,0,1]", "nf4", "fp16", "bf16"]
_MODIFIERS = ["", "-g32", "-g64-absmax", "-rms", "-mse", "-g32-absmax-se8m0", "-g32-se8m0", "-g32-mse-se8m0",
              "-g16-absmax-se4m3", "-sbf16", "-tensor"]


def _implied_defaults(stage: dict) -> dict:
    """The stage with every setting its absence implies written out (the vocabulary's docs)."""
    out = dict(stage)
    if out["grid"] == "int":
        out.setdefault("int_style", "midrise")
    if out["grid"] == "fp":
        e, m = out["exponent_bits"], out["mantissa_bits"]
        out.setdefault("fp_style", "ieee" if e >= 5 else "fn" if (e, m) == (4, 3) else "finite")
        out["bits"] = 1 + e + m
    if out["grid"] == "lloyd-max" and out["scale"] == "rms":
        out.setdefault("scale_constant", 1.0)
    if out.get("scale_format") == "e8m0" and "scale_rounding" not in out:
        asym = out.get("int_style") == "asymmetric"
        if out["scale"] in ("rms", "mse"):
            out["scale_rounding"] = "nearest"
        elif out["scale"] == "absmax" and not asym:
            out["scale_rounding"] = "floor"
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(_BASES), st.sampled_from(_MODIFIERS))
def test_every_implied_default_written_out_is_the_same_format(base, modifier):
    try:
        fmt = resolve_format(base + modifier)
    except SpecError:
        return  # a combination the grammar refuses (e.g. an rms scale on an asymmetric grid)
    stage = fmt.stages[0].model_dump(mode="json", exclude_none=True)
    spelled = validate_format({"stages": [_implied_defaults(stage)]}, source="spelled out")
    assert np.array_equal(compress(spelled, X, backend="numpy"), compress(fmt, X, backend="numpy"), equal_nan=True)
    assert spelled.stages == fmt.stages
    assert gmse_key(spelled, 256) == gmse_key(fmt, 256)
