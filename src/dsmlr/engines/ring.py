"""Class blocks on a ring of ranks: the blocks a rank holds and how they travel.

The classes are split into B blocks, gathered into P groups of ``B / P`` blocks; rank
``p`` holds group ``p`` at the start and at the end of every epoch.  The groups pass
round the ranks in a cyclic order that changes from epoch to epoch
(:func:`dsmlr.partition.ring_cycle`).  A :class:`Ring` is one rank's view: its group,
the shifts that hand it to a neighbour in that order (overlapped with the next visit
where the communicator can), and the staging of device blocks through host memory for
the communicator.  Where the ranks share a host, the blocks stay in memory they all map
and a shift copies nothing (:mod:`dsmlr.engines.shared_blocks`).  :class:`Clock` splits a
rank's wall time into compute, communication and scoring, and carries the test-only
straggler knob.

The epoch loop that moves the blocks through an epoch's stages is
:mod:`dsmlr.engines.epochs`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import EngineConfig, Start
from dsmlr.engines.shared_blocks import SharedBlocks
from dsmlr.kernels import HostBlocks, Kernel, get_kernel
from dsmlr.partition import class_blocks

__all__ = ["Block", "Clock", "Ring", "block_array"]


class Clock:
    """Splits wall time into compute, communication (which includes waiting) and scoring.

    ``slowdown`` > 1 stretches this rank's kernel calls (update, gradient and scoring
    passes) by sleeping ``slowdown - 1`` times as long as each took: the test-only
    straggler knob (:attr:`EngineConfig.straggler`).
    """

    def __init__(self, slowdown: float = 1.0) -> None:
        self.compute = 0.0
        self.comm = 0.0
        self.eval = 0.0  # the scoring stage (see EpochRecord.eval_seconds)
        self.slowdown = slowdown

    def stretched(self, fn, *args):
        """``fn(*args)``, made ``slowdown`` times as long (not counted in a bucket)."""
        t0 = time.perf_counter()
        out = fn(*args)
        if self.slowdown > 1.0:
            time.sleep((self.slowdown - 1.0) * (time.perf_counter() - t0))
        return out

    def timed(self, bucket: str, fn, *args):
        t0 = time.perf_counter()
        out = self.stretched(fn, *args) if bucket in ("compute", "eval") else fn(*args)
        setattr(self, bucket, getattr(self, bucket) + time.perf_counter() - t0)
        return out


#: Bytes of weights :meth:`Ring.release` copies out of a shared window at a time.
_RELEASE_CHUNK = 64 * 2**20


def block_array(n_columns: int, width: int, capacity: int, dtype) -> np.ndarray:
    """A zeroed ``(n_columns, width)`` host block in storage with room for ``capacity``
    classes.

    Blocks differ in width by at most one class; with room for the widest, the MPI ring
    can receive any block into the storage of the one it sends, so a rank never holds
    a second copy of its group (:meth:`dsmlr.comm.mpi.MPIComm.ring_shift`).
    """
    return HostBlocks().zeros_block(n_columns, width, capacity, dtype)


def _group_blocks(gid: int, n_workers: int, per_group: int) -> list[int]:
    """Blocks of group ``gid``: ``gid, gid + P, gid + 2P, ...`` (groups travel whole)."""
    return [gid + j * n_workers for j in range(per_group)]


class _ShiftInFlight:
    """One ring shift running on a helper thread.

    The kernels release the GIL and mpi4py's calls do too, so the shift's transfer
    proceeds while the calling thread computes; MPI moves data only inside its calls, so
    without the thread nothing would travel until the next call.  A daemon thread: a rank
    that fails mid-shift must not be kept alive by it (the job is aborted).

    The communicator's ``wait_seconds`` then counts only the part of the shift's wait
    for its neighbours that held up the calling thread: at most the time
    :meth:`result` blocked (a wait that ran beside a kernel cost nothing).
    """

    def __init__(self, comm: Communicator, arrays: list[np.ndarray], dest: int, source: int):
        self._comm = comm
        self._out: list[np.ndarray] | None = None
        self._error: BaseException | None = None
        self._waited = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(arrays, dest, source), name="dsmlr-ring-shift", daemon=True
        )
        self._thread.start()

    def _run(self, arrays: list[np.ndarray], dest: int, source: int) -> None:
        comm = self._comm
        # The calling thread makes no communication call until result(): the counter
        # is this thread's alone meanwhile.
        before = comm.wait_seconds
        try:
            self._out = comm.sendrecv(arrays, dest, source)
        except BaseException as exc:  # re-raised in the calling thread
            self._error = exc
        self._waited = comm.wait_seconds - before
        comm.wait_seconds = before

    def result(self) -> list[np.ndarray]:
        """The arrays that arrived (waits for the shift to finish)."""
        t0 = time.perf_counter()
        self._thread.join()
        self._comm.wait_seconds += min(self._waited, time.perf_counter() - t0)
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


@dataclass
class Block:
    """One class block as a rank holds it: weights, optimiser state, SVRG anchor."""

    q: int
    classes: tuple[int, int]
    W: np.ndarray
    acc: np.ndarray
    W_anchor: np.ndarray | None = None
    mean_grad: np.ndarray | None = None
    # Where the block's update passes left its columns behind, for the next pass (int64,
    # one a column; kernels that carry it, see HostBlocks.carries_lag).
    lag: np.ndarray | None = None

    @property
    def k0(self) -> int:
        return self.classes[0]


class Ring:
    """This rank's view of the ring: the group of blocks it holds, and how to pass it on.

    Parameters
    ----------
    per_group : int
        Blocks per group, so ``B = P * per_group`` blocks in all.
    start : Start, optional
        Starting weights (and AdaGrad state) of each class range; None starts from zero.
    shared_arrays : tuple of str
        The arrays a block holds (:meth:`~dsmlr.engines.optimizers.UpdateRule.block_arrays`),
        kept in memory every rank maps where the communicator shares some
        (:mod:`dsmlr.engines.shared_blocks`); empty: never.
    """

    def __init__(
        self,
        comm: Communicator,
        cfg: EngineConfig,
        clock: Clock,
        per_group: int,
        start: Start | None = None,
        kernel: Kernel | None = None,
        shared_arrays: tuple[str, ...] = (),
    ):
        self.comm = comm
        self.clock = clock
        self.kernel = kernel if kernel is not None else get_kernel("reference")
        self.dtype = cfg.dtype
        # MPI moves host buffers: device blocks are staged through host memory.
        self.staged = getattr(comm, "needs_host_buffers", True) and not isinstance(
            self.kernel, HostBlocks
        )
        self.size = comm.size
        self.per_group = per_group
        self.blocks = class_blocks(cfg.n_classes, self.size * self.per_group)
        self.gid = comm.rank  # rank p starts, and ends every epoch, with group p
        self.set_cycle(np.arange(self.size))
        self.scratch_acc = self.kernel.zeros(cfg.n_columns)  # optimisers without AdaGrad
        self.on_visit: Callable[[], None] | None = None  # progress hook (rank 0)
        self.capacity = max(hi - lo for lo, hi in self.blocks)
        self.n_columns = cfg.n_columns
        # Host blocks of a group that shares memory stay put; a shift hands them on.
        self.store = None
        if shared_arrays and not self.staged and comm.size > 1:
            self.store = SharedBlocks.create(
                comm, shared_arrays, cfg.n_columns, self.capacity, cfg.dtype, per_group
            )
        self.group = []
        for q in _group_blocks(self.gid, self.size, self.per_group):
            lo, hi = self.blocks[q]
            W, acc = self.zeros(q, "W"), self.zeros(q, "acc")
            lag = self.zeros(q, "lag") if self.kernel.carries_lag else None
            if lag is not None:
                lag.fill(-1)  # every column up to date
            if start is not None:
                W[...] = self.kernel.from_host(np.asarray(start.weights(lo, hi), cfg.dtype).T)
                saved = start.acc(q, lo, hi) if start.acc is not None else None
                if saved is not None:
                    acc[...] = self.kernel.from_host(np.asarray(saved, np.float64))
            self.group.append(Block(q, (lo, hi), W, acc, lag=lag))

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def zeros(self, q: int, name: str) -> np.ndarray:
        """A zeroed array ``name`` of block ``q`` (see :class:`Block`): in the shared
        store where the ranks share one, else newly allocated by the kernel."""
        lo, hi = self.blocks[q]
        if self.store is not None and name in self.store.names:
            return self.store.zeros(q, name, hi - lo, self.size)
        if name == "acc":
            return self.kernel.zeros(self.n_columns)
        if name == "lag":
            return np.zeros(self.n_columns, dtype=np.int64)
        return self.kernel.zeros_block(self.n_columns, hi - lo, self.capacity, self.dtype)

    def release(self) -> list[tuple[tuple[int, int], np.ndarray]]:
        """The held blocks' class ranges and host weights, this rank's result at the end
        of training (every rank holds its own group then).

        A shared store is unmapped (collective), the weights copied out first a chunk
        at a time, each chunk's memory in the window given back as soon as it is
        copied (and first that of the optimiser's arrays): the copy never adds the
        group's size to the rank's peak memory.
        """
        if self.store is None:
            return [(blk.classes, self.kernel.to_host(blk.W)) for blk in self.group]
        store, out = self.store, []
        for blk in self.group:
            for name in store.names:
                if name != "W":
                    store.discard(self._view(blk.q, name))
            W = np.empty(blk.W.shape, blk.W.dtype)
            step = max(1, _RELEASE_CHUNK // max(blk.W[:1].nbytes, 1))
            for i in range(0, W.shape[0], step):
                W[i : i + step] = blk.W[i : i + step]
                store.discard(blk.W[i : i + step])
            out.append((blk.classes, W))
        self.group = []
        self.store = None
        store.free()
        return out

    def set_cycle(self, order: np.ndarray) -> None:
        """Pass groups round the ranks in this cyclic ``order`` (a permutation of the
        ranks) from now on: a forward shift sends the group to the rank before this one
        in ``order`` and takes the one after's.  Every rank sets the same order while it
        holds its own group."""
        order = [int(r) for r in order]
        after = order[1:] + order[:1]
        self._next = dict(zip(order, after, strict=True))
        self._prev = dict(zip(after, order, strict=True))

    def _step(self, rank_or_group: int, reverse: bool) -> int:
        """The rank (or group) after ``rank_or_group`` in the cycle (before it if
        ``reverse``): whose group a shift brings, and which group that is."""
        return (self._prev if reverse else self._next)[rank_or_group]

    def _neighbours(self, reverse: bool) -> tuple[int, int]:
        """``(dest, source)`` of this rank's shift: it sends to the rank before it in the
        cycle and takes from the one after (the other way round if ``reverse``)."""
        rank = self.comm.rank
        return self._step(rank, not reverse), self._step(rank, reverse)

    def visited(self) -> None:
        """A block's visit to this rank ended (any stage): tell the progress hook."""
        if self.on_visit is not None:
            self.on_visit()

    def make_block(self, q: int, arrays: dict[str, np.ndarray]) -> Block:
        """A block rebuilt from arrays that arrived (the scratch AdaGrad state if none).

        Its lag travels only in the update stage, the one that leaves columns behind:
        outside it no column is behind, so a block arriving without one gets a lag that
        says so (the shared store's, which then says the same).
        """
        extra: dict[str, np.ndarray] = {"acc": self.scratch_acc}
        if self.kernel.carries_lag and "lag" not in arrays:
            if self.store is not None and "lag" in self.store.names:
                extra["lag"] = self._view(q, "lag")
            else:
                extra["lag"] = np.full(self.n_columns, -1, dtype=np.int64)
        return Block(q, self.blocks[q], **{**extra, **arrays})

    def pack(self, blk: Block, fields: tuple[str, ...]) -> list[np.ndarray]:
        """What a message handing ``blk`` on carries of its ``fields``: the arrays as
        the communicator sends them, or none where the blocks are shared (the receiver
        makes views of them, :meth:`unpack`)."""
        arrays = [getattr(blk, f) for f in fields]
        if self.store is not None:
            self.store.sending(sum(a.nbytes for a in arrays))
            return []
        return self.to_wire(arrays)

    def unpack(self, q: int, fields: tuple[str, ...], arrays: list[np.ndarray]) -> Block:
        """Block ``q`` from a message that :meth:`pack` made of its ``fields``."""
        if self.store is not None:
            self.store.received()
            return self.make_block(q, {f: self._view(q, f) for f in fields})
        return self.make_block(q, dict(zip(fields, self.from_wire(arrays), strict=True)))

    def to_wire(self, arrays: list) -> list[np.ndarray]:
        """Arrays as the communicator sends them (device blocks copied to the host)."""
        return [self.kernel.to_host(a) for a in arrays] if self.staged else arrays

    def from_wire(self, arrays: list[np.ndarray]) -> list:
        """Arrays that arrived, where this rank's kernel keeps them."""
        return [self.kernel.from_host(a) for a in arrays] if self.staged else arrays

    def host_group(self) -> list[Block]:
        """The held group with host copies of the weights and AdaGrad state (saving)."""
        k = self.kernel
        return [Block(b.q, b.classes, k.to_host(b.W), k.to_host(b.acc)) for b in self.group]

    def shift(self, fields: tuple[str, ...], reverse: bool = False) -> None:
        """Hand the held group, with the named arrays of each block, to the rank before this
        one in the cycle (after it if ``reverse``)."""
        if self.store is not None:
            nbytes = sum(getattr(blk, f).nbytes for blk in self.group for f in fields)
            self.clock.timed("comm", self.store.handoff, *self._neighbours(reverse), nbytes)
            self.gid = self._step(self.gid, reverse)
            self.group = [
                self.make_block(q, {f: self._view(q, f) for f in fields})
                for q in _group_blocks(self.gid, self.size, self.per_group)
            ]
            return
        sent = self.to_wire([getattr(blk, f) for blk in self.group for f in fields])
        dest, source = self._neighbours(reverse)
        got = iter(self.from_wire(self.clock.timed("comm", self.comm.sendrecv, sent, dest, source)))
        # At every point of a ring the groups sit in cycle order (rank p holds the group
        # as many steps along the cycle from p as shifts were made), so the rank this
        # one takes a group from held the group one step further along.
        self.gid = self._step(self.gid, reverse)
        self.group = [
            self.make_block(q, {f: next(got) for f in fields})
            for q in _group_blocks(self.gid, self.size, self.per_group)
        ]

    def _view(self, q: int, name: str) -> np.ndarray:
        lo, hi = self.blocks[q]
        return self.store.array(q, name, hi - lo, self.size)

    def travel(
        self,
        fields: tuple[str, ...],
        visit: Callable[[Block, int], None],
        reverse: bool = False,
        n_shifts: int | None = None,
    ) -> None:
        """A ring: P rounds of ``visit(block, round)`` for each held block, after which
        the group (the named arrays of each block) passes to the rank before this one in
        the cycle (after it if ``reverse``, see :meth:`set_cycle`).

        ``n_shifts``: P (the default: the ring ends where it began) or P - 1, when it
        ends holding the group it visited last rather than passing it on (the next ring
        starts with it, see :func:`~dsmlr.engines.sync_ring.ring_epoch`).

        Where the communicator can shift on a helper thread (MPI) and a group has two or
        more blocks, each block leaves as soon as its visit is done and travels while the
        next one is visited: a round's communication hides behind its computation,
        except the last block's, which hides behind the next round's first visit.  The
        blocks visited, their order and the arrays each visit sees are the same either
        way, so results are identical; only the ``comm`` clock, which then counts the
        time spent waiting for a block to arrive, shrinks.
        """
        n_shifts = self.size if n_shifts is None else n_shifts
        # A shift of shared blocks copies nothing: nothing to overlap.
        overlap = getattr(self.comm, "overlaps_shifts", False) and self.store is None
        if self.per_group < 2 or not overlap:
            for r in range(self.size):
                for blk in self.group:
                    visit(blk, r)
                if r < n_shifts:
                    self.shift(fields, reverse)
            return
        in_flight: tuple[int, _ShiftInFlight] | None = None
        for r in range(self.size):
            for j, blk in enumerate(self.group):
                visit(blk, r)
                if in_flight is not None:
                    self._land(*in_flight, fields, reverse)
                    in_flight = None
                if r < n_shifts:
                    arrays = self.to_wire([getattr(blk, f) for f in fields])
                    shift = _ShiftInFlight(self.comm, arrays, *self._neighbours(reverse))
                    in_flight = (j, shift)
        if in_flight is not None:
            self._land(*in_flight, fields, reverse)

    def _land(self, j: int, shift: _ShiftInFlight, fields: tuple[str, ...], reverse: bool) -> None:
        """Put the block that arrived by ``shift`` in place ``j`` of the held group."""
        got = iter(self.from_wire(self.clock.timed("comm", shift.result)))
        # self.gid moves on with the group's last block; block j comes from the next group.
        gid = self._step(self.gid, reverse)
        q = _group_blocks(gid, self.size, self.per_group)[j]
        self.group[j] = self.make_block(q, {f: next(got) for f in fields})
        if j == self.per_group - 1:  # the whole group has moved on
            self.gid = gid
