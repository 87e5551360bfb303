"""The lowest versions pyproject.toml declares: what each floor rests on."""

from __future__ import annotations

import subprocess
import sys
import tomllib

import conftest
from pydantic import BaseModel

PYPROJECT = conftest.REPO_ROOT / "pyproject.toml"


def _floor(requirements: list[str], name: str) -> tuple[int, ...]:
    for req in requirements:
        head = req.split(";")[0].strip()
        if head.split(">=")[0].strip().lower().replace("-", "_") == name:
            return tuple(int(p) for p in head.split(">=")[1].strip().split("."))
    raise AssertionError(f"{name} is not declared")


def _all_models(cls: type) -> list[type]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_models(sub))
    return out


def test_model_fields_never_in_pydantic_protected_namespace():
    # pydantic < 2.10 protects the whole "model_" namespace by default and warns (a UserWarning at
    # import) for RunRecord.model_dir; a model with such a field must release the namespace
    import gmse_cli.runs  # noqa: F401
    import gmse_cli.training.results  # noqa: F401

    offenders = []
    for model in _all_models(BaseModel):
        if not model.__module__.startswith("gmse_cli"):
            continue
        protected = model.model_config.get("protected_namespaces", ("model_",))
        offenders += [f"{model.__name__}.{f}" for f in model.model_fields
                      if any(f.startswith(ns) for ns in protected)]
    assert offenders == []


def test_results_module_imports_without_warnings():
    code = "import gmse_cli.training.results, gmse_cli.runs"
    proc = subprocess.run([sys.executable, "-W", "error", "-c", code], capture_output=True,
                          text=True, cwd=conftest.REPO_ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_floors_cover_what_the_code_uses():
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    # typer 0.12.0-0.12.3 raise "Type not yet supported: pathlib.Path | None" on Python 3.11
    assert _floor(project["dependencies"], "typer") >= (0, 12, 4)
    # float4_e2m1fn, float6_* and float8_e8m0fnu arrived in ml_dtypes 0.5; 0.5.0 rounds e8m0 unlike 0.5.1+
    tests_text = "".join(p.read_text() for p in (conftest.REPO_ROOT / "tests").glob("test_*.py"))
    if "ml_dtypes.float4_e2m1fn" in tests_text:
        assert _floor(project["optional-dependencies"]["dev"], "ml_dtypes") >= (0, 5, 1)
