"""A small TOML writer of the tests' own, so a law file under test is not made by the code under test."""

from __future__ import annotations

import json

__all__ = ["toml_text"]


def _value(value) -> str:
    if isinstance(value, bool):  # before int: a bool is an int
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return str(value) if isinstance(value, int) else repr(float(value))


def toml_text(table: dict, prefix: str = "") -> str:
    """``table`` as TOML text: plain keys first, then each sub-table under its dotted name."""
    lines, subtables = [], []
    for key, value in table.items():
        name = key if key.replace("_", "").isalnum() else f'"{key}"'
        (subtables if isinstance(value, dict) else lines).append((name, value))
    out = "".join(f"{name} = {_value(value)}\n" for name, value in lines)
    for name, value in subtables:
        full = f"{prefix}.{name}" if prefix else name
        out += f"\n[{full}]\n" + toml_text(value, full)
    return out
