"""Removing each feature's mean over the classes from the weights after every epoch.

Softmax scores change by the same amount for every class when the same vector ``m`` is
subtracted from every class's weights (``x . (w_k - m) = x . w_k - x . m``), so the loss
is unchanged, while the penalty falls by exactly ``lam / 2 * K * ||m||^2`` when ``m`` is
the mean ``(1 / K) sum_k w_k`` of the penalised columns.  At the optimum that mean is
zero (the loss gradients sum to zero over the classes, so ``lam * sum_k w_k = 0``), and
a single block's steps keep it zero: each step's gradient sums to zero over the classes.

A block's steps do not: they move only its own classes, so every epoch of two or more
blocks adds to the mean, and nothing takes it out but the penalty, which shrinks it by
``1 - eta * lam`` a step -- the direction of adding the same vector to every class is
flat for the loss.  On dense data, where every column is
shared by every row, that drift held SVRG 1.7e-4 and 2.0e-4 above the optimum after
30 epochs where one block reached 1e-13 (6 classes, 50 features, one worker moving two
or four blocks in turn); centred, they reach 1e-13 too
(``benchmarks/results/svrg_layouts_dense.md``).  Subtracting the mean after each epoch
costs one pass over the model, a product of the rows with a ``D``-vector and one
allreduce of ``D`` float64 values, and can only lower the objective.

The synchronous engine centres between its update and scoring rings
(:meth:`dsmlr.engines.ring.Epoch.center`), so it scores the centred model; the
asynchronous one, whose blocks are never all between two stages at once, after its
epoch, taking the penalty's drop off the objective it scored.

The intercept (unpenalised, the loss alone fixes only its differences between classes)
is left as it is.
"""

from __future__ import annotations

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import EngineConfig
from dsmlr.kernels import Kernel, LocalRows

__all__ = ["ClassMean", "center_classes"]


class ClassMean:
    """The mean over the classes of each penalised column, as subtracted from the model.

    Parameters
    ----------
    mean : ndarray of float64, shape (D,)
        ``(1 / K) sum_k w_k`` over the feature columns.
    cfg : EngineConfig
        The run's settings (``lam``, ``n_classes``).
    """

    def __init__(self, mean: np.ndarray, cfg: EngineConfig):
        self.mean = mean
        #: By how much the objective fell: ``lam / 2 * K * ||mean||^2``.
        self.penalty_drop = 0.5 * cfg.lam * cfg.n_classes * float(mean @ mean)

    def shift_normalisers(self, rows: LocalRows, partials: np.ndarray, b: np.ndarray) -> None:
        """Bring cached partial normalisers and ``b`` (in place) to the centred model:
        every score of row ``i`` fell by ``x_i . mean``."""
        shift = np.asarray(rows.X @ self.mean, dtype=np.float64).ravel()
        partials -= shift[:, None]
        b += shift


def center_classes(
    comm: Communicator, kernel: Kernel, blocks: list, cfg: EngineConfig, clock
) -> ClassMean:
    """Subtract the class mean of every penalised column from the ``blocks`` (each
    rank's share of the model; together every class once).  All ranks take part: one
    allreduce of ``D`` float64 values where there are two or more, timed on ``clock``
    (a :class:`~dsmlr.engines.ring.Clock`) as communication."""
    d = cfg.n_features
    sums = np.zeros(d)
    for blk in blocks:
        sums += kernel.class_sums(blk.W[:d])
    if comm.size > 1:
        sums = clock.timed("comm", comm.allreduce_sum, sums)
    mean = ClassMean(sums / cfg.n_classes, cfg)
    for blk in blocks:
        kernel.subtract_from_rows(blk.W[:d], mean.mean)
    return mean
