"""Benchmark: peak memory of `uscl mse --activations` on a model of a few hundred MB (issue 16).

Issue 16 asks that measuring activations keep memory bounded: the model, plus what one forward
batch costs, never the activations of the whole text. This writes a synthetic Llama-like
Hugging Face folder (default ~300 MB of float32 safetensors: hidden 768, MLP 2048, 9 blocks,
a byte-level BPE of 8192 tokens trained on the text and kept as its tokenizer.json) into a
temporary folder, then runs `uscl mse FOLDER --activations --data TEXT --format int4 --format
had128+int4 --json` in a fresh process per setting and reports each run's peak resident memory
(the child's own ``ru_maxrss`` from ``wait4``).

Settings: the default (4096 tokens, batches of 4 windows of 512), four times the tokens (the
peak must not grow: nothing is kept per token but a few floats per row and layer), batches of
1 and 8 windows (the forward pass's own temporaries scale with the batch), and ``--sample 0.1``. Each is compared with a *baseline*: the same command on a tiny
model (2 blocks of width 128) that pays the same imports (torch, transformers, numba) and GMSE
estimates; ``peak - baseline`` is what the model and its activations cost. The weights are
random (a Llama initialization), so the numbers measure memory and time, not real outliers.

Measured on 2 shared CPU cores (291 MB model, int4 and had128+int4, `--device cpu`): peak
1307 MB at 4096 tokens and 1396 MB at 16384 tokens (batch 4; baseline 796 MB), 1255 MB with
``--sample 0.1``: the model, the forward pass's temporaries and a few floats per token row and
layer, not the activations.

Run: python benchmarks/activations_memory.py [--dir /tmp] [--data TEXT] [--layers 9] [--settings 0 1]
"""

from __future__ import annotations

import argparse
import json
import lzma
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 2**20
DEFAULT_DATA = REPO.parent / "shared" / "data" / "python-docs-3.11.txt.xz"


def write_text(source: Path, out: Path, chars: int = 2_000_000) -> Path:
    """The first ``chars`` characters of ``source`` (plain or .xz) as a plain text file."""
    opener = lzma.open if source.suffix == ".xz" else open
    with opener(source, "rt", encoding="utf-8") as handle:
        out.write_text(handle.read(chars), encoding="utf-8")
    return out


def write_model(folder: Path, text: Path, *, hidden: int, mlp: int, layers: int, vocab: int) -> int:
    """A randomly initialized LlamaForCausalLM folder with a BPE tokenizer trained on ``text``;
    returns the bytes of its safetensors."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from gmse_cli.training.data import train_bpe

    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=mlp, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 64),
                         max_position_embeddings=512, tie_word_embeddings=False)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer = train_bpe([text.read_text(encoding="utf-8")], vocab_size=vocab)
    (folder / "tokenizer.json").write_text(tokenizer.to_str(), encoding="utf-8")
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def run(model: Path, data: Path, extra: list[str]) -> dict:
    """One `uscl mse --activations --json` in a fresh process: its peak RSS, wall time, result."""
    cmd = [sys.executable, "-m", "gmse_cli", "mse", str(model), "--activations", "--data", str(data),
           "--format", "int4", "--format", "had128+int4", "--device", "cpu", "--json", *extra]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=REPO)
        # wait4 gives this child's own rusage (RUSAGE_CHILDREN is the max over all children)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd)} failed: {err.read().decode()[-2000:]}")
        out.seek(0)
        report = json.loads(out.read())
    return {"peak": usage.ru_maxrss * 1024, "wall": wall, "tokens": report["tokens"],
            "mse": {f["name"]: f["mse"] for f in report["results"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()), help="where to write the models")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="text to run on (plain or .xz)")
    parser.add_argument("--layers", type=int, default=9, help="decoder blocks of the big model (9: ~300 MB)")
    parser.add_argument("--settings", type=int, nargs="+", default=None, metavar="I",
                        help="run only these settings (0-based indices into the list above; default: all)")
    args = parser.parse_args()

    settings = [
        ("4096 tokens, batch 4", ["--tokens", "4096"]),
        ("16384 tokens, batch 4", ["--tokens", "16384"]),
        ("4096 tokens, batch 1", ["--tokens", "4096", "--batch-size", "1"]),
        ("4096 tokens, batch 8", ["--tokens", "4096", "--batch-size", "8"]),
        ("4096 tokens, --sample 0.1", ["--tokens", "4096", "--sample", "0.1"]),
    ]
    if args.settings is not None:
        if not all(0 <= i < len(settings) for i in args.settings):
            parser.error(f"--settings takes indices 0 to {len(settings) - 1}")
        settings = [settings[i] for i in args.settings]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="uscl-act-memory-") as tmp:
        root = Path(tmp)
        text = write_text(args.data, root / "text.txt")
        size = write_model(root / "big", text, hidden=768, mlp=2048, layers=args.layers, vocab=8192)
        write_model(root / "tiny", text, hidden=128, mlp=384, layers=2, vocab=8192)
        print(f"model: {size / MB:.0f} MB of float32 safetensors ({args.layers} blocks, hidden 768, MLP 2048)")
        rows = []
        for label, extra in settings:
            base = run(root / "tiny", text, extra)
            big = run(root / "big", text, extra)
            rows.append((label, big, base))
            print(f"  {label:<26} peak {big['peak'] / MB:6.0f} MB (baseline {base['peak'] / MB:4.0f})  "
                  f"wall {big['wall']:6.1f} s", flush=True)
    print()
    head = f"{'setting':<26} {'peak MB':>8} {'-base MB':>8} {'peak/model':>10} {'wall s':>7} {'tokens':>7}"
    print(head)
    print("-" * len(head))
    for label, big, base in rows:
        print(f"{label:<26} {big['peak'] / MB:>8.0f} {(big['peak'] - base['peak']) / MB:>8.0f} "
              f"{big['peak'] / size:>10.2f} {big['wall']:>7.1f} {big['tokens']:>7}")
    print("\npeak: the child's maximum resident set; -base: above the same command on a 2-block "
          "model of width 128 (same imports, numba kernels and GMSE estimates).")


if __name__ == "__main__":
    main()
