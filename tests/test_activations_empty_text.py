"""`uscl mse --activations` refuses an empty or blank text before it loads the model (loading a
large model takes minutes, and its imports may talk on stderr). Before, only a missing path or a
device was caught first; an empty file loaded the model and failed after."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from gmse_cli.errors import DataError  # noqa: E402
from gmse_cli.realmse.activations import measure_activations  # noqa: E402


@pytest.fixture
def no_model_load(monkeypatch):
    from gmse_cli.training import activations

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the text was checked")

    monkeypatch.setattr(activations, "load_model", refuse)


@pytest.mark.parametrize("name, content", [
    ("empty.txt", ""),
    ("blank.txt", "  \n\n\t \n"),
    ("blank.jsonl", '{"text": ""}\n{"text": "   "}\n'),
])
def test_empty_text_fails_before_the_model_loads(tmp_path, no_model_load, name, content):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match="holds no text"):
        measure_activations(tmp_path / "model", str(path), ["int4"])


def test_a_text_goes_on_to_load_the_model(tmp_path, no_model_load):
    path = tmp_path / "text.txt"
    path.write_text("\n\n   some text after blank lines\n")
    with pytest.raises(AssertionError, match="model was loaded"):
        measure_activations(tmp_path / "model", str(path), ["int4"])


def test_the_cli_says_one_line(run_cli, tmp_path, no_model_load):
    path = tmp_path / "empty.txt"
    path.write_text("")
    res = run_cli("mse", str(tmp_path), "--activations", "--data", str(path), "-f", "int4")
    assert res.code == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [f"error: data source '{path}' holds no text"]
