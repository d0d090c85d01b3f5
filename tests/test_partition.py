"""Pure partitioning functions, checked by properties."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dsmlr.partition import class_blocks, ring_block, ring_shifts, row_shards


@settings(max_examples=200, deadline=None)
@given(
    nnz=st.lists(st.integers(0, 50), min_size=0, max_size=60),
    n_shards=st.integers(1, 9),
)
def test_row_shards_cover_rows_in_order(nnz, n_shards):
    indptr = np.concatenate([[0], np.cumsum(nnz)]).astype(np.int64)
    shards = row_shards(indptr, n_shards)
    assert len(shards) == n_shards
    assert shards[0][0] == 0 and shards[-1][1] == len(nnz)
    for (a, b), (c, _) in itertools.pairwise(shards):
        assert a <= b == c
    if len(nnz) >= n_shards:
        assert all(b > a for a, b in shards), "a shard is empty although rows remain"


@settings(max_examples=100, deadline=None)
@given(n_rows=st.integers(50, 400), n_shards=st.integers(1, 6), seed=st.integers(0, 1000))
def test_row_shards_balance_work(n_rows, n_shards, seed):
    nnz = np.random.default_rng(seed).integers(1, 30, size=n_rows)
    indptr = np.concatenate([[0], np.cumsum(nnz)])
    work = [int(np.sum(nnz[a:b] + 1)) for a, b in row_shards(indptr, n_shards)]
    # Each cut is off by at most one row from the ideal cut.
    assert max(work) - min(work) <= 2 * (nnz.max() + 1)


@given(n_classes=st.integers(0, 500), n_blocks=st.integers(1, 40))
def test_class_blocks_partition_classes_evenly(n_classes, n_blocks):
    blocks = class_blocks(n_classes, n_blocks)
    assert len(blocks) == n_blocks
    assert blocks[0][0] == 0 and blocks[-1][1] == n_classes
    sizes = [b - a for a, b in blocks]
    assert max(sizes) - min(sizes) <= 1
    for (_, b), (c, _) in itertools.pairwise(blocks):
        assert b == c


@given(size=st.integers(1, 16))
def test_ring_visits_every_block_once_per_epoch(size):
    for rank in range(size):
        assert sorted(ring_block(rank, r, size) for r in range(size)) == list(range(size))
    for r in range(size):
        # In each round the blocks held form a permutation: no block is held twice.
        assert sorted(ring_block(p, r, size) for p in range(size)) == list(range(size))
        # Receiving from the right neighbour yields the next round's block.
        for p in range(size):
            assert ring_block((p + 1) % size, r, size) == ring_block(p, r + 1, size)


@given(size=st.integers(1, 16), n_rings=st.integers(1, 3))
def test_alternating_rings_visit_every_group_and_end_home(size, n_rings):
    """The synchronous engine's epoch (:func:`dsmlr.engines.sync_ring.ring_epoch`): rings of
    alternating direction, each ``size`` rounds of a visit then (but after the last
    round where it makes ``size - 1`` shifts) a shift."""
    shifts = ring_shifts(n_rings, size)
    assert all(n in (size - 1, size) for n in shifts)
    for rank in range(size):
        gid = rank
        for i, n in enumerate(shifts):
            visited = []
            for r in range(size):
                visited.append(gid)
                if r < n:
                    gid = (gid + (-1 if i % 2 else 1)) % size
            assert sorted(visited) == list(range(size))
        assert gid == rank
    # The fewest shifts that do both: P - 1 per ring, one more for an odd count.
    assert sum(shifts) == n_rings * (size - 1) + n_rings % 2
