"""Pure partitioning functions: row shards and owners, class blocks, ring schedule.

Every function here is deterministic and communication-free, so any worker can compute
any other worker's slice (the property the distributed engines rely on to agree without
talking).
"""

from __future__ import annotations

import numpy as np

__all__ = ["class_blocks", "ring_cycle", "ring_legs", "row_owners", "row_shards"]


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


def ring_cycle(size: int, seed: int, epoch: int) -> np.ndarray:
    """The ranks in the order an epoch's rings pass blocks round: a random cyclic order,
    drawn anew each epoch from ``seed`` (every rank draws the same).

    Blocks travel from a rank to the one before it in this order (to the one after it
    in a reversed ring).  Why a new order each epoch: a fixed one makes every block end
    its update visits on the same rank's rows epoch after epoch, and the last rows a
    block steps on pull it their way; that pull then points the same way every epoch
    and stalls convergence on real text (``benchmarks/parallel_convergence.py``).

    Returns
    -------
    ndarray of int64, shape (size,)
        A permutation of ``0..size-1``.
    """
    if size <= 2:  # one ring only
        return np.arange(size, dtype=np.int64)
    return np.random.default_rng([seed, epoch, 0x52494E47]).permutation(size).astype(np.int64)


def ring_legs(anchored: bool, scoring: bool, size: int) -> tuple[list[tuple[bool, int]], int]:
    """The rings of a synchronous epoch: ``(reverse, shifts)`` of each, in order, and the
    forward shifts after the last one.

    Every epoch starts and ends with each worker holding its own group, and each ring
    starts with the groups where the one before left them (its first visits need no
    shift).  The update ring runs forward like the anchor gradient's ring before it
    (SVRG), so that its visits end two steps along the epoch's :func:`ring_cycle` from
    where they would after the gradient ring alone: where a block makes its last update
    visit then changes with the cycle from epoch to epoch (two rings run opposite ways
    would end every block's update visits on its own worker).  Each ring makes
    ``size - 1`` shifts; the scoring ring runs the other way round and ends one step
    from home after an anchored update ring, which one forward shift of the weights
    alone closes.  Without a scoring ring the rings make ``size`` shifts each, back home.

    Returns
    -------
    (list of (bool, int), int)
    """
    if not scoring:
        return [(False, size)] * (1 + anchored), 0
    return [(False, size - 1)] * (1 + anchored) + [(True, size - 1)], int(anchored and size > 1)


def row_owners(first: int, count: int, n_shards: int, seed: int) -> np.ndarray:
    """The shard each of rows ``first .. first + count - 1`` (global numbers) goes to.

    A seeded hash of the row number: every shard gets a random sample of the rows,
    whatever their order in the input, and any rank can compute the owner of any row
    without communicating.  Files are often sorted by label (all rows of a class
    together); contiguous shards of such a file would give each worker a different set
    of classes, and a block's steps on one worker's rows would then fit that worker's
    classes alone, which costs many epochs (``benchmarks/parallel_convergence.py``).

    Returns
    -------
    ndarray of int64, shape (count,)
        Values in ``0 .. n_shards - 1``.
    """
    if n_shards <= 1:
        return np.zeros(count, dtype=np.int64)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps on purpose (splitmix64)
        z = np.arange(first, first + count, dtype=np.uint64)
        z += np.uint64((seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
        z ^= z >> np.uint64(30)
        z *= np.uint64(0xBF58476D1CE4E5B9)
        z ^= z >> np.uint64(27)
        z *= np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    # The top 53 bits as a float in [0, 1), exactly; scaled to a shard.
    u = (z >> np.uint64(11)).astype(np.float64) / float(2**53)
    return np.minimum((u * n_shards).astype(np.int64), n_shards - 1)
