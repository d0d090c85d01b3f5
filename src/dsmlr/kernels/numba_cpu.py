"""Fast CPU kernel: numba-compiled loops over CSR or dense rows.

The kernel's passes call the loops in :mod:`dsmlr.kernels.numba_loops` (scores, plain and
AdaGrad sweeps) and :mod:`dsmlr.kernels.numba_svrg` (SVRG's sweeps and the anchor
gradient); what follows holds for all of them.

Compiled lazily on first use (one specialisation per dtype and index type, cached on
disk) and with ``nogil=True``, so the in-process engine's worker threads run them in
parallel.  Scratch memory is per mini-batch (``batch_size x K_q`` scores and a compact
gradient over the columns the mini-batch touches, in the block's dtype, so float32 blocks
compute in float32); nothing of size N x K or K x D is allocated.  Penalty decays of
untouched columns are applied lazily (see :class:`dsmlr.kernels.base.UpdateConfig`),
from a table of the decay after ``i`` idle steps computed once per pass; the one-row
sweeps carry them over from one visit of a block to the next in the block's ``lag`` and
apply what is left only in its last update visit of the epoch (``final``), so that the
sweep over every column of the block, whose cost does not shrink with a rank's rows, runs
once a block and epoch instead of once a visit.  One
exponential per score serves both a row's partial normaliser and its probabilities; it is
:func:`~dsmlr.kernels.fast_exp.fast_exp`, in the scores' type, so that the loops computing
them vectorise (the C library's ``exp`` keeps them scalar at about 5 ns an element).

Sparse rows stepped one at a time (the CPU default) take dedicated sweeps
(:func:`~dsmlr.kernels.numba_loops._update_csr_single`,
:func:`~dsmlr.kernels.numba_svrg._svrg_csr_single`) that read a touched column twice
per step instead of four times: they catch up its pending decay while scoring it and
leave the step's own decay to the next catch-up.  Their loops stay in the block's type:
a float64 scalar in a float32 loop would make LLVM widen every element to float64, which
makes these sweeps about twice as slow.

The sparse loops ask for the block row of a non-zero ahead while they work on the
current one (:mod:`dsmlr.kernels.prefetch`): a narrow block's rows are too short for the
hardware prefetcher.  The update sweeps ask two non-zeros ahead, the scoring and
gradient passes as far as :func:`~dsmlr.kernels.prefetch.prefetch_distance` says
(``benchmarks/results/prefetch*.md`` has what the hints save).
"""

from __future__ import annotations

from dataclasses import astuple

import numpy as np

from dsmlr.kernels.anchor_table import AnchorTable
from dsmlr.kernels.base import HostBlocks, LocalRows, Snapshot, UpdateConfig
from dsmlr.kernels.fast_exp import squared_sum_float64
from dsmlr.kernels.numba_loops import (
    _plain_settle,
    _score_csr,
    _score_dense,
    _update_csr,
    _update_csr_single,
    _update_dense,
)
from dsmlr.kernels.numba_svrg import (
    _grad_csr,
    _grad_dense,
    _svrg_csr,
    _svrg_csr_single,
    _svrg_dense,
    _svrg_settle,
)

__all__ = ["NumbaKernel"]

#: The table arguments of the SVRG sweeps when the anchor is held as weights.
_NO_TABLE = {
    np.dtype(t).char: (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, t), False)
    for t in (np.float32, np.float64)
}


class NumbaKernel(HostBlocks):
    """numba implementation of the kernel passes (CSR and dense, float32 and float64)."""

    name = "numba"
    carries_lag = True

    def squared_norm(self, W: np.ndarray) -> float:
        """``||W||^2`` in float64, compiled (the penalty of every block each scoring
        stage: numpy's float64 einsum of a float32 block is 2-7x slower,
        ``benchmarks/results/block_sweeps.md``)."""
        W = np.asarray(W)
        return squared_sum_float64(W if W.ndim == 2 else W.reshape(1, -1))

    def score_pass(self, rows: LocalRows, W_block, k0, partials, q, true_score, best_score,
                   best_class):  # fmt: skip
        if W_block.shape[1] == 0:
            partials[:, q] = -np.inf
            return
        args = (W_block, k0, partials, q, true_score, best_score, best_class)
        if rows.is_sparse:
            X = rows.X
            _score_csr(X.indptr, X.indices, X.data, rows.y, rows.fit_intercept, *args)
        else:
            _score_dense(rows.X, rows.y, rows.fit_intercept, *args)

    def gradient_pass(self, rows: LocalRows, W_block, k0, b, scale, out, keep=None):
        if W_block.shape[1] == 0 or rows.n_rows == 0:
            return AnchorTable.empty(rows.n_rows, W_block.dtype) if keep is not None else None
        tail = (W_block, k0, b, float(scale), out, float(keep or 0.0))
        if rows.is_sparse:
            X = rows.X
            table = _grad_csr(X.indptr, X.indices, X.data, rows.y, rows.weight,
                              rows.fit_intercept, *tail)  # fmt: skip
        else:
            table = _grad_dense(rows.X, rows.y, rows.weight, rows.fit_intercept, *tail)
        return AnchorTable(*table) if keep is not None else None

    def settle(self, W, lag, cols, config: UpdateConfig, snapshot=None) -> None:
        eta, lam, n_pen = float(config.eta), float(config.lam), int(config.n_penalized)
        cols = np.asarray(cols, dtype=np.int64)
        if snapshot is not None:
            _svrg_settle(W, snapshot.mean_grad, lag, cols, eta, lam, n_pen)
        else:
            _plain_settle(W, lag, cols, eta, lam, n_pen)

    def update_pass(self, rows: LocalRows, W_block, k0, acc, partials, q, b, order,
                    config: UpdateConfig, snapshot: Snapshot | None = None,
                    lag: np.ndarray | None = None, final: bool = True):  # fmt: skip
        """One pass of steps over ``order``; see :class:`~dsmlr.kernels.base.Kernel`.

        ``lag`` (int64, one a column): where the block's earlier passes of this stage left
        its columns behind (see :func:`~dsmlr.kernels.numba_svrg._svrg_csr_single`);
        plain and SVRG steps on single sparse rows, the CPU default, leave the untouched
        ones behind unless ``final``.  The other sweeps bring every column up to date.
        """
        if W_block.shape[1] == 0:
            partials[:, q] = -np.inf
            return
        m = int(config.batch_size)
        eta, lam, n_pen = float(config.eta), float(config.lam), int(config.n_penalized)
        # One row per step, the CPU default, has its own sweep (no gather, deferred decay);
        # the deferral divides by c = 1 - eta lam, so absurdly long steps take the general one.
        single = rows.is_sparse and m == 1 and eta * lam < 0.5 and not config.adaptive
        behind = lag is not None and bool(np.any(lag[:n_pen] != -1))
        if behind and ((final and len(order) == 0) or not single):
            self.settle(W_block, lag, np.arange(n_pen), config, snapshot)
        if len(order) == 0:
            return
        if single and lag is None:  # only the one-row sweeps read a lag
            lag, final = np.full(W_block.shape[0], -1, dtype=np.int64), True
        eta_u = eta * float(config.unpenalized_scale)
        order = np.ascontiguousarray(order, dtype=np.int64)
        X = rows.X

        def max_touched() -> int:
            """Scratch rows of a sparse mini-batch: its columns, plus the intercept."""
            return min(W_block.shape[0], int(np.diff(X.indptr).max(initial=0)) * m + 1)

        if snapshot is not None:
            # With a table the sweeps get the block itself for the anchor weights, which they
            # then do not read; without one, an empty table they do not read.
            t = snapshot.table
            W0 = snapshot.W_block if snapshot.W_block is not None else W_block
            table = _NO_TABLE[W_block.dtype.char] if t is None else (*astuple(t), True)
            anchor = (W0, snapshot.mean_grad, snapshot.b, partials, q, b, order)
            if single:
                _svrg_csr_single(X.indptr, X.indices, X.data, rows.weight, rows.fit_intercept,
                                 W_block, *anchor, eta, lam, n_pen, eta_u, *table, lag,
                                 final)  # fmt: skip
            elif rows.is_sparse:
                _svrg_csr(X.indptr, X.indices, X.data, rows.weight, rows.fit_intercept, W_block,
                          *anchor, m, max_touched(), eta, lam, n_pen, eta_u, *table)  # fmt: skip
            else:
                _svrg_dense(X, rows.weight, rows.fit_intercept, W_block, *anchor, m, eta, lam,
                            n_pen, eta_u, *table)  # fmt: skip
            return
        tail = (eta, lam, n_pen, bool(config.adaptive), float(config.delta), eta_u)
        if single:
            _update_csr_single(X.indptr, X.indices, X.data, rows.y, rows.weight,
                               rows.fit_intercept, W_block, k0, partials, q, b, order, eta, lam,
                               n_pen, eta_u, lag, final)  # fmt: skip
        elif rows.is_sparse:
            _update_csr(
                X.indptr, X.indices, X.data, rows.y, rows.weight, rows.fit_intercept, W_block,
                k0, acc, partials, q, b, order, m, max_touched(), *tail,
            )  # fmt: skip
        else:
            _update_dense(
                X, rows.y, rows.weight, rows.fit_intercept, W_block, k0, acc, partials, q, b,
                order, m, *tail,
            )  # fmt: skip
