"""Public API arguments that were accepted on a wrong kind and silently ignored (or read as
Python's truth of them) now raise one UsclError naming the value.

Before: ``estimate_gmse(["int4"], device=np.array([1, 2]))`` returned int4's GMSE (the numba
backend never reads ``device``), as did gmse_of, stage_gmse, SampleBank, rank, predict and
compare; ``capacity_interval(..., vary_L=object())`` ran as vary_L=True and ``vary_L={}`` as
False; ``samples={}`` was replaced by fresh draws; ``save_law(law, 3j)`` and
``SampleBank(batch_elements="x")`` raised TypeError.
"""

from __future__ import annotations

import numpy as np
import pytest

import gmse_cli
from gmse_cli.errors import UsclError
from gmse_cli.law import sample_law
from gmse_cli.rank import rank

LAW = gmse_cli.load_law()
STAGES = [("quantization", 0.0115, 0.0)]
WRONG = [np.array([1, 2]), object(), 1j, b"cpu", {}, 0, None]
WRONG_FLAGS = [np.array([True, False]), object(), 1j, b"x", {}, "yes", 1, 0.0, None]


def _named(message: str, value: object) -> bool:
    return type(value).__name__ in message


@pytest.mark.parametrize("bad", WRONG, ids=lambda v: type(v).__name__)
def test_a_device_that_is_no_name_is_refused(bad):
    calls = [
        lambda: gmse_cli.estimate_gmse(["int4"], method="exact", device=bad),
        lambda: gmse_cli.gmse_of("int4", method="exact", device=bad),
        lambda: gmse_cli.stage_gmse("2:4+int4", method="exact", device=bad),
        lambda: gmse_cli.SampleBank(device=bad),
        lambda: rank(["int4"], draws=50, device=bad),
        lambda: gmse_cli.predict("int4", draws=50, device=bad),
        lambda: gmse_cli.compare(["int4", "int8"], draws=50, device=bad),
    ]
    for call in calls:
        with pytest.raises(UsclError, match="^device must be a device name") as err:
            call()
        assert _named(str(err.value), bad)


def test_a_device_name_still_works():
    est = gmse_cli.estimate_gmse(["int4"], method="exact", device="cpu")[0]
    assert est.method == "exact" and 0 < est.gmse < 4.0**-3  # int4 keeps more than 3 bits
    assert gmse_cli.SampleBank(device="cuda").device == "cuda"  # numba ignores it, by design


@pytest.mark.parametrize("bad", WRONG_FLAGS, ids=lambda v: type(v).__name__)
def test_a_vary_L_that_is_no_flag_is_refused(bad):
    calls = [
        lambda: gmse_cli.capacity_interval(LAW, STAGES, draws=50, vary_L=bad),
        lambda: gmse_cli.loss_interval(LAW, 1e8, 1e9, STAGES, draws=50, vary_L=bad),
        lambda: sample_law(LAW, draws=50, vary_L=bad),
        lambda: rank(["int4"], draws=50, vary_L=bad),
        lambda: gmse_cli.predict("int4", draws=50, vary_L=bad),
    ]
    for call in calls:
        with pytest.raises(UsclError, match="^vary_L must be True or False") as err:
            call()
        assert _named(str(err.value), bad)


def test_numpy_flags_still_work():
    """np.bool_ is a flag (numpy's comparisons give one): same interval as Python's bool."""
    one = gmse_cli.capacity_interval(LAW, STAGES, draws=200, vary_L=np.bool_(True))
    two = gmse_cli.capacity_interval(LAW, STAGES, draws=200, vary_L=True)
    assert (one.low, one.high) == (two.low, two.high)


@pytest.mark.parametrize("bad", [{}, [], 0, "draws", object()], ids=lambda v: type(v).__name__)
def test_samples_that_are_no_law_samples_are_refused(bad):
    for call in (lambda: gmse_cli.capacity_interval(LAW, STAGES, draws=50, samples=bad),
                 lambda: gmse_cli.loss_interval(LAW, 1e8, 1e9, STAGES, draws=50, samples=bad)):
        with pytest.raises(UsclError, match="^samples must be a LawSamples") as err:
            call()
        assert _named(str(err.value), bad)


@pytest.mark.parametrize("bad", [3j, None, np.array(["a"]), b"law.toml"], ids=lambda v: type(v).__name__)
def test_save_law_to_no_path_is_refused(bad):
    with pytest.raises(UsclError, match="^save_law takes a path") as err:
        gmse_cli.save_law(LAW, bad)
    assert _named(str(err.value), bad)


@pytest.mark.parametrize("bad", ["x", 1.5, 0, -4, None, np.array([8])], ids=repr)
def test_a_bank_batch_that_is_no_count_is_refused(bad):
    with pytest.raises(UsclError, match="^batch_elements = "):
        gmse_cli.SampleBank(batch_elements=bad)
