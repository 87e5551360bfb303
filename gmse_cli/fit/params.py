"""Parameter names: the law's and the capacity parts' constants, internal and public.

The optimizer works on internal coordinates: log A, log B, log E, log gamma and each family's
log L, log F, log C (positive constants through their logarithms), a decoupled capacity as
phi = alpha * log rho. Users name constants publicly (``A``, ``alpha``, ``quantization.L``,
``gamma_w``); these functions convert between the two.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from gmse_cli.errors import FitError

__all__ = [
    "LAW",
    "LAW_INTERNAL",
    "FAMILY_KEYS",
    "internal_fixed",
    "internal_index",
    "public_name",
    "public_names",
    "is_log",
    "public_values",
]

LAW = ("A", "alpha", "B", "beta", "E")
LAW_INTERNAL = ("logA", "alpha", "logB", "beta", "logE")
FAMILY_KEYS = ("L", "F", "C")


_CONSTANT_NAMES = {"A": "logA", "B": "logB", "E": "logE", "alpha": "alpha", "beta": "beta"}


def internal_index(key: str, names: Sequence[str]) -> int | None:
    """The internal index of a constant named publicly ('A', 'quantization.L', 'gamma_w'), or None."""
    if key in _CONSTANT_NAMES:
        internal = _CONSTANT_NAMES[key]
    elif key in ("gamma_w", "gamma_a"):
        internal = "logGamma_" + key[-1]
    elif "." in key and key.rsplit(".", 1)[1] in FAMILY_KEYS:
        fam, k = key.rsplit(".", 1)
        internal = f"{fam}.log{k}"
    else:
        return None
    return list(names).index(internal) if internal in names else None


def internal_fixed(fixed: Mapping[str, float] | None, names: Sequence[str]) -> dict[int, float]:
    """User names ('A', 'alpha', 'quantization.L', 'gamma_w') -> internal index and value."""
    out: dict[int, float] = {}
    for key, value in (fixed or {}).items():
        value = float(value)
        j = internal_index(key, names)
        if j is None:
            raise FitError(f"fixed constant '{key}' is not a constant of this model (known: {', '.join(public_names(names))})")
        if is_log(names[j]):
            if not value > 0:  # fitted through its logarithm, as its free fit is
                tiny = "; hold it near 0 with a tiny value such as 1e-9" if value == 0 else ""
                raise FitError(f"fixed constant {key} = {value} must be positive{tiny}")
            value = math.log(value)
        out[j] = value
    return out


def public_name(internal: str) -> str:
    if internal in LAW_INTERNAL:
        return LAW[LAW_INTERNAL.index(internal)]
    if internal.startswith("phi:"):
        return internal
    if internal.startswith("logGamma_"):
        return "gamma_" + internal[-1]
    fam, k = internal.rsplit(".", 1)
    return f"{fam}.{k[3:]}"


def public_names(names: Sequence[str]) -> list[str]:
    return [public_name(n) for n in names if not n.startswith("phi:")]


def is_log(internal: str) -> bool:
    """Parameters fitted through their logarithm: log A, log B, log E, log gamma, family.logL/F/C."""
    return not internal.startswith("phi:") and internal.rsplit(".", 1)[-1].startswith("log")


def public_values(names: Sequence[str], theta: np.ndarray) -> np.ndarray:
    """Internal coordinates -> natural values (exp of the log-parametrized ones)."""
    theta = np.atleast_2d(theta)
    out = theta.copy()
    for j, n in enumerate(names):
        if is_log(n):
            out[:, j] = np.exp(theta[:, j])
    return out
