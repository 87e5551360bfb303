"""Blockwise Hadamard rotation: orthonormality, exact inverse, dense reference, norms.

The independent reference is the Sylvester recursion H_2k = [[H_k, H_k], [H_k, -H_k]] built in
this file with np.kron (the module's own reference path uses scipy.linalg.hadamard).
"""

from __future__ import annotations

import numpy as np
import pytest

from gmse_cli.compress import rotate
from gmse_cli.errors import DataError, SpecError
from gmse_cli.spec import Rotate

F32 = np.finfo(np.float32).eps


def _sylvester(n: int) -> np.ndarray:
    h = np.ones((1, 1))
    while h.shape[0] < n:
        h = np.kron(np.array([[1.0, 1.0], [1.0, -1.0]]), h)
    return h / np.sqrt(n)


def _gaussian(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, cols), dtype=np.float32)


@pytest.mark.parametrize("block", [2, 8, 128, 1024])
@pytest.mark.parametrize("reference", [False, True])
def test_matrix_is_sylvester_and_orthonormal(block, reference):
    # Rows of the identity map to rows of the (symmetric) transform matrix.
    h = rotate.hadamard(np.eye(block, dtype=np.float32), Rotate(block=block), inverse=False, reference=reference)
    np.testing.assert_allclose(h, _sylvester(block), atol=4 * F32)
    gram = h.astype(np.float64) @ h.T.astype(np.float64)
    np.testing.assert_allclose(gram, np.eye(block), atol=8 * F32 * np.log2(block))


@pytest.mark.parametrize(
    "stage", [Rotate(block=4), Rotate(block=128), Rotate(block=256, random_signs=True, seed=7)], ids=str
)
def test_fast_equals_dense_and_inverse_is_exact(stage):
    x = _gaussian(16, 1024, seed=1)
    fast = rotate.hadamard(x, stage, inverse=False)
    dense = rotate.hadamard(x, stage, inverse=False, reference=True)
    # log2(block) float32 butterfly stages, each rounding once
    tol = 2 * F32 * np.log2(stage.block) * np.abs(x).max() * np.sqrt(stage.block)
    np.testing.assert_allclose(fast, dense, atol=tol)
    back = rotate.hadamard(fast, stage, inverse=True)
    np.testing.assert_allclose(back, x, atol=2 * tol)
    np.testing.assert_allclose(rotate.hadamard(dense, stage, inverse=True, reference=True), x, atol=1e-6)


def test_preserves_norms_per_block():
    stage = Rotate(block=64, random_signs=True, seed=3)
    x = _gaussian(8, 512, seed=2)
    y = rotate.hadamard(x, stage, inverse=False)
    nx = (x.astype(np.float64).reshape(8, -1, 64) ** 2).sum(-1)
    ny = (y.astype(np.float64).reshape(8, -1, 64) ** 2).sum(-1)
    np.testing.assert_allclose(ny, nx, rtol=20 * F32)


def test_random_signs_are_seeded_and_applied_before_the_transform():
    a, b, c = Rotate(block=32, random_signs=True, seed=1), Rotate(block=32, random_signs=True, seed=1), Rotate(block=32, random_signs=True, seed=2)
    np.testing.assert_array_equal(rotate.signs(a), rotate.signs(b))
    assert not np.array_equal(rotate.signs(a), rotate.signs(c))
    assert set(np.unique(rotate.signs(a))) <= {-1.0, 1.0}
    expected = np.random.default_rng(1).integers(0, 2, size=32)
    np.testing.assert_array_equal(rotate.signs(a), 1 - 2 * expected)
    x = _gaussian(2, 64, seed=4)
    d = np.tile(rotate.signs(a), 2)
    h = _sylvester(32)
    want = ((x * d).astype(np.float64).reshape(2, 2, 32) @ h).reshape(2, 64)
    np.testing.assert_allclose(rotate.hadamard(x, a, inverse=False), want, atol=1e-5)
    np.testing.assert_array_equal(rotate.signs(Rotate(block=32)), np.ones(32, dtype=np.float32))


def test_bad_input_is_a_clean_error():
    with pytest.raises(SpecError, match="does not divide"):
        rotate.hadamard(np.zeros((2, 96), dtype=np.float32), Rotate(block=64), inverse=False)
    with pytest.raises(DataError, match="2-D"):
        rotate.hadamard(np.zeros(64, dtype=np.float32), Rotate(block=64), inverse=False)


@pytest.mark.parametrize("stage", [Rotate(block=128), Rotate(block=64, random_signs=True, seed=5)])
def test_huge_finite_rows_rotate_without_overflow(stage):
    # The butterflies sum a whole block before scaling: 1e37 * 128 passes float32's max midway,
    # though every rotated value (at most the block's norm, ~1e38) fits.
    x = (np.random.default_rng(0).standard_normal((4, 256)) * 1e37).astype(np.float32)
    y = rotate.hadamard(x, stage, inverse=False)
    dense = rotate.hadamard(x, stage, inverse=False, reference=True)
    assert np.isfinite(y).all()
    np.testing.assert_allclose(y, dense, rtol=0, atol=1e-6 * np.abs(dense).max())
    back = rotate.hadamard(y, stage, inverse=True)
    np.testing.assert_allclose(back, x, rtol=0, atol=1e-6 * np.abs(x).max())
