"""The scoring stage: every block scores every rank's rows.

It gives the exact objective and accuracy (training rows; held-out rows with their
top-k accuracy) and refreshes every row's normaliser ``b_i`` in closed form from the
per-block partial normalisers it collects.  The synchronous engine runs it as a ring
(:func:`scoring_ring`, also how a start from given weights makes ``b`` exact); the
asynchronous engine sends each block to every rank as a token
(:meth:`dsmlr.engines.epochs.Epoch.score`).
"""

from __future__ import annotations

import time

import numpy as np
from scipy.special import logsumexp

from dsmlr.engines.ring import Block, Ring
from dsmlr.kernels import Kernel, LocalRows
from dsmlr.objective import l2_penalty
from dsmlr.scoring import BlockScores, summarise

#: Top-k accuracy reported on a held-out set each epoch.
TEST_TOP_K = 5

__all__ = ["HeldOutScorer", "Scorer", "initial_partials", "score_block", "scoring_ring"]


def initial_partials(n_rows: int, blocks: list[tuple[int, int]]) -> np.ndarray:
    """Partials at W = 0: ``log |K_q|`` (``-inf`` for an empty block)."""
    sizes = np.array([hi - lo for lo, hi in blocks], dtype=np.float64)
    with np.errstate(divide="ignore"):
        row = np.log(sizes)
    return np.tile(row, (n_rows, 1))


class Scorer:
    """Accumulates one scoring ring's statistics for one set of rows."""

    def __init__(self, rows: LocalRows, n_blocks: int):
        n = rows.n_rows
        self.rows = rows
        self.partials = np.empty((n, n_blocks))
        self.true_score = np.zeros(n)
        self.best_score = np.full(n, -np.inf)
        self.best_class = np.full(n, -1, dtype=np.int64)

    def visit(self, kernel: Kernel, W_block: np.ndarray, k0: int, q: int) -> None:
        kernel.score_pass(
            self.rows, W_block, k0, self.partials, q, self.true_score, self.best_score,
            self.best_class,
        )  # fmt: skip

    def sums(self) -> tuple[np.ndarray, float, float]:
        """Log-partition per row, summed (weighted) log-loss, number correct."""
        lse = logsumexp(self.partials, axis=1) if self.rows.n_rows else np.zeros(0)
        row_loss = lse - self.true_score
        if self.rows.weighted:
            row_loss *= self.rows.weight
        loss = float(np.sum(row_loss))
        correct = float(np.sum(self.best_class == self.rows.y))
        return lse, loss, correct


class HeldOutScorer:
    """Held-out rows: the scoring module's streaming top-k (compiled, in
    :mod:`dsmlr.kernels.fold_topk`), so top-5 accuracy comes with the loss and accuracy
    from the same pass; labels unseen in training are -1."""

    def __init__(self, rows: LocalRows, n_classes: int):
        self.rows = rows
        k = max(1, min(TEST_TOP_K, n_classes))
        self.state = BlockScores.empty(rows.n_rows, k, with_truth=True)
        from dsmlr.kernels.fold_topk import fold_block  # numba: compiled on first use

        self._fold = fold_block

    def visit(self, kernel: Kernel, W_block: np.ndarray, k0: int, q: int) -> None:
        # The streaming top-k runs on the host, compiled and without the GIL (worker
        # threads score at the same time): a device block is copied once per scoring
        # ring, beside a pass that costs as much as a training epoch's.
        st = self.state
        self._fold(self.rows.X, kernel.to_host(W_block), k0, self.rows.fit_intercept,
                   self.rows.y, st.top_classes, st.top_scores, st.log_norm,
                   st.true_score)  # fmt: skip

    def sums(self) -> np.ndarray:
        """Summed log-loss, correct, correct in the top k, rows with a known label."""
        return np.array(summarise(self.state, self.rows.y, self.state.k), dtype=np.float64)


def score_block(kernel: Kernel, scorers: list, blk: Block, cfg, home: bool) -> float:
    """Score ``blk`` against this rank's rows into each scorer; return the block's
    penalty where this rank counts it (``home``: each block on exactly one rank)."""
    for scorer in scorers:
        scorer.visit(kernel, blk.W, blk.k0, blk.q)
    if not home:
        return 0.0
    return l2_penalty(cfg.lam, float(kernel.squared_norm(blk.W[: cfg.n_features])))


def scoring_ring(
    ring: Ring,
    kernel: Kernel,
    scorers: list,
    cfg,
    carry,
    reverse: bool = False,
    n_shifts: int | None = None,
) -> float:
    """Score every set of rows against every block; return this rank's penalty share.

    ``reverse`` and ``n_shifts`` as for :meth:`Ring.travel`.  Its wall time, the shifts'
    waits included, goes to ``ring.clock.eval``.
    """
    clock, t0, penalty = ring.clock, time.perf_counter(), 0.0

    def visit(blk: Block, r: int) -> None:
        nonlocal penalty
        # A straggler is slow here too; a block is in exactly one rank's round-0 group.
        penalty += clock.stretched(score_block, kernel, scorers, blk, cfg, r == 0)
        ring.visited()

    ring.travel(("W", *carry), visit, reverse, n_shifts)
    clock.eval += time.perf_counter() - t0
    return penalty
