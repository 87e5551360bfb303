"""Which change of the unified law (or of its fit) predicts held-out QuEST runs better?

    python examples/law_variants_check.py prod harm prod-eqw      # ~1-2 min each
    python examples/law_variants_check.py --cpu prod prod-nrho    # the same variants on our CPU sweep
    python examples/law_variants_check.py --scale prod prod-emb   # also predict the largest sizes from the smaller
    python examples/law_variants_check.py --average --nested prod prod-emb  # their average; choosing honestly
    python examples/law_variants_check.py --nested --no-average prod prod-erf prod-tanhp prod-exp prod-alg prod-hill

An offline companion to ``heldout_model_choice.py`` for law *forms* uscl does not ship. Each
variant is a torch function of internal parameters (gradients by autograd); the fit and the
cold leave-one-scheme-out refits use uscl's own machinery (``multistart_many`` from a
162-point law grid x capacity-shape starts x starts of any extra constant), Huber delta 1e-3 on
log-loss, runs inside the law's domain. Inside the domain the GMSE-group split equals the
scheme split on these runs (checked at start), so one held-out number serves both. ``prod``
reproduces ``uscl fit --model unified --curve tanh`` (fit 0.0037, held out 0.0054), the paper's
curve; ``prod-erf`` reproduces ``uscl fit --model unified``, whose default curve is erf (0.0034,
0.0041).

Curve shapes (the quantization curve rho = L s(F bits)^C with s other than the paper's tanh;
``prod-SHAPE``, ``prod-eqw-SHAPE``), fit / held out / outside: erf .0034/.0041/.0191 (eqw
.0035/.0042; rotated W1A1 held out at .0076, bias +.0055, against tanh's .0129, +.0115), tanhp
= tanh((F bits)^C) .0034/.0042/.0189, exp = 1 - e^(-F bits) .0043/.0082/.0213 (eqw .0044/.0064),
alg = z / sqrt(1 + z^2) .0046/.0105/.0216 (eqw .0052/.0081), hill = z / (1 + z) .0067/.0151/.0232
(eqw .0077/.0118). The faster s saturates in bits, the better it predicts: erf and tanhp
(tails e^(-z^2) and e^(-2 z^C), C 1.4) beat tanh (e^(-2z)), which beats the slower exp, alg and
hill. By scale (``--scale``) erf gives .0049 and tanhp .0050 (tanh .0049); on the CPU sweep
(``--cpu``, no 1-bit runs) erf .0072/.0130 against tanh's .0071/.0128. Chosen among these six
after seeing their held-out numbers; the honest figure is the nested one (``--nested
--no-average`` over the six, 70 min: 0.0048, erf chosen in 5 of 12 folds, tanhp in 6, tanh in 1).

Variants (capacity composition x loss form x fit weights):

- compositions: ``prod`` rho_W * rho_A (the paper); ``corr`` one curve at the combined GMSE
  1 - (1 - m_W)(1 - m_A); ``sum`` at m_W + m_A; ``split`` separate curves for weights and
  activations; ``harm`` (rho_W^(-1/k) + rho_A^(-1/k) - 1)^(-k), k fitted or held at 1.7 (near the
  values the paper's W x A capacity table implies: 1.60 fitted in log rho, 1.09 in rho); ``inv`` 1/rho - 1 adds over stages (k = 1);
  ``logi`` the paper's logistic curve 1/(1 + B m^A) per stage, product;
- loss forms: additive Chinchilla; ``gammaD`` B (D rho^gamma)^(-beta); ``kaplan``
  E + (A (N rho)^(-alpha/beta) + B/D)^beta; ``mult`` the whole loss times 1/rho, ``multa``
  times rho^(-alpha); ``mixE`` E rho^(-gamma) as well as N rho; ``tpp`` log rho scaled by
  (D/N)^(-g) (capacity drifting with tokens per parameter); ``sat`` 1/L = 1/L_pow + 1/ln V (a
  ceiling: no model does worse than a uniform guess over the 50,257 tokens; the loss flattens
  where effective N is smallest), ``satfree`` the same with the ceiling fitted;
- capacity drifting with N (one constant shared by every format; N0 = the geometric mean N of
  the runs inside the domain): ``nrho`` log rho scaled by (N/N0)^g; ``nlin`` rho^(1 + g
  log(N/N0)); ``nbits`` the quantization curve's bits scaled by (N/N0)^(-g) (bigger models need
  more bits); ``nfloor`` N rho + c N0 (a floor of effective parameters); ``nfloorq`` N rho + c
  N0 (1 - rho) (the floor only where compression loses some); ``emb`` N rho + c N_emb, N_emb
  each run's token embedding and output head (QuEST: 2 V d, untied; uscl train: the record's
  ``model.embedding_params``), which QuEST and uscl leave uncompressed: a floor that shrinks
  relative to N as models grow (N_emb/N 1.06 at 30M, 0.13 at 822M);
- fits: ``eqw`` each scheme's runs weighted 1/n_scheme (every scheme counts once); ``lsq``
  least squares (Huber delta 1); ``mixed`` Gaussian likelihood with a random log-loss offset
  per scheme (sigma and tau fitted by maximum likelihood).

Measured (fit / held out / outside the domain, RMSE of log-loss; none reaches 0.0045 held out):
prod .0037/.0054/.0201, harm (k = 4.4) .0037/.0053/.0202, prod-eqw .0037/.0048/.0202,
harm-eqw .0037/.0050/.0203 (.0047 in an earlier state of the repository), split .0036/.0069,
prod-gammaD .0037/.0076, prod-mixE .0035/.0058, prod-tpp .0037/.0061, prod-lsq .0036/.0063,
prod-eqw-lsq .0037/.0055, prod-mixed .0036/.0060, prod-sat .0036/.0071 (rotated W1A1 held out at
+0.0184 bias, worse than prod's), prod-satfree .0036/.0083 (the ceiling fits 22.8 nats, E 0), corr .0086/.0095, sum .0076/.0168, logi .0053/.0116, prod-kaplan .0058/.0159, harm-paperk
.0111/.0179, inv .0155/.0248, prod-multa .0044/.0179 (the sparse scheme, whose curve is held
at the shipped law, 0.063), prod-mult .146.

Capacity drifting with N (QuEST fit / held out / outside; then ``--cpu``: fit / held out over
the CPU sweep's 27 runs inside the domain, leave-one-scheme-out, where prod gives .0071/.0128,
prod-eqw .0071/.0128, harm-eqw .0071/.0131): prod-nrho .0036/.0078/.0204 (g = 0.012), CPU
.0042/.0109 (g = 0.65); prod-eqw-nrho .0036/.0075/.0204, CPU .0042/.0125; harm-eqw-nrho
.0036/.0076/.0211, CPU .0042/.0091; prod-nlin .0036/.0080/.0204, CPU .0036/.0092; prod-eqw-nlin
.0036/.0080/.0204, CPU .0037/.0100; harm-eqw-nlin .0037/.0104/.0212, CPU .0037/.0100; prod-nbits
.0037/.0058/.0204 (g = 0.007), CPU .0046/.0098; prod-eqw-nbits .0037/.0051/.0205, CPU
.0046/.0102; harm-eqw-nbits .0037/.0052/.0206, CPU .0033 fit, one held-out refit diverges (3.6);
prod-nfloor .0032/.0058/.0201 (c = 0.0048 N0), CPU .0057/.0155; prod-eqw-nfloor
.0033/.0057/.0201, CPU .0059/.0469; harm-eqw-nfloor .0033/.0057/.0201, CPU .0043/.0181;
prod-nfloorq .0032/.0058/.0201, CPU .0051/.0179; prod-eqw-nfloorq .0033/.0058/.0201, CPU
.0053/.0134; harm-eqw-nfloorq .0033/.0059/.0201, CPU .0053/.0182. None beats its base form
held out on QuEST (prod .0054, prod-eqw .0048, harm-eqw .0050), let alone 0.0045. The drift is found,
the 1-bit level is not: refit without rotated W1A1, prod-nrho takes g = 0.057 (0.012 with it)
and W1A1's held-out residual goes from prod's +0.020 (30M) -> +0.005 (822M) to a nearly flat
+0.029 -> +0.022 (the slope right, the level further off); prod-nfloor takes c = 0.018 N0
(0.0048 with it) and overshoots, -0.031 -> +0.006. On the CPU sweep (D = 8 N at every size, so
the N and D terms are collinear) nrho, nlin and nbits lower the held-out error while rebuilding
the loss's N-shape (alpha 0.05 -> 0.45-0.62, E 0 -> 2.3-2.5); the floors raise it.

The uncompressed embedding and head as a floor (QuEST fit / held out / outside; CPU fit / held
out): prod-emb .0030/.0066/.0197 (c = 0.0065, E 0.77, alpha 0.092: the best in-sample fit of
any form), CPU .0073/.0212; prod-eqw-emb .0031/.0082/.0197, CPU .0071/.0261; harm-eqw-emb
.0031/.0082/.0197, CPU .0071/.0274. Refit without rotated W1A1 the floor grows and W1A1 is
under-predicted (-0.016 to -0.023): the floor overshoots as nfloor's does. Held out by scale
(``--scale``: the 9 runs at 443M and 822M from a refit on the smaller) prod-emb gives .0050, prod .0049.

Averaging the two (``--average prod prod-emb``: the equal-weight mean of their log-loss
predictions, in the full fit and in every cold refit): fit .0032, held out .0042 (rotated W1A1
.0033, bias -.0021), outside .0198, by scale .0049. Chosen after seeing their opposite W1A1
biases (+.0115, -.0158); ``--nested`` (18 min) chooses among prod, prod-emb and the average by
an inner leave-one-scheme-out for each held-out scheme: the average in 10 of 12 folds, held out
.0043.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gmse_cli.fit import GmseCache, domain_mask, run_stages  # noqa: E402
from gmse_cli.fit.heldout import group_labels  # noqa: E402
from gmse_cli.fit.problem import Problem, coarse_law_grid, multistart_many  # noqa: E402
from gmse_cli.law import shipped_law  # noqa: E402
from gmse_cli.runs import load_runs  # noqa: E402
from gmse_cli.spec import Family  # noqa: E402

torch.set_default_dtype(torch.float64)
torch.set_num_threads(1)
DELTA = 1e-3

QUEST = REPO.parent / "shared" / "data" / "quest_runs.json"
CPU = REPO / "examples" / "cpu-law.jsonl"
law = shipped_law()
sp = law.families[Family.SPARSITY]
SP = (math.log(sp.L.value), math.log(sp.F.value), math.log(sp.C.value))
_cache = GmseCache(seed=0)


def embedding_params(path: Path, runs) -> np.ndarray:
    """Each run's embedding and head parameters, from its raw record (QuEST: 2 V d, untied; uscl train:
    ``model.embedding_params``)."""
    if path.suffix == ".json":
        records = json.loads(path.read_text())
        args = [records[int(r.location.rsplit(" ", 1)[1])]["args"] for r in runs]
        return np.array([2.0 * a["vocab_size"] * a["n_embd"] for a in args])
    lines = path.read_text().splitlines()
    return np.array([float(json.loads(lines[int(r.location.rsplit(":", 1)[1]) - 1])["model"]["embedding_params"])
                     for r in runs])


class Data:
    """One results file's runs as the arrays and tensors the variants read."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.runs = runs = load_runs(self.path)
        self.inside = inside = domain_mask(runs)
        self.stages = stages = [run_stages(r, _cache) for r in runs]
        self.schemes = list(dict.fromkeys(r.scheme for r in runs))
        self.of = np.array([self.schemes.index(r.scheme) for r in runs])
        _, self.of_group = group_labels(stages)
        self.n = n = len(runs)
        logN = np.log([r.N for r in runs])
        logD = np.log([r.D for r in runs])
        self.y = np.log([r.loss for r in runs])
        # centering (any constant works; predictions invariant); N0 = exp(cN): the geometric mean N inside
        self.cN, self.cD = logN[inside].mean(), logD[inside].mean()
        self.tN, self.tD = torch.tensor(logN - self.cN), torch.tensor(logD - self.cD)
        # Per run: quantization GMSEs of weights / activations (0 = absent / lossless), sparsity GMSE.
        qw, qa, sg, nq = (np.zeros(n) for _ in range(4))
        for i, st in enumerate(stages):
            qs = [g for f, g in st if f == Family.QUANTIZATION]
            ss = [g for f, g in st if f == Family.SPARSITY]
            nq[i] = len(qs)
            qw[i] = qs[0] if qs else 0.0
            qa[i] = qs[1] if len(qs) > 1 else 0.0
            sg[i] = ss[0] if ss else 0.0
        # parameters no format touches (token embedding and untied head): a floor of effective N ("emb")
        self.tE = torch.tensor(np.log(embedding_params(self.path, runs)) - self.cN)
        self.TPP = torch.tensor(logD - logN - np.mean((logD - logN)[inside]))
        self.T = {k: torch.tensor(v) for k, v in dict(qw=qw, qa=qa, sg=sg, nq=nq).items()}

    def split_matches_groups(self) -> bool:
        """Inside the domain, does every scheme form its own GMSE group?"""
        of, g, ins = self.of, self.of_group, self.inside
        return all(len(set(g[ins & (of == j)])) == 1 and
                   (set(np.flatnonzero(g == g[np.flatnonzero(ins & (of == j))[0]])) & set(np.flatnonzero(ins)))
                   == set(np.flatnonzero(ins & (of == j))) for j in set(of[ins]))


_loaded: dict[Path, Data] = {}


def data(path: Path = QUEST) -> Data:
    """The runs of one results file (loaded once)."""
    if path not in _loaded:
        _loaded[path] = Data(path)
    return _loaded[path]


def bits(m):
    return torch.where(m > 0, -torch.log(torch.clamp(m, min=1e-300)) / math.log(4.0), torch.full_like(m, math.inf))


def curve(logL, logF, logC, m):
    """log rho of a tanh curve at GMSE m (m = 0: log L); shapes (k,1) x (n,) -> (k, n)."""
    b = bits(m)
    z = torch.exp(logF) * torch.where(torch.isfinite(b), b, torch.ones_like(b))
    lt = torch.log(torch.clamp(torch.tanh(z), min=1e-300))
    return logL + torch.where(torch.isfinite(b), torch.exp(logC) * lt, torch.zeros_like(lt))


def shaped_curve(logL, logF, logC, m, shape="tanh"):
    """log rho of a curve L s(F bits)^C of another shape s (``curve`` is tanh's): erf, ``tanhp``
    tanh((F bits)^C) (C inside), ``exp`` 1 - e^-z, ``alg`` z / sqrt(1 + z^2), ``hill`` z / (1 + z)."""
    if shape == "tanh":
        return curve(logL, logF, logC, m)
    b = bits(m)
    fin = torch.isfinite(b)
    z = torch.exp(logF) * torch.where(fin, b, torch.ones_like(b))
    C = torch.exp(logC)
    if shape == "tanhp":
        lt = torch.log(torch.clamp(torch.tanh(z ** C), min=1e-300))
    else:
        log_s = {"erf": lambda: torch.log(torch.clamp(torch.erf(z), min=1e-300)),
                 "exp": lambda: torch.log(torch.clamp(-torch.expm1(-z), min=1e-300)),
                 "alg": lambda: torch.log(z) - 0.5 * torch.log1p(z * z),
                 "hill": lambda: -torch.log1p(1 / z)}[shape]()
        lt = C * log_s
    return logL + torch.where(fin, lt, torch.zeros_like(lt))


def sparse_term(d: Data, k):
    s = torch.tensor(SP)
    v = curve(s[0], s[1], s[2], d.T["sg"])
    return torch.where(d.T["sg"] > 0, v, torch.zeros_like(v)).expand(k, d.n)


class Variant:
    """names: internal names after the 5 law constants; extra_starts: list of arrays; fixed: {name: value}.

    ``drift``: how effective N depends on N beyond N rho (None: it does not; see :meth:`log_neff`).
    A variant is a description; :meth:`on` binds it to one results file's runs.
    """

    def __init__(self, name, compose="prod", loss="add", extra=(), extra_starts=((),), fixed=None, *,
                 delta=DELTA, equal_weights=False, all_stages=True, drift=None, shape="tanh"):
        self.shape = shape  # the quantization curve's s (the prod composition; sparsity keeps the shipped tanh)
        self.name, self.compose, self.loss, self.drift = name, compose, loss, drift
        self.names = ("logA", "alpha", "logB", "beta", "logE", "q.logL", "q.logF", "q.logC") + tuple(extra)
        self.extra_starts = [np.array(e, dtype=float) for e in extra_starts]
        self.fixed = dict(fixed or {})
        self.delta = delta
        self.equal_weights = equal_weights
        self.all_stages = all_stages
        self.bind(data())

    def bind(self, d: Data) -> None:
        self.d, self.y = d, d.y
        self.base_w = (d.n / len(d.schemes)) / np.bincount(d.of)[d.of] if self.equal_weights else None

    def on(self, d: Data) -> Variant:
        """This variant bound to the runs ``d`` (a copy)."""
        v = copy.copy(self)
        v.bind(d)
        return v

    def extra(self, th, name):
        j = self.names.index(name)
        return th[:, j:j + 1]

    def log_neff(self, th, lr):
        """Centered log effective N: log(N rho) - log N0, or a drift of it with N (N0 = geometric mean N)."""
        tN = self.d.tN
        if self.drift in (None, "nbits"):
            return tN + lr
        if self.drift == "nrho":  # log rho scaled by (N/N0)^g: capacity drifts as a power of N
            return tN + lr * torch.exp(self.extra(th, "g") * tN)
        if self.drift == "nlin":  # rho^(1 + g log(N/N0)): the same to first order in log N
            return tN + lr * (1 + self.extra(th, "g") * tN)
        if self.drift == "nfloor":  # N rho + c N0: a floor of effective parameters no format removes
            return torch.logaddexp(tN + lr, self.extra(th, "logc"))
        if self.drift == "nfloorq":  # N rho + c N0 (1 - rho): the floor only where compression loses some
            lost = torch.log(torch.clamp(-torch.expm1(lr), min=1e-300))
            return torch.logaddexp(tN + lr, self.extra(th, "logc") + lost)
        if self.drift == "emb":  # N rho + c N_emb: the embedding and head stay uncompressed
            return torch.logaddexp(tN + lr, self.extra(th, "logc") + self.d.tE)
        raise ValueError(self.drift)

    def logrho(self, th):
        d, k = self.d, th.shape[0]
        L, F, C = (th[:, j:j + 1] for j in (5, 6, 7))
        if self.drift == "nbits":  # the quantization curve's bits scale as (N/N0)^-g: bigger models need more bits
            F = F - self.extra(th, "g") * d.tN
        if self.compose == "logi":  # rho = 1 / (1 + B m^A) per stage, product over stages
            def lg(m):
                lm = torch.log(torch.clamp(m, min=1e-300))
                v = -torch.nn.functional.softplus(F + torch.exp(C) * lm)
                return torch.where(m > 0, v, torch.zeros_like(v))
            q = lg(d.T["qw"]) + torch.where(d.T["nq"] > 1, lg(d.T["qa"]), torch.zeros(d.n))
            return q + sparse_term(d, k)
        if self.compose == "inv":  # 1/rho - 1 adds over every lossy stage (k = 1 of the harm family)
            lw, la = curve(L, F, C, d.T["qw"]), curve(L, F, C, d.T["qa"])
            s_ = torch.tensor(SP)
            ls = curve(s_[0], s_[1], s_[2], d.T["sg"])
            inv = torch.exp(-lw) - 1 + torch.where(d.T["nq"] > 1, torch.exp(-la) - 1, torch.zeros(d.n))
            if self.all_stages:
                inv = inv + torch.where(d.T["sg"] > 0, torch.exp(-ls) - 1, torch.zeros(d.n))
                return -torch.log(1 + inv)
            return -torch.log(1 + inv) + sparse_term(d, k)
        if self.compose == "split":  # weights and activations: separate curves
            i = self.names.index("a.logL")
            La, Fa, Ca = (th[:, j:j + 1] for j in (i, i + 1, i + 2))
            q = curve(L, F, C, d.T["qw"]) + torch.where(d.T["nq"] > 1, curve(La, Fa, Ca, d.T["qa"]), torch.zeros(d.n))
            return q + sparse_term(d, k)
        if self.compose == "prod":
            q = shaped_curve(L, F, C, d.T["qw"], self.shape) + torch.where(
                d.T["nq"] > 1, shaped_curve(L, F, C, d.T["qa"], self.shape), torch.zeros(d.n))
        else:
            if self.compose == "corr":  # 1 - (1-mW)(1-mA)
                m = 1 - (1 - d.T["qw"]) * (1 - d.T["qa"])
            elif self.compose == "sum":
                m = d.T["qw"] + d.T["qa"]
            elif self.compose == "harm":  # rho = (rW^-1/k + rA^-1/k - 1)^-k
                kk = torch.exp(th[:, self.names.index("logK"):self.names.index("logK") + 1])
                lw, la = curve(L, F, C, d.T["qw"]), curve(L, F, C, d.T["qa"])
                two = -kk * torch.log(torch.exp(-lw / kk) + torch.exp(-la / kk) - 1)
                q = torch.where(d.T["nq"] > 1, two, lw)
                return q + sparse_term(d, k)
            q = curve(L, F, C, m)
        return q + sparse_term(d, k)

    def predict_t(self, th):
        a, alpha, b, beta, e = (th[:, j:j + 1] for j in range(5))
        lr = self.logrho(th)
        tN, tD = self.d.tN, self.d.tD
        x = self.log_neff(th, lr)
        if self.loss == "add":
            return torch.logaddexp(torch.logaddexp(a - alpha * x, b - beta * tD), e)
        if self.loss in ("sat", "satfree"):  # 1/L = 1/L_pow + 1/L_max: no model does worse than a ceiling
            lp = torch.logaddexp(torch.logaddexp(a - alpha * x, b - beta * tD), e)
            if self.loss == "sat":  # the ceiling held at ln V, a uniform guess over GPT-2's 50,257 tokens
                ceiling = torch.full_like(lp, math.log(math.log(50257)))
            else:
                ceiling = th[:, self.names.index("logLmax"):self.names.index("logLmax") + 1]
            return -torch.logaddexp(-lp, -ceiling)
        if self.loss == "tpp":  # log rho scaled by (tokens per parameter)^-g: capacity drifts with D/N
            g = th[:, self.names.index("g"):self.names.index("g") + 1]
            x = tN + lr * torch.exp(-g * self.d.TPP)
            return torch.logaddexp(torch.logaddexp(a - alpha * x, b - beta * tD), e)
        if self.loss == "mult":  # the whole loss scaled by 1/rho (rho's curve absorbs any power)
            return torch.logaddexp(torch.logaddexp(a - alpha * tN, b - beta * tD), e) - lr
        if self.loss == "multa":  # the whole loss scaled by rho^-alpha (rho keeps its effective-N meaning at E = 0)
            return torch.logaddexp(torch.logaddexp(a - alpha * tN, b - beta * tD), e) - alpha * lr
        if self.loss == "mixE":  # compression scales E too: E rho^-gamma
            g = th[:, self.names.index("gamma"):self.names.index("gamma") + 1]
            return torch.logaddexp(torch.logaddexp(a - alpha * x, b - beta * tD), e - g * lr)
        if self.loss == "gammaD":  # B (D rho^gamma)^-beta
            g = th[:, self.names.index("gamma"):self.names.index("gamma") + 1]
            return torch.logaddexp(torch.logaddexp(a - alpha * x, b - beta * (tD + g * lr)), e)
        if self.loss == "kaplan":  # E + (A (N rho)^(-alpha/beta) + B/D)^beta
            inner = torch.logaddexp(a - alpha / beta * x, b - tD)
            return torch.logaddexp(beta * inner, e)
        raise ValueError(self.loss)

    def predict(self, theta):
        with torch.no_grad():
            return self.predict_t(torch.as_tensor(np.atleast_2d(theta))).numpy()

    def value_grad(self, theta, weights=None):
        th = torch.tensor(np.atleast_2d(theta), requires_grad=True)
        with np.errstate(all="ignore"):
            r = self.predict_t(th) - torch.tensor(self.y)
            a = r.abs()
            dl = self.delta
            h = torch.where(a <= dl, 0.5 * r * r, dl * (a - 0.5 * dl))
            w = torch.ones(1, self.d.n) if weights is None else torch.as_tensor(weights)
            if self.base_w is not None:
                w = w * torch.tensor(self.base_w)
            f = (h * w).sum(dim=1) if "logSigma" not in self.names else self.scheme_effect_nll(th, r, w)
            g, = torch.autograd.grad(f.sum(), th)
        return f.detach().numpy(), g.numpy()


    def scheme_effect_nll(self, th, r, w):
        """Gaussian -log likelihood with a random offset per scheme: r_s ~ N(0, s2 I + t2 11^T)."""
        i = self.names.index("logSigma")
        s2, t2 = torch.exp(2 * th[:, i:i + 1]), torch.exp(2 * th[:, i + 1:i + 2])
        onehot = torch.tensor(np.eye(len(self.d.schemes))[self.d.of])  # (n, schemes)
        ns, sq, sm = w @ onehot, (w * r * r) @ onehot, (w * r) @ onehot
        nll = sq / (2 * s2) - t2 * sm**2 / (2 * s2 * (s2 + ns * t2)) + 0.5 * (ns - 1) * torch.log(s2) \
            + 0.5 * torch.log(s2 + ns * t2)
        return nll.sum(dim=1)


def starts_for(v: Variant):
    law = coarse_law_grid().copy()
    if v.loss == "kaplan":
        vals = itertools.product([0.05, 0.1, 0.3], [0.05, 0.1, 0.3], [-3.0, 0.5], [3.0, 8.0, 15.0], [3.0, 8.0, 15.0])
        law = np.array([(a, al, b, be, e) for al, be, e, a, b in vals])
    else:  # public (uncentered) -> centered
        law[:, 0] -= law[:, 1] * v.d.cN
        law[:, 2] -= law[:, 3] * v.d.cD
    shapes = [(0.0, math.log(F), math.log(C)) for F, C in [(0.2, 1.0), (0.4, 1.4), (0.8, 2.0)]]
    if v.compose == "logi":
        shapes = [(0.0, math.log(B), math.log(A)) for B, A in [(10.0, 1.0), (30.0, 1.5), (100.0, 2.0)]]
    out = [np.concatenate([ls, s, e]) for ls in law for s in shapes for e in v.extra_starts]
    return np.array(out)


def refit(v: Variant, rows) -> tuple[np.ndarray, int]:
    """Cold refits of ``v`` (uscl's start grid), one on each boolean mask of runs in ``rows``:
    their constants (one row each) and the number of starts."""
    prob = Problem(v, {v.names.index(k): val for k, val in v.fixed.items()})
    x, _, _, starts = multistart_many(prob, starts_for(v), np.asarray(rows, dtype=float))
    return prob.full(x), starts


def loso(v: Variant, base: np.ndarray, parts: list[int]):
    """Cold refits of ``v`` on the runs ``base`` and on ``base`` without each scheme in ``parts``:
    the first fit's log-loss residuals, each part's held-out residuals (NaN elsewhere), the first
    fit's constants and the number of starts."""
    d = v.d
    th, starts = refit(v, [base] + [base & (d.of != j) for j in parts])
    pred = v.predict(th)
    res = np.full(d.n, np.nan)
    for k, j in enumerate(parts):
        res[d.of == j] = pred[k + 1][d.of == j] - d.y[d.of == j]
    return pred[0] - d.y, res, th, starts


def score(v: Variant, d: Data | None = None, show=True):
    """Fit ``v`` on the runs ``d`` (default: QuEST's) and refit it cold without each scheme inside the domain."""
    v = v if d is None else v.on(d)
    d = v.d
    of, inside, schemes = d.of, d.inside, d.schemes
    t0 = time.perf_counter()
    ins = [j for j in range(len(schemes)) if inside[of == j].all()]
    full, res, th, S = loso(v, inside, ins)
    fit_rmse = float(np.sqrt(np.mean(full[inside] ** 2)))
    ho = float(np.sqrt(np.mean(res[inside] ** 2)))
    outside = float(np.sqrt(np.mean(full[~inside] ** 2))) if (~inside).any() else math.nan
    per = sorted(((float(np.sqrt(np.mean(res[of == j] ** 2))), float(np.mean(res[of == j])), schemes[j]) for j in ins),
                 reverse=True)
    if show:
        pub = th[0].copy()
        print(f"{v.name:14s} fit {fit_rmse:.4f} heldout {ho:.4f} outside(full) {outside:.4f} "
              f"({time.perf_counter() - t0:.0f}s, {S} starts) theta {np.round(pub, 3).tolist()}", flush=True)
        print("    worst: " + ", ".join(f"{s} {r:.4f} ({b:+.4f})" for r, b, s in per[:4]), flush=True)
    return dict(fit=fit_rmse, heldout=ho, outside=outside, per=per, theta=th, res=res, full=full)


def score_scale(v: Variant, d: Data | None = None) -> float:
    """``uscl fit``'s scale split for ``v``: one cold refit without the largest third of the
    distinct N inside the domain (rounded down, at least one, keeping at least 3 smaller sizes),
    RMSE of log-loss at those sizes (inside); NaN where the runs have too few sizes."""
    v = v if d is None else v.on(d)
    d = v.d
    n = np.array([r.N for r in d.runs])
    sizes = sorted(set(n[d.inside]))
    held = max(1, len(sizes) // 3)
    if len(sizes) - held < 3:
        print(f"{v.name:14s} no scale split: {len(sizes)} sizes inside the domain", flush=True)
        return math.nan
    cut = sizes[-held]
    res = v.predict(refit(v, [d.inside & (n < cut)])[0])[0] - d.y
    tested = d.inside & (n >= cut)
    rmse = float(np.sqrt(np.mean(res[tested] ** 2)))
    print(f"{v.name:14s} held out by scale (N >= {cut / 1e6:.0f}M, {int(tested.sum())} runs): {rmse:.4f}", flush=True)
    return rmse


def score_average(names: list[str], parts: list[dict], d: Data) -> dict:
    """The equal-weight average of the named variants' log-loss predictions, in the full fit and
    in each cold leave-one-scheme-out refit (``parts``: their :func:`score` results on ``d``):
    its fit and held-out RMSE."""
    res, full = (np.mean([p[key] for p in parts], axis=0) for key in ("res", "full"))
    ins, of = d.inside, d.of
    per = sorted(((float(np.sqrt(np.mean(res[of == j] ** 2))), float(np.mean(res[of == j])), d.schemes[j])
                  for j in set(of[ins])), reverse=True)
    print(f"average of {' + '.join(names)}: fit {np.sqrt(np.mean(full[ins] ** 2)):.4f} heldout "
          f"{np.sqrt(np.mean(res[ins] ** 2)):.4f} outside(full) {np.sqrt(np.mean(full[~ins] ** 2)):.4f}", flush=True)
    print("    worst: " + ", ".join(f"{s} {r:.4f} ({b:+.4f})" for r, b, s in per[:4]), flush=True)
    return dict(res=res, full=full, per=per)


def nested_average(names: list[str], d: Data | None = None) -> float:
    """The honest held-out error of choosing among the named variants and their average: for
    each scheme inside the domain, an inner cold leave-one-scheme-out over the other schemes
    picks the candidate with the lowest inner RMSE, and that candidate's refit without the
    scheme predicts it. Returns the pooled RMSE of those outer predictions."""
    d = VARIANTS[names[0]].d if d is None else d
    of, ins = d.of, d.inside
    schemes = [j for j in range(len(d.schemes)) if ins[of == j].all()]
    chosen = np.full(d.n, np.nan)
    for j in schemes:
        base = ins & (of != j)
        rest = [k for k in schemes if k != j]
        outer, inner = {}, {}
        for name in names:
            outer[name], inner[name], _, _ = loso(VARIANTS[name].on(d), base, rest)
        if "--no-average" not in sys.argv:  # a choice among the named variants alone
            inner["average"] = np.mean([inner[n] for n in names], axis=0)
            outer["average"] = np.mean([outer[n] for n in names], axis=0)
        scores = {k: float(np.sqrt(np.mean(r[base] ** 2))) for k, r in inner.items()}
        best = min(scores, key=scores.get)
        chosen[of == j] = outer[best][of == j]
        print(f"    without {d.schemes[j]}: inner " + ", ".join(f"{k} {v:.4f}" for k, v in scores.items())
              + f" -> {best}", flush=True)
    rmse = float(np.sqrt(np.mean(chosen[ins] ** 2)))
    among = ", ".join(names) + ("" if "--no-average" in sys.argv else " and their average")
    print(f"nested choice among {among}: held out {rmse:.4f}", flush=True)
    return rmse


NO_L = {"q.logL": 0.0}  # one quantization term per run: L is A's
GAMMA = dict(loss="gammaD", extra=("gamma",), extra_starts=((0.0,), (1.0,)))
HARM = dict(compose="harm", extra=("logK",), extra_starts=((0.0,), (3.0,)))


def drift_variants():
    """Capacity drifting with N (one extra constant shared by every format), alone and with eqw / harm-eqw."""
    G = dict(extra=("g",), extra_starts=((0.0,), (0.1,)))
    FLOOR = dict(extra=("logc",), extra_starts=((-6.0,), (-3.0,)))
    out = []
    for drift, kw in [("nrho", G), ("nlin", G), ("nbits", G), ("nfloor", FLOOR), ("nfloorq", FLOOR), ("emb", FLOOR)]:
        out += [Variant(f"prod-{drift}", drift=drift, **kw), Variant(f"prod-eqw-{drift}", drift=drift,
                                                                     equal_weights=True, **kw)]
        starts = [np.concatenate(p) for p in itertools.product(HARM["extra_starts"], kw["extra_starts"])]
        out.append(Variant(f"harm-eqw-{drift}", compose="harm", extra=("logK",) + kw["extra"], extra_starts=starts,
                           drift=drift, equal_weights=True))
    return out


SHAPES = [(0.0, math.log(F), math.log(C)) for F, C in [(0.2, 1.0), (0.4, 1.4), (0.8, 2.0)]]
VARIANTS = {v.name: v for v in [
    Variant("prod"),
    Variant("corr", compose="corr", fixed=NO_L),
    Variant("sum", compose="sum", fixed=NO_L),
    Variant("split", compose="split", extra=("a.logL", "a.logF", "a.logC"), extra_starts=SHAPES, fixed=NO_L),
    Variant("harm", **HARM),
    Variant("harm-paperk", compose="harm", extra=("logK",), extra_starts=((0.0,),), fixed={"logK": math.log(1.7)}),
    Variant("inv", compose="inv"),
    Variant("inv-q", compose="inv", all_stages=False),
    Variant("logi", compose="logi", fixed=NO_L),
    Variant("prod-gammaD", **GAMMA),
    Variant("corr-gammaD", compose="corr", fixed=NO_L, **GAMMA),
    Variant("prod-kaplan", loss="kaplan"),
    Variant("prod-tpp", loss="tpp", extra=("g",), extra_starts=((0.0,), (0.3,))),
    Variant("prod-mult", loss="mult"),
    Variant("prod-multa", loss="multa"),
    Variant("prod-mixE", loss="mixE", extra=("gamma",), extra_starts=((0.0,), (1.0,))),
    Variant("prod-eqw", equal_weights=True),
    Variant("prod-sat", loss="sat"),
    Variant("prod-satfree", loss="satfree", extra=("logLmax",), extra_starts=((math.log(8.0),), (math.log(20.0),))),
    Variant("harm-eqw", equal_weights=True, **HARM),
    Variant("prod-lsq", delta=1.0),
    Variant("prod-mixed", extra=("logSigma", "logTau"), extra_starts=((math.log(0.003), math.log(0.003)),)),
    Variant("prod-eqw-lsq", delta=1.0, equal_weights=True),
    *drift_variants(),
    *(Variant(f"prod{eqw}-{shape}", shape=shape, equal_weights=bool(eqw))
      for shape in ("erf", "tanhp", "exp", "alg", "hill") for eqw in ("", "-eqw")),
]}

if __name__ == "__main__":
    cpu = "--cpu" in sys.argv  # score on our own CPU sweep instead: every held-out scheme listed
    scale = "--scale" in sys.argv  # also the scale split: predict the largest sizes from the smaller
    average = "--average" in sys.argv  # also the equal-weight average of the named variants' predictions
    nested = "--nested" in sys.argv  # the honest error of choosing among them and their average (~20 min)
    if {"-h", "--help"} & set(sys.argv[1:]):
        print(__doc__)
        sys.exit(0)
    flags = ("--cpu", "--scale", "--average", "--nested", "--no-average")
    names = [a for a in sys.argv[1:] if a not in flags] or ["prod"]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:  # before minutes of fitting, never a KeyError after them
        print(f"error: unknown variant {', '.join(unknown)}; choose from {', '.join(VARIANTS)}", file=sys.stderr)
        sys.exit(2)
    d = data(CPU if cpu else QUEST)
    print(f"{d.path.name}: {d.n} runs, {int(d.inside.sum())} inside the domain; "
          f"group split == scheme split inside the domain: {d.split_matches_groups()}")
    scored = []
    for name in names:
        r = score(VARIANTS[name], d)
        scored.append(r)
        if cpu:
            print("    held out: " + ", ".join(f"{s} {e:.4f} ({b:+.4f})" for e, b, s in r["per"]), flush=True)
        if scale:
            score_scale(VARIANTS[name], d)
    if average:
        score_average(names, scored, d)
    if nested:
        nested_average(names, d)
