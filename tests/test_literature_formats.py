"""Formats from the literature written as format files (the schema of `uscl formats show`) and
checked against GMSEs derived here from scratch: closed forms and scipy quadrature for the
exact ones, and small numpy compressors written from the papers' and the README's rules for
the rest (common-sense Monte Carlo, compared within 4 combined standard errors).

BitNet b1.58 is written with its own absmean scale over the tensor (its Gaussian limit is an
RMS scale of constant sqrt(2/pi), E|x|); SpQR-style outlier keeping and learned rotations
(SpinQuant) are not in the language and are refused in one line.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import integrate, stats
from scipy.linalg import hadamard
from scipy.special import ndtr, ndtri

L = 4096  # the default row length
TENSOR_ROWS = 131072 // L  # the Monte Carlo "tensor" of per-tensor statistics

SPECS = {
    "bitnet-b158": """
[[stages]]
kind = "quantize"
grid = "lut"
values = [-1.0, 0.0, 1.0]
scale = "absmean"
group = "tensor"
""",
    "nm-4-8": '[[stages]]\nkind = "sparsify"\npattern = "n:m"\nn = 4\nm = 8\n',
    "nm-1-4": '[[stages]]\nkind = "sparsify"\npattern = "n:m"\nn = 1\nm = 4\n',
    "mxint8": """
[[stages]]
kind = "quantize"
grid = "int"
bits = 8
int_style = "signed"
scale = "absmax"
group = 32
scale_format = "e8m0"
""",
    "int4-e4m3-g16": """
[[stages]]
kind = "quantize"
grid = "int"
bits = 4
int_style = "signed"
scale = "absmax"
group = 16
scale_format = "e4m3"
""",
    "int2-asym-g64": """
[[stages]]
kind = "quantize"
grid = "int"
bits = 2
int_style = "asymmetric"
scale = "absmax"
group = 64
scale_format = "fp16"
""",
    "hqq-like-int4-g64": """
[[stages]]
kind = "quantize"
grid = "int"
bits = 4
int_style = "asymmetric"
scale = "mse"
group = 64
scale_format = "fp16"
""",
    "fp4-row-fp32": """
[[stages]]
kind = "quantize"
grid = "fp"
exponent_bits = 2
mantissa_bits = 1
scale = "absmax"
group = "row"
scale_format = "fp32"
""",
    "quarot-int4-row": """
[[stages]]
kind = "rotate"
transform = "hadamard"
block = 4096
random_signs = true
seed = 7

[[stages]]
kind = "quantize"
grid = "int"
bits = 4
int_style = "signed"
scale = "absmax"
group = "row"
scale_format = "fp16"
""",
    "sparse50-int8": """
[[stages]]
kind = "sparsify"
pattern = "magnitude"
sparsity = 0.5

[[stages]]
kind = "quantize"
grid = "int"
bits = 8
int_style = "signed"
scale = "absmax"
group = "row"
""",
}


def _write(folder, name: str, text: str | None = None):
    path = folder / f"{name}.toml"
    path.write_text(f'name = "{name}"\n' + (SPECS[name] if text is None else text))
    return path


def _gmse(run_cli, path, *flags: str) -> dict:
    res = run_cli("gmse", str(path), "--json", *flags)
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)["results"][0]


# -- closed forms and quadrature -------------------------------------------------------------

def _phi(t: float) -> float:
    return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)


def _ternary_gmse(c: float) -> float:
    """E(x - Q(x))^2, Q: levels {-c, 0, c}, thresholds +-c/2: 1 - 2c E|x|1{|x|>c/2} + c^2 P."""
    t = c / 2
    return 1 - 2 * c * 2 * _phi(t) + c * c * 2 * (1 - ndtr(t))


def _smallest_energy(n: int, k: int) -> float:
    """E[sum of the k smallest of n x_i^2] / n: the order statistics' Beta densities summed,
    sum_{j<=k} Beta(u; j, n-j+1) = n P(Binomial(n-1, u) <= k-1), u the |x| quantile."""
    def f(u: float) -> float:
        return ndtri((1 + u) / 2) ** 2 * stats.binom.cdf(k - 1, n - 1, u)
    value, _ = integrate.quad(f, 0, 1, limit=500, points=[k / n], epsabs=1e-13, epsrel=1e-11)
    return value


# -- compressors written from the papers -----------------------------------------------------

def _sym_int(x, scale, qmax):
    return np.clip(np.round(x / scale), -qmax, qmax) * scale


def _e4m3(v):
    """Round to OCP e4m3fn (nearest, ties to even, subnormals, saturating at 448)."""
    a = np.abs(v)
    e = np.maximum(np.floor(np.log2(np.where(a > 0, a, 1.0))), -6)
    step = 2.0 ** (e - 3)
    return np.sign(v) * np.minimum(np.round(a / step) * step, 448.0)


def _e2m1(v):
    a = np.abs(v)
    e = np.maximum(np.floor(np.log2(np.where(a > 0, a, 1.0))), 0)
    step = 2.0 ** (e - 1)
    return np.sign(v) * np.minimum(np.round(a / step) * step, 6.0)


def _groups(x, g):
    return x.reshape(x.shape[0], -1, g)


def _mxint8(x):
    """OCP MX INT8: k/64 (|k| <= 127) times 2^floor(log2 amax) per block of 32."""
    g = _groups(x, 32)
    s = 2.0 ** (np.floor(np.log2(np.abs(g).max(-1, keepdims=True))) - 6)
    return _sym_int(g, s, 127).reshape(x.shape)


def _int4_e4m3_g16(x):
    """int4 (-7 ... 7) per 16, scale amax/7 stored in e4m3 under the tensor's fp32 scale
    (largest group scale / 448), as NVFP4 stores its scales."""
    g = _groups(x, 16)
    raw = np.abs(g).max(-1, keepdims=True) / 7
    top = raw.max() / 448
    return _sym_int(g, top * _e4m3(raw / top), 7).reshape(x.shape)


def _asym(x, bits, group, ratio=1.0):
    """Codes 0 ... 2^b-1, scale (max - min)/(2^b-1) of the range (shrunk by ``ratio``) widened
    to include 0, rounded to fp16, integer zero point round(-min/scale)."""
    g, top = _groups(x, group), 2**bits - 1
    lo = np.minimum(g.min(-1, keepdims=True), 0) * ratio
    hi = np.maximum(g.max(-1, keepdims=True), 0) * ratio
    s = ((hi - lo) / top).astype(np.float16).astype(np.float64)
    z = np.clip(np.round(-lo / s), 0, top)
    return ((np.clip(np.round(g / s) + z, 0, top) - z) * s).reshape(x.shape)


def _asym_mse_int4_g64(x):
    """Per group, the clipping ratio with the least squared error: 1.00, 0.99 ... 0.20, then
    steps of 0.001 around the best (GPTQ's search; first best wins)."""
    shape = _groups(x, 64).shape[:2]

    def err(r):
        return np.square(_asym(x, 4, 64, r) - x).reshape(*shape, 64).sum(-1)

    coarse = np.array([1 - 0.01 * k for k in range(81)])
    errs = np.stack([err(r) for r in coarse])
    best_r, best_e = coarse[np.argmin(errs, 0)], errs.min(0)
    first = best_r.copy()
    for j in (j for j in range(-9, 10) if j):
        r = first + 0.001 * j
        e = err(r[..., None])
        better = (e < best_e) & (r >= 0.2) & (r <= 1)
        best_r, best_e = np.where(better, r, best_r), np.where(better, e, best_e)
    return _asym(x, 4, 64, best_r[..., None])


def _fp4_row(x):
    s = np.abs(x).max(-1, keepdims=True) / 6
    return _e2m1(x / s) * s


def _quarot(x, rng=np.random.default_rng(3)):
    """Random-sign Hadamard over the whole row, int4 (-7 ... 7) per row, fp16 scales, undone."""
    h, d = hadamard(L) / math.sqrt(L), rng.choice([-1.0, 1.0], L)
    y = (x * d) @ h
    s = (np.abs(y).max(-1, keepdims=True) / 7).astype(np.float16).astype(np.float64)
    return (_sym_int(y, s, 7) @ h.T) * d


def _sparse50_int8_quant(x):
    """Half of each row pruned by magnitude; the quantizer's own error on the kept half."""
    kept = np.abs(x) > np.sort(np.abs(x), -1)[:, L // 2 - 1 : L // 2]
    xs = np.where(kept, x, 0.0)
    s = np.abs(xs).max(-1, keepdims=True) / 127
    return np.where(kept, _sym_int(xs, s, 127), 0.0) - xs + x


def _monte_carlo(compress, tensors, seed=1):
    """(GMSE, standard error) over ``tensors`` tensors of TENSOR_ROWS Gaussian rows: a ratio
    estimate with the tensors as units."""
    rng = np.random.default_rng(seed)
    num, den = [], []
    for _ in range(tensors):
        x = rng.standard_normal((TENSOR_ROWS, L)).astype(np.float32).astype(np.float64)
        num.append(np.square(compress(x) - x).sum())
        den.append(np.square(x).sum())
    num, den = np.array(num), np.array(den)
    r = num.sum() / den.sum()
    return r, float(np.std(num - r * den, ddof=1) / den.mean() / math.sqrt(len(num)))


# -- the checks ------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("bitnet-b158", lambda: _ternary_gmse(math.sqrt(2 / math.pi))),
        ("nm-4-8", lambda: _smallest_energy(8, 4)),
        ("nm-1-4", lambda: _smallest_energy(4, 3)),
    ],
)
def test_exact_literature_formats(run_cli, tmp_path, name, expected):
    got = _gmse(run_cli, _write(tmp_path, name), "--exact")
    assert got["gmse_method"] in ("exact", "table")
    assert got["gmse"] == pytest.approx(expected(), rel=1e-6)


@pytest.mark.parametrize(
    ("name", "compress", "tensors"),
    [
        ("mxint8", _mxint8, 12),
        ("int4-e4m3-g16", _int4_e4m3_g16, 12),
        ("int2-asym-g64", lambda x: _asym(x, 2, 64), 12),
        ("hqq-like-int4-g64", _asym_mse_int4_g64, 6),
        ("fp4-row-fp32", _fp4_row, 12),
        ("quarot-int4-row", _quarot, 6),
    ],
)
def test_monte_carlo_literature_formats(run_cli, tmp_path, name, compress, tensors):
    ours, ours_se = _monte_carlo(compress, tensors)
    got = _gmse(run_cli, _write(tmp_path, name), "--monte-carlo", "--rel-err", "3e-3")
    assert abs(got["gmse"] - ours) <= 4 * math.hypot(got["gmse_std_err"], ours_se), (got, ours, ours_se)


def test_sparse50_int8_is_its_pruning_plus_its_quantizer(run_cli, tmp_path):
    # pruning 2048 of 4096 entries loses exactly the smallest half's energy (quadrature);
    # the int8 quantizer on the kept half adds its own Monte Carlo measured error
    quant, quant_se = _monte_carlo(_sparse50_int8_quant, 12)
    expected = _smallest_energy(L, L // 2) + quant
    got = _gmse(run_cli, _write(tmp_path, "sparse50-int8"), "--monte-carlo")
    assert abs(got["gmse"] - expected) <= 4 * math.hypot(got["gmse_std_err"], quant_se)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        # SpQR / LLM.int8: outliers kept in fp16, the rest quantized
        ('[[stages]]\nkind = "sparsify"\npattern = "outlier"\nsparsity = 0.99\n', "outlier"),
        ('[[stages]]\nkind = "outliers"\nfraction = 0.01\n', "outliers"),
        # SpinQuant: learned rotations
        ('[[stages]]\nkind = "rotate"\ntransform = "learned"\n', "learned"),
        # QuaRot's Hadamard over a non-power-of-two width (11008)
        ('[[stages]]\nkind = "rotate"\nblock = 11008\n', "11008"),
    ],
)
def test_formats_the_language_lacks_are_refused_in_one_line(run_cli, tmp_path, text, named):
    res = run_cli("gmse", str(_write(tmp_path, "unsupported", text)))
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and named in lines[0] and "Traceback" not in res.stderr


def test_rank_and_predict_take_the_files_and_capacity_falls_with_sparsity(run_cli, tmp_path):
    paths = [_write(tmp_path, f"sparse{p}", f'[[stages]]\nkind = "sparsify"\nsparsity = 0.{p}\n')
             for p in (10, 30, 50, 70, 90)]
    paths += [_write(tmp_path, name) for name in ("nm-1-4", "nm-4-8", "bitnet-b158")]
    res = run_cli("rank", *map(str, paths), "2:4", "--json")
    assert res.code == 0, res.stderr
    rho = {r["name"]: r["rho"] for r in json.loads(res.stdout)["results"]}
    by_sparsity = [rho[f"sparse{p}"] for p in (10, 30, 50, 70, 90)]
    assert all(a > b for a, b in zip(by_sparsity, by_sparsity[1:], strict=False)), by_sparsity
    assert rho["nm-1-4"] < rho["2:4"] < rho["nm-4-8"]  # 4:8 prunes as much as 2:4, more freely
    res = run_cli("predict", str(paths[-1]), "--json")
    assert res.code == 0, res.stderr
    assert json.loads(res.stdout)["results"][0]["rho"] == pytest.approx(rho["bitnet-b158"])


def test_a_rotation_seed_without_random_signs_is_refused(run_cli, tmp_path):
    # A QuaRot file that sets a seed but forgets random_signs would silently run the plain
    # Hadamard (and compare unequal to it): the seed is refused, as every inert setting is.
    from gmse_cli.errors import SpecError
    from gmse_cli.spec import load_format_toml

    text = SPECS["quarot-int4-row"].replace("random_signs = true\n", "")
    with pytest.raises(SpecError, match="seed 7 only applies with random_signs = true"):
        load_format_toml(_write(tmp_path, "quarot-no-signs", text))
    load_format_toml(_write(tmp_path, "plain", text.replace("seed = 7", "seed = 0")))
    res = run_cli("gmse", str(_write(tmp_path, "quarot-no-signs", text)))
    assert res.code == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "seed" in lines[0] and "random_signs" in lines[0], res.stderr
