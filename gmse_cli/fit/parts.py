"""Capacity parts: how a loss model turns its extra parameters into each run's log rho.

A part has ``names`` (its internal parameters), ``logrho(c, alpha)`` -> (k, n) log-capacities
for parameter rows ``c`` (k, len(names)), and ``backprop(c, u, alpha)`` -> (gradient for ``c``,
extra gradient for alpha or None) given u = d objective / d log rho (k, n). The law objective
(:class:`~gmse_cli.fit.objective.LossObjective`) is the same for every model; only the part
differs:

- :class:`NoCapacity`     ``dense``: rho = 1;
- :class:`DecoupledPart`  ``decoupled``: one free capacity per scheme;
- :class:`StagePart`      ``unified`` (and the capacity curves): prod over lossy stages of
                          L_f s_f(F_f bits)^C_f, s_f tanh or erf;
- :class:`KumarPart`      ``kumar``: prod over tensors of 1 - exp(-P / gamma).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence

import numpy as np

from gmse_cli.fit.params import FAMILY_KEYS
from gmse_cli.law import curve_shape

__all__ = ["NoCapacity", "DecoupledPart", "StagePart", "KumarPart", "stage_names"]

_TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)


def stage_names(families: Sequence[str]) -> tuple[str, ...]:
    """A :class:`StagePart`'s internal parameter names: log L, log F, log C per family."""
    return tuple(f"{fam}.log{k}" for fam in families for k in FAMILY_KEYS)


class NoCapacity:
    names: tuple[str, ...] = ()

    def logrho(self, c, alpha=None):
        return np.zeros((c.shape[0], 1))

    def backprop(self, c, u, alpha=None):
        return np.zeros((c.shape[0], 0)), None


class DecoupledPart:
    """Each run's scheme carries a free capacity; the reference scheme is pinned at rho = 1.

    Parametrized by the shift phi_s = alpha * log rho_s of the A term's exponent, not by
    log rho_s: the loss sees log rho only through alpha * log rho, so with a small alpha the
    raw log-capacities are badly scaled against the law and strongly coupled to alpha (L-BFGS
    then needs thousands of iterations); in phi the problem is nearly separable.
    """

    uses_alpha = True

    def __init__(self, scheme_of_run: np.ndarray, schemes: Sequence[str], reference: int):
        self.free = [i for i in range(len(schemes)) if i != reference]
        self.names = tuple(f"phi:{schemes[i]}" for i in self.free)
        column = {s: j + 1 for j, s in enumerate(self.free)}  # column 0: the reference, phi = 0
        self.column = np.array([column.get(int(s), 0) for s in scheme_of_run], dtype=int)
        # Runs sorted by column, for segment sums in backprop (no BLAS: tiny matmuls on a
        # busy machine cost more in thread hand-offs than in arithmetic).
        self.order = np.argsort(self.column, kind="stable")
        sorted_cols = self.column[self.order]
        self.starts = np.searchsorted(sorted_cols, np.arange(1, len(self.free) + 1))

    def _phi(self, c):
        return np.hstack([np.zeros((c.shape[0], 1)), c])[:, self.column]

    def logrho(self, c, alpha):
        return self._phi(c) / alpha[:, None]

    def backprop(self, c, u, alpha):
        """Gradients for phi, and the extra alpha gradient through log rho = phi / alpha."""
        phi = self._phi(c)
        seg = np.add.reduceat(u[:, self.order], self.starts, axis=1) if len(self.free) else np.zeros((c.shape[0], 0))
        return seg / alpha[:, None], -(u * phi).sum(axis=1) / alpha**2


class StagePart:
    """log rho = sum over a run's lossy stages of log L_f + C_f log s_f(F_f * bits).

    ``incidence[u, i]`` counts how often unique stage ``u`` (a family and a GMSE) occurs in
    item ``i`` (a run, or a capacity point); parameters per family: log L, log F, log C.
    ``shapes`` gives each family's s, tanh or erf (default tanh).
    """

    def __init__(self, families: Sequence[str], stage_family: np.ndarray, stage_bits: np.ndarray,
                 incidence: np.ndarray, shapes: Mapping[str, str] | None = None):
        self.families = list(families)
        self.names = stage_names(families)
        self.shapes = {fam: (shapes or {}).get(fam, "tanh") for fam in self.families}
        for shape in self.shapes.values():
            curve_shape(shape)  # the LawError naming an unknown shape
        self.fam = stage_family
        self.erf = np.array([self.shapes[self.families[j]] == "erf" for j in stage_family], dtype=bool)
        if self.erf.any():  # scipy only for an erf curve: the core imports without it
            from scipy.special import erf, erfc

            self._erf, self._erfc = erf, erfc
        self.bits = stage_bits
        self.lossless = ~np.isfinite(stage_bits)  # GMSE == 0: s(inf) = 1
        self.bits_finite = np.where(self.lossless, 1.0, stage_bits)
        self.incidence = incidence
        nf = len(families)
        self.fam_onehot = np.zeros((len(stage_family), nf))
        self.fam_onehot[np.arange(len(stage_family)), stage_family] = 1.0

    def _stage_terms(self, c):
        logL = c[:, 0::3][:, self.fam]
        F = np.exp(c[:, 1::3])[:, self.fam]
        C = np.exp(c[:, 2::3])[:, self.fam]
        z = F * self.bits_finite
        if not self.erf.any():
            T = np.tanh(z)
            logS = np.log(np.maximum(T, 1e-300))  # tanh underflows only for absurd trial shapes
        else:
            T = self._erf(z) if self.erf.all() else np.where(self.erf, self._erf(z), np.tanh(z))
            # log erf near 1 through erfc, where 1 - erfc keeps the digits erf rounds away
            near_one = self.erf & (z > 0.5)
            logS = np.where(near_one, np.log1p(-self._erfc(np.maximum(z, 0.5))), np.log(np.maximum(T, 1e-300)))
        # a floor keeps -inf * 0 out of the sums
        logT = np.where(self.lossless, 0.0, logS)
        return logL, F, C, z, T, logT

    def logrho(self, c, alpha=None):
        logL, _, C, _, _, logT = self._stage_terms(c)
        return (logL + C * logT) @ self.incidence

    def backprop(self, c, u, alpha=None):
        _, _, C, z, T, logT = self._stage_terms(c)
        us = u @ self.incidence.T  # (k, stages)
        # d/dlogF of C log s(z) = C z s'(z) / s(z): tanh gives C 2z / sinh(2z), erf C z (2/sqrt(pi)) e^(-z^2) / erf(z)
        two_z = 2.0 * z
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            d_log = np.where(two_z < 1e-8, 1.0, two_z / np.sinh(np.minimum(two_z, 700.0)))
            if self.erf.any():
                d_erf = np.where(z < 1e-8, 1.0, _TWO_OVER_SQRT_PI * z * np.exp(-z * z) / np.maximum(T, 1e-300))
                d_log = np.where(self.erf, d_erf, d_log)
        dF = np.where(self.lossless, 0.0, C * d_log)
        dC = C * logT
        out = np.empty((c.shape[0], c.shape[1]))
        out[:, 0::3] = us @ self.fam_onehot
        out[:, 1::3] = (us * dF) @ self.fam_onehot
        out[:, 2::3] = (us * dC) @ self.fam_onehot
        return out, None


class KumarPart:
    """log rho = sum_x log(1 - exp(-P_x / gamma_x)), x in (weights, activations)."""

    names = ("logGamma_w", "logGamma_a")

    SATURATED = 40.0
    """P / gamma at which 1 - exp(-P / gamma) rounds to 1 in double precision."""

    def __init__(self, w_bits: np.ndarray, a_bits: np.ndarray):
        self.bits = np.stack([w_bits, a_bits])  # (2, n)

    def unidentified(self, train: np.ndarray, fixed: Collection[str] = ()) -> dict[int, tuple[float, str]]:
        """{j: (log gamma_j, why)} for each tensor j (0 weights, 1 activations) whose runs marked
        ``train`` all have one precision P and whose gamma is not in ``fixed``: 1 - exp(-P / gamma)
        is then one factor on every run's N, which only rescales A, so gamma is not identified.
        It is held where that factor is 1 (gamma = P / SATURATED), so A stays the uncompressed
        model's."""
        held: dict[int, tuple[float, str]] = {}
        for j, (key, tensor) in enumerate((("gamma_w", "weights"), ("gamma_a", "activations"))):
            precisions = np.unique(self.bits[j][train])
            if len(precisions) != 1 or key in fixed:
                continue
            bits = float(precisions[0])
            gamma = bits / self.SATURATED
            held[j] = (math.log(gamma), f"held: every fitted run has {bits:g}-bit {tensor}, so {key} only "
                                        f"rescales A (not identified); at {gamma:.3g} the {tensor}' factor is 1")
        return held

    def logrho(self, c, alpha=None):
        z = self.bits[None, :, :] / np.exp(c)[:, :, None]  # (k, 2, n)
        return np.log(-np.expm1(-z)).sum(axis=1)

    def backprop(self, c, u, alpha=None):
        z = self.bits[None, :, :] / np.exp(c)[:, :, None]
        return np.einsum("kn,kxn->kx", u, -z / np.expm1(z)), None
