"""Generated rank/predict invocations checked against an independent implementation of the law.

Usage: python benchmarks/rank_options.py N SEED (each case one uscl process, under nice -n 10)."""
import csv
import io
import json
import math
import os
import random
import subprocess
import sys
import tomllib

import jsonschema

WT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = dict(os.environ, PYTHONPATH=WT, PYTHONDONTWRITEBYTECODE="1")
SCHEMA = json.load(open(f"{WT}/gmse_cli/schema/uscl-output.schema.json"))
PY = sys.executable

FORMATS = {  # name -> stages (part, family)
    "int2": [("int2", "quantization")], "int3": [("int3", "quantization")], "int4": [("int4", "quantization")],
    "int8": [("int8", "quantization")], "fp4": [("fp4", "quantization")], "nf4": [("nf4", "quantization")],
    "mxfp4": [("mxfp4", "quantization")], "nvfp4": [("nvfp4", "quantization")], "int1": [("int1", "quantization")],
    "fp8-e4m3": [("fp8-e4m3", "quantization")], "int4-g128": [("int4-g128", "quantization")],
    "had128+int4": [("had128+int4", "quantization")], "bf16": [("bf16", "quantization")],
    "2:4": [("2:4", "sparsity")], "sparse-50": [("sparse-50", "sparsity")], "sparse-90": [("sparse-90", "sparsity")],
    "1:4": [("1:4", "sparsity")], "sparse30": [("sparse30", "sparsity")],
    "2:4+int4": [("2:4", "sparsity"), ("int4", "quantization")],
    "sparse-50+int4": [("sparse-50", "sparsity"), ("int4", "quantization")],
    "2:4+nvfp4": [("2:4", "sparsity"), ("nvfp4", "quantization")],
    "vq2-b2": [("vq2-b2", "vq")], "e8p": [("e8p", "vq")], "vq4-b2": [("vq4-b2", "vq")],
}
ACTS = ["int8", "int4", "fp8-e4m3", "nvfp4", "had128+int4", "mxfp4"]
LAWS = ["paper-llama-c4", "quest-c4"]
MORE_IS_BETTER = {"rho", "effective_params", "effective_bits", "rho_low", "rho_high"}

_gmse = {}


def gmse(part):
    if part not in _gmse:
        out = subprocess.run([PY, "-m", "gmse_cli", "gmse", part, "--json"], env=ENV, capture_output=True, text=True)
        _gmse[part] = json.loads(out.stdout)["results"][0]["gmse"]
    return _gmse[part]


def law(name):
    d = tomllib.load(open(f"{WT}/gmse_cli/laws/{name}.toml", "rb"))
    c = {k: d[k]["value"] for k in ("A", "alpha", "B", "beta", "E")}
    fam = {f: tuple(d["families"][f][k]["value"] for k in "LFC") for f in d["families"]}
    return c, fam


def rho_curve(g, lfc):
    L, F, C = lfc
    return L * math.tanh(F * math.log(g) / math.log(0.25)) ** C


def own(fmt, act, lawname, n, dtok):
    c, fam = law(lawname)
    stages = FORMATS[fmt] + (FORMATS[act] if act else [])
    rho = 1.0
    for part, family in stages:
        rho *= rho_curve(gmse(part), fam[family])
    loss = c["A"] * (n * rho) ** -c["alpha"] + c["B"] * dtok ** -c["beta"] + c["E"]
    dense = c["A"] * n ** -c["alpha"] + c["B"] * dtok ** -c["beta"] + c["E"]
    return {"rho": rho, "effective_params": n * rho, "predicted_loss": loss, "delta_loss_vs_bf16": loss - dense,
            "params_to_match": n / rho}


MULT = {"": 1, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "b": 1e9, "B": 1e9, "g": 1e9, "G": 1e9, "t": 1e12, "T": 1e12}


def spell_count(rng):
    kind = rng.choice(["suffix", "exp", "int", "dec"])
    if kind == "suffix":
        suf = rng.choice([s for s in MULT if s])
        num = rng.choice(["7", "1.5", ".5", "200", "30", "2.", "0.8"])
        if suf in "tT":
            num = rng.choice(["1", ".002", "0.01"])
        return num + suf, float(num) * MULT[suf]
    if kind == "exp":
        m, e = rng.choice(["1", "2.5", "7"]), rng.randint(6, 10)
        s = f"{m}{rng.choice('eE')}{rng.choice(['', '+'])}{e}"
        return s, float(s)
    if kind == "int":
        v = rng.choice([30000000, 200000000, 1500000000, 123456789])
        return str(v), float(v)
    s = rng.choice(["200000000.0", "5e7", "+3e8"])
    return s, float(s)


def spell_tokens(rng, n):
    if rng.random() < 0.5:
        r = rng.choice(["20", "100", "1e3", ".5", "24.5", "1E2", "50"])
        x = rng.choice(["x", "X"])
        return r + x, float(r) * n
    s, v = spell_count(rng)
    return s, v


def close(a, b, tol=1e-9):
    return a == b or abs(a - b) <= tol * max(abs(a), abs(b))


def pareto_own(rows):
    out = {}
    for r in rows:
        dom = any((o["bits_per_param"] <= r["bits_per_param"] and o["_rho"] >= r["_rho"]
                   and (o["bits_per_param"] < r["bits_per_param"] or o["_rho"] > r["_rho"])) for o in rows if o is not r)
        out[r["name"]] = not dom
    return out


def run(args, columns):
    env = dict(ENV, COLUMNS=str(columns))
    p = subprocess.run(["nice", "-n", "10", PY, "-m", "gmse_cli", *args], env=env, capture_output=True, text=True)
    return p.returncode, p.stdout, p.stderr


faults = []


def fault(msg):
    faults.append(msg)
    print("FAULT", msg, flush=True)


def check_rows(args, rows, fmts, act, lawname, n, dtok, cmd):
    for r in rows:
        base = r["name"]
        fmt = base[2:].split(" A:")[0] if base.startswith("W:") else base
        if fmt not in FORMATS:
            fault(f"{args}: unknown row {base}")
            continue
        mine = own(fmt, act, lawname, n, dtok)
        r["_rho"] = mine["rho"]
        for k, v in mine.items():
            # loss - dense cancels: compare it to ~1e-9 of the loss, not of the (tiny) difference
            slack = abs(mine["predicted_loss"]) * 1e-12 if k == "delta_loss_vs_bf16" else 0.0
            if r.get(k) is None or not (close(r[k], v) or abs(r[k] - v) <= slack):
                fault(f"{args}: {base} {k} {r.get(k)} vs own {v}")
        if not close(r["params"], n) or not close(r["tokens"], dtok):
            fault(f"{args}: {base} params/tokens {r['params']} {r['tokens']} vs {n} {dtok}")
        mem = mine["params_to_match"] * r["bits_per_param"] / 8
        if not close(r["memory_to_match_bytes"], mem):
            fault(f"{args}: {base} memory {r['memory_to_match_bytes']} vs {mem}")
        for q, lo, hi in (("rho", "rho_low", "rho_high"), ("predicted_loss", "loss_low", "loss_high"),
                          ("delta_loss_vs_bf16", "delta_loss_low", "delta_loss_high"), ("gmse", "gmse_low", "gmse_high")):
            if r[lo] is not None and r[hi] is not None and not (r[lo] <= r[q] <= r[hi]):
                fault(f"{args}: {base} interval {lo} {r[lo]} {q} {r[q]} {hi} {r[hi]}")
        if cmd == "predict":
            for s in r["stages"]:
                if not (s["gmse_low"] <= s["gmse"] <= s["gmse_high"] and s["rho_low"] <= s["rho"] <= s["rho_high"]):
                    fault(f"{args}: stage interval {s}")


def main(count, seed):
    rng = random.Random(seed)
    rank_keys, predict_keys = set(), set()
    for i in range(count):
        cmd = rng.choice(["rank", "rank", "predict"])
        lawname = rng.choice(LAWS)
        ps, n = spell_count(rng)
        while n < 1e6:
            ps, n = spell_count(rng)
        args = [cmd]
        if cmd == "rank":
            fmts = rng.sample(sorted(FORMATS), rng.randint(1, 7))
            args += fmts
        else:
            fmts = [rng.choice(sorted(FORMATS))]
            args += fmts
        args += ["--params", ps] if rng.random() < 0.9 else []
        if "--params" not in args:
            n = 200e6
        if rng.random() < 0.85:
            ts, dtok = spell_tokens(rng, n)
            args += ["--tokens", ts]
        else:
            dtok = 100 * n
        act = rng.choice(ACTS) if rng.random() < 0.4 else None
        if act:
            args += ["--act", act]
        if lawname != "paper-llama-c4" or rng.random() < 0.3:
            args += ["--law", lawname]
        args += ["--draws", str(rng.choice([20, 50, 200]))]
        if cmd == "rank":
            if rng.random() < 0.5:
                args += ["--sort", rng.choice(["rho", "bits_per_param", "predicted_loss", "memory_to_match_bytes",
                                               "effective_params", "name", "gmse"])]
            if rng.random() < 0.3:
                args += ["--reverse"]
            if rng.random() < 0.3:
                fam = rng.choice(["quantization", "sparsity", "vq"])
                args += ["--family", fam]
            if rng.random() < 0.2:
                args += ["--wide"]
        mode = rng.choice(["json", "json", "csv", "table"])
        if mode != "table":
            args += [f"--{mode}"]
        cols = rng.randint(40, 250)
        rc, out, err = run(args, cols)
        if rc == 2 and "--family" in args and err.count("\n") == 1 and "to rank" in err:
            print(i, "ok (no row of the family)", flush=True)
            continue
        if rc != 0:
            fault(f"{args} COLUMNS={cols}: rc {rc} {err.strip()[-300:]}")
            continue
        if mode == "table":
            limit = 80 if cmd == "predict" else (10**6 if "--wide" in args else 120)
            wide = [ln for ln in out.splitlines() if len(ln) > limit and not ln.startswith("!")]
            if wide:
                fault(f"{args} COLUMNS={cols}: {len(wide)} lines over width, max {max(map(len, wide))}")
            continue
        if mode == "csv":
            jrc, jout, _ = run([a for a in args if a != "--csv"] + ["--json"], cols)
            jrows = json.loads(jout)["results"]
            crows = list(csv.DictReader(io.StringIO(out)))
            if len(crows) != len(jrows):
                fault(f"{args}: csv {len(crows)} rows vs json {len(jrows)}")
            for cr, jr in zip(crows, jrows, strict=False):
                for k, v in cr.items():
                    if k not in jr:
                        fault(f"{args}: csv column {k} not a json key")
                        continue
                    jv = jr[k]
                    if isinstance(jv, float):
                        if v in ("", "null") or not close(float(v), jv):
                            fault(f"{args}: csv {k} {v} vs json {jv}")
            continue
        doc = json.loads(out)
        try:
            jsonschema.validate(doc, SCHEMA)
        except jsonschema.ValidationError as e:
            fault(f"{args}: schema {e.message[:200]}")
        rows = doc["results"]
        check_rows(args, rows, fmts, act, lawname, n, dtok, cmd)
        if cmd == "rank":
            rank_keys |= set().union(*(r.keys() for r in rows)) if rows else set()
            fam = args[args.index("--family") + 1] if "--family" in args else None
            exp = [f for f in fmts if fam is None or any(s[1] == fam for s in FORMATS[f])]
            if sorted({r["name"] for r in rows}) != sorted({(f"W:{f} A:{act}" if act else f) for f in exp}):
                fault(f"{args}: rows {[r['name'] for r in rows]} vs expected {exp}")
            if all("_rho" in r for r in rows):
                par = pareto_own(rows)
                for r in rows:
                    if r["pareto"] != par[r["name"]]:
                        fault(f"{args}: pareto {r['name']} {r['pareto']} vs own {par[r['name']]}"
                              f" (bits {r['bits_per_param']}, rho {r['rho']})")
            key = args[args.index("--sort") + 1] if "--sort" in args else "memory_to_match_bytes"
            vals = [r.get(key) for r in rows]
            desc = key in MORE_IS_BETTER
            if "--reverse" in args:
                desc = not desc
            if all(v is not None for v in vals) and vals != sorted(vals, reverse=desc):
                fault(f"{args}: not sorted by {key} ({'desc' if desc else 'asc'}): {vals}")
        else:
            predict_keys |= set(rows[0].keys())
        print(i, "ok", " ".join(args), f"COLUMNS={cols}", flush=True)
    missing = rank_keys - predict_keys - {"pareto", "_rho"}
    print("rank keys not in predict:", sorted(missing))
    print("predict keys not in rank:", sorted(predict_keys - rank_keys))
    bad = ["7 B", "-1B", "1e400", "0x", "\u0667B", "\u0663\u0660\u0660M", "1_000", "7BB", "nan", "inf", "20 x", "1e3 k",
           "", " ", "0", "-20x", "1e400x", "B", "x", "7B x", "0.5", "\uff17B"]
    for v in bad:
        for opt in ("--params", "--tokens"):
            for cmd in (["rank", "int4"], ["predict", "int4"]):
                rc, out, err = run([*cmd, opt, v, "--draws", "20", "--json"], 100)
                lines = err.strip("\n").split("\n")
                if rc != 2 or len(lines) != 1 or (v.strip() and v.strip() not in err) or out:
                    fault(f"bad {cmd[0]} {opt} {v!r}: rc {rc} stderr {err.strip()[:200]!r}")
    print("FAULTS", len(faults))


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="Generated rank/predict invocations checked against an "
                                     "independent implementation of the law.")
    parser.add_argument("count", type=int, metavar="N", help="invocations to generate")
    parser.add_argument("seed", type=int, metavar="SEED", help="generator seed")
    args = parser.parse_args()
    main(args.count, args.seed)
