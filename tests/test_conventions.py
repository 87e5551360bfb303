"""The ecosystem's conventions, from their definitions: IEEE overflow of plain casts and
scales, e8m0 scale roundings (floor, ceil, even, rceil), full-range W4A16 ints, and the
`uscl mse` note on scales that leave their range. (Peers bit for bit: tests/test_peers.py.)"""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest

from gmse_cli.compress import compress
from gmse_cli.errors import SpecError
from gmse_cli.spec import resolve_format


def _row(*values: float, cols: int = 128) -> np.ndarray:
    x = np.zeros((1, cols), dtype=np.float32)
    x[0, : len(values)] = values
    return x


def test_plain_casts_overflow_as_ieee():
    x = np.array([[65504.0, 65519.0, 65520.0, 1e30, -1e30, 3.0e38, 1.5, -0.0]], dtype=np.float32)
    np.testing.assert_array_equal(compress(resolve_format("fp16"), x), x.astype(np.float16).astype(np.float32))
    np.testing.assert_array_equal(
        compress(resolve_format("bf16"), x), x.astype(ml_dtypes.bfloat16).astype(np.float32)
    )
    sat = compress(resolve_format("fp16-saturate"), x)
    np.testing.assert_array_equal(sat[0, :5], [65504.0, 65504.0, 65504.0, 65504.0, -65504.0])


def test_fp16_scales_saturate_or_overflow():
    x = _row(1e30, 1.0)
    # int4-g128: amax / 7 = 1.4e29 saturates to 65504 (the old silent behaviour, now documented)
    assert compress(resolve_format("int4-g128"), x)[0, 0] == 7 * 65504.0
    out = compress(resolve_format("sint4-g128-sfp16-inf"), x)
    assert np.isinf(out[0, 0]) or np.isnan(out[0, 0])


@pytest.mark.parametrize(
    ("amax", "mode", "want"),
    [
        # e2m1: emax 2, max 6; the element 0.3 reads 0.5 under scale 1 and 0 under scale 2
        (6.5, "floor", 0.5),  # 2^(floor(log2 6.5) - 2) = 1
        (6.5, "ceil", 0.0),  # 2^(ceil(log2 6.5) - 2) = 2
        (6.5, "rceil", 0.0),  # 2^ceil(log2(6.5 / 6)) = 2
        (6.5, "even", 0.5),  # 6.5 = 1.625 * 4 rounds (1 mantissa bit) to 1.5 * 4: scale 1
        (7.0, "even", 0.0),  # 7 = 1.75 * 4 rounds half up to 2 * 4: scale 2
        (7.0, "floor", 0.5),
        (6.0, "rceil", 0.5),  # 6 / 6 = 1: scale 1
        (4.0, "ceil", 0.5),  # log2 4 exact: scale 1
    ],
)
def test_e8m0_scale_roundings_from_their_definitions(amax, mode, want):
    fmt = resolve_format(f"e2m1-g32-absmax-se8m0-{mode}")
    out = compress(fmt, _row(amax, 0.3, cols=32))
    assert out[0, 1] == want


def test_catalog_rceil_is_the_shorthand():
    assert resolve_format("mxfp4-rceil").stages == resolve_format("e2m1-g32-absmax-se8m0-rceil").stages
    with pytest.raises(SpecError, match="only applies to e8m0"):
        resolve_format("int4-g128-rceil")


def test_w4a16_uses_all_sixteen_codes():
    x = _row(7.5, -7.5, 3.5, 2.5, -0.5, 1.2)
    out = compress(resolve_format("w4a16"), x)[0, :6]  # scale amax / 7.5 = 1, ties to even
    np.testing.assert_array_equal(out, [7.0, -8.0, 4.0, 2.0, -0.0, 1.0])
    old = compress(resolve_format("int4-g128"), x)[0, :2]  # scale amax / 7: codes -7 ... 7
    assert old[0] == -old[1] == pytest.approx(7.5, rel=1e-3)


def test_mse_notes_scales_out_of_range(tmp_path):
    from safetensors.numpy import save_file

    from gmse_cli.realmse import measure_mse

    w = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    w[0, :128] *= 1e-9  # its fp16 scale (amax / 7 < 2^-25) is zero: the group reads back as 0
    save_file({"l.weight": w}, str(tmp_path / "w.safetensors"))
    notes: list[str] = []
    measure_mse(tmp_path / "w.safetensors", ["int4-g128"], law=None, warn=notes.append)
    assert any("1 of 16 fp16 scales underflowed" in n for n in notes), notes
    notes.clear()
    measure_mse(tmp_path / "w.safetensors", ["int4-g128-sfp32"], law=None, warn=notes.append)
    assert not notes


def test_new_fields_at_their_defaults_leave_the_serialized_form_alone():
    # training run keys hash the dumped spec: formats written before these fields existed keep it
    stage = resolve_format("int4-g128").quantizer
    dumped = stage.model_dump()
    assert not {"scale_rounding", "overflow", "lut_rounding"} & set(dumped)
    assert resolve_format("mxfp4-rceil").quantizer.model_dump()["scale_rounding"] == "rceil"
