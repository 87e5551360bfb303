"""Every library entry point that takes a seed or a row length checks it once, by name: a bool, a
float, text or a number out of range (seeds: 0 .. 2**63 - 1, what numpy's and torch's
generators both take; rows: 1 .. 2**20) is one clear error, not a numpy traceback or a silently
different stream."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize("seed", [-1, 2**63, 1.5, True, "3", None])
@pytest.mark.parametrize("entry", ["estimate_gmse", "SampleBank", "predict", "rank", "fit", "fit_capacity",
                                   "search_formats"])
def test_a_bad_seed_is_one_error_naming_it(entry, seed):
    from gmse_cli.errors import SpecError
    from gmse_cli.fit import fit, fit_capacity
    from gmse_cli.gmse import SampleBank, estimate_gmse
    from gmse_cli.rank import predict, rank
    from gmse_cli.search import search_formats

    calls = {
        "estimate_gmse": lambda: estimate_gmse(["nvfp4"], seed=seed),
        "SampleBank": lambda: SampleBank(seed=seed),
        "predict": lambda: predict("int4", 1e8, 1e10, seed=seed),
        "rank": lambda: rank(["nvfp4"], params=1e8, tokens=1e10, seed=seed),
        "fit": lambda: fit([], seed=seed),
        "fit_capacity": lambda: fit_capacity([], seed=seed),
        "search_formats": lambda: search_formats(4.0, seed=seed),
    }
    with pytest.raises(SpecError, match=r"^seed = .* must be a whole number from 0 to 2\*\*63 - 1$"):
        calls[entry]()


def test_the_largest_seed_and_numpy_integers_are_seeds():
    import numpy as np

    from gmse_cli.limits import MAX_SEED, check_seed

    assert check_seed(MAX_SEED) == 2**63 - 1
    assert check_seed(np.int64(7)) == 7 and type(check_seed(np.uint8(3))) is int


@pytest.mark.parametrize("row_length", [0, -4, 1.5, float("nan"), True, 2**20 + 1, 10**30])
def test_a_bad_row_length_is_one_error_naming_it(row_length):
    from gmse_cli.errors import SpecError
    from gmse_cli.gmse import SampleBank, estimate_gmse
    from gmse_cli.rank import predict

    for call in (lambda: estimate_gmse(["nvfp4"], row_length=row_length),
                 lambda: SampleBank(row_length=row_length),
                 lambda: predict("int4", 1e8, 1e10, row_length=row_length)):
        with pytest.raises(SpecError, match=r"^row_length=.* must be a whole number from 1 to 1,048,576$"):
            call()


@pytest.mark.parametrize(("option", "value", "named"), [
    ("bootstrap", 1.5, "bootstrap=1.5"), ("bootstrap", True, "bootstrap=True"),
    ("bootstrap", 10**6, "bootstrap=1000000"), ("huber_delta", True, "huber_delta=True"),
    ("huber_delta", "x", "huber_delta='x'"), ("bootstrap_starts", 0, "bootstrap_starts 0"),
    ("capacity_delta", float("nan"), "capacity_delta=nan")])
def test_a_bad_fit_option_is_one_error_naming_it(option, value, named):
    from gmse_cli.errors import FitError
    from gmse_cli.fit import fit

    with pytest.raises(FitError, match=f"^{named} must be"):
        fit([], model="dense", **{option: value})
