"""Library calls that fail raise a UsclError and leave nothing behind that spoils the next call."""

from __future__ import annotations

import numpy as np
import pytest

from gmse_cli import UsclError
from gmse_cli.compress import compress


@pytest.mark.parametrize("x", ["x", [[1.0, 2.0], [3.0]], np.array([[1 + 2j, 0j]]), np.array([["a", "b"]]),
                               np.array([[object(), 1.0]], dtype=object)])
def test_compress_refuses_what_is_no_real_array(x):
    """Text was a numpy ValueError, a complex array silently lost its imaginary part."""
    with pytest.raises(UsclError, match="compress: x must be a 2-D array of real numbers"):
        compress("int4-g2", x)


def test_compress_takes_lists_and_ints():
    x = np.arange(-8, 8, dtype=np.int64).reshape(2, 8)
    assert np.array_equal(compress("int8-g8", x), compress("int8-g8", x.astype(np.float32)))
    assert np.array_equal(compress("int8-g8", x.tolist()), compress("int8-g8", x.astype(np.float32)))


def test_failed_calls_leave_no_state_behind():
    """After a run of failing calls the lock is free, notices are off, no bar is live, and
    the same numbers come back."""
    from gmse_cli import estimate_gmse, predict, progress, threads
    from gmse_cli.rank import rank

    def good():
        return (predict("2:4+int4", params=1e9).rho, rank(["int4", "fp4"])[0].rho,
                estimate_gmse(["int3-g64"], method="monte-carlo", rel_err=5e-2, cache="off")[0].gmse)

    before = good()
    for bad in (lambda: predict("int4", params=float("nan")), lambda: rank(["int4"], level=2),
                lambda: estimate_gmse(["int4"], rel_err=-1), lambda: compress("int4-g64", np.zeros((2, 100))),
                lambda: compress("int4-g2", np.array([[np.inf, 0.0]]))):
        with pytest.raises(UsclError):
            bad()
    assert not progress._notices and progress._live == []
    assert threads._launch_lock.acquire(blocking=False)
    threads._launch_lock.release()
    assert good() == before
