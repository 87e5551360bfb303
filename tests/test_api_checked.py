"""The Python API as a library user meets it, checked from the README and the exports alone.

- README's Python examples run as written, without torch, and print what the README says;
- every name in ``__all__`` (the package and its subpackages) exists and is documented, and
  the core imports without torch, transformers, matplotlib or scipy;
- bad arguments to the public entry points raise the package's own errors
  (:mod:`gmse_cli.errors`) naming the value, never a bare TypeError/AttributeError from deep
  inside nor a silent nan;
- result models use the command line's ``--json`` names (README, "One vocabulary").

Expected capacities come from the README's closed form rho = L tanh(F log_{1/4} GMSE)^C
with the shipped law's constants, computed here with ``math``.
"""

from __future__ import annotations

import importlib
import inspect
import json
import math
import os
import re
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gmse_cli
from gmse_cli.errors import DataError, FitError, LawError, SpecError, UsclError
from gmse_cli.rank import rank

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BOUNDED = settings(max_examples=25, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

PUBLIC_MODULES = ["gmse_cli", "gmse_cli.spec", "gmse_cli.gmse", "gmse_cli.law", "gmse_cli.rank", "gmse_cli.fit",
                  "gmse_cli.runs", "gmse_cli.realmse", "gmse_cli.search", "gmse_cli.training"]
CORE_MODULES = ["gmse_cli", "gmse_cli.spec", "gmse_cli.gmse", "gmse_cli.law", "gmse_cli.rank", "gmse_cli.fit",
                "gmse_cli.runs", "gmse_cli.compress"]

# Makes `import torch` / `import transformers` fail, as on a machine with the core alone.
BLOCKER = '''
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "transformers"):
            raise ImportError(f"{name} is blocked: the core must not need it")
        return None
sys.meta_path.insert(0, _NoTorch())
'''


def _python(code: str, tmp_path: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO), "USCL_CACHE_DIR": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", BLOCKER + code], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _rho(gmse: float, curve) -> float:
    """The README's capacity curve, written out: L * tanh(F * log_{1/4} GMSE)^C."""
    bits = max(-math.log(gmse) / math.log(4.0), 0.0)
    return curve.L.value * math.tanh(curve.F.value * bits) ** curve.C.value


def _names_value(message: str, value: object) -> bool:
    spellings = {str(value), repr(value)}
    if isinstance(value, float):
        spellings |= {f"{value:g}", repr(float(value))}
    return any(s in message for s in spellings)


# ---- 1. README's Python examples --------------------------------------------------------------------


def _readme_python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_readme_python_example_runs_without_torch_and_prints_what_it_says(tmp_path):
    blocks = _readme_python_blocks()
    assert blocks, "README has no Python example"
    out = _python("\n".join(blocks) + "\nprint('modules', sorted({m.split('.')[0] for m in sys.modules}))",
                  tmp_path).splitlines()
    # print(gmse_of(fmt).gmse)   # 0.1407
    assert round(float(out[0]), 4) == 0.1407
    # rank([...]) prints one row per format, in the order given, with each format's bits/param
    names = [line.split()[0] for line in out[1:5]]
    assert names == ["int4", "fp4", "nvfp4", "2:4+int4"]
    assert float(out[1].split()[1]) == pytest.approx(4 + 16 / 2048)  # int4: 4 bits plus a 16-bit scale per 2048 entries
    # print(compare(["fp4", "int4"]).p_most_capacity)   # (0.0, 1.0): int4 wins in every draw
    assert out[6] == "(0.0, 1.0)"
    modules = out[7]
    assert "'torch'" not in modules and "'transformers'" not in modules


def test_readme_predict_int4_numbers():
    """README, Ranking: predict int4 at 200M params, 20B tokens gives loss 2.762 [2.420, 2.916],
    rho 0.820 [0.771, 0.862] and +0.034 [+0.005, +0.066] from the dense model."""
    p = gmse_cli.predict("int4", params=200e6, tokens=20e9)
    assert (round(p.predicted_loss, 3), round(p.loss_low, 3), round(p.loss_high, 3)) == (2.762, 2.420, 2.916)
    assert (round(p.rho, 3), round(p.rho_low, 3), round(p.rho_high, 3)) == (0.820, 0.771, 0.862)
    assert (round(p.delta_loss_vs_bf16, 3), round(p.delta_loss_low, 3), round(p.delta_loss_high, 3)) == (
        0.034, 0.005, 0.066)


def test_readme_predict_breakdown_follows_the_closed_form():
    """The README example's predict("2:4+int4", act="int8"): every stage's rho is the family's
    curve at its GMSE; the scheme's rho their product; the loss terms the law's formula."""
    law = gmse_cli.load_law()
    p = gmse_cli.predict("2:4+int4", params=1e9, tokens=1e11, act="int8")
    assert [str(s.family) for s in p.stages] == ["sparsity", "quantization", "quantization"]
    for s in p.stages:
        assert s.rho == pytest.approx(_rho(s.gmse, law.families[s.family]), rel=1e-12)
    assert p.rho == pytest.approx(math.prod(s.rho for s in p.stages), rel=1e-12)
    assert p.params_term == pytest.approx(law.A.value * (1e9 * p.rho) ** -law.alpha.value, rel=1e-12)
    assert p.data_term == pytest.approx(law.B.value * 1e11 ** -law.beta.value, rel=1e-12)
    assert p.irreducible == law.E.value


# ---- 2. exports: they exist, carry a docstring, and the core needs no torch -------------------------


def _documentable(value: object) -> bool:
    """Functions, classes and modules carry docstrings; constants and typing aliases cannot."""
    return inspect.isclass(value) or inspect.isfunction(value) or inspect.ismodule(value) or (
        callable(value) and not type(value).__module__.startswith("typing"))


@pytest.mark.parametrize("module_name", PUBLIC_MODULES)
def test_every_exported_name_exists_and_is_documented(module_name):
    try:
        _check_exports(module_name)
    except ModuleNotFoundError as exc:  # the training backend (lazy names included) needs torch
        if not (module_name.startswith("gmse_cli.training") and exc.name == "torch"):
            raise
        pytest.skip(f"{module_name} needs the train extra: {exc}")


def _check_exports(module_name: str) -> None:
    module = importlib.import_module(module_name)
    assert (module.__doc__ or "").strip(), f"{module_name} has no docstring"
    assert len(set(module.__all__)) == len(module.__all__), f"{module_name}.__all__ repeats a name"
    undocumented = []
    for name in module.__all__:
        assert hasattr(module, name), f"{module_name}.__all__ names {name}, which it lacks"
        value = getattr(module, name)
        if _documentable(value) and not (value.__doc__ or "").strip():
            undocumented.append(name)
        if isinstance(value, type) and issubclass(value, Enum) and value.__doc__ in (None, "An enumeration."):
            undocumented.append(name)
    assert not undocumented, f"{module_name}: no docstring on {undocumented}"


def test_core_imports_and_computes_without_torch_and_without_plot_or_scipy_at_import(tmp_path):
    code = f"""
import importlib
for name in {CORE_MODULES!r}:
    importlib.import_module(name)
print(sorted({{m.split('.')[0] for m in sys.modules}} & {{'torch', 'transformers', 'matplotlib', 'scipy'}}))
import gmse_cli
from gmse_cli.rank import rank
print(gmse_cli.gmse_of('int4').gmse, rank(['int4', 'nf4'])[1].name, gmse_cli.predict('int4').rho)
"""
    heavy, computed = _python(code, tmp_path).splitlines()
    assert heavy == "[]"
    gmse, name, rho = computed.split()
    assert name == "nf4"
    # the README's table: int4 keeps 0.82 of the parameters (GMSE ~1.15e-2)
    assert float(rho) == pytest.approx(_rho(float(gmse), gmse_cli.load_law().families["quantization"]), rel=1e-12)


# ---- 3. bad arguments: the package's own errors, naming the value ------------------------------------

BAD_NUMBERS = [math.nan, -1.0, -math.inf, "0.1", None, True]


@pytest.mark.parametrize("bad", BAD_NUMBERS, ids=repr)
def test_capacity_refuses_a_gmse_that_is_no_error(bad):
    """Before: capacity(nan | -1 | None, ...) returned nan and capacity('0.1', ...) read the text."""
    with pytest.raises(LawError) as err:
        gmse_cli.capacity(bad, 1.0, 0.41, 1.39)
    assert _names_value(str(err.value), bad)


@pytest.mark.parametrize(("key", "bad"), [("L", -1.0), ("L", math.nan), ("F", -0.4), ("C", -1.4), ("C", 0.0),
                                          ("L", math.inf)])
def test_capacity_refuses_constants_no_curve_holds(key, bad):
    """Before: L = -1 gave rho -0.47, C = -1.4 gave rho 2.1, F = -0.4 gave nan."""
    constants = {"L": 1.0, "F": 0.41, "C": 1.39} | {key: bad}
    with pytest.raises(LawError, match=f"^{key} = ") as err:
        gmse_cli.capacity(0.01, **constants)
    assert _names_value(str(err.value), bad)


@pytest.mark.parametrize(("key", "bad"), [("params", math.nan), ("params", -1.0), ("params", 0.0),
                                          ("tokens", math.nan), ("tokens", -5.0), ("rho", math.nan),
                                          ("rho", -0.5), ("params", "1e8"), ("alpha", -1.0), ("A", math.nan),
                                          ("E", -0.1), ("beta", math.inf)])
def test_predicted_loss_refuses_what_no_loss_follows_from(key, bad):
    """Before: nan or negative counts and rho gave nan, text was parsed, alpha = -1 gave 1.5e9."""
    given = {"params": 1e8, "tokens": 1e9, "rho": 1.0, "A": 15.0, "alpha": 0.13, "B": 350.0, "beta": 0.33,
             "E": 1.3} | {key: bad}
    with pytest.raises(LawError, match=f"^{key} = ") as err:
        gmse_cli.predicted_loss(given.pop("params"), given.pop("tokens"), given.pop("rho"), **given)
    assert _names_value(str(err.value), bad)


@BOUNDED
@given(gmse=st.floats(0, 10), L=st.floats(1e-3, 2), F=st.floats(1e-3, 10), C=st.floats(1e-3, 10))
def test_capacity_on_good_input_is_the_closed_form(gmse, L, F, C):
    bits = max(-math.log(gmse) / math.log(4.0), 0.0) if gmse > 0 else math.inf
    expected = L * math.tanh(F * bits) ** C
    assert gmse_cli.capacity(gmse, L, F, C) == pytest.approx(expected, rel=1e-12, abs=1e-300)


@BOUNDED
@given(params=st.floats(1, 1e13), tokens=st.floats(1, 1e15), rho=st.floats(1e-6, 1.5))
def test_predicted_loss_on_good_input_is_the_closed_form(params, tokens, rho):
    expected = 15.0 * (params * rho) ** -0.13 + 350.0 * tokens ** -0.33 + 1.3
    got = gmse_cli.predicted_loss(params, tokens, rho, A=15.0, alpha=0.13, B=350.0, beta=0.33, E=1.3)
    assert got == pytest.approx(expected, rel=1e-12)


def test_law_level_functions_refuse_bad_gmse_and_unknown_families():
    """Before: factorized_capacity / capacity_interval returned nan for a nan GMSE, and an unknown
    family was a bare ValueError from the enum."""
    law = gmse_cli.load_law()
    with pytest.raises(LawError, match="nan"):
        gmse_cli.factorized_capacity(law, [("quantization", math.nan)])
    with pytest.raises(LawError, match="-0.2"):
        gmse_cli.capacity_interval(law, [("quantization", -0.2, 0.0)])
    with pytest.raises(SpecError, match="'bogus'"):
        gmse_cli.factorized_capacity(law, [("bogus", 0.1)])
    # before: a standard error of -1 gave the interval [0, 0.68] around 0.48; nan was read as 0
    for std_err, shown in ((-1.0, "-1.0"), (math.nan, "nan"), ("x", "'x'")):
        with pytest.raises(LawError, match=re.escape(f"standard error = {shown}")):
            gmse_cli.capacity_interval(law, [("quantization", 0.1, std_err)])
    with pytest.raises(SpecError, match="'bogus'"):
        law.rho("bogus", 0.1)
    assert issubclass(SpecError, ValueError)  # code that caught the enum's ValueError still does


def test_scheme_capacity_takes_a_name_and_names_bad_arguments():
    """Before: a name gave AttributeError ('str' has no 'weights'), one float 'not iterable',
    a law of None AttributeError."""
    law = gmse_cli.load_law()
    int4 = gmse_cli.resolve_format("int4")
    expected = _rho(0.0115, law.families["quantization"])
    assert gmse_cli.scheme_capacity("int4", law, 0.0115) == pytest.approx(expected, rel=1e-12)
    assert gmse_cli.scheme_capacity(int4, law, [0.0115]) == pytest.approx(expected, rel=1e-12)
    for gmse, shown in ((math.nan, "nan"), (-1.0, "-1"), ("x", "'x'"), (None, "None"), ([True], "True")):
        with pytest.raises(LawError, match=re.escape(shown)):
            gmse_cli.scheme_capacity(int4, law, gmse)
    with pytest.raises(LawError, match="None"):
        gmse_cli.scheme_capacity(int4, None, 0.0115)
    with pytest.raises(SpecError, match="bogus9"):
        gmse_cli.scheme_capacity("bogus9", law, 0.1)


_NOT_A_FORMAT = st.one_of(st.integers(), st.floats(allow_nan=True), st.none(), st.booleans(),
                          st.lists(st.just("int4"), min_size=1, max_size=2), st.binary(max_size=8))


@BOUNDED
@given(bad=_NOT_A_FORMAT)
def test_resolve_format_and_gmse_of_refuse_what_is_no_format(bad):
    for entry in (gmse_cli.resolve_format, gmse_cli.gmse_of, gmse_cli.predict):
        with pytest.raises(SpecError) as err:
            entry(bad)
        assert type(bad).__name__ in str(err.value) or _names_value(str(err.value), bad)


@BOUNDED
@given(text=st.text(alphabet="intfpxmq0123456789:+-_.e", min_size=1, max_size=12))
def test_text_is_a_format_or_one_spec_error(text):
    try:
        fmt = gmse_cli.resolve_format(text)
    except SpecError as err:
        assert "\n" not in str(err)
    else:
        assert isinstance(fmt, gmse_cli.Format | gmse_cli.Scheme)
        assert math.isfinite(fmt.bits_per_param()) and fmt.bits_per_param() > 0


def test_a_format_a_name_and_a_path_are_the_same_format(tmp_path):
    fmt = gmse_cli.resolve_format("nvfp4")
    path = tmp_path / "mine.toml"
    path.write_text(gmse_cli.format_to_toml(fmt), encoding="utf-8")
    from_path, from_str = gmse_cli.resolve_format(path), gmse_cli.resolve_format(str(path))
    assert from_path.bits_per_param() == from_str.bits_per_param() == fmt.bits_per_param()
    assert gmse_cli.gmse_of(from_path).gmse == gmse_cli.gmse_of(fmt).gmse == gmse_cli.gmse_of("nvfp4").gmse


@pytest.mark.parametrize(("call", "shown"), [
    (lambda: gmse_cli.parse_shorthand(3), "int"),
    (lambda: gmse_cli.load_format_toml(None), "NoneType"),
    (lambda: gmse_cli.format_to_toml("int4"), "'int4'"),
], ids=["parse_shorthand(3)", "load_format_toml(None)", "format_to_toml('int4')"])
def test_spec_functions_name_a_wrong_type(call, shown):
    """Before: AttributeError ('int' has no 'strip', 'str' has no 'model_dump') or TypeError."""
    with pytest.raises(SpecError, match=re.escape(shown)):
        call()


@pytest.mark.parametrize(("keyword", "bad"), [
    ("rel_err", math.nan), ("rel_err", -1.0), ("rel_err", 0.0), ("row_length", 0), ("row_length", 1.5),
    ("row_length", "8"), ("row_length", 2**21), ("seed", -1), ("seed", math.nan), ("seed", True),
])
def test_gmse_of_names_a_bad_setting(keyword, bad):
    with pytest.raises(UsclError) as err:
        gmse_cli.gmse_of("int4", **{keyword: bad})
    assert _names_value(str(err.value), bad) or keyword in str(err.value)


@pytest.mark.parametrize(("keyword", "bad"), [
    ("params", math.nan), ("params", -1.0), ("params", 0.0), ("params", math.inf), ("params", "200M"),
    ("tokens", math.nan), ("tokens", -1.0), ("tokens", 0.5), ("draws", 0), ("draws", 1.5), ("draws", 10**9),
    ("level", 0.0), ("level", 1.0), ("level", 95), ("level", math.nan), ("law", "bogus9"), ("act", "bogus9"),
    ("seed", -1), ("cache", "bogus"),
])
def test_rank_predict_compare_name_a_bad_argument(keyword, bad):
    for entry, formats in ((rank, ["int4"]), (gmse_cli.predict, "int4"),
                           (gmse_cli.compare, ["int4", "fp4"])):
        with pytest.raises(UsclError) as err:
            entry(formats, **{keyword: bad})
        assert _names_value(str(err.value), bad) or keyword in str(err.value), (entry.__name__, str(err.value))


def test_rank_names_itself_for_an_unknown_keyword():
    """Before: rank(bogus=1) raised "estimate_gmse() got an unexpected keyword argument"."""
    with pytest.raises(TypeError, match=r"^rank\(\) .*'bogus'"):
        rank(["int4"], bogus=1)


@pytest.mark.parametrize("bad", [None, 3, 2.5, [3], ["/nonexistent/runs.jsonl"], "/nonexistent/runs.jsonl"],
                         ids=repr)
def test_load_runs_names_what_it_cannot_read(bad):
    """Before: load_runs(None) and load_runs(3) raised TypeError ('... is not iterable')."""
    with pytest.raises(DataError) as err:
        gmse_cli.load_runs(bad)
    shown = bad[0] if isinstance(bad, list) else bad
    assert _names_value(str(err.value), shown) or type(shown).__name__ in str(err.value)


def test_load_runs_of_a_folder_and_a_bad_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path))):
        gmse_cli.load_runs(tmp_path)
    bad = tmp_path / "runs.jsonl"
    bad.write_text('{"scheme": "int4", "N": "many"}\n', encoding="utf-8")
    with pytest.raises(DataError, match="runs.jsonl"):
        gmse_cli.load_runs(bad)


@pytest.mark.parametrize("bad", [None, 3, [1, 2], "runs.jsonl", [None]], ids=repr)
def test_fit_names_what_is_no_run(bad):
    """Before: fit(None) raised TypeError, fit([1, 2]) AttributeError ('int' has no 'scheme')."""
    from gmse_cli.fit import fit

    with pytest.raises(FitError) as err:
        fit(bad)
    assert "Run" in str(err.value)


def test_fit_on_too_few_runs_and_an_unknown_model():
    from gmse_cli.fit import fit

    runs = [gmse_cli.Run(scheme="bf16", weights="bf16", N=1e6 * 2**k, D=2e7 * 2**k, loss=3.0 - 0.1 * k) for k in range(2)]
    with pytest.raises(FitError):
        fit(runs)
    with pytest.raises(UsclError, match="bogus"):
        fit(runs, model="bogus")


@pytest.mark.parametrize("bad", [3, "", "bogus9", Path("/nonexistent/law.toml"), Path("/")], ids=repr)
def test_load_law_names_what_is_no_law(bad):
    with pytest.raises(LawError) as err:
        gmse_cli.load_law(bad)
    assert _names_value(str(err.value), bad) or type(bad).__name__ in str(err.value) or "name" in str(err.value)


def test_save_law_refuses_what_is_no_law(tmp_path):
    """Before: save_law(None, path) raised AttributeError ('NoneType' has no 'model_dump')."""
    with pytest.raises(LawError, match="NoneType"):
        gmse_cli.save_law(None, tmp_path / "law.toml")
    assert not (tmp_path / "law.toml").exists()


# ---- 4. one vocabulary: result models and --json ------------------------------------------------------

_DOCUMENTED_RENAMES = {"ci_low": "gmse_low", "ci_high": "gmse_high", "std_err": "gmse_std_err",
                       "method": "gmse_method"}  # README: GmseEstimate keeps its attribute names


@pytest.mark.parametrize(("argv", "api"), [
    (["rank", "int4", "2:4+int4", "--json"], lambda: rank(["int4", "2:4+int4"])),
    (["predict", "2:4+int4", "--act", "int8", "--json"], lambda: [gmse_cli.predict("2:4+int4", act="int8")]),
    (["gmse", "int4", "nf4", "--json"], lambda: gmse_cli.estimate_gmse(["int4", "nf4"], cache="use")),
], ids=["rank", "predict", "gmse"])
def test_result_models_use_the_json_names(run_cli, argv, api):
    done = run_cli(*argv)
    assert done.code == 0, done.stderr
    printed = json.loads(done.stdout)["results"]
    models = api()
    assert len(printed) == len(models)
    for row, model in zip(printed, models, strict=True):
        fields = {_DOCUMENTED_RENAMES.get(k, k) for k in type(model).model_fields}
        assert set(row) == fields, (set(row) ^ fields)
        dumped = {_DOCUMENTED_RENAMES.get(k, k): v for k, v in model.model_dump(mode="json").items()}
        for key in ("name", "bits_per_param", "gmse", "rho", "predicted_loss", "effective_params"):
            if key in row:
                assert row[key] == dumped[key], key


def test_fit_result_carries_the_json_keys_the_readme_lists(run_cli, tmp_path):
    """README, Fitting: --json's one result has A, alpha, B, beta, E, fit_error, n_runs,
    constants, capacities, families; the FitResult model has the same names."""
    from gmse_cli.fit import fit

    # noiseless Chinchilla-form runs: the fit must give back the constants they were made with
    rows = [(n, d, 400 * n ** -0.34 + 2000 * d ** -0.37 + 1.8) for n in (1e7, 3e7, 1e8, 3e8, 1e9)
            for d in (2e8, 1e9, 5e9, 2e10)]
    csv = tmp_path / "runs.csv"
    csv.write_text("N,D,loss\n" + "".join(f"{n},{d},{loss!r}\n" for n, d, loss in rows), encoding="utf-8")
    done = run_cli("fit", str(csv), "--model", "dense", "--huber-delta", "1", "--json")
    assert done.code == 0, done.stderr
    (printed,) = json.loads(done.stdout)["results"]
    result = fit(gmse_cli.load_runs(csv), model="dense", huber_delta=1.0)
    listed = {"A", "alpha", "B", "beta", "E", "fit_error", "n_runs", "constants", "capacities", "families"}
    assert listed <= set(printed)
    assert listed <= set(type(result).model_fields) | set(type(result).model_computed_fields)
    assert result.alpha == pytest.approx(0.34, rel=1e-3) and result.E == pytest.approx(1.8, rel=1e-3)
    assert printed["alpha"] == pytest.approx(result.alpha, rel=1e-9)
    assert printed["n_runs"] == result.n_runs == len(rows)
