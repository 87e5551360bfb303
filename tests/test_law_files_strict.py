"""Law files take numbers as numbers everywhere: a draws column or a fitted-range pair holding
text or a boolean is refused in one line (pydantic's lax mode read "1" and true as 1.0, so one
joint draw of B silently became 1 and a fitted range's smallest N became 1)."""

from __future__ import annotations

import math
import tomllib

import pytest
from toml_text import toml_text

from gmse_cli.errors import LawError
from gmse_cli.law import load_law
from gmse_cli.paths import laws_dir


def _shipped() -> dict:
    return tomllib.loads((laws_dir() / "paper-llama-c4.toml").read_text())


def _edited(edit) -> dict:
    data = _shipped()
    edit(data)
    return data


BAD = {
    "draws text": lambda d: d["draws"]["constants"]["B"].__setitem__(0, "1"),
    "draws boolean": lambda d: d["draws"]["constants"]["B"].__setitem__(0, True),
    "fitted params text": lambda d: d["fitted_range"].__setitem__("params", ["3e7", 8e8]),
    "fitted params boolean": lambda d: d["fitted_range"].__setitem__("params", [True, 8e8]),
    "fitted per-param text": lambda d: d["fitted_range"].__setitem__("tokens_per_param", [24.0, "101"]),
    "fitted gmse text": lambda d: d["fitted_range"]["gmse"].__setitem__("quantization", ["1e-6", 0.4]),
}


@pytest.mark.parametrize("label", sorted(BAD))
def test_text_or_boolean_for_a_number_is_refused(tmp_path, label):
    path = tmp_path / "law.toml"
    path.write_text(toml_text(_edited(BAD[label])))
    with pytest.raises(LawError, match=r"is (text|a boolean); give a number") as info:
        load_law(path)
    assert "\n" not in str(info.value)


def test_the_same_file_with_numbers_loads_and_keeps_them(tmp_path):
    data = _edited(lambda d: d["draws"]["constants"]["B"].__setitem__(0, 1.0))
    path = tmp_path / "law.toml"
    path.write_text(toml_text(data))
    law = load_law(path)
    assert law.draws.constants["B"][0] == 1.0
    assert law.fitted_range.params == tuple(data["fitted_range"]["params"])
    assert math.isclose(law.B.value, data["B"]["value"])


def test_the_cli_refuses_a_text_draw_in_one_line(run_cli, tmp_path):
    path = tmp_path / "law.toml"
    path.write_text(toml_text(_edited(BAD["draws text"])))
    result = run_cli("predict", "int4", "--law", str(path))
    assert result.code == 2
    assert "is text; give a number" in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_missing_name_is_named_as_such(tmp_path):
    # it read "missing (every law needs A, alpha, B, beta and E)", which all were present
    path = tmp_path / "law.toml"
    path.write_text(toml_text(_edited(lambda d: d.pop("name"))))
    with pytest.raises(LawError, match=r"name: missing \(a law needs a name\)"):
        load_law(path)


@pytest.mark.parametrize("key, bound", [("low", 20.0), ("high", 10.0)])
def test_a_constant_outside_its_own_interval_is_refused(run_cli, tmp_path, key, bound):
    # A at 15.45 with [20, 80.4] or [1.26, 10]: it read as a valid law and reported both.
    path = tmp_path / "law.toml"
    path.write_text(toml_text(_edited(lambda d: d["A"].__setitem__(key, bound))))
    with pytest.raises(LawError, match=r"A: .*lies outside its own interval"):
        load_law(path)
    result = run_cli("predict", "int4", "--law", str(path))
    assert result.code == 2 and len(result.stderr.strip().splitlines()) == 1


def test_a_bootstrap_interval_beside_its_estimate_is_widened_to_contain_it():
    import numpy as np

    from gmse_cli.fit.resampling import constant_estimates

    # Replicates all above the estimate (a skewed bootstrap): the written interval must still
    # contain the value, or the law file `fit --out` writes could not be read back.
    boot = np.linspace(2.0, 3.0, 200)[:, None]
    est = constant_estimates(["alpha"], np.array([1.0]), boot, {}, {}, set())["alpha"]
    assert est.low == 1.0 and math.isclose(est.high, np.percentile(boot, 97.5))
