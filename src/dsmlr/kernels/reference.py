"""Reference kernel: slow, obvious numpy.  The test oracle for every fast kernel."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from dsmlr.kernels.anchor_table import AnchorTable
from dsmlr.kernels.base import HostBlocks, LocalRows, Snapshot, UpdateConfig, merge_best
from dsmlr.objective import add_intercept_column

__all__ = ["ReferenceKernel"]


def _dense_rows(rows: LocalRows) -> np.ndarray:
    X = rows.X.toarray() if sp.issparse(rows.X) else np.asarray(rows.X)
    X = X.astype(np.float64)
    return add_intercept_column(X) if rows.fit_intercept else X


def _table_rows(table: AnchorTable, batch: np.ndarray, n_block: int) -> np.ndarray:
    """The table's probabilities of the ``batch`` rows, dense (0 where none is kept)."""
    kept = sp.csr_matrix(
        (table.probs, table.classes, table.indptr), shape=(-1 + len(table.indptr), n_block)
    )
    return kept[batch].toarray().astype(np.float64)


def _touched_columns(rows: LocalRows, batch: np.ndarray) -> np.ndarray:
    """Columns a mini-batch touches: stored entries for CSR, every column for dense."""
    n_cols = rows.n_features + rows.fit_intercept
    mask = np.zeros(n_cols, dtype=bool)
    if sp.issparse(rows.X):
        mask[np.unique(rows.X[batch].indices)] = True
    else:
        mask[: rows.n_features] = True
    if rows.fit_intercept:
        mask[-1] = True
    return mask


class ReferenceKernel(HostBlocks):
    """Numpy implementation of the kernel passes, eager in everything."""

    name = "reference"

    def score_pass(self, rows, W_block, k0, partials, q, true_score, best_score, best_class):
        n_block = W_block.shape[1]
        if n_block == 0:
            partials[:, q] = -np.inf
            return
        S = _dense_rows(rows) @ W_block.astype(np.float64)
        partials[:, q] = logsumexp(S, axis=1)
        local = rows.y - k0
        inside = (local >= 0) & (local < n_block)
        true_score[inside] = S[inside, local[inside]]
        merge_best(S.max(axis=1), S.argmax(axis=1) + k0, best_score, best_class)

    def gradient_pass(self, rows, W_block, k0, b, scale, out, keep=None):
        n_block = W_block.shape[1]
        if n_block == 0 or rows.n_rows == 0:
            return AnchorTable.empty(rows.n_rows, W_block.dtype) if keep is not None else None
        Xa = _dense_rows(rows)
        R = np.exp(Xa @ W_block.astype(np.float64) + b[:, None])
        table = None
        if keep is not None:
            R[R < keep] = 0.0
            kept = sp.csr_matrix(R)
            table = AnchorTable(
                kept.indptr.astype(np.int64),
                kept.indices.astype(np.int32),
                kept.data.astype(W_block.dtype),
            )
        local = rows.y - k0
        inside = (local >= 0) & (local < n_block)
        R[np.flatnonzero(inside), local[inside]] -= 1.0
        out += scale * (Xa.T @ (rows.weight[:, None] * R))
        return table

    def update_pass(
        self, rows, W_block, k0, acc, partials, q, b, order, config: UpdateConfig,
        snapshot: Snapshot | None = None, lag=None, final=True,
    ):  # fmt: skip
        # Dense steps leave no column behind: ``lag`` and ``final`` change nothing.
        n_block = W_block.shape[1]
        if n_block == 0:
            partials[:, q] = -np.inf
            return
        Xa = _dense_rows(rows)
        m = config.batch_size
        pen = np.zeros(W_block.shape[0], dtype=bool)
        pen[: config.n_penalized] = True
        for lo in range(0, len(order), m):
            batch = order[lo : lo + m]
            Xb = Xa[batch]
            S = Xb @ W_block.astype(np.float64)
            partials[batch, q] = logsumexp(S, axis=1)
            b[batch] = -logsumexp(partials[batch], axis=1)
            R = np.exp(S + b[batch, None])
            if snapshot is None:
                local = rows.y[batch] - k0
                inside = (local >= 0) & (local < n_block)
                R[np.flatnonzero(inside), local[inside]] -= 1.0
            elif snapshot.table is not None:
                R -= _table_rows(snapshot.table, batch, n_block)
            else:
                # SVRG: the labels cancel between the current and the anchor gradient.
                R -= np.exp(Xb @ snapshot.W_block.astype(np.float64) + snapshot.b[batch, None])
            R *= rows.weight[batch, None] / len(batch)
            G = Xb.T @ R + config.lam * W_block * pen[:, None]
            if snapshot is not None:
                G += snapshot.mean_grad
            touched = _touched_columns(rows, batch)
            if config.adaptive and snapshot is None:
                acc[touched] += np.mean(G[touched] ** 2, axis=1)
                step = config.eta / np.sqrt(acc + config.delta)
            else:
                step = np.full(W_block.shape[0], config.eta)
            step[~pen] *= config.unpenalized_scale
            if snapshot is not None:
                # Untouched columns see only the penalty and the anchor gradient.
                W_block -= (step[:, None] * G).astype(W_block.dtype)
                continue
            W_block[touched] -= (step[touched, None] * G[touched]).astype(W_block.dtype)
            idle = ~touched & pen
            decay = np.maximum(0.0, 1.0 - step[idle] * config.lam)
            W_block[idle] *= decay[:, None].astype(W_block.dtype)
