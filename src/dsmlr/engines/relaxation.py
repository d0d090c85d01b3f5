"""How much of an SVRG visit's move a block keeps when other ranks move blocks at once.

A block's visit moves only its own classes, using the other blocks' weights as they
stood when it began.  The loss couples the blocks through every row's normaliser: a
shift of probability mass between blocks along a column ``j`` -- the part of a block's
move on ``j`` common to its classes, their mean -- changes every row that has ``j``.  A
visit's variance-reduced steps (the anchor's full gradient at every step) settle a share
of that shift for their block as if the others stood still, and blocks moved at the same
time by different ranks each settle it, so together they overshoot.  This is a Jacobi
iteration on the blocks' shares of the mass: with B blocks of equal mass each settling
its share exactly, the shift is overshot by ``1 / (B - 1)`` (two blocks: 100%, the error
flips sign and hardly shrinks), and keeping ``1 - 1 / B`` of each move removes the
overshoot.  A visit that settles only a share ``s`` overshoots by less: the error is
multiplied by ``1 - keep * s * B / (B - 1)``, which ``keep = (1 - 1 / B) / s`` makes zero,
and for ``s <= 1 - 1 / B`` the whole move (keep 1) overshoots nothing.  What differs
between a block's classes moves mass only within the block, which one rank moves at a
time: no other rank's move overshoots it, so it is kept whole (relaxing it too would only
shorten the steps that converge the block's own classes).

The share a visit settles along column ``j`` follows from its steps: each row ``i`` of
the rank's pass contracts the error by ``eta / m * w_i * x_ij^2 * p (1 - p)`` (step ``eta``
on a mini-batch of ``m`` rows of weights ``w_i``; ``p`` the block's probability on the row),
so the visit settles ``s_j = 1 - exp(-eta / m * c_j)`` with ``c_j`` the sum over the
rank's rows.  :func:`column_spread` takes ``p (1 - p)`` at its largest, 1/4: an upper
bound on ``s_j``, so that ``keep * s_j`` never exceeds ``1 - 1 / B`` and the relaxed move
never overshoots, whatever the rows' probabilities; and it takes
``x_ij`` about the column's mean when there is an intercept: the intercept, every row's
column, settles the part of a shift that all rows share, so that only what a column adds
to it is coupled, and a column of non-negative values (a word's counts) is mostly that
shared part.

* The intercept settles its shift all but exactly: it keeps about ``1 - 1 / B``.
* Dense columns (standardised features) settle theirs too, and keep about as much.
* Sparse columns are shared by few rows and spread little about their mean: a visit
  settles a small share, mostly below ``1 - 1 / B``, and keeps its move whole.

Where a rank holds several blocks, which it moves in turn, the same rule applies, as a
choice checked by measurement rather than derived: one rank moves its blocks one after
the other, each seeing the others' moves (a Gauss-Seidel sweep), with nothing to correct
between them.  Plain and AdaGrad steps follow each rank's own rows' gradient, evaluated
after the blocks that visited those rows before, and are left whole.
``benchmarks/results/svrg_layouts*.md`` (``benchmarks/svrg_layouts.py``) has the gaps to
the optimum by layout with relaxed and with whole moves, on generated text and dense
problems.

The visit's cached partial normalisers of the block keep the whole move until the next
scoring stage recomputes them: the relaxed part is a shift the steps of later visits
see a little off.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dsmlr.kernels import Kernel, LocalRows, UpdateConfig

__all__ = ["RelaxedRows", "column_spread", "intercept_relaxation", "relaxed_rows"]

#: The largest curvature a row's loss has along a shift of mass between two sets of
#: classes, ``p (1 - p)`` at ``p = 1/2``.
_MASS_CURVATURE = 0.25

#: Values (stored entries) per chunk of rows in :func:`column_spread`: its temporary
#: arrays stay near 32 MB however wide the rows are.
_SPREAD_CHUNK_VALUES = 1 << 22


def intercept_relaxation(n_ranks: int, n_blocks: int) -> float:
    """Share of an SVRG visit's move that a block keeps along a direction its visit
    settles exactly (the intercept): 1 for one rank or one block, ``1 - 1 / B`` for B
    blocks moved by two or more ranks at a time."""
    return 1.0 if n_ranks <= 1 or n_blocks <= 1 else 1.0 - 1.0 / n_blocks


def column_spread(rows: LocalRows) -> np.ndarray:
    """``c_j`` of every column of a block over this rank's rows (see the module docstring).

    ``1/4 sum_i w_i (x_ij - xbar_j)^2`` with ``xbar_j`` the column's weighted mean where
    the rows have an intercept, whose own is ``1/4 sum_i w_i`` (last); ``1/4 sum_i w_i
    x_ij^2`` where they do not.

    Returns
    -------
    ndarray of float64, shape (n_features + fit_intercept,)
    """
    X, w = rows.X, rows.weight
    square = np.zeros(rows.n_features)
    linear = np.zeros(rows.n_features)
    per_row = X.nnz / max(rows.n_rows, 1) if rows.is_sparse else rows.n_features
    chunk = max(1, int(_SPREAD_CHUNK_VALUES // max(per_row, 1.0)))
    for lo in range(0, rows.n_rows, chunk):
        part, wp = X[lo : lo + chunk], w[lo : lo + chunk]
        if rows.is_sparse:
            square += np.asarray(part.multiply(part).T @ wp).ravel()
            linear += np.asarray(part.T @ wp).ravel()
        else:
            part = np.asarray(part, dtype=np.float64)
            square += np.einsum("ij,ij,i->j", part, part, wp)
            linear += part.T @ wp
    if rows.fit_intercept:
        total = float(w.sum())
        if total > 0.0:
            square = np.maximum(square - linear * linear / total, 0.0)
        square = np.append(square, total)
    return _MASS_CURVATURE * square


@dataclass(frozen=True)
class RelaxedRows:
    """The rows of a block whose SVRG moves are relaxed, and the share each keeps.

    Attributes
    ----------
    rows : ndarray of int64
        Rows of the block (features; ``n_features`` is the intercept's).
    keep : ndarray of float64
        Share of a visit's move kept, each in (0, 1).
    """

    rows: np.ndarray
    keep: np.ndarray

    def apply(self, kernel: Kernel, W, sums_before: np.ndarray) -> None:
        """Relax a visit's moves of block ``W`` in place: each row keeps ``keep`` of the
        part of its move common to the block's classes (their mean) and the rest whole.

        ``sums_before``: ``kernel.class_sums(W, self.rows)`` before the visit, so that
        only a vector of the rows' sums is kept, never a copy of the block.
        """
        if W.shape[1] == 0:
            return
        common = (kernel.class_sums(W, self.rows) - sums_before) / W.shape[1]
        kernel.subtract_from_rows(W, self.rows, (1.0 - self.keep) * common)


def relaxed_rows(
    spread: np.ndarray, step: UpdateConfig, n_ranks: int, n_blocks: int, fit_intercept: bool
) -> RelaxedRows | None:
    """Which rows of a block an SVRG visit relaxes, by how much; None: none.

    Parameters
    ----------
    spread : ndarray of shape (n_features + fit_intercept,)
        :func:`column_spread` of the rank's rows.
    step : UpdateConfig
        The visit's steps: ``eta / batch_size`` for each row's gradient, the intercept's
        times ``unpenalized_scale``.
    n_ranks, n_blocks : int
        Ranks moving blocks at once, and B.
    fit_intercept : bool
        Whether the block's last row is the intercept.
    """
    base = intercept_relaxation(n_ranks, n_blocks)
    if base == 1.0:
        return None
    steps = np.full(len(spread), step.eta / step.batch_size)
    if fit_intercept:
        steps[-1] *= step.unpenalized_scale
    settle = -np.expm1(-steps * spread)
    with np.errstate(divide="ignore"):
        keep = base / settle
    rows = np.flatnonzero(keep < 1.0).astype(np.int64)
    return RelaxedRows(rows, keep[rows]) if len(rows) else None
