"""The in-process communicator: ring shifts, reductions, and no hang on failure."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from dsmlr.comm import run_workers


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_ring_shift_receives_from_right_neighbour(size, reverse):
    """From the right neighbour, or with ``reverse`` from the left one."""

    def body(comm):
        got = comm.ring_shift([np.array([comm.rank]), np.array([10 * comm.rank])], reverse)
        return int(got[0][0]), int(got[1][0]), comm.bytes_sent

    out = run_workers(size, body)
    for rank, (a, b, sent) in enumerate(out):
        source = (rank + (-1 if reverse else 1)) % size
        assert (a, b) == (source, 10 * source)
        assert sent == (0 if size == 1 else 16)


@pytest.mark.parametrize("size", [1, 3])
def test_allreduce_and_allgather(size):
    def body(comm):
        total = comm.allreduce_sum(np.array([1.0, comm.rank]))
        return total, comm.allgather(comm.rank * 2)

    for total, gathered in run_workers(size, body):
        np.testing.assert_array_equal(total, [size, sum(range(size))])
        assert gathered == [2 * r for r in range(size)]


def test_a_failing_worker_does_not_hang_the_others():
    def body(comm):
        if comm.rank == 2:
            raise RuntimeError("worker 2 broke")
        for _ in range(3):
            comm.ring_shift([np.zeros(3)])
        return comm.rank

    start = time.monotonic()
    with pytest.raises(RuntimeError, match="worker 2 broke"):
        run_workers(4, body)
    assert time.monotonic() - start < 10
    assert not [t for t in threading.enumerate() if t.name.startswith("dsmlr-worker")]


def test_wait_seconds_count_the_wait_for_a_late_neighbour():
    def work(comm):
        if comm.rank == 0:
            time.sleep(0.3)  # the late rank: the others wait for it
        comm.ring_shift([np.zeros(4)])
        comm.allreduce_sum(np.ones(2))
        return comm.wait_seconds

    waits = run_workers(3, work)
    assert waits[0] < 0.1 and min(waits[1:]) > 0.25


def test_epoch_records_put_a_straggler_s_cost_in_the_others_wait():
    from dsmlr.engines import EngineConfig
    from dsmlr.training import train_embedded
    from problems import planted_sparse_problem

    X, y = planted_sparse_problem(n_samples=400, n_features=60, n_classes=8, seed=4)
    base = {"n_samples": 400, "n_features": 60, "n_classes": 8, "max_epochs": 2, "tol": 0.0}
    fair, slow = (
        train_embedded(X, y, EngineConfig(**base, straggler=s), 2).history[-1]
        for s in (None, (1, 100.0))
    )
    # Worker 0's record: with worker 1 a hundred times slower it mostly waits.  (At twenty
    # times, the straggler's share of scoring this small problem added about 2 ms to
    # worker 0's, within what a loaded 2-core machine's scheduling adds to either run.)
    assert slow.wait_seconds > 5 * max(fair.wait_seconds, 1e-3)
    assert slow.wait_seconds <= slow.comm_seconds + 1e-6
    assert slow.wait_seconds > 0.5 * slow.comm_seconds
    # The straggler is slow in the scoring ring too: worker 0 waits there as well.
    assert slow.eval_seconds > 2 * fair.eval_seconds


def test_a_straggler_clock_stretches_calls_without_counting_them():
    from dsmlr.engines.ring import Clock

    clock = Clock(slowdown=3.0)
    t0 = time.perf_counter()
    clock.stretched(time.sleep, 0.05)
    assert time.perf_counter() - t0 >= 0.15
    assert clock.compute == 0.0
    t0 = time.perf_counter()
    clock.timed("compute", time.sleep, 0.05)
    assert time.perf_counter() - t0 >= 0.15 and clock.compute >= 0.15


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_sendrecv_along_any_cyclic_order(size):
    """Rank ``order[i]`` sends to ``order[i - 1]`` and receives from ``order[i + 1]``."""
    order = np.random.default_rng(size).permutation(size).tolist()
    pos = {r: i for i, r in enumerate(order)}

    def body(comm):
        i = pos[comm.rank]
        dest, source = order[(i - 1) % size], order[(i + 1) % size]
        got = comm.sendrecv([np.array([comm.rank])], dest, source)
        return int(got[0][0]), source

    for got, source in run_workers(size, body):
        assert got == source


def test_sendrecv_refuses_destinations_that_are_not_a_permutation():
    def body(comm):
        return comm.sendrecv([np.zeros(1)], 0, 1 - comm.rank)  # both send to rank 0

    with pytest.raises(RuntimeError, match="not a permutation"):
        run_workers(2, body)


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_exchanged_rows_are_the_in_process_workers_rows(size, dense):
    """Rows read as contiguous ranges end on the ranks that the in-process workers'
    random shards give them, in the same order, weights included."""
    import scipy.sparse as sp

    from dsmlr.row_exchange import exchange_rows
    from dsmlr.training import shard_rows

    rng = np.random.default_rng(4)
    X = sp.random(203, 17, density=0.2, format="csr", random_state=4)
    X = X.toarray() if dense else X
    y = rng.integers(0, 5, 203)
    w = rng.uniform(size=203)
    want = shard_rows(X, y, size, fit_intercept=False, weight=w, seed=9)
    ranges = shard_rows(X, y, size, fit_intercept=False, weight=w)  # contiguous

    def body(comm):
        mine = ranges[comm.rank]
        return exchange_rows(comm, mine.X, mine.y, mine.weight, 9)

    for (X_got, y_got, w_got), shard in zip(run_workers(size, body), want, strict=True):
        got = X_got.toarray() if sp.issparse(X_got) else X_got
        ref = shard.X.toarray() if sp.issparse(shard.X) else shard.X
        np.testing.assert_array_equal(got, ref)
        np.testing.assert_array_equal(y_got, shard.y)
        np.testing.assert_array_equal(w_got, shard.weight)
        assert sp.issparse(X_got) != dense
