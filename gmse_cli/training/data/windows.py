"""Deterministic batches: training windows that depend only on (seed, batch index), so the data
position of a run is its step count and resuming is exact; fixed validation windows."""

from __future__ import annotations

import numpy as np

from gmse_cli.errors import DataError

__all__ = ["TokenWindows", "eval_windows", "model_windows"]


class TokenWindows:
    """Non-overlapping windows of ``context + 1`` tokens, shuffled per epoch by (seed, epoch).

    Sample ``i`` (counting over the whole run, all ranks) is window ``perm_e[i mod W]`` of epoch
    ``e = i // W``: a batch depends only on its index, never on what was drawn before.
    """

    def __init__(self, tokens: np.ndarray, *, context: int, seed: int) -> None:
        self.tokens = tokens
        self.context = context
        self.seed = seed
        self.windows = (len(tokens) - 1) // context
        if self.windows < 1:
            raise DataError(f"{len(tokens):,} tokens cannot fill one window of {context + 1}")
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = (epoch, rng.permutation(self.windows))
        return self._perm[1]

    def samples(self, start: int, count: int) -> np.ndarray:
        """Samples ``start .. start + count - 1`` as an int64 array (count, context + 1)."""
        out = np.empty((count, self.context + 1), dtype=np.int64)
        for row, i in enumerate(range(start, start + count)):
            epoch, j = divmod(i, self.windows)
            w = int(self._permutation(epoch)[j])
            out[row] = self.tokens[w * self.context : w * self.context + self.context + 1]
        return out


def eval_windows(tokens: np.ndarray, *, context: int, max_tokens: int) -> np.ndarray:
    """The first held-out windows covering up to ``max_tokens`` predicted tokens (fixed, in order)."""
    count = min((len(tokens) - 1) // context, max(1, max_tokens // context))
    if count < 1:
        raise DataError(f"the validation split ({len(tokens):,} tokens) is shorter than one context")
    out = np.empty((count, context + 1), dtype=np.int64)
    for row in range(count):
        out[row] = tokens[row * context : row * context + context + 1]
    return out


def model_windows(
    tokens: np.ndarray, *, context: int, prefix: tuple[int, ...] = (), suffix: tuple[int, ...] = ()
) -> np.ndarray:
    """Consecutive windows of ``context`` tokens for a forward pass, each wrapped in the
    tokenizer's special ids (``prefix`` + text + ``suffix``: BERT's [CLS] ... [SEP]).

    As many full windows as the tokens fill; one shorter window when they fill none; the
    tokens left over after the last full window are dropped. int64 ``(windows, length)``.
    """
    inner = context - len(prefix) - len(suffix)
    if inner < 1:
        raise DataError(f"context {context} leaves no room for text beside {len(prefix) + len(suffix)} special tokens")
    if len(tokens) == 0:
        raise DataError("no tokens to fill a window")
    count = max(1, len(tokens) // inner)
    inner = min(inner, len(tokens))
    body = np.asarray(tokens[: count * inner], dtype=np.int64).reshape(count, inner)
    pre = np.broadcast_to(np.asarray(prefix, dtype=np.int64), (count, len(prefix)))
    post = np.broadcast_to(np.asarray(suffix, dtype=np.int64), (count, len(suffix)))
    return np.concatenate([pre, body, post], axis=1)
