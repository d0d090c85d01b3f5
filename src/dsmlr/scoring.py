"""Prediction on a model split into class blocks, without an N x K score matrix.

Rows are scored a block at a time (and a chunk of rows at a time, so the scores held at
once fit a memory budget); a running top-k and a running log-sum-exp are merged block by
block.  :func:`ring_scores` does the same when the blocks live on different ranks: they
travel round the ring, as in training, and no rank ever holds the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BlockScores", "ring_scores", "score_blocks", "summarise"]

#: Bytes of block scores held at once (a chunk of rows times one block's classes).
MEMORY_BYTES = 256 * 2**20


@dataclass
class BlockScores:
    """Per-row results of scoring against every class.

    Attributes
    ----------
    top_classes : ndarray of int64, shape (n, k)
        Class indices, best first; equal scores rank the lower class first.
    top_scores : ndarray of float64, shape (n, k)
    log_norm : ndarray of float64, shape (n,)
        ``log sum_k exp(score_k)`` over all classes.
    true_score : ndarray of float64, shape (n,), or None
        Score of each row's own class (``-inf`` where the label is unknown, -1).
    """

    top_classes: np.ndarray
    top_scores: np.ndarray
    log_norm: np.ndarray
    true_score: np.ndarray | None = None

    @property
    def top_proba(self) -> np.ndarray:
        """Probabilities of the top classes."""
        return np.exp(self.top_scores - self.log_norm[:, None])


class _Accumulator:
    """Running top-k, max and rescaled exp-sum for a set of rows."""

    def __init__(self, n: int, k: int, with_truth: bool):
        self.top_classes = np.full((n, k), -1, dtype=np.int64)
        self.top_scores = np.full((n, k), -np.inf)
        self.max = np.full(n, -np.inf)
        self.sumexp = np.zeros(n)
        self.true_score = np.full(n, -np.inf) if with_truth else None

    def merge(self, rows: slice, S: np.ndarray, k0: int, y: np.ndarray | None) -> None:
        """Fold the scores ``S`` (rows x block classes, classes from ``k0``) in."""
        if S.shape[1] == 0:
            return
        new_max = np.maximum(self.max[rows], S.max(axis=1))
        rescale = np.exp(self.max[rows] - new_max)
        self.sumexp[rows] = self.sumexp[rows] * rescale + np.exp(S - new_max[:, None]).sum(axis=1)
        self.max[rows] = new_max
        if self.true_score is not None and y is not None:
            local = y - k0
            idx = np.flatnonzero((local >= 0) & (local < S.shape[1]))
            self.true_score[rows][idx] = S[idx, local[idx]]  # a slice: a view, written through
        classes = np.broadcast_to(np.arange(k0, k0 + S.shape[1]), S.shape)
        cand_s = np.hstack([self.top_scores[rows], S])
        cand_c = np.hstack([self.top_classes[rows], classes])
        # Best first; among equal scores the lower class index: sort stably by class,
        # then stably by score.  Unfilled slots (class -1) score -inf, so they sort last.
        by_class = np.argsort(cand_c, axis=1, kind="stable")
        cand_s = np.take_along_axis(cand_s, by_class, axis=1)
        cand_c = np.take_along_axis(cand_c, by_class, axis=1)
        k = self.top_scores.shape[1]
        best = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        self.top_scores[rows] = np.take_along_axis(cand_s, best, axis=1)
        self.top_classes[rows] = np.take_along_axis(cand_c, best, axis=1)

    def result(self) -> BlockScores:
        with np.errstate(divide="ignore"):
            log_norm = self.max + np.log(self.sumexp)
        return BlockScores(self.top_classes, self.top_scores, log_norm, self.true_score)


def _block_scores(X, W_block: np.ndarray, fit_intercept: bool) -> np.ndarray:
    n_features = X.shape[1]
    S = np.asarray(X @ W_block[:n_features], dtype=np.float64)
    if fit_intercept:
        S = S + W_block[n_features]
    return S


def _fold(acc: _Accumulator, X, blocks, fit_intercept: bool, y, memory_bytes: int) -> None:
    n = X.shape[0]
    widest = max((W.shape[1] for _, W in blocks), default=0)
    chunk = max(1, memory_bytes // max(8 * widest, 1))
    for (k0, _), W in blocks:
        for start in range(0, n, chunk):
            rows = slice(start, min(start + chunk, n))
            S = _block_scores(X[rows], W, fit_intercept)
            acc.merge(rows, S, k0, None if y is None else y[rows])


def score_blocks(
    X,
    blocks: list[tuple[tuple[int, int], np.ndarray]],
    *,
    fit_intercept: bool,
    k: int = 1,
    y: np.ndarray | None = None,
    memory_bytes: int = MEMORY_BYTES,
) -> BlockScores:
    """Score rows ``X`` against class blocks held here (feature-major ``(D_fit, K_q)``).

    ``y`` (class indices, -1 unknown) adds ``true_score``.  The blocks together must
    cover every class for ``log_norm`` to be the full normaliser.
    """
    k = max(1, min(int(k), sum(W.shape[1] for _, W in blocks)))
    acc = _Accumulator(X.shape[0], k, y is not None)
    _fold(acc, X, blocks, fit_intercept, y, memory_bytes)
    return acc.result()


def ring_scores(
    comm,
    X_local,
    blocks: list[tuple[tuple[int, int], np.ndarray]],
    *,
    n_classes: int,
    fit_intercept: bool,
    k: int = 1,
    y_local: np.ndarray | None = None,
    memory_bytes: int = MEMORY_BYTES,
) -> BlockScores:
    """Score this rank's rows against the blocks of every rank (collective).

    Each rank may hold any number of blocks.  Over ``comm.size`` rounds the ranks score
    their rows against the blocks they hold and pass them to the left neighbour with
    their class ranges; after the last round every rank holds its own blocks again.
    """
    k = max(1, min(int(k), n_classes))
    acc = _Accumulator(X_local.shape[0], k, y_local is not None)
    held = list(blocks)
    for _ in range(comm.size):
        _fold(acc, X_local, held, fit_intercept, y_local, memory_bytes)
        if comm.size == 1:
            break
        ranges = np.array([c for c, _ in held], dtype=np.int64).reshape(-1, 2)
        got = comm.ring_shift([ranges, *[W for _, W in held]])
        held = [((int(a), int(b)), W) for (a, b), W in zip(got[0], got[1:], strict=True)]
    return acc.result()


def summarise(scores: BlockScores, y: np.ndarray, k: int) -> tuple[float, float, float, float]:
    """Summed log-loss, correct top-1, correct top-``k`` and rows with a known label."""
    known = y >= 0
    loss = float(np.sum((scores.log_norm - scores.true_score)[known])) if known.any() else 0.0
    correct = float(np.sum(scores.top_classes[:, 0] == y)) if len(y) else 0.0
    top = float(np.sum(np.any(scores.top_classes[:, :k] == y[:, None], axis=1))) if len(y) else 0.0
    return loss, correct, top, float(np.sum(known))
