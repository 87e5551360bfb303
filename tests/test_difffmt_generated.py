"""uscl's compressor on ~40 generated format strings against a compact second implementation,
element for element, and their bits/param against the README's storage rules.

The reference below is written from the README's format language only (integer grids
midrise/signed/full/asymmetric, eXmY minifloats with subnormals and saturation, NF4's code
values, explicit luts; absmax and explicit rmsC scale rules over groups/rows/tensors; scales
stored in fp32/bf16/fp16, e8m0 with floor/ceil/nearest/rceil rounding, e4m3 under an fp32
second-level scale; N:M, N:MxK, row magnitude and block pruning in front, keptstats/allstats;
Hadamard rotation). Deterministic parts only: no Monte Carlo, no optimal-constant search (the
formats spell their RMS constant). Minifloat rounding is checked against ml_dtypes where it has
the type. Fixed seeds; runs in a few seconds.
"""

from __future__ import annotations

import math
import random

import conftest
import ml_dtypes
import numpy as np
import pytest
from scipy.linalg import hadamard

from gmse_cli import resolve_format
from gmse_cli.compress import compress

assert conftest.REPO_ROOT.is_dir()

NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
       -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
       0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
       0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0]
SCALE_BITS = {"fp32": 32, "bf16": 16, "fp16": 16, "e8m0": 8, "e4m3": 8, "int8": 8}
ML_TYPES = {(2, 1): ml_dtypes.float4_e2m1fn, (2, 3): ml_dtypes.float6_e2m3fn,
            (3, 2): ml_dtypes.float6_e3m2fn, (4, 3): ml_dtypes.float8_e4m3fn,
            (5, 2): ml_dtypes.float8_e5m2}
FP_GRIDS = [(2, 1), (2, 3), (3, 2), (4, 3), (5, 2), (1, 2), (3, 1), (3, 3), (4, 2), (5, 3), (3, 0)]
CATALOG_PREFIXES = ("int4-g32", "int4-g64", "int4-g128", "int3-g128", "int8-g128")


# ------------------------------------------------------------------------- reference
def fp_max(e: int, m: int) -> float:
    if (e, m) == (4, 3):
        return 448.0  # e4m3fn: the all-ones code is nan
    bias = 2 ** (e - 1) - 1
    if e >= 5:  # IEEE from 5 exponent bits: the top exponent is inf/nan (e5m2, fp16, bf16)
        return (2 - 2.0**-m) * 2.0 ** (2**e - 2 - bias)
    return (2 - 2.0**-m) * 2.0 ** (2**e - 1 - bias)  # as OCP's e2m1/e2m3/e3m2: every code finite


def fp_round(x: np.ndarray, e: int, m: int) -> np.ndarray:
    """Round to nearest even on eXmY, subnormals included, saturating at fp_max."""
    emin = 2 - 2 ** (e - 1)
    ax = np.abs(x)
    ex = np.maximum(np.floor(np.log2(np.where(ax > 0, ax, 1.0))), emin)
    step = np.exp2(ex - m)
    return np.sign(x) * np.minimum(np.rint(ax / step) * step, fp_max(e, m))


def grid_top(q: dict) -> float:
    if q["grid"] == "fp":
        return fp_max(q["e"], q["m"])
    if q["grid"] == "lut":
        return float(np.max(np.abs(q["levels"])))
    b = q["bits"]
    return {"midrise": 1.0, "signed": 2 ** (b - 1) - 1.0, "full": 2 ** (b - 1) - 0.5}[q["style"]]


def on_grid(y: np.ndarray, q: dict) -> np.ndarray:
    if q["grid"] == "fp":
        return fp_round(y, q["e"], q["m"])
    if q["grid"] == "lut":
        lv = np.asarray(q["levels"], float)
        return lv[np.searchsorted((lv[1:] + lv[:-1]) / 2, y)]
    b, st = q["bits"], q["style"]
    if st == "midrise":
        n = 2**b - 1
        return -1 + 2 * np.clip(np.rint((y + 1) * n / 2), 0, n) / n
    if st == "signed":
        return np.clip(np.rint(y), -(2 ** (b - 1) - 1), 2 ** (b - 1) - 1)
    return np.clip(np.rint(y), -(2 ** (b - 1)), 2 ** (b - 1) - 1)


def stored_scale(raw: np.ndarray, amax: np.ndarray, q: dict) -> np.ndarray:
    sf = q["sfmt"]
    if sf == "fp32":
        return raw.astype(np.float32).astype(float)
    if sf == "bf16":
        return raw.astype(ml_dtypes.bfloat16).astype(float)
    if sf == "fp16":
        return raw.astype(np.float16).astype(float)
    if sf == "e4m3":
        top = float(np.float32(raw.max() / 448.0))
        return fp_round(raw / top, 4, 3) * top if top > 0 else raw * 0
    pos = raw > 0
    if sf == "int8":  # unsigned codes 1..255 under an fp32 second-level scale
        top = float(np.float32(raw.max() / 255.0))
        return np.where(pos, np.clip(np.rint(raw / max(top, 1e-300)), 1, 255) * top, 0.0)
    if q["round"] == "rceil-raw":  # c x RMS or c x mean|x| rounded up to a power of two
        ex = np.ceil(np.log2(np.where(pos, np.float32(raw).astype(float), 1.0)))
    elif q["rule"] != "absmax" or q["round"] == "nearest-raw":  # to the nearest power of two
        ex = np.rint(np.log2(np.where(pos, raw, 1.0)))
    elif q["round"] == "ceil-raw":  # an asymmetric range's default: never clips
        ex = np.ceil(np.log2(np.where(pos, raw, 1.0)))
    else:
        top = grid_top(q)
        la = np.log2(np.where(pos, amax, 1.0))
        emax = math.floor(math.log2(top))
        ex = {"floor": np.floor(la) - emax, "ceil": np.ceil(la) - emax,
              "nearest": np.rint(la - math.log2(top)),
              "rceil": np.ceil(la - math.log2(top))}[q["round"]]
    return np.where(pos, np.exp2(ex), 0.0)


def ref_quantize(x: np.ndarray, q: dict, kept: np.ndarray) -> np.ndarray:
    rows, L = x.shape
    G = {"row": L, "tensor": rows * L}.get(q["group"], q["group"])
    stat_x, stat_k = (x, np.ones_like(kept)) if q["allstats"] else (np.where(kept, x, 0.0), kept)
    xs = np.where(kept, x, 0.0).reshape(-1, G)
    sx, sk = stat_x.reshape(-1, G), stat_k.reshape(-1, G)
    if q["grid"] == "int" and q["style"] == "asym":
        b = q["bits"]
        hi = np.maximum(0, np.max(np.where(sk, sx, -np.inf), 1))
        lo = np.minimum(0, np.min(np.where(sk, sx, np.inf), 1))
        s = stored_scale((hi - lo) / (2**b - 1), None, q)[:, None]
        ss = np.where(s > 0, s, 1.0)
        zp = np.clip(np.rint(-lo[:, None] / ss), 0, 2**b - 1)  # stored in B bits
        out = np.where(s > 0, (np.clip(np.rint(xs / ss) + zp, 0, 2**b - 1) - zp) * ss, 0.0)
        return np.where(kept, out.reshape(x.shape), 0.0)
    amax = np.max(np.where(sk, np.abs(sx), 0.0), 1)
    if q["rule"] == "absmax":
        raw = amax / grid_top(q)
    elif q["rule"] == "absmean":  # BitNet b1.58: C x the mean magnitude of the counted entries
        raw = q["C"] * np.abs(sx).sum(1) / np.maximum(sk.sum(1), 1)
    else:
        raw = q["C"] * np.sqrt((sx**2).sum(1) / np.maximum(sk.sum(1), 1))
    s = stored_scale(raw, amax, q)[:, None]
    ss = np.where(s > 0, s, 1.0)
    out = np.where(s > 0, on_grid(xs / ss, q) * ss, 0.0)
    return np.where(kept, out.reshape(x.shape), 0.0)


def half_up(v: float) -> int:
    return int(math.floor(v + 0.5 + 1e-12))


def keep_top(score: np.ndarray, n: int) -> np.ndarray:
    keep = np.zeros(score.shape, bool)
    np.put_along_axis(keep, np.argsort(-score, axis=-1, kind="stable")[..., :n], True, axis=-1)
    return keep


def ref_mask(x: np.ndarray, sp: dict) -> np.ndarray:
    rows, L = x.shape
    if sp["pattern"] == "nm":
        k = sp["k"]
        energy = (x.reshape(rows, L // k, k) ** 2).sum(-1).reshape(rows, -1, sp["m"])
        return np.repeat(keep_top(energy, sp["n"]).reshape(rows, L // k), k, axis=1)
    if sp["pattern"] == "mag":
        return keep_top(np.abs(x), half_up((1 - sp["p"]) * L))
    k = sp["k"]
    energy = (x.reshape(rows, L // k, k) ** 2).sum(-1)
    nb = L // k
    return np.repeat(keep_top(energy, nb - half_up(sp["p"] * nb)), k, axis=1)


def ref_compress(x: np.ndarray, spec: dict) -> np.ndarray:
    rows, L = x.shape
    K = spec.get("had")
    if K:
        H = hadamard(K) / math.sqrt(K)
        x = (x.reshape(rows, L // K, K) @ H.T).reshape(rows, L)
    kept = ref_mask(x, spec["sparse"]) if spec.get("sparse") else np.ones(x.shape, bool)
    y = ref_quantize(x, spec["quant"], kept) if spec.get("quant") else np.where(kept, x, 0.0)
    if K:
        y = (y.reshape(rows, L // K, K) @ H).reshape(rows, L)
    return y


def binary_entropy(p: float) -> float:
    return 0.0 if p in (0.0, 1.0) else -(p * math.log2(p) + (1 - p) * math.log2(1 - p))


def ref_bits(spec: dict, L: int) -> float:
    sp, q = spec.get("sparse"), spec.get("quant")
    density, mask = 1.0, 0.0
    if sp and sp["pattern"] == "nm":
        density = sp["n"] / sp["m"]
        mask = math.log2(math.comb(sp["m"], sp["n"])) / (sp["m"] * sp["k"])
    elif sp and sp["pattern"] == "mag":  # billed as ref_mask keeps: half_up((1 - p) L) of L
        density = half_up((1 - sp["p"]) * L) / L
        mask = binary_entropy(density)
    elif sp:  # blocks: half_up(p x blocks) of L/K blocks zeroed
        nb = L // sp["k"]
        density = (nb - half_up(sp["p"] * nb)) / nb
        mask = binary_entropy(density) / sp["k"]
    if not q:
        return 16 * density + mask  # kept values billed as bf16
    elem = {"int": q.get("bits"), "fp": 1 + q.get("e", 0) + q.get("m", 0)}.get(q["grid"])
    if q["grid"] == "lut":
        elem = math.log2(len(q["levels"]))
    G = {"row": L, "tensor": None}.get(q["group"], q["group"])
    scale = 0.0
    if G is not None:
        scale = SCALE_BITS[q["sfmt"]] / G
        if q["grid"] == "int" and q["style"] == "asym":
            scale += q["bits"] / G  # the zero point
    return elem * density + scale + mask


# ------------------------------------------------------------------------- generator
def gen_quant(r: random.Random) -> tuple[dict, str]:
    kind = r.choice(["int", "sint", "fint", "aint", "fp", "fp", "nf4", "lut"])
    if kind == "int":
        b = r.choice([1, 2, 3, 4, 6, 8])
        q, name = dict(grid="int", bits=b, style="midrise"), f"int{b}"
    elif kind in ("sint", "fint", "aint"):
        b = r.choice([2, 3, 4, 8] if kind == "sint" else [1, 2, 3, 4, 8])
        style = {"sint": "signed", "fint": "full", "aint": "asym"}[kind]
        q, name = dict(grid="int", bits=b, style=style), f"{kind}{b}"
    elif kind == "fp":
        e, m = r.choice(FP_GRIDS)
        q, name = dict(grid="fp", e=e, m=m), f"e{e}m{m}"
    elif kind == "nf4":
        q, name = dict(grid="lut", levels=NF4), "nf4"
    else:
        vals = sorted({round(r.uniform(-1, 1), 2) for _ in range(r.choice([2, 3, 5]))} | {0.0})
        q, name = dict(grid="lut", levels=vals), "lut[" + ",".join(f"{v:g}" for v in vals) + "]"
    q.update(group=r.choice([1, 2, 3, 8, 16, 48, 64, "row", "tensor"]), sfmt="fp32",
             allstats=False, round="floor", rule="absmax")
    mods = [q["group"] if isinstance(q["group"], str) else f"g{q['group']}"]
    if kind != "aint":  # an asymmetric grid's scale comes from min/max: absmax only
        u = r.random()
        if u < 0.3:
            q["rule"], q["C"] = "absmean", r.choice([1.0, 1.0, round(r.uniform(0.3, 4.0), 3)])
            mods.append("absmean" + ("" if q["C"] == 1 else f"{q['C']:g}"))
        elif u < 0.65:
            text = np.format_float_positional(r.uniform(0.4, 3.0) / grid_top(q), precision=4,
                                              unique=False, fractional=False, trim="-")
            q["C"], q["rule"] = float(text), "rms"
            mods.append(f"rms{text}")  # positional: a shorthand's '-' ends a modifier
        else:
            mods.append("absmax")
    sf = r.choice(["fp32", "bf16", "fp16", "e8m0", "e4m3", "int8"])
    if sf != "fp32":
        q["sfmt"] = sf
        mods.append("s" + sf)
        if sf == "e8m0" and kind == "aint":
            q["round"] = r.choice(["ceil-raw", "nearest-raw"])
            if q["round"] == "nearest-raw":
                mods.append("nearest")
        elif sf == "e8m0" and q["rule"] == "absmax":
            q["round"] = r.choice(["floor", "ceil", "nearest", "rceil"])
            mods.append(q["round"])
        elif sf == "e8m0":  # rms, absmean: no amax, so only the raw scale's roundings
            q["round"] = r.choice(["nearest-raw", "nearest-raw", "rceil-raw"])
            if q["round"] == "rceil-raw" or r.random() < 0.5:
                mods.append(q["round"].removesuffix("-raw"))
    name = "-".join([name, *map(str, mods)])
    if name.startswith(CATALOG_PREFIXES):  # a catalog name is its own base (sint, fp16 scales)
        return gen_quant(r)
    return q, name


def gen_sparse(r: random.Random) -> tuple[dict, str]:
    kind = r.choice(["nm", "nm", "nmk", "mag", "block"])
    if kind in ("nm", "nmk"):
        m = r.choice([2, 3, 4, 8, 16] if kind == "nm" else [2, 4, 8])
        n, k = r.randrange(1, m), (1 if kind == "nm" else r.choice([2, 3, 4]))
        return dict(pattern="nm", n=n, m=m, k=k), f"{n}:{m}" + (f"x{k}" if k > 1 else "")
    if kind == "mag":
        p = r.choice([5, 25, 50, 70, 90])
        return dict(pattern="mag", p=p / 100), f"sparse{p}"
    k, p = r.choice([2, 4, 8]), r.choice([20, 30, 50])
    return dict(pattern="block", k=k, p=p / 100), f"block{k}-{p}"


def generated(seed: int) -> tuple[dict, str, int]:
    r = random.Random(seed)
    spec, parts = {}, []
    if r.random() < 0.15:
        spec["had"] = r.choice([16, 32])
        parts.append(f"had{spec['had']}")
    if r.random() < 0.45:
        spec["sparse"], text = gen_sparse(r)
        parts.append(text)
    if not spec.get("sparse") or r.random() < 0.8:
        spec["quant"], text = gen_quant(r)
        if spec.get("sparse") and r.random() < 0.25:
            spec["quant"]["allstats"] = True
            text += "-allstats"
        parts.append(text)
    need = spec.get("had", 1)
    if spec.get("sparse"):
        sp = spec["sparse"]
        need = math.lcm(need, sp["m"] * sp["k"] if sp["pattern"] == "nm" else sp.get("k", 1))
    if spec.get("quant") and isinstance(spec["quant"]["group"], int):
        need = math.lcm(need, spec["quant"]["group"])
    return spec, "+".join(parts), need * max(1, 192 // need)


CASES = [generated(7000 + i) for i in range(40)]


# ------------------------------------------------------------------------- tests
@pytest.mark.parametrize(("e", "m"), sorted(ML_TYPES))
def test_reference_minifloat_matches_ml_dtypes(e, m):
    rng = np.random.default_rng(3)
    x = rng.standard_normal(50_000) * np.exp2(rng.uniform(-10, 10, 50_000))
    x = np.clip(x, -fp_max(e, m), fp_max(e, m))
    np.testing.assert_array_equal(fp_round(x, e, m), x.astype(ML_TYPES[(e, m)]).astype(float))


@pytest.mark.parametrize(("e", "m", "top"), [(2, 1, 6.0), (3, 3, 30.0), (4, 2, 448.0), (4, 3, 448.0),
                                             (5, 2, 57344.0), (5, 3, 61440.0), (3, 0, 16.0)])
def test_fp_grid_largest_value(e, m, top):
    """An eXmY grid's largest value (the README's rule: IEEE from 5 exponent bits, e4m3fn, else
    every code finite), seen through uscl: absmax maps a group's amax onto the top, and 0.6 of the
    smallest subnormal below it rounds up to that subnormal only if the top is where the rule
    puts it (twice as high a top puts a subnormal at 0.5 of it, where it would round)."""
    assert fp_max(e, m) == top
    smallest = 2.0 ** (2 - 2 ** (e - 1) - m)
    x = np.array([[1.0, 0.6 * smallest / top]])
    got = compress(resolve_format(f"e{e}m{m}-g2-absmax"), x)
    np.testing.assert_allclose(got, [[1.0, smallest / top]], rtol=1e-6)


@pytest.mark.parametrize(("spec", "name", "L"), CASES, ids=[c[1] for c in CASES])
def test_generated_format_matches_reference(spec, name, L):
    fmt = resolve_format(name)
    x = np.random.default_rng(L).standard_normal((8, L)).astype(np.float32).astype(float)
    got = compress(fmt, x).astype(float)
    want = ref_compress(x, spec)
    off = np.abs(got - want) > 1e-5 * (np.abs(want) + 1e-2 * np.abs(x).max())
    # float32 vs float64 arithmetic may move an entry sitting on a rounding boundary, nothing more
    # (a rotation spreads one such entry over its block)
    assert off.sum() <= max(1, x.size // 500) * spec.get("had", 1), (name, int(off.sum()))
    assert math.isclose(fmt.bits_per_param(row_length=L), ref_bits(spec, L), rel_tol=1e-12, abs_tol=1e-12)
