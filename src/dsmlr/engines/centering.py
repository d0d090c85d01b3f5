"""Removing the mean over the classes from the weights of the features many rows share.

Softmax scores change by the same amount for every class when the same vector ``m`` is
subtracted from every class's weights (``x . (w_k - m) = x . w_k - x . m``), so the loss
is unchanged, while the penalty falls by exactly ``lam / 2 * K * ||m||^2`` when ``m`` is
the mean ``(1 / K) sum_k w_k`` of penalised columns.  At the optimum that mean is zero
(the loss gradients sum to zero over the classes, so ``lam * sum_k w_k = 0``), and a
single block's steps keep it zero: each step's gradient sums to zero over the classes.

A block's steps do not: they move only its own classes, so every epoch of two or more
blocks adds to the mean of every feature its rows have, and nothing takes it out but
the penalty, by ``1 - eta * lam`` a step -- the direction of adding the same vector to
every class is flat for the loss.  On dense data, where every column is shared by every
row, that drift stalls SVRG with two or more blocks short of the optimum one block
reaches, and centring removes the gap (``benchmarks/results/svrg_layouts_dense.md``).

Only the features that at least :data:`SHARED_COLUMN_SHARE` of the rows have are
centred (every feature of dense data; on sparse data the few frequent ones, whose
drift is the largest): a rare feature's steps are few and its drift small, and leaving
it alone leaves the model's rows for it untouched.  The selection costs one allreduce of
``D`` counts at the start; each centring a pass over the selected rows of the model, a
product of the training rows with a ``D``-vector and one allreduce of as many float64
values as features selected (not counted in ``bytes_sent``, like the objective's).  It
can only lower the objective.

The synchronous engine centres between its update and scoring rings
(:meth:`dsmlr.engines.epochs.Epoch.centre`), so it scores the centred model.  The
asynchronous one, whose blocks are never all between two stages at once, centres after
every epoch: in one that scores its sums ride with the objective's allreduce and it takes
the penalty's drop off the objective it scored.  The intercept (unpenalised: the loss alone
fixes only its differences between classes) is left as it is.
"""

from __future__ import annotations

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import EngineConfig
from dsmlr.kernels import Kernel, LocalRows

__all__ = [
    "SHARED_COLUMN_SHARE",
    "ClassMean",
    "centre_classes",
    "local_class_sums",
    "shared_columns",
]

#: Features at least this share of the training rows have are centred: the frequent
#: ones, whose drift is the largest (on ``bench_mpi.py``'s sparse K = 200 problem, 50
#: non-zeros a row of 20000 features, 56 of the 20000).  Centring every feature lowers
#: the objective no further there but lengthens MPI epochs with a slowed rank, which
#: centring the frequent ones alone does not (``benchmarks/results/mpi.md``, *Class-mean
#: centring*).
SHARED_COLUMN_SHARE = 0.1


def shared_columns(comm: Communicator, rows: LocalRows, cfg: EngineConfig) -> np.ndarray:
    """The features (sorted indices) at least :data:`SHARED_COLUMN_SHARE` of all ranks'
    rows have; every rank gets the same (one allreduce of ``D`` counts)."""
    X = rows.X
    if rows.is_sparse:
        counts = np.bincount(X.indices[X.data != 0], minlength=cfg.n_features)
    else:
        counts = np.count_nonzero(X, axis=0)
    counts = counts.astype(np.float64)
    if comm.size > 1:
        counts = comm.allreduce_sum(counts)
    return np.flatnonzero(counts >= SHARED_COLUMN_SHARE * cfg.n_samples)


def _rows_of(columns: np.ndarray, cfg: EngineConfig) -> slice | np.ndarray:
    """The block rows of ``columns``: a view's slice where they are all the features."""
    return slice(0, cfg.n_features) if len(columns) == cfg.n_features else columns


class ClassMean:
    """The mean over the classes of some penalised columns, to subtract from the model.

    Parameters
    ----------
    sums : ndarray of float64, shape (len(columns),)
        ``sum_k w_k`` over the ``columns``, the whole model's.
    columns : ndarray of int
        The features centred (see :func:`shared_columns`).
    cfg : EngineConfig
        The run's settings (``lam``, ``n_classes``, ``n_features``).
    """

    def __init__(self, sums: np.ndarray, columns: np.ndarray, cfg: EngineConfig):
        self.columns = columns
        self.mean = sums / cfg.n_classes
        self._rows = _rows_of(columns, cfg)
        self._n_features = cfg.n_features
        #: By how much the objective falls: ``lam / 2 * K * ||mean||^2``.
        self.penalty_drop = 0.5 * cfg.lam * cfg.n_classes * float(self.mean @ self.mean)

    def subtract(self, kernel: Kernel, blocks: list) -> None:
        """Take the mean out of every one of this rank's ``blocks``."""
        if len(self.columns):
            for blk in blocks:
                kernel.subtract_from_rows(blk.W, self._rows, self.mean)

    def shift_normalisers(self, rows: LocalRows, partials: np.ndarray, b: np.ndarray) -> None:
        """Bring cached partial normalisers and ``b`` (in place) to the centred model:
        every score of row ``i`` fell by ``x_i . mean``."""
        if not len(self.columns):
            return
        full = np.zeros(self._n_features)
        full[self.columns] = self.mean
        shift = np.asarray(rows.X @ full, dtype=np.float64).ravel()
        partials -= shift[:, None]
        b += shift


def local_class_sums(
    kernel: Kernel, blocks: list, columns: np.ndarray, cfg: EngineConfig
) -> np.ndarray:
    """The ``columns`` of this rank's ``blocks`` summed over their classes (float64); the
    ranks' sums add up to the whole model's."""
    sums = np.zeros(len(columns))
    if len(columns):
        rows = _rows_of(columns, cfg)
        for blk in blocks:
            sums += kernel.class_sums(blk.W, rows)
    return sums


def centre_classes(
    comm: Communicator, kernel: Kernel, blocks: list, columns: np.ndarray, cfg: EngineConfig,
    clock,
) -> ClassMean:  # fmt: skip
    """Subtract the class mean of the ``columns`` from the ``blocks`` (each rank's share
    of the model; together every class once).  All ranks take part: one allreduce of
    ``len(columns)`` float64 values where there are two ranks or more, timed on ``clock``
    (a :class:`~dsmlr.engines.ring.Clock`) as communication."""
    sums = local_class_sums(kernel, blocks, columns, cfg)
    if comm.size > 1 and len(columns):
        sums = clock.timed("comm", comm.allreduce_sum, sums)
    mean = ClassMean(sums, columns, cfg)
    mean.subtract(kernel, blocks)
    return mean
