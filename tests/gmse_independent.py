"""An independent numpy implementation of uscl's format language, written from the README
("Formats", "Formats as the ecosystem knows them", "GMSE") and the spec docstrings, to check
`uscl gmse` differentially (tests/test_gmse_differential_generated.py,
benchmarks/gmse_differential.py).

It parses shorthand itself (a subset: the bases and modifiers of `uscl formats --help`, without
vq and e8p) and compresses float32 Gaussian rows in float64 arithmetic. It imports nothing from
gmse_cli. Its own pieces: an ExMy round-to-nearest-even (checked against ml_dtypes), QuEST's
midrise grid, Lloyd-Max levels and the Gaussian-MSE-optimal RMS constant by closed-form
partial moments, the e8m0 rounding rules, the e4m3/int8 two-level scales, bitsandbytes' double
quantization, and the sparsity masks.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import cache, lru_cache

import numpy as np

MIN_TENSOR_UNITS = 48
TENSOR_ELEMENTS = 131072  # the Monte Carlo "tensor": max(1, 131072 // row length) rows
NF4 = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
       -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
       0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
       0.7229568362236023, 1.0)
QUEST_A = {1: 0.7978845587, 2: 1.49353462, 3: 2.0510683541, 4: 2.5139305786, 5: 2.9160938835,
           6: 3.2765972826, 7: 3.6010497188, 8: 3.8849386788}  # formats/int*.toml


# ------------------------------------------------------------------------------------------
# normal distribution pieces
# ------------------------------------------------------------------------------------------

def _phi(x):
    return np.exp(-0.5 * np.square(x)) / math.sqrt(2 * math.pi)


def _Phi(x):
    from scipy.special import ndtr
    return ndtr(x)


def grid_mse(levels: np.ndarray, c: float) -> float:
    """E (x - c Q(x / c))^2 for x ~ N(0, 1), Q the nearest of ``levels`` (sorted)."""
    lv = c * np.asarray(levels, dtype=np.float64)
    t = np.concatenate([[-np.inf], (lv[1:] + lv[:-1]) / 2, [np.inf]])
    a, b = t[:-1], t[1:]
    p0 = _Phi(b) - _Phi(a)
    pa, pb = _phi(a), _phi(b)
    m1 = pa - pb
    fa = np.where(np.isinf(a), 0.0, np.where(np.isinf(a), 0.0, a) * pa)
    fb = np.where(np.isinf(b), 0.0, np.where(np.isinf(b), 0.0, b) * pb)
    m2 = p0 + fa - fb
    return float(np.sum(m2 - 2 * lv * m1 + lv * lv * p0))


@cache
def optimal_constant(levels: tuple[float, ...]) -> float:
    """The c minimizing grid_mse: a fine log scan (FP grids have a local minimum per binade),
    then a bounded scalar search around each of the best local minima."""
    from scipy.optimize import minimize_scalar
    lv = np.asarray(levels)
    top = float(np.max(np.abs(lv)))
    cs = np.exp(np.linspace(math.log(0.05 / top), math.log(20.0 / top), 3000))
    f = np.array([grid_mse(lv, c) for c in cs])
    interior = np.flatnonzero((f[1:-1] <= f[:-2]) & (f[1:-1] <= f[2:])) + 1
    cands = list(interior[np.argsort(f[interior])][:8]) or [int(np.argmin(f))]
    best_c, best_f = float(cs[int(np.argmin(f))]), float(np.min(f))
    for i in cands:
        lo, hi = cs[max(i - 1, 0)], cs[min(i + 1, len(cs) - 1)]
        res = minimize_scalar(lambda c: grid_mse(lv, c), bounds=(lo, hi), method="bounded",
                              options={"xatol": 1e-13 * hi})
        if res.fun < best_f:
            best_c, best_f = float(res.x), float(res.fun)
    return best_c


@cache
def lloyd_max_levels(bits: int) -> tuple[float, ...]:
    """Gaussian Lloyd-Max levels by the Lloyd iteration on closed-form centroids."""
    n = 2**bits
    from scipy.special import ndtri
    lv = ndtri((np.arange(n) + 0.5) / n)
    for _ in range(20000):
        t = np.concatenate([[-np.inf], (lv[1:] + lv[:-1]) / 2, [np.inf]])
        p0 = _Phi(t[1:]) - _Phi(t[:-1])
        new = (_phi(t[:-1]) - _phi(t[1:])) / p0
        if np.max(np.abs(new - lv)) < 1e-15:
            lv = new
            break
        lv = new
    return tuple(float(v) for v in lv)


# ------------------------------------------------------------------------------------------
# floating point
# ------------------------------------------------------------------------------------------

def fp_params(e: int, m: int, style: str) -> tuple[int, float]:
    """(emin of normals, largest finite value) of ExMy in an ieee / fn / finite style."""
    bias = 2 ** (e - 1) - 1
    top = 2**e - 1
    if style == "ieee":
        fmax = 2.0 ** (top - 1 - bias) * (2 - 2.0**-m)
    elif style == "fn":
        fmax = 2.0 ** (top - bias) * (2 - 2.0 ** (1 - m))
    else:
        fmax = 2.0 ** (top - bias) * (2 - 2.0**-m)
    return 1 - bias, fmax


def default_style(e: int, m: int) -> str:
    if e >= 5:
        return "ieee"
    if (e, m) == (4, 3):
        return "fn"
    return "finite"


def fp_round(v: np.ndarray, e: int, m: int, style: str, saturate: bool = True) -> np.ndarray:
    """Round to nearest even onto ExMy; beyond the top, saturate or (IEEE) become inf."""
    emin, fmax = fp_params(e, m, style)
    v = np.asarray(v, dtype=np.float64)
    a = np.abs(v)
    with np.errstate(divide="ignore"):
        ex = np.floor(np.log2(np.where(a > 0, a, 1.0)))
    # log2 can be off by one ulp at exact powers of two: fix with frexp
    _, fe = np.frexp(np.where(a > 0, a, 1.0))
    ex = (fe - 1).astype(np.float64)
    ex = np.maximum(ex, emin)
    q = np.ldexp(1.0, (ex - m).astype(np.int64))
    r = np.round(a / q) * q
    if saturate:
        r = np.minimum(r, fmax)
    else:
        # IEEE: overflow when the rounded value exceeds fmax (RNE to the next binade)
        r = np.where(r > fmax, np.inf, r)
    return np.copysign(r, v)


def fp_grid(e: int, m: int, style: str) -> np.ndarray:
    """Every finite value of ExMy, sorted (for the optimal constant)."""
    emin, fmax = fp_params(e, m, style)
    vals = [0.0]
    ex = emin
    # subnormals
    vals += [k * 2.0 ** (emin - m) for k in range(1, 2**m)]
    while True:
        binade = [(1 + k * 2.0**-m) * 2.0**ex for k in range(2**m)]
        binade = [b for b in binade if b <= fmax]
        vals += binade
        if 2.0 ** (ex + 1) > fmax:
            break
        ex += 1
    pos = np.array(sorted(set(vals)))
    return np.concatenate([-pos[:0:-1], pos])


# ------------------------------------------------------------------------------------------
# the spec
# ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Q:
    grid: str                       # int | fp | lut | lm
    bits: int = 0
    style: str = "midrise"          # int: midrise signed asym full
    e: int = 0
    m: int = 0
    fpstyle: str = ""
    values: tuple[float, ...] = ()
    rule: str = "rms"               # rms absmax absmean mse none
    const: float | None = None
    group: object = "row"           # int | "row" | "tensor"
    sfmt: str = "fp32"
    rounding: str | None = None
    overflow: str = "saturate"
    bnb: bool = False
    stats: str = "kept"


@dataclass(frozen=True)
class S:
    pattern: str                    # nm magnitude block
    n: int = 0
    m: int = 0
    k: int = 1
    sparsity: Fraction = Fraction(0)


@dataclass(frozen=True)
class R:
    block: int


@dataclass
class Spec:
    stages: list = field(default_factory=list)


CATALOG_STAGES = {
    **{f"int{b}": Q("int", b, const=QUEST_A[b]) for b in QUEST_A},
    "ternary": Q("lut", values=(-1.0, 0.0, 1.0), const=1.2240089519),
    "fp4": Q("fp", e=2, m=1), "fp6-e2m3": Q("fp", e=2, m=3), "fp6-e3m2": Q("fp", e=3, m=2),
    "fp8-e4m3": Q("fp", e=4, m=3), "fp8-e5m2": Q("fp", e=5, m=2),
    "mxfp4": Q("fp", e=2, m=1, rule="absmax", group=32, sfmt="e8m0"),
    "mxfp6-e2m3": Q("fp", e=2, m=3, rule="absmax", group=32, sfmt="e8m0"),
    "mxfp6-e3m2": Q("fp", e=3, m=2, rule="absmax", group=32, sfmt="e8m0"),
    "mxfp8-e4m3": Q("fp", e=4, m=3, rule="absmax", group=32, sfmt="e8m0"),
    "mxfp8-e5m2": Q("fp", e=5, m=2, rule="absmax", group=32, sfmt="e8m0"),
    "mxint8": Q("int", 8, style="signed", rule="absmax", group=32, sfmt="e8m0"),
    "nvfp4": Q("fp", e=2, m=1, rule="absmax", group=16, sfmt="e4m3"),
    "nf4": Q("lut", values=NF4, rule="absmax", group=64, sfmt="fp32", bnb=True),
    "nf4-dq": Q("lut", values=NF4, rule="absmax", group=64, sfmt="dq8", bnb=True),
    "int4-g32": Q("int", 4, style="signed", rule="absmax", group=32, sfmt="fp16"),
    "int4-g64": Q("int", 4, style="signed", rule="absmax", group=64, sfmt="fp16"),
    "int4-g128": Q("int", 4, style="signed", rule="absmax", group=128, sfmt="fp16"),
    "int3-g128": Q("int", 3, style="signed", rule="absmax", group=128, sfmt="fp16"),
    "int8-g128": Q("int", 8, style="signed", rule="absmax", group=128, sfmt="fp16"),
    "w4a16": Q("int", 4, style="full", rule="absmax", group=128, sfmt="fp16"),
    "w3a16": Q("int", 3, style="full", rule="absmax", group=128, sfmt="fp16"),
    "w8a16": Q("int", 8, style="full", rule="absmax", group=128, sfmt="fp16"),
    "int4-asym-g128": Q("int", 4, style="asym", rule="absmax", group=128, sfmt="fp16"),
    "w4a16-asym": Q("int", 4, style="asym", rule="absmax", group=128, sfmt="fp16"),
    "int8-asym-g128": Q("int", 8, style="asym", rule="absmax", group=128, sfmt="fp16"),
    **{f"lloyd-max-{b}": Q("lm", b, const=1.0) for b in (1, 2, 3, 4)},
}


def _base(token: str):
    if token in CATALOG_STAGES:
        return CATALOG_STAGES[token]
    if mt := re.fullmatch(r"int(\d+)", token):
        return Q("int", int(mt[1]))
    if mt := re.fullmatch(r"([saf])int(\d+)", token):
        return Q("int", int(mt[2]), style={"s": "signed", "a": "asym", "f": "full"}[mt[1]], rule="absmax")
    if mt := re.fullmatch(r"e(\d+)m(\d+)", token):
        return Q("fp", e=int(mt[1]), m=int(mt[2]))
    if mt := re.fullmatch(r"(?:lm|lloyd-max-)(\d+)", token):
        return Q("lm", int(mt[1]))
    if mt := re.fullmatch(r"lut\[([^\]]*)\]", token):
        return Q("lut", values=tuple(float(v) for v in mt[1].split(",")))
    if mt := re.fullmatch(r"(\d+):(\d+)(?:x(\d+))?", token):
        return S("nm", int(mt[1]), int(mt[2]), int(mt[3] or 1))
    if mt := re.fullmatch(r"sparse-?(\d+(?:\.\d+)?)", token):
        return S("magnitude", sparsity=Fraction(mt[1]) / 100)
    if mt := re.fullmatch(r"block(\d+)-(\d+(?:\.\d+)?)", token):
        return S("block", k=int(mt[1]), sparsity=Fraction(mt[2]) / 100)
    if mt := re.fullmatch(r"had(\d*)", token):
        return R(int(mt[1]) if mt[1] else 128)
    if token in ("bf16", "fp16", "fp32"):
        e, m = {"bf16": (8, 7), "fp16": (5, 10), "fp32": (8, 23)}[token]
        return Q("fp", e=e, m=m, fpstyle="ieee", rule="none", overflow="inf")
    return None


def _modify(st: Q, tok: str) -> Q:
    if mt := re.fullmatch(r"g(\d+)", tok):
        return replace(st, group=int(mt[1]))
    if tok in ("row", "tensor"):
        return replace(st, group=tok)
    if tok in ("absmax", "mse"):
        return replace(st, rule=tok, const=None)
    if mt := re.fullmatch(r"rms(\d+(?:\.\d+)?)?", tok):
        return replace(st, rule="rms", const=float(mt[1]) if mt[1] else None)
    if mt := re.fullmatch(r"absmean(\d+(?:\.\d+)?)?", tok):
        return replace(st, rule="absmean", const=float(mt[1]) if mt[1] else 1.0)
    if tok.startswith("s") and tok[1:] in ("fp32", "bf16", "fp16", "e8m0", "e4m3", "int8", "dq8"):
        return replace(st, sfmt=tok[1:])
    if tok in ("floor", "ceil", "even", "rceil", "nearest"):
        return replace(st, rounding=tok)
    if tok in ("inf", "saturate"):
        return replace(st, overflow=tok)
    if tok == "bnb":
        return replace(st, bnb=True)
    if tok in ("keptstats", "allstats"):
        return replace(st, stats=tok[:-5])
    raise ValueError(f"unknown modifier {tok}")


def parse(text: str) -> Spec:
    stages = []
    for piece in text.lower().split("+"):
        toks = piece.split("-")
        for cut in range(len(toks), 0, -1):
            base = _base("-".join(toks[:cut]))
            if base is not None:
                for t in toks[cut:]:
                    base = _modify(base, t)
                stages.append(base)
                break
        else:
            raise ValueError(f"cannot parse {piece}")
    return Spec(stages)


# ------------------------------------------------------------------------------------------
# grids
# ------------------------------------------------------------------------------------------

def _style(q: Q) -> str:
    return q.fpstyle or default_style(q.e, q.m)


def native_levels(q: Q) -> np.ndarray:
    """The grid in the units the scale multiplies."""
    if q.grid == "int":
        n = 2**q.bits
        if q.style == "midrise":
            return (2 * np.arange(n) + 1 - n) / (n - 1)
        if q.style == "signed":
            h = 2 ** (q.bits - 1) - 1
            return np.arange(-h, h + 1, dtype=np.float64)
        if q.style == "full":
            return np.arange(-(n // 2), n // 2, dtype=np.float64)
        raise ValueError("asym has no fixed grid")
    if q.grid == "fp":
        return fp_grid(q.e, q.m, _style(q))
    if q.grid == "lut":
        return np.asarray(q.values, dtype=np.float64)  # native units: scale x value
    return np.asarray(lloyd_max_levels(q.bits))


def grid_max(q: Q) -> float:
    if q.grid == "int" and q.style == "full":
        return (2**q.bits - 1) / 2
    if q.grid == "fp":
        return fp_params(q.e, q.m, _style(q))[1]
    return float(np.max(np.abs(native_levels(q))))


def rms_constant(q: Q) -> float:
    return q.const if q.const is not None else optimal_constant(tuple(native_levels(q)))


def round_to_grid(q: Q, v: np.ndarray) -> np.ndarray:
    """Levels (in native units) for scaled values v."""
    if q.grid == "fp":
        return fp_round(v, q.e, q.m, _style(q), saturate=(q.rule != "none" or q.overflow == "saturate"))
    if q.grid == "int" and q.style == "midrise":
        n = 2**q.bits
        step = 2 / (n - 1)
        idx = np.clip(np.floor((v + 1) / step + 0.5), 0, n - 1)
        return -1 + idx * step
    if q.grid == "int" and q.style == "signed":
        h = 2 ** (q.bits - 1) - 1
        return np.clip(np.rint(v), -h, h)
    if q.grid == "int" and q.style == "full":
        return np.clip(np.rint(v), -(2 ** (q.bits - 1)), 2 ** (q.bits - 1) - 1)
    lv = native_levels(q)
    if q.bnb:
        v32 = v.astype(np.float32)
        mids = ((lv[1:].astype(np.float32) + lv[:-1].astype(np.float32)) / np.float32(2))
        idx = np.searchsorted(mids, v32, side="left")  # at a midpoint: the lower level
    else:
        mids = (lv[1:] + lv[:-1]) / 2
        idx = np.searchsorted(mids, v, side="right")
    return lv[idx]


# ------------------------------------------------------------------------------------------
# scales
# ------------------------------------------------------------------------------------------

def _f32(v):
    return np.asarray(v, dtype=np.float64).astype(np.float32).astype(np.float64)


def _floor_log2(v):
    return np.frexp(v)[1] - 1


def _ceil_log2(v):
    mant, ex = np.frexp(v)
    return np.where(mant == 0.5, ex - 1, ex)


def e8m0_scale(q: Q, raw: np.ndarray, amax: np.ndarray) -> np.ndarray:
    rounding = q.rounding
    asym = q.grid == "int" and q.style == "asym"
    if rounding is None:
        rounding = "ceilraw" if (asym and q.rule == "absmax") else ("floor" if q.rule == "absmax" else "nearest")
    emax = math.floor(math.log2(grid_max(q))) if q.grid != "int" or q.style != "asym" else 0
    with np.errstate(divide="ignore", invalid="ignore"):
        if rounding == "floor":
            k = _floor_log2(amax) - emax
        elif rounding == "ceil":
            k = _ceil_log2(amax) - emax
        elif rounding == "even":
            a32 = amax.astype(np.float32).view(np.int32).astype(np.int64)
            inc = 1 << (23 - q.m - 1)  # half an ulp of the element's mantissa
            k = ((a32 + inc) >> 23) - 127 - emax
        elif rounding == "rceil":
            k = _ceil_log2(_f32(raw))
        elif rounding == "ceilraw":
            k = _ceil_log2(raw)
        else:  # nearest in the log domain: log2 m >= -1/2 rounds up
            mant, ex = np.frexp(raw)
            k = np.where(mant >= math.sqrt(0.5), ex, ex - 1)
        k = np.clip(k, -127, 127)
        s = np.ldexp(1.0, np.where(raw > 0, k, 0).astype(np.int64))
    return np.where(raw > 0, s, 0.0)


def store_scale(q: Q, raw: np.ndarray, amax: np.ndarray) -> np.ndarray:
    if q.sfmt == "fp32":
        return _f32(raw)
    if q.sfmt == "bf16":
        return fp_round(raw, 8, 7, "ieee")
    if q.sfmt == "fp16":
        return fp_round(raw, 5, 10, "ieee")
    if q.sfmt == "e8m0":
        return e8m0_scale(q, raw, amax)
    return _f32(raw)  # two-level formats: fixed after the whole tensor is known


INT8_SCALE_MAX = 255.0


def store_two_level(q: Q, raw: np.ndarray) -> np.ndarray:
    """e4m3 / int8 scales relative to an fp32 tensor scale (raw: every group of the tensor)."""
    top = float(np.max(raw))
    if q.sfmt == "e4m3":
        st = float(_f32(top / 448.0))
        if st == 0:
            return np.zeros_like(raw)
        return fp_round(raw / st, 4, 3, "fn") * st
    st = float(_f32(top / INT8_SCALE_MAX))
    if st == 0:
        return np.zeros_like(raw)
    return np.where(raw > 0, np.clip(np.rint(raw / st), 1, INT8_SCALE_MAX) * st, 0.0)


def _torch_linspace_f32(start: float, stop: float, n: int) -> np.ndarray:
    """torch.linspace in float32, from torch itself: bitsandbytes builds its dynamic code with it."""
    import torch

    return torch.linspace(start, stop, n, dtype=torch.float32).numpy()


@lru_cache(maxsize=1)
def dynamic_code() -> np.ndarray:
    """bitsandbytes' signed 8-bit dynamic code (create_dynamic_map(signed=True)): for i = 0..6
    the midpoints of 2^i + 1 points evenly spaced over [0.1, 1], times 10^(i - 6), both signs;
    then 0 and 1 (float32 arithmetic; the last bit of a value may differ from torch's)."""
    vals = [0.0, 1.0]
    for i in range(7):
        edges = _torch_linspace_f32(0.1, 1.0, 2**i + 1)
        means = (edges[:-1] + edges[1:]) / np.float32(2)
        scaled = (means * np.float32(10.0 ** (i - 6))).astype(np.float32)
        vals += list(scaled.astype(np.float64)) + list(-scaled.astype(np.float64))
    return np.sort(np.array(vals))


def dq8(amax: np.ndarray) -> np.ndarray:
    """bitsandbytes double quantization of the fp32 absmaxes of one tensor (row-major)."""
    a = _f32(amax.reshape(-1)).astype(np.float32)
    offset = np.float32(np.mean(a.astype(np.float64)))
    c = (a - offset).astype(np.float32)
    code = dynamic_code().astype(np.float32)
    mids = (code[1:] + code[:-1]) / np.float32(2)
    out = np.empty_like(c)
    for s in range(0, c.size, 256):
        blk = c[s:s + 256]
        A = np.float32(max(np.max(np.abs(blk)), 1e-38))
        v = blk * np.float32(1 / A) if blk.size == 256 else blk / A
        v = np.clip(v.astype(np.float32), -1, 1)
        idx = np.searchsorted(mids, v, side="left")
        out[s:s + 256] = (code[idx] * A).astype(np.float32) + offset
    return out.astype(np.float64).reshape(amax.shape)


# ------------------------------------------------------------------------------------------
# the compressors
# ------------------------------------------------------------------------------------------

def _groups(q: Q, x: np.ndarray) -> np.ndarray:
    """(tensors, groups, group size) view of a (tensors, rows, L) array."""
    t, r, L = x.shape
    if q.group == "tensor":
        return x.reshape(t, 1, r * L)
    g = L if q.group == "row" else q.group
    return x.reshape(t, r * L // g, g)


def _dequant(q: Q, xg, scale, z):
    s = scale[..., None]
    with np.errstate(divide="ignore", invalid="ignore"):
        v = np.where(s > 0, xg / np.where(s > 0, s, 1.0), 0.0)
    if q.grid == "int" and q.style == "asym":
        n = 2**q.bits
        lev = np.clip(np.rint(v) + z[..., None], 0, n - 1) - z[..., None]
    else:
        if q.grid == "lut" and q.bnb:
            with np.errstate(divide="ignore"):
                inv = _f32(1.0 / np.where(s > 0, s, 1.0))
            v = _f32(xg * inv)
        lev = round_to_grid(q, v)
    return np.where(s > 0, lev * s, 0.0)


def quantize(q: Q, x: np.ndarray, kept: np.ndarray) -> np.ndarray:
    """x, kept: (tensors, rows, L); returns the dequantized values (0 where not kept)."""
    if q.rule == "none":
        return np.where(kept, round_to_grid(q, x), 0.0)
    stat_mask = kept if q.stats == "kept" else np.ones_like(kept)
    xg, kg = _groups(q, x), _groups(q, stat_mask)
    xk = np.where(kg, xg, 0.0)
    count = kg.sum(-1)
    amax = np.max(np.abs(xk), -1)
    lo = np.minimum(np.min(np.where(kg, xg, np.inf), -1), 0.0)
    hi = np.maximum(np.max(np.where(kg, xg, -np.inf), -1), 0.0)
    asym = q.grid == "int" and q.style == "asym"
    n = 2**q.bits if q.grid == "int" else 0
    if q.rule == "rms":
        raw = rms_constant(q) * np.sqrt(np.sum(xk * xk, -1) / np.maximum(count, 1))
        ratio_lo = lo
    elif q.rule == "absmax":
        raw = (hi - lo) / (n - 1) if asym else amax / grid_max(q)
        ratio_lo = lo
    elif q.rule == "absmean":  # BitNet b1.58: C x mean |x| over the counted entries
        raw = q.const * np.sum(np.abs(xk), -1) / np.maximum(count, 1)
        ratio_lo = lo
    else:
        raw, ratio_lo = _mse_search(q, xg, kg, amax, lo, hi)
    if q.sfmt == "dq8":
        scale_round = _f32(raw)
        scale_deq = np.stack([dq8(r) for r in _f32(raw)])
    elif q.sfmt in ("e4m3", "int8"):
        scale_round = scale_deq = np.stack([store_two_level(q, r) for r in raw])
    else:
        scale_round = scale_deq = store_scale(q, raw, amax)
    z = np.zeros_like(scale_round)
    if asym:
        safe = np.where(scale_round > 0, scale_round, 1.0)
        z = np.clip(np.rint(-ratio_lo / safe), 0, n - 1)
    if q.sfmt == "dq8":
        lev = _dequant(q, xg, scale_round, z) / np.where(scale_round > 0, scale_round, 1.0)[..., None]
        out = lev * scale_deq[..., None]
    else:
        out = _dequant(q, xg, scale_round, z)
    out = _f32(out).reshape(x.shape)
    return np.where(kept, out, 0.0)


def _mse_search(q: Q, xg, kg, amax, lo, hi):
    asym = q.grid == "int" and q.style == "asym"
    n = 2**q.bits if q.grid == "int" else 0
    base = (hi - lo) / (n - 1) if asym else amax / grid_max(q)

    def err(r):
        raw = r * base
        s = _f32(raw) if q.sfmt in ("e4m3", "int8", "dq8") else store_scale(q, raw, amax)
        z = np.zeros_like(s)
        if asym:
            z = np.clip(np.rint(-(r * lo) / np.where(s > 0, s, 1.0)), 0, n - 1)
        d = np.where(kg, _dequant(q, xg, s, z) - xg, 0.0)
        e = np.sum(d * d, -1)
        return e

    def search(ratios, best_r, best_e):
        for r in ratios:
            e = err(r)
            better = e < best_e
            best_r = np.where(better, r, best_r)
            best_e = np.where(better, e, best_e)
        return best_r, best_e

    coarse = [round(1.0 - 0.01 * i, 10) for i in range(81)]
    best_r, best_e = search(coarse, np.full(base.shape, np.nan), np.full(base.shape, np.inf))
    # fine pass: +-9 steps of 0.001 around each group's best coarse ratio
    fine_r, fine_e = best_r.copy(), best_e.copy()
    for d in [j for j in range(-9, 10) if j != 0]:
        r = best_r + 0.001 * d
        ok = (r <= 1.0 + 1e-12) & (r >= 0.2 - 1e-12)
        e = err(r)
        better = ok & (e < fine_e)
        fine_r = np.where(better, r, fine_r)
        fine_e = np.where(better, e, fine_e)
    return fine_r * base, fine_r * lo


def sparsity_mask(s: S, x: np.ndarray) -> np.ndarray:
    t, r, L = x.shape
    if s.pattern == "nm":
        u = np.square(x).reshape(t, r, L // (s.m * s.k), s.m, s.k).sum(-1)
        order = np.argsort(-u, axis=-1, kind="stable")
        keep = np.zeros_like(u, dtype=bool)
        np.put_along_axis(keep, order[..., : s.n], True, axis=-1)
        return np.repeat(keep[..., None], s.k, axis=-1).reshape(x.shape)
    if s.pattern == "magnitude":
        nkeep = math.floor((1 - s.sparsity) * L + Fraction(1, 2))
        order = np.argsort(-np.abs(x), axis=-1, kind="stable")
        keep = np.zeros(x.shape, dtype=bool)
        np.put_along_axis(keep, order[..., :nkeep], True, axis=-1)
        return keep
    nb = L // s.k
    ndrop = math.floor(s.sparsity * nb + Fraction(1, 2))
    u = np.square(x).reshape(t, r, nb, s.k).sum(-1)
    order = np.argsort(-u, axis=-1, kind="stable")  # equal norms: the lower index is kept
    keep = np.zeros_like(u, dtype=bool)
    np.put_along_axis(keep, order[..., : nb - ndrop], True, axis=-1)
    return np.repeat(keep[..., None], s.k, axis=-1).reshape(x.shape)


@cache
def _hadamard(k: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < k:
        h = np.block([[h, h], [h, -h]])
    return h / math.sqrt(k)


def compress(spec: Spec, x: np.ndarray) -> np.ndarray:
    """x: (tensors, rows, L) float64 (float32 values); the reconstruction."""
    y = x
    rot = None
    kept = np.ones(x.shape, dtype=bool)
    out = None
    for st in spec.stages:
        if isinstance(st, R):
            h = _hadamard(st.block)
            rot = h
            y = (y.reshape(-1, st.block) @ h.T).reshape(x.shape)
            y = _f32(y)
        elif isinstance(st, S):
            kept &= sparsity_mask(st, np.where(kept, y, 0.0))
            out = np.where(kept, y, 0.0)
        else:
            xin = y if st.stats == "all" else np.where(kept, y, 0.0)
            out = quantize(st, xin, kept)
    if out is None:
        out = y
    if rot is not None:
        out = (out.reshape(-1, rot.shape[0]) @ rot).reshape(x.shape)
    return out


def tensors_per_batch(row_length: int) -> int:
    return max(1, TENSOR_ELEMENTS // row_length)


def needs_tensor_units(spec: Spec) -> bool:
    for st in spec.stages:
        if isinstance(st, Q) and (st.group == "tensor" or st.sfmt in ("e4m3", "int8", "dq8")):
            return True
    return False


def monte_carlo(text: str, row_length: int, samples: int, seed: int, batch: int = 1 << 20):
    """(GMSE, standard error) from ~``samples`` Gaussian entries: the ratio estimator over
    independent units (rows, or tensors of 131072 // L rows where a statistic spans them)."""
    spec = parse(text)
    rows_t = tensors_per_batch(row_length) if needs_tensor_units(spec) else 1
    if rows_t > 1 or needs_tensor_units(spec):
        samples = max(samples, MIN_TENSOR_UNITS * rows_t * row_length)  # a standard error from few units is loose
    rng = np.random.default_rng(seed)
    errs, norms = [], []
    per = max(rows_t, batch // row_length // rows_t * rows_t)
    done = 0
    while done < samples:
        x = rng.standard_normal((per // rows_t, rows_t, row_length), dtype=np.float32).astype(np.float64)
        y = compress(spec, x)
        errs.append(np.sum(np.square(y - x), axis=(1, 2)))
        norms.append(np.sum(np.square(x), axis=(1, 2)))
        done += x.size
    e, nrm = np.concatenate(errs), np.concatenate(norms)
    g = e.sum() / nrm.sum()
    resid = e - g * nrm
    se = math.sqrt(np.sum(resid**2) / (len(e) - 1) / len(e)) / nrm.mean()
    return g, se


# ------------------------------------------------------------------------------------------
# storage
# ------------------------------------------------------------------------------------------

SCALE_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "e8m0": 8, "e4m3": 8, "int8": 8, "dq8": 8 + 32 / 256}


def bits_per_param(text: str, row_length: int = 4096) -> float:
    """Element bits x density + scale (and zero point) bits per group + mask bits."""
    spec = parse(text)
    density, mask, total = 1.0, 0.0, None
    for st in spec.stages:
        if isinstance(st, S):
            if st.pattern == "nm":
                density *= st.n / st.m
                mask += math.log2(math.comb(st.m, st.n)) / (st.m * st.k)
            else:
                # README: a row keeps round-half-up((1 - P) L) entries, or zeroes
                # round-half-up(P x L/K) of its blocks of K
                # (as sparsity_mask below counts them)
                if st.pattern == "block":
                    blocks = row_length // st.k
                    p = float(blocks - math.floor(st.sparsity * blocks + Fraction(1, 2))) / blocks
                else:
                    p = float(math.floor((1 - st.sparsity) * row_length + Fraction(1, 2))) / row_length
                density *= p
                h = 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))
                mask += h / (st.k if st.pattern == "block" else 1)
        elif isinstance(st, Q):
            if st.grid == "fp":
                eb = 1 + st.e + st.m
            elif st.grid == "lut":
                eb = math.log2(len(st.values))
            else:
                eb = st.bits
            sb = 0.0
            if st.rule != "none" and st.group != "tensor":
                g = row_length if st.group == "row" else st.group
                sb = (SCALE_BITS[st.sfmt] + (eb if (st.grid == "int" and st.style == "asym") else 0)) / g
            total = eb * density + sb
    if total is None:
        total = 16 * density  # kept values of a sparsity-only format count as bf16
    return total + mask


# ------------------------------------------------------------------------------------------
# random formats across the shorthand grammar
# ------------------------------------------------------------------------------------------

ROW_LENGTHS = (4096, 4096, 4096, 1024, 256, 512, 8192, 2048)


def _lut(rng: np.random.Generator) -> str:
    n = int(rng.integers(3, 9))
    vals = np.sort(rng.choice(np.arange(-12, 13), size=n, replace=False)) * float(rng.choice([0.25, 0.5, 1.0, 3.0]))
    return "lut[" + ",".join(f"{v:g}" for v in vals) + "]"


def random_quantizer(rng: np.random.Generator, sparse: bool, absmean: float = 0.0) -> str:
    kind = rng.choice(["int", "sint", "aint", "fint", "fp", "lm", "lut", "catalog"],
                      p=[0.14, 0.16, 0.12, 0.12, 0.2, 0.08, 0.08, 0.1])
    if kind == "catalog":
        return str(rng.choice(["nf4", "mxfp4", "nvfp4", "mxint8", "int4-g128", "w4a16", "int4-asym-g128",
                               "mxfp6-e3m2", "nf4-dq", "fp4", "int3", "ternary", "lloyd-max-3"]))
    mods: list[str] = []
    if kind in ("int", "lm"):
        base = f"{'int' if kind == 'int' else 'lm'}{int(rng.integers(1, 9 if kind == 'int' else 5))}"
    elif kind in ("sint", "aint", "fint"):
        base = f"{kind}{int(rng.integers(2, 9))}"
    elif kind == "fp":
        e, m = [(2, 1), (2, 3), (3, 2), (4, 3), (5, 2), (2, 0), (3, 1), (3, 0), (4, 1), (2, 2), (4, 2), (5, 1)][
            int(rng.integers(0, 12))]
        base = f"e{e}m{m}"
    else:
        base = _lut(rng)
    asym = kind == "aint"
    # granularity
    gran = rng.choice(["g", "row", "tensor", "keep"], p=[0.6, 0.15, 0.1, 0.15])
    if gran == "g":
        mods.append(f"g{int(rng.choice([4, 8, 16, 32, 64, 128, 256]))}")
    elif gran != "keep":
        mods.append(str(gran))
    # rule
    # (absmean = 0 draws exactly what the generator drew before it knew absmean)
    weights = np.array([0.35, 0.25, 0.15, 0.15, 0.1, absmean / 2, absmean / 2])
    rule = rng.choice(["keep", "absmax", "rms", "rmsc", "mse", "absmean", "absmeanc"], p=weights / weights.sum())
    if asym and rule in ("rms", "rmsc", "absmean", "absmeanc"):
        rule = "absmax"
    if rule in ("rmsc", "absmeanc"):
        mods.append(f"{rule[:-1]}{rng.uniform(0.3, 4.0):.3f}")
    elif rule != "keep":
        mods.append(str(rule))
    # scale format
    sfmt = rng.choice(["keep", "sfp32", "sbf16", "sfp16", "se8m0", "se4m3", "sint8", "sdq8"],
                      p=[0.3, 0.08, 0.1, 0.1, 0.2, 0.1, 0.07, 0.05])
    if sfmt != "keep":
        mods.append(str(sfmt))
    if sfmt == "se8m0" and rng.random() < 0.5:
        mods.append(str(rng.choice(["floor", "ceil", "even", "rceil", "nearest"])))
    if sparse and rng.random() < 0.4:
        mods.append(str(rng.choice(["keptstats", "allstats"])))
    return "-".join([base, *mods])


def random_sparsity(rng: np.random.Generator) -> str:
    kind = rng.choice(["nm", "nmk", "mag", "block"], p=[0.35, 0.2, 0.3, 0.15])
    if kind in ("nm", "nmk"):
        m = int(rng.choice([2, 3, 4, 8, 16, 32]))
        n = int(rng.integers(1, m + 1))
        return f"{n}:{m}" + (f"x{int(rng.choice([2, 4, 8]))}" if kind == "nmk" else "")
    if kind == "mag":
        return f"sparse{float(rng.choice([5, 10, 25, 30, 50, 62.5, 70, 90])):g}"
    return f"block{int(rng.choice([2, 4, 8, 16]))}-{int(rng.choice([10, 25, 50, 75]))}"


def random_spec(rng: np.random.Generator, absmean: float = 0.0) -> str:
    """A random shorthand; ``absmean``: the weight of absmean rules among the scale rules
    (the others' weights sum to 1)."""
    parts = []
    if rng.random() < 0.08:
        parts.append(f"had{int(rng.choice([32, 64, 128, 256]))}")
    sparse = rng.random() < 0.35
    if sparse:
        parts.append(random_sparsity(rng))
    if not sparse or rng.random() < 0.85:
        parts.append(random_quantizer(rng, sparse, absmean))
    return "+".join(parts)
