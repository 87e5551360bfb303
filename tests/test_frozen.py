"""The one model base: scalars keep their kind (a bool is never a number, text never a number)."""

from __future__ import annotations

import enum

import numpy as np
import pytest
from pydantic import ValidationError

from gmse_cli.frozen import Frozen


class Color(enum.StrEnum):
    RED = "red"


class Spec(Frozen):
    bits: int = 4
    scale: float = 1.0
    signed: bool = True
    name: str | None = None
    levels: list[float] = []
    color: Color = Color.RED


@pytest.mark.parametrize(("field", "value", "said"), [
    ("bits", True, "bits = true is a boolean; give a number"),
    ("scale", "4", "scale = '4' is text; give a number"),
    ("signed", 1, "signed = 1 is a number; write true or false"),
    ("name", 3, "name = 3 is a number; give text"),
    ("levels", [0.5, False], "levels = false is a boolean; give a number"),
    ("color", 2, "color = 2 is a number; give text"),
])
def test_a_scalar_of_the_wrong_kind_is_refused_by_name(field, value, said):
    with pytest.raises(ValidationError, match=said.replace("[", r"\[")):
        Spec(**{field: value})


def test_subclasses_of_the_right_kind_pass():
    spec = Spec(bits=np.int64(3), scale=np.float64(0.5), levels=(np.float32(1.0), 2), color="red", name=Color.RED)
    assert (spec.bits, spec.scale, spec.levels, spec.color) == (3, 0.5, [1.0, 2.0], Color.RED)
