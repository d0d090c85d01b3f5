"""The one training entry (:func:`train`, on every rank of any communicator) and the
embedded front door: shard the rows, run it on in-process workers, assemble W.

This is the single-process default.  The full ``(K, D_fit)`` model is assembled only
here, at the end, because in one process it fits by construction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dsmlr.comm import run_workers
from dsmlr.comm.base import Communicator
from dsmlr.engines import (
    EngineConfig,
    EpochRecord,
    Monitor,
    Start,
    WorkerResult,
    centre_intercepts,
    get_engine,
)
from dsmlr.kernels import LocalRows
from dsmlr.partition import row_owners, row_shards

__all__ = ["TrainingResult", "shard_rows", "train", "train_embedded"]


@dataclass
class TrainingResult:
    """Outcome of a training run.

    Attributes
    ----------
    W : ndarray of shape (K, D_fit)
        Weights, intercept in the last column when fitted.
    history : list of EpochRecord
        One record per epoch.
    converged : bool
        Whether the stopping rule fired before ``max_epochs``.
    """

    W: np.ndarray
    history: list[EpochRecord]
    converged: bool


def _row_slice(X, start: int, stop: int):
    """Rows ``start:stop`` without copying the CSR data and index arrays."""
    if not sp.issparse(X):
        return X[start:stop]
    lo, hi = X.indptr[start], X.indptr[stop]
    # scipy's (data, indices, indptr) constructor copies the arrays; an empty matrix
    # given them as attributes keeps the views.
    part = sp.csr_matrix((stop - start, X.shape[1]), dtype=X.dtype)
    part.data, part.indices = X.data[lo:hi], X.indices[lo:hi]
    part.indptr = X.indptr[start : stop + 1] - lo
    return part


def shard_rows(
    X,
    y: np.ndarray,
    n_shards: int,
    fit_intercept: bool,
    weight: np.ndarray | None = None,
    seed: int | None = None,
) -> list[LocalRows]:
    """Split rows into ``n_shards`` shards.

    With a ``seed``, each row goes to the shard :func:`~dsmlr.partition.row_owners`
    draws for it, so every shard is a random sample of the rows whatever their order
    (each shard a copy of its rows, in their order in ``X``); the MPI front door gives
    each rank the same rows (:func:`dsmlr.row_exchange.exchange_rows`).  Without one, the
    shards are contiguous, balanced by non-zeros, and views of ``X`` (no copy).
    """
    if seed is not None and n_shards > 1:
        owner = row_owners(0, X.shape[0], n_shards, seed)
        shards = []
        for p in range(n_shards):
            mine = np.flatnonzero(owner == p)
            shards.append(
                LocalRows(X[mine], y[mine], fit_intercept, None if weight is None else weight[mine])
            )
        return shards
    if sp.issparse(X):
        indptr = X.indptr
    else:
        indptr = np.arange(X.shape[0] + 1, dtype=np.int64) * X.shape[1]
    return [
        LocalRows(
            _row_slice(X, a, b), y[a:b], fit_intercept, None if weight is None else weight[a:b]
        )
        for a, b in row_shards(indptr, n_shards)
    ]


def train(
    comm: Communicator,
    rows: LocalRows,
    cfg: EngineConfig,
    engine: str = "sync",
    test_rows: LocalRows | None = None,
    n_test: int = 0,
    monitor: Monitor | None = None,
    start: Start | None = None,
) -> WorkerResult:
    """Train on this rank's rows with the engine named ``engine`` (collective: every rank
    of ``comm`` calls it, in process or under MPI).

    Every front door ends here (:func:`train_embedded` on in-process workers,
    :func:`dsmlr.distributed.fit_sharded` on MPI ranks); the result's blocks have their
    intercepts centred over the classes (:func:`~dsmlr.engines.centre_intercepts`).

    Parameters
    ----------
    comm : Communicator
        The group.
    rows : LocalRows
        The training rows this rank owns.
    cfg : EngineConfig
        Settings, identical on every rank.
    engine : str
        Name in :data:`dsmlr.engines.ENGINES`.
    test_rows : LocalRows, optional
        This rank's share of held-out rows, scored every epoch; ``n_test`` of them in all.
    monitor : Monitor, optional
        Progress hooks.
    start : Start, optional
        Starting weights (warm start) or a checkpointed run to continue.
    """
    result = get_engine(engine)(comm, rows, cfg, test_rows, n_test, monitor, start)
    if cfg.fit_intercept:
        centre_intercepts(comm, result.blocks, cfg.n_classes)
    return result


def train_embedded(
    X,
    y: np.ndarray,
    cfg: EngineConfig,
    n_workers: int,
    engine: str = "sync",
    X_test=None,
    y_test: np.ndarray | None = None,
    monitor: Monitor | None = None,
    sample_weight: np.ndarray | None = None,
    start: Start | None = None,
    shuffle_rows: bool = True,
) -> TrainingResult:
    """Train with ``n_workers`` in-process workers.

    Parameters
    ----------
    X : csr_matrix (sorted indices) or C-contiguous ndarray, shape (N, D)
        Training rows, already in the training dtype.
    y : ndarray of int64, shape (N,)
        Class indices ``0..K-1``.
    cfg : EngineConfig
        Engine settings.
    n_workers : int
        Number of workers P.
    engine : str
        Name in :data:`dsmlr.engines.ENGINES`.
    X_test, y_test : optional
        Held-out rows scored every epoch.
    monitor : Monitor, optional
        Progress hooks (called from worker 0's thread).
    sample_weight : ndarray of float64, shape (N,), optional
        Weight of each row's loss term; None: all ones.
    start : Start, optional
        Starting weights (warm start) or a checkpointed run to continue.
    shuffle_rows : bool
        Give each worker a random sample of the rows (drawn from ``cfg.seed``, see
        :func:`shard_rows`), not a contiguous range.
    """
    get_engine(engine)  # an unknown name fails here, before the rows are sharded
    seed = cfg.seed if shuffle_rows else None
    shards = shard_rows(X, y, n_workers, cfg.fit_intercept, sample_weight, seed)
    tests: list[LocalRows | None] = [None] * n_workers
    if X_test is not None and y_test is not None:
        tests = list(shard_rows(X_test, y_test, n_workers, cfg.fit_intercept))
    n_test = 0 if y_test is None else len(y_test)

    def train_rank(comm) -> WorkerResult:
        p = comm.rank
        return train(comm, shards[p], cfg, engine, tests[p], n_test, monitor, start)

    results = run_workers(n_workers, train_rank)
    W = np.zeros((cfg.n_classes, cfg.n_columns), dtype=cfg.dtype)
    for res in results:
        for (lo, hi), W_block in res.blocks:
            W[lo:hi] = W_block.T
    return TrainingResult(W=W, history=results[0].history, converged=results[0].converged)
