"""Fitting scaling laws to training runs (``uscl fit``).

The models, the objective and how they are solved are described in
:mod:`gmse_cli.fit.drivers`. The rooms, bottom up:

- ``params``      parameter names, internal (log-parametrized) and public;
- ``results``     what a fit returns: :class:`FitResult`, :class:`ConstantEstimate`, ...;
- ``optimize``    batched L-BFGS (one problem per row);
- ``parts``       capacity parts: none, decoupled, per-stage curves, Kumar's precision law;
- ``objective``   Huber objectives of the law and of the capacity curves;
- ``problem``     held parameters, grids of starts, multistart, the convergence check;
- ``stages``      the lossy stages of runs and their GMSE;
- ``design``      run grouping, reference scheme, input and identifiability checks;
- ``resampling``  bootstrap weights, replicate refits, percentile intervals;
- ``heldout``     leave-one-out refits and their prediction errors;
- ``curves``      capacity curves through (GMSE, rho) points: :func:`fit_capacity`;
- ``reports``     the factorization check and the stages' GMSE;
- ``plot``        the fit's plot (predicted vs observed loss; capacity vs GMSE);
- ``drivers``     :func:`fit`: the dense, decoupled, unified, capacity and kumar fits.
"""

from gmse_cli.fit.curves import fit_capacity
from gmse_cli.fit.drivers import fit
from gmse_cli.fit.objective import huber
from gmse_cli.fit.plot import fit_figure, plot_fit
from gmse_cli.fit.problem import epoch_grid
from gmse_cli.fit.reports import factorization_check, with_stage_gmse
from gmse_cli.fit.results import (
    MODELS,
    CapacityFit,
    CapacityPoint,
    ConstantEstimate,
    FactorizationCell,
    FactorizationCheck,
    FamilyFit,
    FitModel,
    FitResult,
    LosoEntry,
    RunResidual,
    SchemeCapacity,
)
from gmse_cli.fit.stages import GmseCache, run_stages

__all__ = [
    "FitModel",
    "MODELS",
    "ConstantEstimate",
    "SchemeCapacity",
    "FamilyFit",
    "RunResidual",
    "LosoEntry",
    "FactorizationCell",
    "FactorizationCheck",
    "FitResult",
    "CapacityPoint",
    "CapacityFit",
    "GmseCache",
    "fit",
    "fit_capacity",
    "factorization_check",
    "run_stages",
    "huber",
    "epoch_grid",
    "plot_fit",
    "fit_figure",
    "with_stage_gmse",
]
