"""The MPI communicator, under mpiexec: ring shifts of any shape, sums, tokens, barriers."""

from __future__ import annotations

import time

import numpy as np
from mpi_helpers import agree


def test_ring_shift_moves_arrays_of_any_shape_to_the_left(comm):
    right = (comm.rank + 1) % comm.size
    mine = [
        np.full((3, comm.rank + 1), comm.rank, dtype=np.float32),
        np.arange(comm.rank, dtype=np.int64),
        np.zeros((4, 0)),  # an empty block still travels
    ]
    got = comm.ring_shift(mine)
    ok = (
        got[0].shape == (3, right + 1)
        and got[0].dtype == np.float32
        and np.all(got[0] == right)
        and np.array_equal(got[1], np.arange(right))
        and got[2].shape == (4, 0)
    )
    agree(comm, ok, f"received {[a.shape for a in got]}")


def test_reverse_ring_shift_moves_arrays_to_the_right(comm):
    left = (comm.rank - 1) % comm.size
    mine = [np.full(5, comm.rank, dtype=np.float64), np.arange(comm.rank + 2, dtype=np.int32)]
    got = comm.ring_shift(mine, reverse=True)
    ok = np.all(got[0] == left) and np.array_equal(got[1], np.arange(left + 2, dtype=np.int32))
    # Then the usual way: each rank gets back what it sent.
    back = comm.ring_shift(got)
    ok = ok and np.all(back[0] == comm.rank) and np.array_equal(back[1], np.arange(comm.rank + 2))
    agree(comm, bool(ok), f"received {got} then {back}")


def test_bytes_sent_counts_the_payload(comm):
    before = comm.bytes_sent
    comm.ring_shift([np.zeros(1000)])
    expected = 0 if comm.size == 1 else 8000
    agree(comm, comm.bytes_sent - before == expected, str(comm.bytes_sent - before))


def test_allreduce_is_bit_identical_on_every_rank(comm):
    rng = np.random.default_rng(comm.rank)
    values = rng.normal(size=7) * 10.0 ** rng.integers(-8, 8, size=7)
    total = comm.allreduce_sum(values)
    parts = comm.allgather(values)
    expected = np.zeros(7)
    for part in parts:
        expected = expected + part
    everyone = comm.allgather(total.tobytes())
    agree(comm, np.array_equal(total, expected) and len(set(everyone)) == 1)


def test_tokens_reach_every_rank_and_the_barrier_ends_the_exchange(comm):
    # Every rank posts one token to every rank (itself included), then serves until
    # the non-blocking barrier completes: the termination pattern of the async engine.
    for dest in range(comm.size):
        comm.post(dest, [np.array([comm.rank, dest]), np.full((2, 2), float(comm.rank))])
    received = []
    done = None
    while True:
        msg = comm.poll(0.01)
        if msg is not None:
            received.append(msg)
        if done is None and len(received) == comm.size:
            done = comm.ibarrier()
        if done is not None and done.test():
            break
    comm.flush()
    senders = sorted(int(m[0][0]) for m in received)
    ok = senders == list(range(comm.size)) and all(
        int(m[0][1]) == comm.rank and np.all(m[1] == m[0][0]) for m in received
    )
    agree(comm, ok, f"got from {senders}")
    agree(comm, comm.poll(0.0) is None, "a message arrived after the barrier")


def test_a_poll_without_waiting_sees_a_token_that_has_arrived(comm):
    # The async engine asks for tokens without waiting between visits: a token that
    # arrived while the rank computed (no MPI call to drive progress) must come out of
    # that one ask, or the rank starts its next visit without it and decides where
    # tokens go on stale queue lengths.  The receiver makes no MPI call for half a
    # second after the barrier; the sender posts at once.
    sender, receiver = comm.size - 1, 0
    comm.barrier()
    if comm.rank == sender:
        comm.post(receiver, [np.array([sender]), np.arange(4.0)])
    message = None
    if comm.rank == receiver:
        time.sleep(0.5)
        message = comm.poll(0.0)
    comm.flush()
    comm.barrier()
    seen = comm.rank != receiver or (message is not None and int(message[0][0]) == sender)
    agree(comm, seen, "a token that had arrived was not seen")


def test_arrays_longer_than_one_message_travel_in_pieces():
    # MPI counts are C ints: a block of more than 2**31 - 1 values must go as several
    # messages.  A communicator cutting at 7 values shows the cut at a size tests afford.
    from dsmlr.comm.mpi import MPIComm

    small = MPIComm(max_count=7)
    dest = (small.rank + 1) % small.size
    sent = [np.arange(30.0).reshape(5, 6) + small.rank, np.arange(7), np.zeros(0)]
    small.post(dest, sent)
    got = None
    while got is None:
        got = small.poll(0.01)
    small.flush()
    source = (small.rank - 1) % small.size
    ok = (
        np.array_equal(got[0], np.arange(30.0).reshape(5, 6) + source)
        and np.array_equal(got[1], np.arange(7))
        and got[2].shape == (0,)
    )
    agree(small, ok, "pieces reassembled wrongly")


def test_a_post_is_in_flight_until_its_receiver_takes_it_in(comm):
    # 8 MB: past MPICH's eager limits, so the send waits for the receive.
    big = np.ones(1 << 20)
    sender, receiver = comm.size - 1, 0
    if comm.rank == sender and sender != receiver:
        comm.post(receiver, [big])
    before = comm.posts_in_flight()
    comm.barrier()
    if comm.rank == receiver and sender != receiver:
        message = comm.poll(10.0)
        agree_locally = message is not None and np.array_equal(message[0], big)
    else:
        agree_locally = True
    comm.barrier()
    deadline = time.monotonic() + 10.0
    while comm.posts_in_flight() and time.monotonic() < deadline:
        time.sleep(0.01)
    expected = 1 if comm.rank == sender and sender != receiver else 0
    agree(comm, before == expected and agree_locally, f"{before} in flight before")
    agree(comm, comm.posts_in_flight() == 0, "still in flight after the receive")


def test_ring_shift_with_some_neighbours_alike_and_some_not(comm, monkeypatch):
    # Ranks 0 and 1 hold equal shapes, the others one column less (uneven class blocks):
    # some pairs exchange in place, some into new buffers, all in several chunks.
    import dsmlr.comm.mpi as mpi

    monkeypatch.setattr(mpi, "_CHUNK_BYTES", 64)
    width = lambda r: 5 if r < 2 else 4  # noqa: E731
    right = (comm.rank + 1) % comm.size
    mine = [np.full((7, width(comm.rank)), float(comm.rank)), np.arange(30) + comm.rank]
    got = comm.ring_shift(mine)
    ok = (
        got[0].shape == (7, width(right))
        and np.all(got[0] == right)
        and np.array_equal(got[1], np.arange(30) + right)
    )
    agree(comm, ok, f"got {got[0].shape} {got[0].ravel()[:3]}")


def test_storage_with_room_receives_a_wider_block_in_place(comm, monkeypatch):
    import dsmlr.comm.mpi as mpi
    from dsmlr.engines.ring import block_array

    monkeypatch.setattr(mpi, "_CHUNK_BYTES", 40)
    width = lambda r: 3 if r % 2 else 2  # noqa: E731
    right = (comm.rank + 1) % comm.size
    mine = block_array(6, width(comm.rank), 3, np.float64)
    mine[...] = comm.rank
    storage = mine.base
    (got,) = comm.ring_shift([mine])
    ok = got.shape == (6, width(right)) and np.all(got == right)
    if comm.size > 1:
        ok = ok and got.base is storage  # received into the storage it sent from
    agree(comm, ok, f"got {got.shape}, same storage: {got.base is storage}")


def test_wait_seconds_count_the_wait_for_a_late_rank(comm):
    before = comm.wait_seconds
    if comm.rank == 0:
        time.sleep(0.3)
    comm.ring_shift([np.zeros(1000)])
    comm.allreduce_sum(np.ones(2))
    waited = comm.wait_seconds - before
    # Rank 0's ring neighbours wait for it in the handshake; ranks further away meet
    # neighbours that are themselves held up, which counts as transfer time.
    neighbour = comm.rank in (1, comm.size - 1) and comm.rank != 0
    if comm.rank == 0:
        agree(comm, waited < 0.15, f"the late rank waited {waited:.3f}s")
    else:
        agree(comm, waited > 0.2 or not neighbour, f"a neighbour waited only {waited:.3f}s")


def test_sendrecv_along_a_random_cycle_of_ranks(comm):
    from dsmlr.partition import ring_cycle

    order = ring_cycle(comm.size, seed=1, epoch=2).tolist()
    i = order.index(comm.rank)
    dest, source = order[(i - 1) % comm.size], order[(i + 1) % comm.size]
    got = comm.sendrecv([np.full((2, comm.rank + 1), comm.rank, dtype=np.float32)], dest, source)
    agree(comm, got[0].shape == (2, source + 1) and np.all(got[0] == source), str(got))


def test_exchanged_rows_are_the_in_process_workers_rows(comm):
    import scipy.sparse as sp

    from dsmlr.row_exchange import exchange_rows
    from dsmlr.training import shard_rows

    rng = np.random.default_rng(4)
    X = sp.random(203, 17, density=0.2, format="csr", random_state=4)
    y, w = rng.integers(0, 5, 203), rng.uniform(size=203)
    mine = shard_rows(X, y, comm.size, fit_intercept=False, weight=w)[comm.rank]
    X_got, y_got, w_got = exchange_rows(comm, mine.X, mine.y, mine.weight, seed=9)
    want = shard_rows(X, y, comm.size, fit_intercept=False, weight=w, seed=9)[comm.rank]
    ok = (
        (X_got != want.X).nnz == 0
        and np.array_equal(y_got, want.y)
        and np.array_equal(w_got, want.weight)
    )
    agree(comm, ok, f"rank {comm.rank} got {X_got.shape[0]} rows, wanted {want.n_rows}")
