"""review34: a vq stage's group written as text ('64') reads as the number, as it did before the
stage split and as a quantize stage's does; pooling spellings does not let a run's inline format
stand for every later run that names the same spelling."""

from __future__ import annotations

import conftest  # noqa: F401
import pytest

from gmse_cli.errors import SpecError
from gmse_cli.fit.spellings import format_content, pool_spellings
from gmse_cli.runs import Run
from gmse_cli.spec import resolve_format
from gmse_cli.spec.stages import VQ, Quantize


@pytest.mark.parametrize("text", ["64", " 64 "])
def test_vq_group_as_text_reads_as_the_number(text):
    assert VQ(dim=2, bits=2, group=text).group == 64 == Quantize(grid="int", bits=4, group=text).group


@pytest.mark.parametrize("text", ["tensor", "-64", "0"])
def test_vq_group_other_text_is_refused(text):
    with pytest.raises((SpecError, ValueError), match="group"):
        VQ(dim=2, bits=2, group=text)


def test_an_inline_format_does_not_stand_for_its_spelling():
    g32 = resolve_format("int4-g32")
    assert format_content(g32) != format_content(resolve_format("int4"))  # two formats
    inline = Run(scheme="int4", weights="int4", weights_spec=g32, N=1e7, D=1e8, loss=3.0)
    by_name = Run(scheme="int4", weights="int4", N=1e7, D=1e8, loss=3.1)
    for runs in ([inline, by_name], [by_name, inline]):
        out, _ = pool_spellings(runs)
        named = next(r for r, orig in zip(out, runs, strict=True) if orig is by_name)
        assert named.scheme == "int4"  # the catalog's int4, whichever run comes first
