"""The safetensors reader's former address. It lives in :mod:`gmse_cli.realmse.checkpoint`
(reading) and :mod:`gmse_cli.realmse.layers` (layer selection) now; their public names stay
importable from here."""

from importlib import import_module
from typing import Any

_HOMES = ("gmse_cli.realmse.checkpoint", "gmse_cli.realmse.layers")


def __getattr__(name: str) -> Any:
    for home in _HOMES:
        module = import_module(home)
        if name in module.__all__:
            return getattr(module, name)
    raise AttributeError(f"module 'gmse_cli.checkpoint' has no attribute {name!r}")
