"""Moving training rows to the ranks that own them, once, before training.

Under MPI each rank first holds the rows it read (a contiguous range of the file).  Data
files are often sorted by label, so such ranges would give each rank its own classes;
:func:`exchange_rows` sends every row to the rank :func:`dsmlr.partition.row_owners`
draws for it, so that each rank trains on a random sample of all rows, exactly the rows
the in-process workers get (:func:`dsmlr.training.shard_rows`).

Communication: ``P - 1`` rounds of pairwise exchanges (:meth:`Communicator.sendrecv
<dsmlr.comm.base.Communicator.sendrecv>`), in which each rank sends the rows it holds
for one rank and receives those another holds for it: in all about ``(P - 1) / P`` of
its rows, once per training run.  Not counted in the epochs' ``bytes_sent``.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from dsmlr.comm.base import Communicator
from dsmlr.partition import row_owners

__all__ = ["exchange_rows"]


def _pack(X, y: np.ndarray, weight: np.ndarray | None, rows: np.ndarray) -> list[np.ndarray]:
    """The arrays that carry ``rows`` of ``(X, y, weight)``."""
    part = X[rows]
    tail = [np.ascontiguousarray(y[rows])]
    if weight is not None:
        tail.append(np.ascontiguousarray(weight[rows]))
    if sp.issparse(part):
        lengths = np.diff(part.indptr).astype(np.int64)
        return [part.data, part.indices, lengths, *tail]
    return [np.ascontiguousarray(part), *tail]


def _unpack(arrays: list[np.ndarray], sparse: bool, n_features: int, weighted: bool):
    """``(X, y, weight)`` of the rows one rank sent."""
    if sparse:
        data, indices, lengths, *tail = arrays
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(indices.dtype)
        X = sp.csr_matrix((data, indices, indptr), shape=(len(lengths), n_features))
    else:
        X, *tail = arrays
    return X, tail[0], tail[1] if weighted else None


def exchange_rows(
    comm: Communicator, X, y: np.ndarray, weight: np.ndarray | None, seed: int
) -> tuple:
    """This rank's rows after every row went to its owner (collective).

    Parameters
    ----------
    X : csr_matrix (sorted indices) or ndarray, shape (n_local, D)
        The rows this rank holds now; the ranks' rows in rank order are the training
        set in its order.
    y : ndarray of int64, shape (n_local,)
        Their class indices.
    weight : ndarray of float64, shape (n_local,), or None
        Their weights (the same on every rank: None everywhere or arrays everywhere).
    seed : int
        The run's seed, the same on every rank.

    Returns
    -------
    (X, y, weight)
        The rows :func:`dsmlr.partition.row_owners` gives this rank, in their order in
        the training set; CSR with sorted indices stays so.
    """
    P, rank = comm.size, comm.rank
    if P == 1:
        return X, y, weight
    counts = [int(n) for n in comm.allgather(int(X.shape[0]))]  # type: ignore[union-attr]
    owner = row_owners(sum(counts[:rank]), X.shape[0], P, seed)
    sparse, weighted = sp.issparse(X), weight is not None
    pieces: dict[int, tuple] = {}
    for k in range(P):
        dest, source = (rank + k) % P, (rank - k) % P
        sent = _pack(X, y, weight, np.flatnonzero(owner == dest))
        got = sent if k == 0 else comm.sendrecv(sent, dest, source)
        pieces[source] = _unpack(got, sparse, X.shape[1], weighted)
    # Ranks in order: their rows are the training set's in order.
    parts = [pieces[s] for s in range(P)]
    if sparse:
        X_mine = sp.vstack([p[0] for p in parts], format="csr", dtype=X.dtype)
        X_mine.has_sorted_indices = True  # every row kept its (sorted) indices
    else:
        X_mine = np.ascontiguousarray(np.concatenate([p[0] for p in parts]), dtype=X.dtype)
    y_mine = np.concatenate([p[1] for p in parts]).astype(y.dtype, copy=False)
    w_mine = np.concatenate([p[2] for p in parts]) if weighted else None
    return X_mine, y_mine, w_mine
