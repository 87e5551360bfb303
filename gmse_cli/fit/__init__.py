"""Fitting scaling laws to training runs (``uscl fit``).

The models, the objective and how they are solved are described in
:mod:`gmse_cli.fit.drivers`. The rooms, bottom up:

- ``params``      parameter names, internal (log-parametrized) and public;
- ``evidence``    what a fit's checks return: :class:`HeldoutReport`, :class:`DriftReport`, ...;
- ``results``     what a fit returns: :class:`FitResult`, :class:`ConstantEstimate`, ...;
- ``optimize``    batched L-BFGS (one problem per row);
- ``parts``       capacity parts: none, decoupled, per-stage curves, Kumar's precision law;
- ``objective``   Huber objectives of the law and of the capacity curves;
- ``problem``     held parameters, grids of starts, multistart, the convergence check;
- ``stages``      the lossy stages of runs and their GMSE;
- ``design``      run grouping, reference scheme, input and identifiability checks;
- ``resampling``  bootstrap weights, replicate refits, percentile intervals;
- ``prior``       Gaussian priors for a MAP fit (``--prior paper``) and the likelihood scale;
- ``identify``    constants at a bound, profile-likelihood intervals;
- ``drift``       each run's implied capacity and its drift with N and D/N;
- ``heldout``     cold leave-one-scheme-out, leave-one-GMSE-group-out and largest-model-sizes refits and their errors;
- ``loss_refits`` the loss models' cold refits for ``heldout``;
- ``curves``      capacity curves through (GMSE, rho) points: :func:`fit_capacity`;
- ``reports``     the factorization check and the stages' GMSE;
- ``plot``        the fit's plot (predicted vs observed loss; capacity vs GMSE; drift);
- ``sensitivity`` how a decoupled fit's capacities move with the Huber delta;
- ``spellings``   one scheme per format however a runs file spells it;
- ``loss_fit``    the dense, decoupled, unified and kumar fits, the law's domain;
- ``capacity_model`` the two-stage capacity model (decoupled, then curves);
- ``drivers``     :func:`fit`: checks the runs and options and dispatches to one of the two.
"""

from gmse_cli.fit.curves import fit_capacity
from gmse_cli.fit.drift import implied_capacity
from gmse_cli.fit.drivers import fit
from gmse_cli.fit.evidence import (
    DriftReport,
    DriftScheme,
    DriftSlope,
    FactorizationCell,
    FactorizationCheck,
    HeldoutEntry,
    HeldoutReport,
    LosoEntry,
)
from gmse_cli.fit.heldout import HELDOUT_METHOD
from gmse_cli.fit.identify import CHI2_95
from gmse_cli.fit.loss_fit import DOMAIN_MODELS, domain_mask
from gmse_cli.fit.objective import huber
from gmse_cli.fit.plot import fit_figure, plot_fit, plot_panels
from gmse_cli.fit.prior import PAPER_PRIOR, PRIORS, likelihood_scale
from gmse_cli.fit.problem import epoch_grid
from gmse_cli.fit.reports import factorization_check, with_stage_gmse
from gmse_cli.fit.results import (
    MODELS,
    CapacityFit,
    CapacityPoint,
    ConstantEstimate,
    FamilyFit,
    FitModel,
    FitResult,
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
    "HeldoutEntry",
    "HeldoutReport",
    "DriftReport",
    "DriftSlope",
    "DriftScheme",
    "HELDOUT_METHOD",
    "DOMAIN_MODELS",
    "domain_mask",
    "implied_capacity",
    "PAPER_PRIOR",
    "PRIORS",
    "likelihood_scale",
    "CHI2_95",
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
    "plot_panels",
    "fit_figure",
    "with_stage_gmse",
]
