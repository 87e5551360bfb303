"""`uscl search --checkpoint` holds the sampled rows once.

The evaluator keeps rows_per_layer rows of every layer in float32 (1.1 GB for a 7B Llama at the
default 256). It used to copy them all again into per-row-length stacks for the final value
and compress each stack whole (a second and third copy: 3.4 GB at the peak for that 7B); now
each layer's rows are a view of its stack and a row-local format is compressed a chunk at a time.
"""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from gmse_cli.compress import compress
from gmse_cli.realmse import measure_layers, open_checkpoint, row_errors, select_layers
from gmse_cli.search.evaluate import CheckpointEvaluator
from gmse_cli.spec import parse_shorthand

ROWS = 256


@pytest.fixture
def layers(tmp_path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(5)
    shapes = {**{f"model.layers.{i}.mlp.up_proj.weight": (ROWS, 2048) for i in range(4)},
              **{f"model.layers.{i}.self_attn.o_proj.weight": (ROWS, 1024) for i in range(2)}}
    tensors = {name: (rng.standard_t(5, size=shape) * 0.02).astype(np.float32) for name, shape in shapes.items()}
    save_file(tensors, str(tmp_path / "w.safetensors"))
    return select_layers(open_checkpoint(tmp_path / "w.safetensors"))


def test_final_value_copies_no_sampled_rows(layers, monkeypatch):
    monkeypatch.setattr(CheckpointEvaluator, "chunk_bytes", 256 * 1024, raising=False)
    fmt = parse_shorthand("int4")
    evaluator = CheckpointEvaluator(layers, rows_per_layer=ROWS, seed=0)
    held = sum(x.nbytes for x, _, _ in evaluator.data)
    few = evaluator.data[0][0][:4]
    row_errors(few, compress(fmt, few))  # compile the kernels first: numba's compiler allocates
    tracemalloc.start()
    try:
        value, _ = evaluator.final(fmt)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # A copy of the rows, or their compression in one piece, would each be `held` bytes.
    assert peak < held / 4, (peak, held)
    # Every row of every layer was sampled: the value is `uscl mse`'s overall MSE, measured
    # by its own streaming code.
    (tally,) = measure_layers(layers, [fmt])
    assert math.isclose(value, tally.combined()[0], rel_tol=1e-12)
