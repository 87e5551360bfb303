"""Generated valid formats: faults a generator of valid shorthands found (roundtrip33).

A shorthand's modifiers each set one field of the stage, once: their order cannot matter.
Checking the stage after each modifier refused valid formats whose modifiers came in an
order where an intermediate stage was inconsistent: a rounding before its e8m0 scale format
('e3m2-nearest-se8m0'), 'inf' before its bf16 scale format, 'sdq8' before 'absmax'.
"""

from __future__ import annotations

import itertools

import pytest

from gmse_cli.errors import SpecError
from gmse_cli.spec import resolve_format
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
