"""Pure partitioning functions, checked by properties."""

from __future__ import annotations

import itertools

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from dsmlr.partition import class_blocks, ring_cycle, ring_legs, row_owners, row_shards


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


@given(size=st.integers(1, 16), seed=st.integers(0, 2**31), epoch=st.integers(1, 500))
def test_ring_cycle_is_a_permutation_every_rank_draws_alike(size, seed, epoch):
    order = ring_cycle(size, seed, epoch)
    assert sorted(order.tolist()) == list(range(size))
    np.testing.assert_array_equal(order, ring_cycle(size, seed, epoch))


def test_ring_cycles_differ_between_epochs():
    """Where a block makes its last update visit must change from epoch to epoch."""
    orders = {tuple(ring_cycle(8, 3, epoch)) for epoch in range(1, 21)}
    assert len(orders) > 15


def _cycle(size: int, seed: int, epoch: int) -> tuple[dict, dict]:
    """``(after, before)``: each rank's successor and predecessor in the epoch's cycle."""
    order = ring_cycle(size, seed, epoch).tolist()
    after = dict(zip(order, order[1:] + order[:1], strict=True))
    return after, {b: a for a, b in after.items()}


def _groups_held(legs, size: int, after: dict, before: dict) -> list[list[int]]:
    """The group each rank holds in every round of each ring (rank p starts with group p;
    a forward shift brings each rank the group its successor held, one step along the
    cycle, a reversed one its predecessor's)."""
    held, rounds = list(range(size)), []
    for reverse, n in legs:
        ring = []
        for r in range(size):
            ring.append(list(held))
            if r < n:
                held = [(before if reverse else after)[g] for g in held]
        rounds.append(ring)
    rounds.append([held])  # where the last ring leaves them
    return rounds


@given(
    size=st.integers(1, 16),
    anchored=st.booleans(),
    scoring=st.booleans(),
    seed=st.integers(0, 1000),
)
def test_an_epoch_s_rings_visit_every_group_and_end_home(size, anchored, scoring, seed):
    """The synchronous engine's epoch (:func:`dsmlr.engines.sync_ring.ring_epoch`) along
    a random cycle: every ring shows every rank every group once, and the epoch ends with
    every rank holding its own group."""
    after, before = _cycle(size, seed, 1)
    legs, home = ring_legs(anchored, scoring, size)
    assert len(legs) == 1 + anchored + scoring
    *rings, (held,) = _groups_held(legs, size, after, before)
    for ring in rings:
        for rank in range(size):
            assert sorted(rnd[rank] for rnd in ring) == list(range(size))
        for rnd in ring:  # no group held twice in a round
            assert sorted(rnd) == list(range(size))
    for _ in range(home):
        held = [after[g] for g in held]
    assert held == list(range(size))
    # Each ring one shift short of a full turn where a scoring ring follows; the shift
    # home after an anchored one moves the weights alone.
    assert sum(n for _, n in legs) == len(legs) * (size - scoring)
    assert home == int(scoring and anchored and size > 1)


@given(anchored=st.booleans(), size=st.integers(3, 12))
def test_where_blocks_end_their_update_visits_changes_from_epoch_to_epoch(anchored, size):
    """With one place for every epoch, a block's last steps of every epoch would fit one
    worker's rows (see :func:`dsmlr.partition.ring_cycle`)."""
    legs, _ = ring_legs(anchored, True, size)
    ends = set()
    for epoch in range(1, 30):
        rings = _groups_held(legs, size, *_cycle(size, 0, epoch))
        last_round = rings[int(anchored)][-1]  # the update ring's
        ends.add(last_round.index(0))  # the rank that holds group 0 then
    assert len(ends) > 1


@settings(max_examples=100, deadline=None)
@given(
    n=st.integers(0, 3000),
    n_shards=st.integers(1, 9),
    seed=st.integers(0, 2**40),
    cut=st.integers(0, 3000),
)
def test_row_owners_of_a_range_are_its_part_of_the_whole(n, n_shards, seed, cut):
    """Any rank computes any row's owner from its global number alone."""
    cut = min(cut, n)
    whole = row_owners(0, n, n_shards, seed)
    assert whole.dtype == np.int64 and len(whole) == n
    assert np.all((whole >= 0) & (whole < n_shards))
    parts = np.concatenate(
        [row_owners(0, cut, n_shards, seed), row_owners(cut, n - cut, n_shards, seed)]
    )
    np.testing.assert_array_equal(parts, whole)


def test_row_owners_are_balanced_and_unrelated_to_row_order():
    owner = row_owners(0, 40_000, 4, seed=7)
    counts = np.bincount(owner, minlength=4)
    assert counts.min() > 0.95 * 10_000 and counts.max() < 1.05 * 10_000
    # Rows sorted by label (blocks of 50 consecutive rows per class): every shard gets
    # nearly every class, where contiguous shards would get a quarter of them each.
    label = np.arange(40_000) // 50
    for p in range(4):
        assert len(np.unique(label[owner == p])) > 0.95 * 800
    assert not np.array_equal(owner, row_owners(0, 40_000, 4, seed=8))
