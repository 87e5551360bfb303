"""Log-scaled axes whose ticks a reader can read."""

from __future__ import annotations

from collections.abc import Sequence

from gmse_cli.counts import si

__all__ = ["log_axis"]

_NICE = (1.0, 2.0, 5.0)
_NICE_DENSE = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
_NICE_FINE = (1.0, 1.2, 1.4, 1.6, 1.8, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)  # data within 2x


def log_axis(ax, values: Sequence[float], *, axis: str = "x") -> None:
    """A log-scaled axis over ``values`` whose ticks a reader can read: 1-2-5 (1, 1.5, 2, 3, 4,
    5, 6, 8 over a range of less than a decade; steps of 0.1-0.2 within a factor of 2) within
    the data, at least two labelled, as plain numbers with k / M / B, and no unlabelled minor ticks (matplotlib's default labels
    decades only: one label or none on data within a decade)."""
    import math

    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

    finite = [float(v) for v in values if v is not None and math.isfinite(v) and v > 0]
    if not finite:
        return
    lo, hi = min(finite) / 1.15, max(finite) * 1.15
    for nice in (_NICE, _NICE_DENSE, _NICE_FINE):
        ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
                 for m in nice if lo <= m * 10.0**k <= hi]
        if len(ticks) >= 3:
            break
    if len(ticks) < 2:  # a very narrow range: its two ends
        ticks = [min(finite), max(finite)]
    if len(ticks) > 8:  # many decades: decades only
        ticks = [t for t in ticks if math.isclose(t, 10.0 ** round(math.log10(t)))] or ticks[::3]
    target = ax.xaxis if axis == "x" else ax.yaxis
    (ax.set_xscale if axis == "x" else ax.set_yscale)("log")
    (ax.set_xlim if axis == "x" else ax.set_ylim)(lo, hi)
    target.set_major_locator(FixedLocator(ticks))
    target.set_minor_locator(NullLocator())
    target.set_major_formatter(FuncFormatter(lambda v, _: si(v)))


