"""A training checkpoint whose state.json holds a CPU RNG state of the wrong size is the
documented one error ("checkpoint ... is unreadable"), not a RuntimeError traceback from torch."""

from __future__ import annotations

import json

import conftest
import pytest

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("rng", [[1, 2, 3], [7]])
def test_a_checkpoint_rng_state_of_the_wrong_size_is_unreadable(tmp_path, rng):
    from gmse_cli.errors import DataError
    from gmse_cli.training.checkpoint import load_checkpoint

    folder = conftest.tiny_checkpoint(tmp_path)
    payload = json.loads((folder / "state.json").read_text())
    assert len(payload["rng_cpu"]) > len(rng)  # torch's CPU generator state is thousands of bytes
    before = torch.get_rng_state()
    (folder / "state.json").write_text(json.dumps(payload | {"rng_cpu": rng}))
    with pytest.raises(DataError, match="is unreadable"):
        load_checkpoint(folder)
    assert torch.equal(torch.get_rng_state(), before)
