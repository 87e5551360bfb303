"""Law files: a :class:`~gmse_cli.law.model.Law` as TOML, read and written.

Every constant carries its value, optional 1-sigma and interval, and its provenance::

    schema_version = 1     # optional: a file without it is version 1
    name = "paper-llama-c4"
    description = "..."
    [meta]                 # free-form strings: data files, fit options, date, version
    [A]                    # value, sigma?, low?, high?, provenance
    [alpha] / [B] / [beta] / [E]
    [families.quantization]  # shape = "erf" optional: the curve's s (a file without it: tanh)
    [families.quantization.L] / .F / .C
    [families.sparsity.L] ...
    [families.vq.L] ...

    [fitted_range]         # optional: params = [min, max], tokens_per_param = [min, max], runs, provenance
    [draws]                # optional joint draws: provenance
    [draws.constants]      # one column per constant, e.g. "quantization.F" = [...]
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gmse_cli.atomic import write_text_atomic
from gmse_cli.errors import LawError, closest, described
from gmse_cli.inputs import is_file
from gmse_cli.law.model import Law
from gmse_cli.paths import laws_dir
from gmse_cli.schema.versions import LAW_SCHEMA_VERSION, bad_schema, newer_writer
from gmse_cli.tomlfile import dumps_toml, read_toml

__all__ = ["DEFAULT_LAW", "load_law", "shipped_law", "law_to_toml", "save_law"]

DEFAULT_LAW = "paper-llama-c4"


def load_law(path: str | Path | Law | None = None) -> Law:
    """Load a law file; ``None`` or a shipped name (``paper-llama-c4``) loads the shipped one; a
    :class:`Law` is returned as it is (as ``rank(law=...)`` takes one).

    Raises :class:`LawError` for a file that cannot be read or is no valid law, and for a name
    that is neither a file nor a shipped law."""
    if isinstance(path, Law):
        return path
    if path is not None and not isinstance(path, str | Path):
        raise LawError(f"a law is a file path, a shipped law's name or a Law, not {described(path)}")
    if path is None or (isinstance(path, str) and not path.endswith(".toml") and not is_file(path)):
        return shipped_law(DEFAULT_LAW if path is None else path)  # an empty name is no law
    path = Path(path)
    return _validate(read_toml(path, what="law file", error=LawError), source=str(path))


def shipped_law(name: str = DEFAULT_LAW) -> Law:
    """The law shipped with uscl under ``name`` (``gmse_cli/laws/<name>.toml``)."""
    # read in lower case, as format names are: 'PAPER-LLAMA-C4' loaded on a case-insensitive
    # file system (macOS, Windows) and was refused on Linux
    path = laws_dir() / f"{name.lower()}.toml"
    if not is_file(path):
        shipped = sorted(p.stem for p in laws_dir().glob("*.toml"))
        raise LawError(f"no law file or shipped law named '{name}'{closest(name, shipped)} "
                       f"(shipped: {', '.join(shipped) or 'none'})")
    return load_law(path)


def _validate(data: dict[str, Any], *, source: str) -> Law:
    # One line naming the file, the key and what is wrong, for the errors a hand edit makes.
    version = (bad_schema(data["schema_version"], LAW_SCHEMA_VERSION, f"{source}: the law file")
               if "schema_version" in data else None)
    if version is not None:  # its keys and values may mean what this uscl cannot know
        raise LawError(version)
    meta = data.get("meta")
    newer = newer_writer(meta.get("uscl_version")) if isinstance(meta, dict) else None
    try:
        return Law.model_validate(data)
    except LawError as exc:
        raise LawError(f"{source}: {exc} ({newer})" if newer else f"{source}: {exc}") from None
    except ValidationError as exc:
        # A misspelt key shows up as both "missing" and "unknown"; the unknown one names the typo.
        errors = sorted(exc.errors(), key=lambda e: e.get("type") != "extra_forbidden")
        err = errors[0]
        where = ".".join(str(p) for p in err.get("loc", ()))
        ctx_error = (err.get("ctx") or {}).get("error")
        # pydantic's "Value error, " prefix names its exception class, nothing a user wrote
        msg = str(ctx_error) if isinstance(ctx_error, LawError) else err.get("msg", "invalid").removeprefix("Value error, ")
        if err.get("type") == "missing":
            loc = [str(p) for p in err.get("loc", ())]
            if loc and loc[0] == "draws":
                msg = "missing (joint draws need their provenance and a [draws.constants] table)"
            elif loc and loc[-1] in ("value", "provenance"):
                msg = "missing (every constant needs a value and its provenance)"
            elif loc and loc[0] == "fitted_range":
                msg = "missing (a fitted range needs params, tokens_per_param, runs and provenance)"
            elif loc and loc[0] == "families":
                msg = "missing (every family curve needs L, F and C)"
            elif loc == ["name"]:
                msg = "missing (a law needs a name)"
            else:
                msg = "missing (every law needs A, alpha, B, beta and E)"
        elif err.get("type") == "model_type" and (err.get("ctx") or {}).get("class_name") == "Constant":
            # a bare number where a constant's table belongs: the likeliest hand-written slip
            name = str(err.get("loc", ("?",))[-1])
            msg = (f"{err.get('input')!r} is no constant: write {name} = {{ value = ..., provenance = \"...\" }} "
                   "(sigma or low/high optional)")
        elif err.get("type") == "extra_forbidden":
            msg = "unknown key" if newer else "unknown key (check its spelling)"
        if newer:  # a key or value a newer uscl writes is no mistake of the user's
            msg = f"{msg} ({newer})"
        raise LawError(f"{source}: {where}: {msg}" if where else f"{source}: {msg}") from None


def law_to_toml(law: Law) -> str:
    """Render a law as TOML that :func:`load_law` reads back to an equal model.

    Unset fields (None), an empty description, [meta] or families, and a curve's default shape
    (tanh) are left out; a draws column
    named like ``quantization.F`` is one quoted key of [draws.constants], not a nested table.
    """
    if not isinstance(law, Law):
        raise LawError(f"law_to_toml takes a Law (load_law or a fit's law gives one), not {described(law)}")
    data = law.model_dump(mode="json", exclude_none=True)
    for key in ("description", "meta", "families"):
        if not data.get(key):
            data.pop(key, None)
    for curve in data.get("families", {}).values():
        if curve.get("shape") == "tanh":  # the default: a tanh law's file stays readable by an older uscl
            curve.pop("shape")
    return dumps_toml(data)


def save_law(law: Law, path: str | Path) -> None:
    """Write ``law`` to ``path`` as a TOML law file that :func:`load_law` reads back (with its
    ``[draws]``), atomically: a crash never leaves a half-written law file.

    Raises :class:`LawError` for what is no :class:`Law` or no path, or a path that cannot be
    written."""
    if not isinstance(law, Law):
        raise LawError(f"save_law takes a Law (load_law or a fit's law gives one), not {described(law)}")
    if not isinstance(path, str | PathLike):
        raise LawError(f"save_law takes a path (text or a Path), not {described(path)}")
    path = Path(path)
    try:
        write_text_atomic(path, law_to_toml(law))
    except OSError as exc:
        raise LawError(f"cannot write law file {path}: {exc.strerror or exc}") from None
