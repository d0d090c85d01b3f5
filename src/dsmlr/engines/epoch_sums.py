"""A scored epoch's figures: each rank's share, and their sum over the ranks."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dsmlr.comm.base import Communicator

__all__ = ["EpochSums"]

_SCALARS = 8  # the fields before class_sums, in the order they travel


@dataclass
class EpochSums:
    """The sums a scored epoch reports, this rank's share or (after :meth:`allreduce`)
    the whole run's.

    Attributes
    ----------
    loss, correct : float
        Summed (weighted) log-loss and correct predictions over the training rows.
    penalty : float
        ``lam / 2 ||W||^2`` of the blocks this rank is home to.
    sent : float
        Ring payload bytes sent since the last scored epoch.
    test_loss, test_correct, test_top, test_known : float
        Held-out rows: summed log-loss, correct, correct in the top k, and rows with a
        label seen in training (zero without held-out rows).
    class_sums : ndarray of float64
        The shared features' sums over this rank's classes, where the model is centred
        after scoring (:mod:`dsmlr.engines.centering`); empty otherwise.
    """

    loss: float
    correct: float
    penalty: float
    sent: float
    test_loss: float = 0.0
    test_correct: float = 0.0
    test_top: float = 0.0
    test_known: float = 0.0
    class_sums: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def allreduce(self, comm: Communicator) -> EpochSums:
        """The sums over all ranks, on every rank (one allreduce of float64 values, added
        in rank order, so every rank gets the same bits)."""
        values = np.array([self.loss, self.correct, self.penalty, self.sent, self.test_loss,
                           self.test_correct, self.test_top, self.test_known,
                           *self.class_sums], dtype=np.float64)  # fmt: skip
        totals = comm.allreduce_sum(values)
        return EpochSums(*(float(v) for v in totals[:_SCALARS]),
                         class_sums=totals[_SCALARS:])  # fmt: skip
