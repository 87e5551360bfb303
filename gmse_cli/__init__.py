"""uscl: unified scaling laws for compressed representations.

The Python API behind the `uscl` command::

    from gmse_cli import resolve_format, gmse_of

    fmt = resolve_format("2:4+int4")        # catalog name, .toml path or shorthand
    est = gmse_of(fmt)                       # GmseEstimate: gmse, ci_low, ci_high, ...

Names are loaded lazily so that ``import gmse_cli`` stays cheap and never imports torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

# public name -> defining module (never a submodule's own name: `gmse_cli.fit` stays the module)
_EXPORTS: dict[str, str] = {
    # format language
    "Format": "gmse_cli.spec",
    "Scheme": "gmse_cli.spec",
    "Quantize": "gmse_cli.spec",
    "Sparsify": "gmse_cli.spec",
    "VQ": "gmse_cli.spec",
    "Rotate": "gmse_cli.spec",
    "Family": "gmse_cli.spec",
    "catalog": "gmse_cli.spec",
    "resolve_format": "gmse_cli.spec",
    "parse_shorthand": "gmse_cli.spec",
    "load_format_toml": "gmse_cli.spec",
    "format_to_toml": "gmse_cli.spec",
    # compressors and GMSE
    "GmseEstimate": "gmse_cli.gmse",
    "SampleBank": "gmse_cli.gmse",
    "estimate_gmse": "gmse_cli.gmse",
    "gmse_of": "gmse_cli.gmse",
    "stage_gmse": "gmse_cli.gmse",
    # laws
    "Law": "gmse_cli.law",
    "load_law": "gmse_cli.law",
    "capacity": "gmse_cli.law",
    "predicted_loss": "gmse_cli.law",
    "shipped_law": "gmse_cli.law",
    "save_law": "gmse_cli.law",
    "Constant": "gmse_cli.law",
    "FamilyCurve": "gmse_cli.law",
    "scheme_capacity": "gmse_cli.law",
    "factorized_capacity": "gmse_cli.law",
    "capacity_interval": "gmse_cli.law",
    "loss_interval": "gmse_cli.law",
    # ranking
    "predict": "gmse_cli.rank",
    "compare": "gmse_cli.rank",
    "pareto_front": "gmse_cli.rank",
    "RankRow": "gmse_cli.rank",
    "Prediction": "gmse_cli.rank",
    # runs and fits
    "Run": "gmse_cli.runs",
    "load_runs": "gmse_cli.runs",
    "FitResult": "gmse_cli.fit",
    # errors
    "UsclError": "gmse_cli.errors",
    "SpecError": "gmse_cli.errors",
    "LawError": "gmse_cli.errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gmse_cli' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
