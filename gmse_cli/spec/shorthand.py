"""Naming a format: a catalog name, a TOML path, or the inline shorthand of :data:`SHORTHAND_HELP`."""

from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gmse_cli.errors import SpecError, described
from gmse_cli.grammar import SHORTHAND_HELP
from gmse_cli.inputs import exists, is_file, user_path
from gmse_cli.spec.catalog import catalog, catalog_format
from gmse_cli.spec.format import Format, Scheme, validate_format, validation_message
from gmse_cli.spec.formatfile import load_format_toml
from gmse_cli.spec.nearest import did_you_mean, nearest_formats
from gmse_cli.spec.stages import VQ, Quantize, Rotate, Sparsify
from gmse_cli.spec.vocab import (
    IntStyle,
    LutRounding,
    Overflow,
    ScaleFormat,
    ScaleRounding,
    ScaleStats,
)

__all__ = ["SHORTHAND_HELP", "as_format_list", "parse_shorthand", "resolve_format", "resolve_formats"]

_SCALE_FORMAT_TOKENS = {f"s{f.value}": f for f in ScaleFormat}
_SCALE_STATS_TOKENS = {f"{s.value}stats": s for s in ScaleStats}
_QUANTIZE_ONLY = {  # modifiers of scalar quantize stages: token -> (field, value)
    **{r.value: ("scale_rounding", r) for r in ScaleRounding},
    **{o.value: ("overflow", o) for o in Overflow},
    "bnb": ("lut_rounding", LutRounding.BITSANDBYTES),
}


def _base_stage(token: str) -> Any:
    """The stage a shorthand base token names, or None."""
    cat = catalog()
    if token in cat and len(cat[token].stages) == 1:
        return cat[token].stages[0]
    if m := re.fullmatch(r"int(\d+)", token):
        return Quantize(grid="int", bits=int(m[1]))
    if m := re.fullmatch(r"([saf])int(\d+)", token):
        style = {"s": IntStyle.SIGNED, "a": IntStyle.ASYMMETRIC, "f": IntStyle.FULL}[m[1]]
        return Quantize(grid="int", bits=int(m[2]), int_style=style, scale="absmax")
    if m := re.fullmatch(r"e(\d+)m(\d+)", token):
        return Quantize(grid="fp", exponent_bits=int(m[1]), mantissa_bits=int(m[2]))
    if m := re.fullmatch(r"(?:lm|lloyd-max-)(\d+)", token):
        return Quantize(grid="lloyd-max", bits=int(m[1]))
    if m := re.fullmatch(r"lut\[([^\]]*)\]", token):
        try:
            values = tuple(float(v) for v in m[1].split(",") if v.strip())
        except ValueError:
            raise SpecError(f"'{token}': lut values must be numbers separated by commas") from None
        return Quantize(grid="lut", values=values)
    if m := re.fullmatch(r"(\d+):(\d+)", token):
        return Sparsify(pattern="n:m", n=int(m[1]), m=int(m[2]))
    if m := re.fullmatch(r"(\d+):(\d+)x([^-]*)", token):
        if not re.fullmatch(r"\d+", m[3]) or int(m[3]) < 1:
            raise SpecError(f"'{token}': K={m[3]!r} in N:MxK must be a whole number >= 1")
        return Sparsify(pattern="n:m", n=int(m[1]), m=int(m[2]), block=int(m[3]))
    if m := re.fullmatch(r"sparse-?(\d+(?:\.\d+)?)", token):
        return Sparsify(pattern="magnitude", sparsity=float(m[1]) / 100)
    if m := re.fullmatch(r"block(\d+)-(\d+(?:\.\d+)?)", token):
        return Sparsify(pattern="block", block=int(m[1]), sparsity=float(m[2]) / 100)
    if m := re.fullmatch(r"vq(\d+)-b(\d+(?:\.\d+)?)", token):
        return VQ(dim=int(m[1]), bits=float(m[2]))
    if token == "e8p":
        return VQ(dim=8, bits=2, codebook="e8")
    if m := re.fullmatch(r"had(\d*)", token):
        return Rotate(block=int(m[1]) if m[1] else 128)
    return None


def _modifier_update(token: str, context: str) -> dict[str, Any]:
    """The fields the modifier ``token`` sets (the first is the one it is about)."""
    if m := re.fullmatch(r"g(\d+)", token):
        update = {"group": int(m[1])}
    elif token in ("row", "tensor"):
        update = {"group": token}
    elif token in ("absmax", "mse"):
        update = {"scale": token, "scale_constant": None}
    elif m := re.fullmatch(r"(rms|absmean)(\d+(?:\.\d+)?)?", token):
        update = {"scale": m[1], "scale_constant": float(m[2]) if m[2] else None}
    elif token in _SCALE_FORMAT_TOKENS:
        update = {"scale_format": _SCALE_FORMAT_TOKENS[token]}
    elif token in _SCALE_STATS_TOKENS:
        update = {"scale_stats": _SCALE_STATS_TOKENS[token]}
    elif token in _QUANTIZE_ONLY:
        field, value = _QUANTIZE_ONLY[token]
        update = {field: value}
    else:
        raise SpecError(
            f"'{context}': unknown modifier '{token}' (expected gN, row, tensor, absmax, rms[C], absmean[C], "
            f"mse, {' or '.join(_SCALE_STATS_TOKENS)}, a scale format {', '.join(_SCALE_FORMAT_TOKENS)}, "
            "an e8m0 rounding floor/ceil/even/rceil/nearest, inf, saturate or bnb)"
        )
    return update


def _check_each_field_once(tokens: list[str], context: str) -> None:
    """Refuse a piece that sets one field twice ('int4-g128-g64', 'mxfp4-floor-ceil'):
    the last would silently win. Catalog names count too ('int4-g128' is int4 with g128)."""
    set_by: dict[str, str] = {}
    for token in tokens:
        try:
            field = next(iter(_modifier_update(token, context)))
        except SpecError:
            continue  # a base token, or a piece of one ('fp6-e2m3', 'sparse-50')
        if field in set_by:
            raise SpecError(f"'{context}': '{set_by[field]}' and '{token}' both set the "
                            f"{field.replace('_', ' ')}; give one")
        set_by[field] = token


def _modifier_fields(stage: Any, token: str, context: str) -> dict[str, Any]:
    """The fields ``token`` sets on ``stage``, refused where the stage's kind takes none of them."""
    if not isinstance(stage, Quantize | VQ):
        raise SpecError(f"'{context}': modifier '{token}' only applies to quantize or vq stages")
    update = _modifier_update(token, context)
    if isinstance(stage, VQ) and "scale" in update:
        raise SpecError(f"'{context}': vq stages use an rms scale; '{token}' does not apply")
    if isinstance(stage, VQ) and (token in _QUANTIZE_ONLY or "scale_stats" in update):
        raise SpecError(f"'{context}': '{token}' applies to quantize stages only, not vq")
    return update


def _apply_modifiers(stage: Any, tokens: list[str], context: str) -> Any:
    """``stage`` with every modifier of ``tokens`` set, validated once: the modifiers are a set
    of fields (each given once), so their order does not matter ('e3m2-nearest-se8m0' is
    'e3m2-se8m0-nearest'; checking after each one refused a rounding before its scale format)."""
    if not tokens:
        return stage
    data = stage.model_dump()
    for token in tokens:
        data |= _modifier_fields(stage, token, context)
    try:
        return type(stage).model_validate(data)
    except SpecError as exc:
        raise SpecError(f"'{context}': {exc}") from None
    except ValidationError as exc:
        raise SpecError(f"'{context}': {validation_message(exc)}") from None


def _parse_stage(text: str) -> tuple[Any, ...]:
    """One '+'-separated piece: a (possibly multi-stage) catalog name, or base[-modifier...]."""
    cat = catalog()
    if text in cat:
        return cat[text].stages
    tokens = text.split("-")
    _check_each_field_once(tokens[1:], text)  # the first is always the base's ('sint8' is no scale format)
    # The longest prefix that names a base wins, so catalog names with dashes (fp6-e2m3,
    # int4-g128, sparse-50) take precedence over reading their pieces as modifiers.
    for cut in range(len(tokens), 0, -1):
        base = _base_stage("-".join(tokens[:cut]))
        if base is not None:
            return (_apply_modifiers(base, tokens[cut:], text),)
    nearest = nearest_formats(text)
    hint = did_you_mean(nearest) if nearest else "; see `uscl formats` or `uscl formats --help`"
    raise SpecError(f"unknown format '{text}'{hint}")


def parse_shorthand(text: str) -> Format:
    """Parse the inline grammar (:data:`SHORTHAND_HELP`) into a :class:`Format`."""
    if not isinstance(text, str):
        raise SpecError(f"a shorthand is text, not {described(text)}")
    text = text.strip().lower()
    if not text:
        raise SpecError("empty format name")
    _refuse_several(text)
    if any(c.isspace() for c in text):
        raise SpecError(f"'{text}': a shorthand has no spaces; write '{''.join(text.split())}'")
    if not text.isascii():
        # regexes' \d and int() read any script's digits: 'int\uff14' (a full-width 4) would be int4
        odd = next(c for c in text if not c.isascii())
        raise SpecError(f"'{text}': a shorthand is ASCII; {odd!r} is not")
    if (shipped := catalog_format(text)) is not None:
        return shipped
    pieces = text.split("+")
    if any(not p for p in pieces):
        raise SpecError(f"'{text}': empty stage between '+' signs")
    stages: list[Any] = []
    try:
        for piece in pieces:
            stages.extend(_parse_stage(piece))
    except ValidationError as exc:
        raise SpecError(f"'{text}': {validation_message(exc)}") from None
    return validate_format({"name": text, "stages": [s.model_dump() for s in stages]}, source=f"'{text}'")


# A comma or a space outside a lut's brackets: where formats were run together in one argument
_BETWEEN_FORMATS = re.compile(r"[\s,]+(?![^\[]*\])")


def _refuse_several(text: str) -> None:
    """Refuse formats run together in one argument ('int4,nvfp4', 'int4 nvfp4', a list's
    trailing comma 'int4,') where each piece is a format: one line that gives them apart."""
    if not _BETWEEN_FORMATS.search(text):
        return
    words = [w for w in _BETWEEN_FORMATS.split(text) if w]
    for word in words:
        try:
            resolve_format(word)
        except SpecError as exc:
            if len(words) > 1 and _unknown_name("".join(words)):
                # 'int4 nvpf4': what is wrong with the piece, not "write 'int4nvpf4'"
                raise SpecError(f"'{text}': {exc}") from None
            return  # one shorthand with a space in it: the usual refusal ("write 'e2m1-g32'")
    if len(words) == 1:
        raise SpecError(f"unknown format '{text}'; did you mean '{words[0]}'?")
    raise SpecError(f"'{text}' is {len(words)} formats in one argument; give each its own: {' '.join(words)}")


def _unknown_name(text: str) -> bool:
    """Whether ``text`` is no format and not even the grammar's ('int4nvpf4', not 'int4+nf4')."""
    try:
        resolve_format(text)
    except SpecError as exc:
        return str(exc).startswith("unknown format")
    return False


def resolve_format(text: str | Path | Format) -> Format:
    """A catalog name, a TOML path, or a shorthand -> :class:`Format` (a :class:`Format` is
    returned as it is).

    Raises :class:`SpecError` for text that is none of these (naming it, with the nearest
    catalog name where one is close) and for a TOML file that cannot be read or is no format."""
    if isinstance(text, Format):
        return text
    if not isinstance(text, str | Path):  # str() of a stage or a number would be parsed as a shorthand
        raise SpecError(f"a format is a name, shorthand, .toml path or Format, not {described(text)}")
    raw = str(text).strip()
    if raw.endswith(".toml") or is_file(raw):
        try:
            return load_format_toml(raw)
        except SpecError as exc:
            if raw.endswith(".toml") or "malformed TOML" not in str(exc):
                raise
            # a runs file, a README given where a format goes: say what a format file is
            raise SpecError(f"{exc} (a format file is TOML, as `uscl formats show` writes it; "
                            "a runs file goes to `uscl fit`)") from None
    if raw and exists(raw) and ("/" in raw or "\\" in raw or raw.startswith(".")):
        if not user_path(raw).is_dir():  # a pipe or a device (/dev/null): the reader's own line says so
            return load_format_toml(raw)
        raise SpecError(f"'{raw}' is a folder, not a format (a catalog name, shorthand or .toml file)")
    return parse_shorthand(raw)


def resolve_formats(texts: Iterable[str]) -> list[Format]:
    """:func:`resolve_format` over each of ``texts``."""
    return [resolve_format(t) for t in as_format_list(texts)]


def as_format_list(items: Any) -> list[Any]:
    """``items`` as a list, where one name, path, :class:`Format` or :class:`Scheme` alone is a
    list of one (a str is a sequence too, and would otherwise be read a character at a time)."""
    if isinstance(items, str | Path | Format | Scheme):
        return [items]
    try:
        return list(items)
    except TypeError:  # None, a number, a bool: no format and no list of them
        raise SpecError(f"expected a format (name, path or Format) or a list of them, not {described(items)}") from None
