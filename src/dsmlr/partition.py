"""Pure partitioning functions: row shards, class blocks, ring schedule.

Every function here is deterministic and communication-free, so any worker can compute
any other worker's slice (the property the distributed engines rely on to agree without
talking).
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_blocks", "ring_block", "ring_shifts", "row_shards"]


def row_shards(indptr: np.ndarray, n_shards: int) -> list[tuple[int, int]]:
    """Split rows into contiguous shards with balanced non-zero counts.

    Work per row is proportional to its non-zeros (plus a constant for the per-row
    exponentials), so each row is weighted by ``nnz + 1`` and cut points are placed
    where the cumulative weight crosses multiples of ``total / n_shards``.

    Parameters
    ----------
    indptr : ndarray of shape (n_rows + 1,)
        CSR row pointer (for dense data: ``arange(n_rows + 1) * n_features``).
    n_shards : int
        Number of shards (workers), at least 1.

    Returns
    -------
    list of (start, stop)
        ``n_shards`` half-open row ranges covering ``[0, n_rows)`` in order.  Shards are
        empty only when there are fewer rows than shards.
    """
    if n_shards < 1:
        raise ValueError(f"n_shards must be >= 1, got {n_shards}")
    indptr = np.asarray(indptr, dtype=np.int64)
    n_rows = len(indptr) - 1
    weight = np.diff(indptr) + 1
    cum = np.concatenate([[0], np.cumsum(weight)])
    targets = cum[-1] * np.arange(1, n_shards) / n_shards
    cuts = np.searchsorted(cum, targets, side="left")
    # Each shard keeps at least one row while rows remain, so no worker idles needlessly.
    bounds = [0]
    for s, c in enumerate(cuts, start=1):
        lo = min(bounds[-1] + 1, n_rows)
        hi = n_rows - (n_shards - s)
        bounds.append(int(min(max(c, lo), max(hi, lo))))
    bounds.append(n_rows)
    return [(bounds[s], bounds[s + 1]) for s in range(n_shards)]


def class_blocks(n_classes: int, n_blocks: int) -> list[tuple[int, int]]:
    """Split classes ``0..n_classes-1`` into ``n_blocks`` contiguous, near-equal ranges.

    Cost per row is proportional to the number of classes in a block, so blocks are
    balanced by class count: sizes differ by at most one.  Blocks may be empty when
    ``n_blocks > n_classes``.
    """
    if n_blocks < 1:
        raise ValueError(f"n_blocks must be >= 1, got {n_blocks}")
    base, extra = divmod(n_classes, n_blocks)
    out, start = [], 0
    for q in range(n_blocks):
        stop = start + base + (1 if q < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def ring_shifts(n_rings: int, size: int) -> list[int]:
    """Shifts of each of an epoch's ``n_rings`` rings on ``size`` workers.

    A ring visits ``size`` groups, so ``size - 1`` shifts take it through them.  The
    synchronous engine starts each ring with the groups where the one before left them,
    in the other direction (its first visits need no shift); after an even number of
    rings every group is home again, and after an odd number the last ring shifts once
    more, so that every epoch ends with each worker holding its own group.
    """
    shifts = [size - 1] * n_rings
    if n_rings % 2:
        shifts[-1] = size
    return shifts


def ring_block(rank: int, round_: int, size: int) -> int:
    """Block held by worker ``rank`` in ring round ``round_``: ``(rank + round_) mod size``.

    In round ``r + 1`` worker ``p`` needs the block worker ``p + 1`` held in round ``r``,
    so blocks travel from ``p + 1`` to ``p`` (receive from the right, send to the left).
    """
    return (rank + round_) % size
