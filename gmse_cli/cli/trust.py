"""The lines under rank's and predict's tables that say how far to trust them: outside the law's
validated domain, beyond its fitted runs, or from a law that cannot tell (no fitted range, no
uncertainty)."""

from __future__ import annotations

from gmse_cli.cli.texttable import (
    name_list,
    print_capacity_flags,
    print_flag,
    print_unrecorded_gmse,
)

__all__ = ["print_trust_flags"]


def print_trust_flags(rows, law, *, vary_L: bool = False) -> None:
    """One line per distinct reason the rows marked ! lie outside the law's validated domain, one
    per distinct reason rows read a capacity beyond the law's fitted stages, and one when N or
    D/N lies beyond the law's fitted runs (every row shares them); one when the law records no
    fitted range (nothing could be flagged) or no stage GMSEs in it, and one when it gives its constants no uncertainty
    (every interval is the point): a hand-written law may do neither."""
    from gmse_cli.law import constants_fixed

    flagged: dict[tuple[str, str], list[str]] = {}
    for r in rows:
        if r.outside_domain:
            flagged.setdefault((r.outside_domain, r.evidence or ""), []).append(r.name)
    for (reason, evidence), names in flagged.items():
        who = name_list(names)
        print_flag(f"{who}: outside the law's validated domain, {reason}; {evidence}")
    print_capacity_flags((r.name, r.beyond_fitted_gmse) for r in rows)
    beyond = next((r.beyond_fitted_range for r in rows if r.beyond_fitted_range), None)
    if beyond:
        print_flag(f"beyond the runs the law was fitted on: {beyond}; there the law extrapolates, and its "
                   "intervals do not account for it")
    if law.fitted_range is None:
        print_flag(f"law '{law.name}' records no fitted range ([fitted_range]): nothing says whether N, D/N or a "
                   "stage's GMSE lies beyond the runs its constants came from, so no prediction is flagged as "
                   "an extrapolation")
    elif not law.fitted_gmse_recorded:
        print_unrecorded_gmse(law.name)
    if constants_fixed(law, vary_L=vary_L):
        print_flag(f"law '{law.name}' gives its constants no uncertainty (no sigma, low/high or [draws]): the "
                   "rho and loss intervals carry only the GMSE's own error")
