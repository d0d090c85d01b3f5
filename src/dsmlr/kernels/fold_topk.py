"""Compiled scoring of held-out rows against one class block, folded into a running
top-k (the arrays of :class:`dsmlr.scoring.BlockScores`).

The training engines score the held-out rows every epoch while the blocks travel round
the ring.  :func:`dsmlr.scoring.score_local_blocks` does it with a sparse product and
array operations on chunks of rows; this numba version does it row by row, without
temporary arrays, and without holding the GIL, so the in-process engine's worker threads
score their rows at the same time.  Same results: scores summed in float64, each row's
normaliser by a streaming log-sum-exp, the true-class score, and the top k with equal
scores ranking the lower class first and NaN scores ranking as ``-inf``.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from dsmlr.kernels.fast_exp import fast_exp
from dsmlr.kernels.numba_loops import _row_scores_csr, _row_scores_dense

__all__ = ["fold_block"]

#: Sort key of an unfilled slot (class -1): after every real class on equal scores.
_NO_CLASS = np.iinfo(np.int64).max


@njit(nogil=True, cache=True, inline="always")
def _fold_row(s, r, k0, y, top_c, top_s, log_norm, true_score):
    """Fold one row's block scores ``s`` into row ``r`` of the running state."""
    width = s.shape[0]
    if true_score.shape[0] > 0:
        local = y[r] - k0
        if 0 <= local < width:
            true_score[r] = s[local]
    # Streaming log-sum-exp: a NaN score makes the normaliser NaN, -inf scores add 0.
    top = -np.inf
    has_nan = False
    for k in range(width):
        if s[k] != s[k]:
            has_nan = True
        elif s[k] > top:
            top = s[k]
    if has_nan:
        block_lse = np.nan
    elif top == -np.inf or top == np.inf:
        block_lse = top
    else:
        total = 0.0
        for k in range(width):
            total += fast_exp(s[k] - top)
        block_lse = top + math.log(total)
    cur = log_norm[r]
    if cur != cur or block_lse != block_lse:
        log_norm[r] = np.nan
    elif cur == -np.inf:
        log_norm[r] = block_lse
    elif block_lse != -np.inf:
        hi = max(cur, block_lse)
        if hi == np.inf:
            log_norm[r] = np.inf
        else:
            log_norm[r] = hi + math.log(math.exp(cur - hi) + math.exp(block_lse - hi))
    # Bounded insertion into the sorted top k (score descending, then class ascending).
    k_top = top_c.shape[1]
    for k in range(width):
        v = s[k]
        if v != v:
            v = -np.inf
        c = k0 + k
        last = top_c[r, k_top - 1]
        last_key = _NO_CLASS if last < 0 else last
        if not (v > top_s[r, k_top - 1] or (v == top_s[r, k_top - 1] and c < last_key)):
            continue
        pos = k_top - 1
        while pos > 0:
            prev = top_c[r, pos - 1]
            prev_key = _NO_CLASS if prev < 0 else prev
            if v > top_s[r, pos - 1] or (v == top_s[r, pos - 1] and c < prev_key):
                top_c[r, pos] = top_c[r, pos - 1]
                top_s[r, pos] = top_s[r, pos - 1]
                pos -= 1
            else:
                break
        top_c[r, pos] = c
        top_s[r, pos] = v


@njit(nogil=True, cache=True)
def _fold_csr(indptr, indices, data, W, fit_intercept, k0, y, top_c, top_s, log_norm,
              true_score):  # fmt: skip
    s = np.empty(W.shape[1], dtype=np.float64)
    for r in range(len(indptr) - 1):
        _row_scores_csr(indptr, indices, data, r, W, fit_intercept, s)
        _fold_row(s, r, k0, y, top_c, top_s, log_norm, true_score)


@njit(nogil=True, cache=True)
def _fold_dense(X, W, fit_intercept, k0, y, top_c, top_s, log_norm, true_score):
    s = np.empty(W.shape[1], dtype=np.float64)
    for r in range(X.shape[0]):
        _row_scores_dense(X, r, W, fit_intercept, s)
        _fold_row(s, r, k0, y, top_c, top_s, log_norm, true_score)


def fold_block(
    X,
    W: np.ndarray,
    k0: int,
    fit_intercept: bool,
    y,
    top_classes: np.ndarray,
    top_scores: np.ndarray,
    log_norm: np.ndarray,
    true_score: np.ndarray | None = None,
) -> None:
    """Score rows ``X`` against the host block ``W`` (classes ``k0..``) into the running
    top-k state (the last four arrays, updated in place).

    Parameters
    ----------
    X : csr_matrix or ndarray of shape (n, D)
        The rows (CSR with sorted indices, or C-contiguous dense).
    W : ndarray of shape (D + fit_intercept, K_q)
        A feature-major block (:mod:`dsmlr.objective`).
    k0 : int
        The block's first class.
    fit_intercept : bool
        Whether the last row of ``W`` is the intercept.
    y : ndarray of int64, shape (n,), or None
        Class indices (-1 for unknown) to record the true-class score.
    top_classes, top_scores : ndarray of shape (n, k)
        Each row's best classes so far (-1 for an empty slot) and their scores,
        sorted by score descending, then class ascending.
    log_norm : ndarray of shape (n,)
        Each row's log-sum-exp of the scores so far (``-inf`` before any block).
    true_score : ndarray of shape (n,) or None
        Each row's true-class score (filled where ``y`` names a class of this block).
    """
    if W.shape[1] == 0 or X.shape[0] == 0:
        return
    with_truth = y is not None and true_score is not None
    y_arr = np.asarray(y, dtype=np.int64) if with_truth else np.zeros(0, np.int64)
    truth_arr = true_score if with_truth else np.zeros(0)
    out = (k0, y_arr, top_classes, top_scores, log_norm, truth_arr)
    if hasattr(X, "indptr"):
        _fold_csr(X.indptr, X.indices, X.data, W, fit_intercept, *out)
    else:
        _fold_dense(np.ascontiguousarray(X), W, fit_intercept, *out)
