"""Backends of the GMSE engine: which code compresses the Gaussian sample bank.

A backend is a factory ``device -> compressor``, the compressor mapping ``(format, float32
rows)`` to the compressed rows. ``numba`` (default) and ``numpy`` (the reference twins) are
gmse_cli.compress's own and register here. ``torch`` lives in the optional training package,
a floor above this one, so it registers itself when its module is imported; this registry
knows only that module's name, and imports it the first time ``torch`` is asked for. Without
the training extra that import fails, and the lookup says what to install.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

import numpy as np

from gmse_cli.errors import BackendMissing, SpecError, described
from gmse_cli.spec import Format

__all__ = ["Compressor", "BackendFactory", "register_backend", "backend_names", "compressor", "check_backend_name", "check_device"]

Compressor = Callable[[Format, np.ndarray], np.ndarray]
BackendFactory = Callable[[str], Compressor]  # device -> compressor

_FACTORIES: dict[str, BackendFactory] = {}

# Backends that register themselves from an optional extra: name -> (module whose import
# registers it, what to install when that import fails).
_PROVIDERS: dict[str, tuple[str, str]] = {
    "torch": ("gmse_cli.training.gmse_backend", "the training extra (pip install 'uscl[train]')"),
}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``--backend NAME`` available: ``factory(device)`` returns the compressor."""
    _FACTORIES[name] = factory


def backend_names() -> tuple[str, ...]:
    """Every backend a run may ask for, registered or provided by an optional extra."""
    return tuple(dict.fromkeys([*_FACTORIES, *_PROVIDERS]))


def check_backend_name(name: object) -> str:
    """``name`` if it is text, else one SpecError naming it (an array is unhashable in the
    registry's lookup); whether it names a known backend is :func:`compressor`'s to say."""
    if not isinstance(name, str):
        raise SpecError(f"a GMSE backend is a name ({', '.join(backend_names())}), not {described(name)}")
    return name


def check_device(device: object) -> str:
    """``device`` if it is text (``"cpu"``, ``"cuda"``, ``"cuda:1"``), else one SpecError naming
    it: the numba and numpy backends never read it, so a wrong kind would pass unnoticed."""
    if not isinstance(device, str):
        raise SpecError(f"device must be a device name (text such as 'cpu' or 'cuda'), not {described(device)}")
    return device


def compressor(name: str, device: str = "cpu") -> Compressor:
    """The compressor of backend ``name`` on ``device``.

    Raises :class:`SpecError` for an unknown name and :class:`BackendMissing` when the
    backend's extra is not installed (or the device is not there).
    """
    check_backend_name(name)
    check_device(device)
    if name not in _FACTORIES and name in _PROVIDERS:
        module, extra = _PROVIDERS[name]
        try:
            import_module(module)
        except ImportError as exc:
            raise BackendMissing(f"--backend {name} needs {extra}: {exc}") from None
    factory = _FACTORIES.get(name)
    if factory is None:
        *others, last = backend_names()
        raise SpecError(f"unknown GMSE backend '{name}' (expected {', '.join(others)} or {last})")
    return factory(device)


def _compress_backend(backend: str) -> BackendFactory:
    def factory(device: str) -> Compressor:
        from gmse_cli.compress import compress

        # the bank's samples are Gaussian, finite by construction: no per-batch finiteness check
        return lambda fmt, x: compress(fmt, x, backend=backend, finite=True)

    return factory


register_backend("numba", _compress_backend("numba"))
register_backend("numpy", _compress_backend("numpy"))
