"""Export to and import from compressed-tensors and torchao configs: round trips, refusals
naming what cannot be expressed, and (when installed) the peer libraries parsing the JSON."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from gmse_cli.errors import SpecError
from gmse_cli.interop import TARGETS, export_format, import_config
from gmse_cli.spec import catalog, resolve_format


def _exportable(to: str) -> list[str]:
    names = []
    for name in sorted(catalog()):
        try:
            export_format(resolve_format(name), to)
        except SpecError:
            continue
        names.append(name)
    return names


# What each config language can hold among the catalog's formats (by their documented
# conventions: compressed-tensors has full-range and zero-point ints, NVFP4 and 'even' MX;
# torchao has int1-8 both ways, every MX rounding but 'even' included, and NVFP4).
EXPECTED = {
    "compressed-tensors": {"w3a16", "w4a16", "w8a16", "w4a16-asym", "int4-asym-g128", "nvfp4", "mxfp4-even"},
    "torchao": {"w3a16", "w4a16", "w8a16", "w4a16-asym", "nvfp4", "mxfp4", "mxfp4-rceil", "mxfp8-e4m3", "mxfp8-e4m3-rceil"},
}


@pytest.mark.parametrize("to", TARGETS)
def test_catalog_formats_round_trip(to):
    names = _exportable(to)
    assert EXPECTED[to] <= set(names)
    for name in names:
        fmt = resolve_format(name)
        data = json.loads(json.dumps(export_format(fmt, to)))  # through JSON, as a file holds it
        back = import_config(data, name=name)
        assert back.stages == fmt.stages, name
        assert export_format(back, to) == data


@pytest.mark.parametrize(
    ("name", "to", "why"),
    [
        ("int4-g128", "compressed-tensors", "int_style 'signed'"),
        ("int4-g128", "torchao", "'signed'"),
        ("nf4", "compressed-tensors", "lut"),
        ("nf4", "torchao", "lut"),
        ("mxfp4", "compressed-tensors", "'floor'"),
        ("vq2-b2", "torchao", "vq"),
        ("2:4+int4", "compressed-tensors", "spars"),
    ],
)
def test_refusals_name_what_cannot_be_expressed(name, to, why):
    with pytest.raises(SpecError, match="cannot export") as err:
        export_format(resolve_format(name), to)
    assert why in str(err.value) and "\n" not in str(err.value)


def test_unknown_target_and_bad_config():
    with pytest.raises(SpecError, match="unknown config target"):
        export_format(resolve_format("w4a16"), "gguf")
    with pytest.raises(SpecError):
        import_config([1, 2])


@pytest.mark.skipif(importlib.util.find_spec("compressed_tensors") is None, reason="compressed-tensors is not installed")
@pytest.mark.parametrize("name", sorted(EXPECTED["compressed-tensors"]))
def test_compressed_tensors_reads_the_export(name):
    from compressed_tensors.quantization import QuantizationConfig

    data = export_format(resolve_format(name), "compressed-tensors")
    parsed = QuantizationConfig.model_validate(data)
    again = json.loads(parsed.model_dump_json())
    assert import_config(again, name=name).stages == resolve_format(name).stages


@pytest.mark.skipif(importlib.util.find_spec("torchao") is None, reason="torchao is not installed")
@pytest.mark.parametrize("name", sorted(EXPECTED["torchao"]))
def test_torchao_reads_the_export(name):
    from torchao.core.config import config_from_dict, config_to_dict

    data = export_format(resolve_format(name), "torchao")
    again = json.loads(json.dumps(config_to_dict(config_from_dict(data))))
    assert import_config(again, name=name).stages == resolve_format(name).stages


def test_cli_export_then_import(run_cli, tmp_path):
    out = tmp_path / "w4a16.json"
    res = run_cli("formats", "export", "w4a16", "--to", "compressed-tensors", "-o", str(out))
    assert res.code == 0, res.stderr
    res = run_cli("formats", "import", str(out))
    assert res.code == 0, res.stderr
    toml = tmp_path / "back.toml"
    toml.write_text(res.stdout)
    assert resolve_format(str(toml)).stages == resolve_format("w4a16").stages
    res = run_cli("formats", "export", "int4-g128", "--to", "torchao")
    assert res.code != 0 and "'signed'" in res.stderr


def test_cli_import_and_export_never_overwrite_their_input(run_cli, tmp_path):
    # Regression: `formats import cfg.json -o cfg.json` replaced the config with TOML (exit 0).
    cfg, fmt = tmp_path / "cfg.json", tmp_path / "fmt.toml"
    assert run_cli("formats", "export", "w4a16", "--to", "compressed-tensors", "-o", str(cfg)).code == 0
    fmt.write_text(run_cli("formats", "show", "w4a16").stdout)
    before = {p: p.read_bytes() for p in (cfg, fmt)}
    for args in (["import", str(cfg), "-o", str(cfg)], ["export", str(fmt), "--to", "torchao", "-o", str(fmt)]):
        res = run_cli("formats", *args)
        assert res.code == 2 and "choose another path" in res.stderr, res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert {p: p.read_bytes() for p in (cfg, fmt)} == before


def _ct(**weights):
    return {"config_groups": {"group_0": {"targets": ["Linear"], "weights": weights}}}


def _ao(kind, **body):
    return {"_type": kind, "_data": body}


_INT4 = {"_type": "torch.dtype", "_data": "int4"}


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        # a field of the wrong type is named, never truncated (4.7 is not 4) or read by truthiness
        (_ct(num_bits="four", type="int", strategy="channel"), "num_bits 'four'"),
        (_ct(num_bits=4.7, type="int", strategy="channel"), "num_bits 4.7"),
        (_ct(num_bits=True, type="int", strategy="channel"), "num_bits True"),
        (_ct(num_bits=None, type="int", strategy="channel"), "num_bits None"),
        (_ct(num_bits=4, type="int", strategy="channel", symmetric="false"), "symmetric 'false'"),
        (_ct(num_bits=4, type="int", strategy="group", group_size="abc"), "group_size 'abc'"),
        (_ct(num_bits=4, type="int", strategy="group", group_size=128.5), "group_size 128.5"),
        (_ct(num_bits=4, type="int", strategy="group", group_size=None), "needs a group_size"),
        (_ct(num_bits=4, type="int", strategy="group", group_size=128, scale_dtype=["x"]), "scale_dtype ['x']"),
        ({"config_groups": [1, 2]}, "config_groups is not a JSON object"),
        (_ao("IntxWeightOnlyConfig", weight_dtype={"_type": "torch.dtype", "_data": "uint4"}), "weight_dtype 'uint4'"),
        (_ao("IntxWeightOnlyConfig", weight_dtype=["int4"]), "weight_dtype ['int4']"),
        (_ao("IntxWeightOnlyConfig", weight_dtype=_INT4, granularity={"_type": "PerGroup", "_data": {"group_size": "x"}}),
         "group_size 'x'"),
        (_ao("IntxWeightOnlyConfig", weight_dtype=_INT4, granularity={"_type": "PerGroup", "_data": {}}), "no group_size"),
        (_ao("IntxWeightOnlyConfig", weight_dtype=_INT4, granularity="PerGroup"), "granularity is not a JSON object"),
        (_ao("IntxWeightOnlyConfig", weight_dtype=_INT4, scale_dtype=["x"]), "scale_dtype ['x']"),
        ({"_type": "IntxWeightOnlyConfig", "_data": [1]}, "_data is not a JSON object"),
        (_ao("MXDynamicActivationMXWeightConfig", block_size=32.5), "block_size 32.5"),
        (_ao("MXDynamicActivationMXWeightConfig", weight_dtype={"a": 1}), "weight_dtype {'a': 1}"),
        (_ao("Float8WeightOnlyConfig", weight_dtype=["x"]), "weight_dtype ['x']"),
        (_ao("NVFP4WeightOnlyConfig", use_dynamic_per_tensor_scale="false"), "use_dynamic_per_tensor_scale 'false'"),
        ({"quant_method": "torchao", "quant_type": {"default": [1]}}, "config is not a JSON object"),
    ],
)
def test_import_names_a_field_of_the_wrong_type(config, needle):
    with pytest.raises(SpecError, match=re.escape(needle)):
        import_config(config)


def test_import_reads_integral_floats_and_ignores_unknown_keys():
    fmt = import_config(_ct(num_bits=4.0, type="int", strategy="group", group_size=128.0, scale_dtype="torch.float16",
                            actorder="group", extra=1))
    assert fmt.stages == resolve_format("w4a16").stages


# --- configs as published models carry them -------------------------------------------------

_W4 = {"num_bits": 4, "type": "int", "symmetric": True, "strategy": "group", "group_size": 128, "dynamic": False}
_A8 = {"num_bits": 8, "type": "int", "symmetric": True, "strategy": "token", "dynamic": True}


def _qc(group=None, **top):
    group = {"targets": ["Linear"], "weights": _W4} if group is None else group
    return {"quant_method": "compressed-tensors", "format": "pack-quantized", "ignore": ["lm_head"],
            "config_groups": {"group_0": group}, **top}


@pytest.mark.parametrize(
    ("config", "needle"),
    [
        # W8A8 / FP8-dynamic / NVFP4 W4A4 quantize activations: not a weights-only format
        (_qc({"targets": ["Linear"], "weights": _W4, "input_activations": _A8}), "input_activations"),
        ({"quantization_config": _qc({"targets": ["Linear"], "weights": _W4, "input_activations": _A8})},
         "input_activations"),
        (_qc({"targets": ["Linear"], "weights": _W4, "output_activations": _A8}), "output_activations"),
        (_qc(kv_cache_scheme={"num_bits": 8, "type": "float", "strategy": "tensor"}), "kv_cache_scheme"),
        # 2:4 sparse checkpoints: the format, or the sparsity_config beside the quantization
        (_qc(format="marlin-24"), "marlin-24"),
        (_qc({"targets": ["Linear"], "weights": _W4, "format": "marlin-24"}), "marlin-24"),
        (_qc(sparsity_config={"format": "sparse-24-bitmask", "sparsity_structure": "2:4", "global_sparsity": 0.45}),
         "sparsity_config (2:4"),
        (_qc(sparsity_config={"format": "dense", "sparsity_structure": "2:4"}), "sparsity_config (2:4"),
        (_qc(config_groups={"group_0": {"weights": _W4}, "group_1": {"weights": _W4}}), "(group_0, group_1)"),
    ],
)
def test_import_refuses_what_goes_beyond_the_weights(config, needle):
    with pytest.raises(SpecError, match=re.escape(needle)):
        import_config(config)


def test_import_keeps_weights_only_configs_with_ignore_and_empty_extras():
    config = _qc(kv_cache_scheme=None, sparsity_config={}, ignore=["lm_head", "re:.*mlp.gate$"])
    config["config_groups"]["group_0"].update(input_activations=None, output_activations=None, format="pack-quantized")
    stage = import_config({"architectures": ["LlamaForCausalLM"], "quantization_config": config}).stages[0]
    assert (stage.bits, stage.group, stage.resolved_int_style.value) == (4, 128, "full")


def test_nvfp4_configs_written_before_scale_dtype_read_as_nvfp4():
    # compressed-tensors < 0.12 wrote NVFP4 weights without scale_dtype (always fp8 e4m3)
    weights = {"num_bits": 4, "type": "float", "strategy": "tensor_group", "group_size": 16, "symmetric": True,
               "dynamic": False, "observer": "minmax", "actorder": None, "block_structure": None}
    stage = import_config(_qc({"targets": ["Linear"], "weights": weights}, format="nvfp4-pack-quantized")).stages[0]
    assert (stage.exponent_bits, stage.mantissa_bits, stage.group, stage.scale_format.value) == (2, 1, 16, "e4m3")
    with pytest.raises(SpecError, match="tensor_group"):
        import_config(_ct(**{**weights, "scale_dtype": "torch.bfloat16"}))


def test_torchao_int8_weight_only_reads_its_group_size():
    # Int8WeightOnlyConfig(group_size=128) carries group_size, not a granularity
    assert import_config(_ao("Int8WeightOnlyConfig", group_size=128, set_inductor_config=True)).stages[0].group == 128
    assert import_config(_ao("Int8WeightOnlyConfig", group_size=None)).stages[0].group == "row"


@pytest.mark.parametrize(("kind", "data"), [("PerAxis", {"axis": -1}), ("PerAxis", {"axis": 1}), ("PerRow", {"dim": 0})])
def test_torchao_per_column_granularity_is_refused(kind, data):
    # a weight is (out, in): these keep one scale per column, not per row
    with pytest.raises(SpecError, match=f"granularity {kind}"):
        import_config(_ao("IntxWeightOnlyConfig", weight_dtype=_INT4, granularity={"_type": kind, "_data": data}))


def test_torchao_string_quant_type_is_named():
    with pytest.raises(SpecError, match="quant_type 'int4_weight_only'"):
        import_config({"quant_method": "torchao", "quant_type": "int4_weight_only", "quant_type_kwargs": {"group_size": 128}})
