"""Generated valid formats: faults a generator of valid shorthands found (roundtrip33).

A shorthand's modifiers each set one field of the stage, once: their order cannot matter.
Checking the stage after each modifier refused valid formats whose modifiers came in an
order where an intermediate stage was inconsistent: a rounding before its e8m0 scale format
('e3m2-nearest-se8m0'), 'inf' before its bf16 scale format, 'sdq8' before 'absmax'.
"""

from __future__ import annotations

import itertools

import gmse_independent as gi
import numpy as np
import pytest

from gmse_cli.errors import SpecError
from gmse_cli.spec import resolve_format
from gmse_cli.spec.formatfile import format_to_toml, load_format_toml
from gmse_cli.spec.stages import Quantize

# (base, modifiers, the stage's fields written out)
CASES = [
    ("e3m2", ["nearest", "se8m0"], dict(grid="fp", exponent_bits=3, mantissa_bits=2,
                                        scale_format="e8m0", scale_rounding="nearest")),
    ("sint4", ["inf", "sbf16", "g64"], dict(grid="int", bits=4, int_style="signed", scale="absmax",
                                            group=64, scale_format="bf16", overflow="inf")),
    ("int3", ["sdq8", "absmax", "g256"], dict(grid="int", bits=3, scale="absmax", group=256,
                                              scale_format="dq8")),
    ("lm2", ["ceil", "se8m0", "absmax", "g32"], dict(grid="lloyd-max", bits=2, scale="absmax", group=32,
                                                     scale_format="e8m0", scale_rounding="ceil")),
    ("aint4", ["rceil", "mse", "se8m0", "g16"], dict(grid="int", bits=4, int_style="asymmetric", scale="mse",
                                                     group=16, scale_format="e8m0", scale_rounding="rceil")),
]


@pytest.mark.parametrize(("base", "mods", "fields"), CASES, ids=[c[0] for c in CASES])
def test_modifier_order_does_not_matter(base: str, mods: list[str], fields: dict) -> None:
    expected = Quantize(**fields)
    for order in itertools.permutations(mods):
        name = "-".join([base, *order])
        assert resolve_format(name).stages == (expected,), name
        assert resolve_format(f"2:4+{name}").stages[1] == expected, name


@pytest.mark.parametrize("name", ["e2m1-nearest", "sint4-rms-floor-se8m0", "int4-g128-g64",
                                  "mxfp4-floor-ceil", "aint4-rms", "vq2-b2-absmax", "2:4-g64"])
def test_inconsistent_modifiers_still_refused(name: str) -> None:
    with pytest.raises(SpecError, match="'"):
        resolve_format(name)


# absmean: its constant a modifier of its own token, combined with the storage it allows
ABSMEAN_CASES = [
    ("sint4", ["absmean0.5", "se8m0", "rceil", "g32"], dict(grid="int", bits=4, int_style="signed",
                                                          scale="absmean", scale_constant=0.5, group=32,
                                                          scale_format="e8m0", scale_rounding="rceil")),
    ("e2m1", ["nearest", "absmean", "se8m0", "row"], dict(grid="fp", exponent_bits=2, mantissa_bits=1,
                                                          scale="absmean", group="row", scale_format="e8m0")),
    ("lut[-1,0,1]", ["absmean", "tensor", "sbf16", "inf"], dict(grid="lut", values=[-1, 0, 1], scale="absmean",
                                                               group="tensor", scale_format="bf16",
                                                               overflow="inf")),
]


@pytest.mark.parametrize(("base", "mods", "fields"), ABSMEAN_CASES, ids=[c[0] for c in ABSMEAN_CASES])
def test_absmean_modifier_order_does_not_matter(base: str, mods: list[str], fields: dict) -> None:
    test_modifier_order_does_not_matter(base, mods, fields)


def _generated_absmean(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while len(out) < n:
        spec = gi.random_spec(rng, absmean=1.0)
        if "absmean" not in spec:
            continue
        try:
            resolve_format(spec)
        except SpecError:
            continue
        out.append(spec)
    return out


@pytest.mark.parametrize("name", _generated_absmean(30, 13))
def test_generated_absmean_survives_toml(name: str, tmp_path) -> None:
    """A generated absmean shorthand, written as a format file and read back, is the same
    format (its constant and its e8m0 rounding, given or default, included)."""
    fmt = resolve_format(name)
    path = tmp_path / "f.toml"
    path.write_text(format_to_toml(fmt))
    back = load_format_toml(path)
    assert back.stages == fmt.stages, name


@pytest.mark.parametrize("name", ["sint4-absmean-sdq8", "aint4-g32-absmean", "e2m1-g32-absmean-se8m0-floor",
                                  "e2m1-g32-absmean-se8m0-ceil", "e2m1-g32-absmean-se8m0-even",
                                  "int4-absmean-absmax-sdq8"])
def test_absmean_where_illegal_is_refused(name: str) -> None:
    with pytest.raises(SpecError, match="'"):
        resolve_format(name)
