"""SVRG's anchor kept as the rows' largest anchor probabilities instead of anchor weights.

An SVRG step on row ``i`` and class ``k`` needs ``p~_ik``, the anchor's probability, for
its control variate ``s_i (p~_ik - [y_i = k]) x_i``.  Recomputing it takes the anchor
weights ``W~``: a copy of the model that also travels with every block.  Any control
variate ``c_i`` serves, as long as the step adds back its exact mean over the rows, so
the gradient pass keeps, for each row and block, only the probabilities of at least
:data:`KEEP` (at most ``1 / KEEP`` a row over all blocks, since they sum to one) and sums
the mean of exactly that truncated control variate.  The steps stay unbiased; only the
dropped probabilities (each below :data:`KEEP`) are left out of the variance reduction.

The table is rows-sized, not model-sized, so it pays where the model is larger than the
rows times ``1 / KEEP`` (extreme classification: many classes and features); elsewhere
the anchor weights are kept (:func:`uses_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ANCHORS", "KEEP", "AnchorTable", "table_bytes_bound", "uses_tables"]

#: Smallest anchor probability a table keeps.
KEEP = 1e-3

#: Ways to hold SVRG's anchor: ``"auto"`` picks the smaller of the other two.
ANCHORS = ("auto", "weights", "probabilities")

#: Bytes of one kept entry: an int32 class and a float32 (or float64) probability.
_ENTRY = 4


@dataclass(frozen=True)
class AnchorTable:
    """One block's kept anchor probabilities on one worker's rows, in CSR layout.

    Attributes
    ----------
    indptr : ndarray of int64, shape (n_rows + 1,)
        Row ``r``'s entries are ``indptr[r]:indptr[r + 1]``.
    classes : ndarray of int32
        Class of each entry, relative to the block's first class.
    probs : ndarray
        ``p~_ik`` of each entry, in the block's dtype.
    """

    indptr: np.ndarray
    classes: np.ndarray
    probs: np.ndarray

    @classmethod
    def empty(cls, n_rows: int, dtype) -> AnchorTable:
        """A table keeping nothing for ``n_rows`` rows (an empty block's)."""
        return cls(np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, dtype))

    @property
    def nbytes(self) -> int:
        return int(self.indptr.nbytes + self.classes.nbytes + self.probs.nbytes)


def table_bytes_bound(n_rows: int, n_classes: int, n_blocks: int, itemsize: int) -> int:
    """Most bytes the tables of ``n_blocks`` blocks can take on ``n_rows`` rows."""
    entries = n_rows * min(n_classes, round(1 / KEEP))
    return int(entries * (_ENTRY + itemsize) + 8 * n_blocks * (n_rows + 1))


def uses_tables(
    anchor: str, n_samples: int, n_classes: int, n_columns: int, itemsize: int, supported: bool
) -> bool:
    """Whether SVRG's anchor is held as tables (see the module docstring).

    ``"auto"`` chooses tables where the kernel ``supported`` them and their most bytes
    over all rows are below those of the anchor weights, ``K x D_fit x itemsize``.  The
    choice depends on global sizes only, so every rank makes the same one.
    """
    if anchor not in ANCHORS:
        raise ValueError(f"svrg_anchor must be one of {ANCHORS}, got {anchor!r}")
    if anchor == "probabilities" and not supported:
        raise ValueError("this kernel holds SVRG's anchor as weights only")
    if anchor != "auto":
        return anchor == "probabilities"
    table = table_bytes_bound(n_samples, n_classes, 1, itemsize)
    return supported and table < n_classes * n_columns * itemsize
