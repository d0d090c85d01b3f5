"""Blocks in memory the ranks of one host share, against blocks copied between ranks:
the same training, bit for bit, and the window's own contract."""

from __future__ import annotations

import mmap
import warnings

import numpy as np
import pytest
from mpi_helpers import agree

from dsmlr.comm import shared_memory
from dsmlr.distributed import fit_sharded
from dsmlr.engines import ring as ring_module
from dsmlr.training import shard_rows
from problems import planted_sparse_problem, sklearn_objective

LAM = 1e-3


def _fit(comm, X, y, monkeypatch, copy: bool, **params):
    """fit_sharded on this rank's rows; whether the ring's blocks were shared."""
    monkeypatch.setenv("DSMLR_SHARED_MEMORY", "0" if copy else "1")
    stores = []
    create = ring_module.SharedBlocks.create

    def spy(*args, **kwargs):
        stores.append(create(*args, **kwargs))
        return stores[-1]

    monkeypatch.setattr(ring_module.SharedBlocks, "create", spy)
    shard = shard_rows(X, y, comm.size, fit_intercept=True)[comm.rank]
    model = fit_sharded(shard.X, shard.y, comm=comm, lam=LAM, random_state=2, **params)
    return model, any(s is not None for s in stores)


@pytest.mark.parametrize(
    ("optimizer", "per_rank", "n_features"),
    [
        ("svrg", None, 300),  # the anchor as weights travelling with the blocks
        ("svrg", None, 3000),  # the anchor as the ranks' tables
        ("svrg", 2, 300),  # two blocks a rank: copied ones travel on a helper thread
        ("adagrad", None, 300),  # float64 accumulators beside the weights
        ("sgd", 2, 300),
    ],
)
def test_shared_blocks_train_exactly_as_copied_ones(
    comm, monkeypatch, optimizer, per_rank, n_features
):
    X, y = planted_sparse_problem(n_samples=240, n_features=n_features, n_classes=12, seed=4)
    params = {"optimizer": optimizer, "blocks_per_rank": per_rank, "max_epochs": 4, "tol": -1}
    shared, used = _fit(comm, X, y, monkeypatch, copy=False, **params)
    copied, used_when_off = _fit(comm, X, y, monkeypatch, copy=True, **params)
    agree(comm, used == (comm.size > 1) and not used_when_off, f"shared: {used}, {used_when_off}")
    same = all(
        a == b and np.array_equal(A, B)
        for (a, A), (b, B) in zip(shared.blocks, copied.blocks, strict=True)
    )
    agree(comm, same, "the blocks differ")
    for key in ("objective", "bytes_sent"):
        got = [h[key] for h in shared.history_]
        want = [h[key] for h in copied.history_]
        agree(comm, got == want, f"{key}: {got} shared, {want} copied")


@pytest.mark.parametrize("copy", [False, True])
def test_async_tokens_reach_the_optimum_shared_or_copied(comm, monkeypatch, copy):
    # Tokens go wherever a rank is free, so the two ways differ; each must converge.
    X, y = planted_sparse_problem(n_samples=600, n_features=200, n_classes=12, seed=5)
    best = comm.allgather(sklearn_objective(X, y, LAM) if comm.rank == 0 else None)[0]
    model, used = _fit(
        comm, X, y, monkeypatch, copy, engine="async", max_epochs=60, tol=1e-9,
        dtype="float64", blocks_per_rank=2,
    )  # fmt: skip
    agree(comm, used == (comm.size > 1 and not copy), f"shared: {used}")
    gap = (model.history_[-1]["objective"] - best) / best
    agree(comm, abs(gap) < 1e-4, f"relative gap {gap:.2e}")


def test_a_window_part_written_by_one_rank_is_read_by_the_next(comm):
    window = comm.share(16384)
    if comm.size == 1:
        agree(comm, window is None, "one rank needs no shared window")
        return
    mine = window.segment(comm.rank).view(np.int64)
    for lap in range(3):  # each rank writes into the part it holds, then hands it left
        held = (comm.rank + lap) % comm.size
        window.segment(held).view(np.int64)[:] = 100 * lap + held
        window.handoff((comm.rank - 1) % comm.size, (comm.rank + 1) % comm.size, 16384)
        nxt = (held + 1) % comm.size
        got = window.segment(nxt).view(np.int64)
        agree(comm, bool(np.all(got == 100 * lap + nxt)), f"lap {lap}: read {got[:2]}")
    agree(comm, mine.size == 2048, "each part has the bytes asked for")
    comm.barrier()  # every rank done reading before the pages go
    # Given back: whole pages inside the view read as zeros, the bytes around them stay.
    part = window.segment(comm.rank)
    part[:] = 7
    released = window.discard(part[100:])
    inside = part[mmap.PAGESIZE : 2 * mmap.PAGESIZE]
    agree(comm, released and np.all(inside == 0) and np.all(part[:100] == 7), "discard")
    del mine, got, part, inside
    window.free()


def test_no_window_where_asked_not_or_without_room(comm, monkeypatch):
    monkeypatch.setenv("DSMLR_SHARED_MEMORY", "0")
    agree(comm, comm.share(4096) is None, "DSMLR_SHARED_MEMORY=0 shares nothing")
    monkeypatch.delenv("DSMLR_SHARED_MEMORY")
    monkeypatch.setattr(shared_memory, "_room_for", lambda nbytes: comm.rank != 0)
    # One rank without room: none of them takes the window (the allocation is collective),
    # and the user hears why the run is slower.
    if comm.size == 1:
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        window = comm.share(4096)
    warned = any("lacks room" in str(w.message) for w in caught)
    agree(comm, window is None, "a window despite a rank without room")
    agree(comm, warned == (comm.rank == 0), f"rank {comm.rank} warned: {warned}")
