"""Training and prediction when every rank holds only its own rows and class blocks.

This is the MPI entry point (``mpiexec -n P dsmlr train ...`` uses it), and the Python
one for users who already hold their shard on each process::

    from dsmlr.comm.mpi import MPIComm
    from dsmlr.distributed import fit_sharded

    comm = MPIComm()
    model = fit_sharded(X_mine, y_mine, comm=comm, lam=1e-5)   # collective
    model.save("model-dir")                                      # collective

No rank ever holds all rows or the whole ``K x D`` model: a rank keeps ``B / P`` class
blocks (feature-major, as the engines use them), and prediction passes blocks around the
ring (:func:`dsmlr.scoring.ring_scores`).  Every function here is collective: all ranks
call it, in the same order.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dsmlr.comm.base import Communicator
from dsmlr.errors import DataError, agreed, on_all_ranks
from dsmlr.io.model_files import (
    ModelData,
    epochs_run,
    prepare_directory,
    read_block,
    read_manifest,
    write_block,
    write_manifest,
)
from dsmlr.io.sharded import global_classes
from dsmlr.kernels import LocalRows
from dsmlr.kernels.base import training_layout
from dsmlr.memory import count_nonzeros
from dsmlr.objective import l2_penalty, squared_norm
from dsmlr.row_exchange import exchange_rows
from dsmlr.scoring import encode_labels
from dsmlr.training import train

__all__ = ["ShardedModel", "agreed", "fit_sharded", "load_sharded"]


def _local_matrix(X, n_features: int, dtype) -> sp.csr_matrix | np.ndarray:
    if not sp.issparse(X):
        X = np.asarray(X).reshape(-1, n_features)
    X = training_layout(X, dtype)
    if X.shape[1] != n_features:
        raise DataError(f"this rank's rows have {X.shape[1]} features, expected {n_features}")
    return X


@dataclass
class ShardedModel:
    """A trained model as one rank holds it.

    Attributes
    ----------
    comm : Communicator
        The group the model lives on.
    blocks : list of ((k0, k1), ndarray)
        This rank's class blocks, each feature-major of shape ``(D_fit, k1 - k0)``.
    classes_ : ndarray of shape (K,)
        All class labels (small: every rank has them).
    n_features_in_ : int
    fit_intercept : bool
    params : dict
        The training parameters (JSON values), saved with the model.
    history_ : list of dict
        One record per epoch that computed the exact objective, identical on every rank
        (see :attr:`DSMLRClassifier.history_ <dsmlr.DSMLRClassifier>`).
    converged_ : bool or None
    metadata : dict
        Free-form JSON facts saved with the model (e.g. the feature index base).
    """

    comm: Communicator
    blocks: list[tuple[tuple[int, int], np.ndarray]]
    classes_: np.ndarray
    n_features_in_: int
    fit_intercept: bool
    params: dict = field(default_factory=dict)
    history_: list[dict] = field(default_factory=list)
    converged_: bool | None = None
    metadata: dict = field(default_factory=dict)

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(self.params.get("dtype", "float64"))

    @property
    def n_iter_(self) -> int:
        """Epochs run, as :attr:`DSMLRClassifier.n_iter_ <dsmlr.DSMLRClassifier>`: with
        ``eval_every > 1`` more than the records in ``history_``."""
        return epochs_run(self.history_)

    def scores(self, X_local, *, k: int = 1, y_local=None):
        """Top-``k`` classes and normalisers of this rank's rows (collective).

        Returns :class:`dsmlr.scoring.BlockScores` (class indices, not labels).
        """
        from dsmlr.scoring import ring_scores

        X_local = _local_matrix(X_local, self.n_features_in_, self.dtype)
        y_idx = None if y_local is None else encode_labels(y_local, self.classes_)
        return ring_scores(
            self.comm, X_local, self.blocks, n_classes=len(self.classes_),
            fit_intercept=self.fit_intercept, k=k, y_local=y_idx,
        )  # fmt: skip

    def predict_top_k(self, X_local, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most probable labels of this rank's rows and their probabilities."""
        k = max(1, min(int(k), len(self.classes_)))
        s = self.scores(X_local, k=k)
        return self.classes_[s.top_classes], s.top_proba

    def predict(self, X_local) -> np.ndarray:
        """Most probable label of each of this rank's rows (collective)."""
        return self.predict_top_k(X_local, 1)[0][:, 0]

    def evaluate(self, X_local, y_local, k: int = 5) -> dict:
        """Accuracy, top-``k`` accuracy and objective over ALL ranks' rows (collective).

        Rows whose label the model never saw count as wrong and are left out of the
        objective, as :meth:`DSMLRClassifier.objective` does.
        """
        from dsmlr.scoring import evaluation_report, summarise

        k = max(1, min(int(k), len(self.classes_)))
        y_idx = encode_labels(y_local, self.classes_)
        s = self.scores(X_local, k=k, y_local=y_local)
        sq = sum(squared_norm(W[: self.n_features_in_]) for _, W in self.blocks)
        totals = self.comm.allreduce_sum(
            np.array([*summarise(s, y_idx, k), sq, len(y_idx)], dtype=np.float64)
        )
        lam = float(self.params.get("lam", 0.0))
        return evaluation_report(int(totals[5]), tuple(totals[:4]), l2_penalty(lam, totals[4]), k)

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> None:
        """Write the model directory: each rank its own block files, rank 0 the manifest.

        The result is the same format as :meth:`DSMLRClassifier.save`, so
        :func:`dsmlr.load_model` reads it into one process when it fits there.
        """
        comm = self.comm
        out = agreed(comm, lambda: prepare_directory(path) if comm.rank == 0 else None)
        comm.barrier()
        out = Path(path) if out is None else out
        ranges = sorted(r for part in comm.allgather([c for c, _ in self.blocks]) for r in part)
        index = {tuple(r): q for q, r in enumerate(ranges)}

        def write_mine() -> list[dict]:
            try:
                return [write_block(out, index[tuple(c)], c, W.T) for c, W in self.blocks]
            except OSError as exc:
                raise DataError(f"cannot write: {exc.strerror or exc}", str(path)) from None

        mine = agreed(comm, write_mine)
        gathered = comm.allgather(mine)
        if comm.rank == 0:
            model = ModelData(
                None, self.classes_, self.fit_intercept, self.params, self.history_,
                {**self.metadata, **(metadata or {})},
            )  # fmt: skip
            shape = (len(self.classes_), self.n_features_in_ + int(self.fit_intercept))
            entries = [e for part in gathered for e in part]  # type: ignore[union-attr]
            write_manifest(out, entries, shape, self.dtype, model)
        comm.barrier()  # the directory is complete when save returns on any rank


def fit_sharded(
    X_local,
    y_local,
    *,
    comm: Communicator,
    n_features: int | None = None,
    classes: np.ndarray | None = None,
    sample_weight=None,
    X_val=None,
    y_val=None,
    callback: Callable[[dict], None] | None = None,
    straggler: tuple[int, float] | None = None,
    every_rank: bool = False,
    **params,
) -> ShardedModel:
    """Train on the rows each rank holds (collective: every rank calls it).

    Parameters
    ----------
    X_local : sparse matrix or ndarray of shape (n_local, D)
        This rank's rows (any number, zero included).  The ranks' rows in rank order are
        the training set; unless ``shuffle_rows=False``, each row then moves to the rank
        that trains on it (:func:`dsmlr.row_exchange.exchange_rows`), the rank the
        in-process workers give it too.
    y_local : array-like of shape (n_local,)
        Their labels.
    comm : Communicator
        The group, e.g. :class:`dsmlr.comm.mpi.MPIComm`.
    n_features : int, optional
        D; default the largest ``X_local.shape[1]`` over ranks.
    classes : ndarray, optional
        All labels, sorted; default the union of the ranks' labels.  Copied: the
        model's ``classes_`` is its own.
    sample_weight : array-like of shape (n_local,), optional
        Weights of this rank's rows (see :meth:`DSMLRClassifier.fit`); combined with a
        ``class_weight`` parameter, whose ``"balanced"`` counts classes over all ranks.
    X_val, y_val : optional
        This rank's share of held-out rows, scored every epoch.
    callback : callable, optional
        Called on rank 0 (on every rank with ``every_rank``) with each epoch's history
        entry; its ``progress`` method, if any, as for :meth:`DSMLRClassifier.fit`.
    straggler : (rank, factor), optional
        Test-only: slow one rank down (see :attr:`EngineConfig.straggler`).
    **params
        :class:`~dsmlr.DSMLRClassifier` parameters (``lam``, ``engine``, ``optimizer``,
        ``max_epochs`` ...), except ``n_workers``: one worker per rank.

    Returns
    -------
    ShardedModel
    """
    from dsmlr.settings import Settings  # scikit-learn: only when training

    params.pop("n_workers", None)
    settings = Settings.checked(params, "fit_sharded")
    dtype = np.dtype(settings.dtype)
    if n_features is None:
        n_features = max(int(d) for d in comm.allgather(int(np.shape(X_local)[1])))
    n_features = int(n_features)

    def check_rows() -> tuple:
        X = _local_matrix(X_local, n_features, dtype)
        y = np.asarray(y_local)
        if y.ndim != 1 or len(y) != X.shape[0]:
            raise DataError(f"{X.shape[0]} rows but labels of shape {y.shape}")
        return X, y

    X_mine, y_mine = agreed(comm, check_rows)  # type: ignore[misc]
    # A copy of given classes: the model's labels must not change with the caller's array.
    classes = global_classes(y_mine, comm) if classes is None else np.array(classes)
    if len(classes) < 2:
        raise on_all_ranks(DataError("need samples of at least 2 classes over all ranks"))
    y_idx = encode_labels(y_mine, classes)

    def check_labels() -> None:
        if np.any(y_idx < 0):
            raise DataError("labels missing from the given classes")

    agreed(comm, check_labels)
    n_samples = int(comm.allreduce_sum(np.array([len(y_idx)], dtype=np.int64))[0])
    # One seed for all ranks (each derives its own stream from it and its rank).
    seed = int(comm.allgather(settings.seed())[0])  # type: ignore[call-overload]
    cfg = settings.engine_config(n_samples, n_features, len(classes), seed)
    cfg = dataclasses.replace(cfg, straggler=straggler)
    weight = _row_weights(comm, settings, sample_weight, y_idx, classes, n_samples)
    test_rows, n_test = None, 0
    if X_val is not None and y_val is not None:
        y_test = encode_labels(y_val, classes)
        X_test = agreed(comm, lambda: _local_matrix(X_val, n_features, dtype))
        test_rows = LocalRows(X_test, y_test, cfg.fit_intercept)
        n_test = int(comm.allreduce_sum(np.array([len(y_test)], dtype=np.int64))[0])
    totals = comm.allreduce_sum(np.array([
        X_mine.shape[0] + (0 if test_rows is None else test_rows.n_rows),
        count_nonzeros(X_mine) + (0 if test_rows is None else count_nonzeros(test_rows.X)),
    ], dtype=np.int64))  # fmt: skip
    settings.check_memory(comm, cfg, int(totals[0]), int(totals[1]), 1)
    cfg, start, saver = settings.checkpointing(comm, cfg, None, classes)
    # After the checkpoint is read: a resumed run draws its rows' ranks from its own seed.
    if settings.shuffle_rows:  # every rank trains on a random sample of all rows
        X_mine, y_idx, weight = exchange_rows(comm, X_mine, y_idx, weight, cfg.seed)
    rows = LocalRows(X_mine, y_idx, cfg.fit_intercept, weight)
    monitor = settings.monitor(callback, every_rank, checkpoint=saver)
    result = train(comm, rows, cfg, settings.engine, test_rows, n_test, monitor, start)
    return ShardedModel(
        comm=comm, blocks=result.blocks, classes_=classes, n_features_in_=n_features,
        fit_intercept=cfg.fit_intercept,
        params=settings.json_params(),
        history_=[r.as_dict() for r in result.history], converged_=result.converged,
    )  # fmt: skip


def _row_weights(comm, settings, sample_weight, y_idx, classes, n_samples) -> np.ndarray | None:
    """This rank's normalised row weights, or None when nothing is weighted (collective)."""
    from dsmlr.settings import class_weights, normalised_weights

    if sample_weight is None and settings.class_weight is None:
        return None

    def local_weights() -> np.ndarray:
        if sample_weight is None:
            return np.ones(len(y_idx))
        w = np.asarray(sample_weight, dtype=np.float64)
        if w.shape != y_idx.shape or not np.all(np.isfinite(w)) or np.any(w < 0):
            raise DataError(
                f"sample_weight must hold {len(y_idx)} finite non-negative values, got "
                f"shape {w.shape}"
            )
        return w

    weight = agreed(comm, local_weights)
    counts = comm.allreduce_sum(np.bincount(y_idx, minlength=len(classes)).astype(np.float64))
    per_class = agreed(comm, lambda: class_weights(settings.class_weight, classes, counts))
    weight = weight * per_class[y_idx]
    total = float(comm.allreduce_sum(np.array([weight.sum()]))[0])
    return agreed(comm, lambda: normalised_weights(weight, total, n_samples))


def load_sharded(path: str | os.PathLike, comm: Communicator) -> ShardedModel:
    """Load a model directory with each rank reading only blocks ``q = rank mod P``.

    Every rank reads the (small) manifest; a rank may end up with no block when the
    model has fewer blocks than there are ranks.
    """

    def read_mine():
        manifest = read_manifest(path)
        blocks = [
            ((lo, hi), read_block(manifest, q, feature_major=True))
            for q, (lo, hi, _, _) in enumerate(manifest.blocks)
            if q % comm.size == comm.rank
        ]
        return manifest, blocks

    manifest, blocks = agreed(comm, read_mine)  # type: ignore[misc]
    assert manifest is not None
    return ShardedModel(
        comm=comm, blocks=blocks, classes_=manifest.classes,
        n_features_in_=manifest.n_columns - int(manifest.fit_intercept),
        fit_intercept=manifest.fit_intercept, params=manifest.params,
        history_=manifest.history, converged_=None, metadata=manifest.metadata,
    )  # fmt: skip
