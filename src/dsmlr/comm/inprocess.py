"""In-process communicator: ``size`` workers as threads of one process (the default).

Blocks move by reference (no copy), which is what makes the embedded engine cheap; the
bytes a real network would carry are still counted so metrics match an MPI run.  The
fast kernels release the GIL, so worker threads compute in parallel.

If any worker raises, :func:`run_workers` aborts the shared barrier, every other worker
leaves its collective call with :class:`threading.BrokenBarrierError`, and the first
original exception is re-raised in the caller: no worker is left waiting forever.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np

__all__ = ["InProcessComm", "run_workers"]

T = TypeVar("T")


class _Group:
    """State shared by the threads of one in-process group."""

    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size)
        self.slots: list[object] = [None] * size
        self.inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(size)]
        self.lock = threading.Lock()
        self.entered: dict[int, int] = {}  # non-blocking barrier generation -> ranks in

    def check_alive(self) -> None:
        """Raise in a worker whose group was aborted (another worker failed)."""
        if self.barrier.broken:
            raise threading.BrokenBarrierError


class _InProcessBarrier:
    def __init__(self, group: _Group, generation: int):
        self._group = group
        self._generation = generation

    def test(self) -> bool:
        self._group.check_alive()
        with self._group.lock:
            return self._group.entered[self._generation] >= self._group.size


class InProcessComm:
    """One rank's handle on an in-process group (see module docstring)."""

    def __init__(self, group: _Group, rank: int):
        self._group = group
        self.rank = rank
        self.local_rank = rank  # every worker shares this process's host
        self.size = group.size
        self.bytes_sent = 0
        self.wait_seconds = 0.0
        self.needs_host_buffers = False
        self.overlaps_shifts = False  # shifts swap references: nothing to overlap
        self._generation = 0

    def _wait(self) -> None:
        """The group barrier; threads share memory, so all of it is waiting."""
        t0 = time.perf_counter()
        self._group.barrier.wait()
        self.wait_seconds += time.perf_counter() - t0

    def _exchange(self, value: object) -> list[object]:
        g = self._group
        g.slots[self.rank] = value
        self._wait()
        everything = list(g.slots)
        # A second barrier so no rank overwrites its slot before all have read.
        g.barrier.wait()
        return everything

    def ring_shift(self, buffers: list[np.ndarray], reverse: bool = False) -> list[np.ndarray]:
        left, right = (self.rank - 1) % self.size, (self.rank + 1) % self.size
        return self.sendrecv(buffers, *((right, left) if reverse else (left, right)))

    def sendrecv(self, buffers: list[np.ndarray], dest: int, source: int) -> list[np.ndarray]:
        if self.size == 1:
            return buffers
        if dest != self.rank:
            self.bytes_sent += sum(int(a.nbytes) for a in buffers)
        everything = self._exchange((dest, buffers))
        sent_to, got = everything[source]  # type: ignore[misc]
        if sent_to != self.rank:
            raise RuntimeError(
                f"rank {self.rank} expected a message from rank {source}, which sent to "
                f"rank {sent_to}: the ranks' destinations are not a permutation"
            )
        return got

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        values = np.asarray(values)
        if self.size == 1:
            return values.copy()
        self.bytes_sent += int(values.nbytes)
        everything = self._exchange(values)
        # Sum in rank order so every rank gets bit-identical results.
        total = np.zeros_like(values)
        for part in everything:
            total = total + part
        return total

    def allgather(self, value: object) -> list[object]:
        if self.size == 1:
            return [value]
        return self._exchange(value)

    def barrier(self) -> None:
        if self.size > 1:
            self._wait()

    def share(self, nbytes: int) -> None:
        return None  # a shift hands references over already

    def ibarrier(self) -> _InProcessBarrier:
        g = self._group
        with g.lock:
            g.entered[self._generation] = g.entered.get(self._generation, 0) + 1
        self._generation += 1
        return _InProcessBarrier(g, self._generation - 1)

    def post(self, dest: int, buffers: list[np.ndarray]) -> None:
        if dest != self.rank:
            self.bytes_sent += sum(int(a.nbytes) for a in buffers)
        self._group.inboxes[dest].put(buffers)

    def poll(self, timeout: float = 0.0) -> list[np.ndarray] | None:
        inbox = self._group.inboxes[self.rank]
        deadline = time.monotonic() + timeout
        while True:
            self._group.check_alive()
            t0 = time.perf_counter()
            try:
                # Short waits, so a worker notices promptly when another one failed.
                return inbox.get(timeout=min(0.05, max(deadline - time.monotonic(), 0.0)))
            except queue.Empty:
                if time.monotonic() >= deadline:
                    return None
            finally:
                self.wait_seconds += time.perf_counter() - t0

    def flush(self) -> None:
        return None  # arrays move by reference: nothing stays in flight

    def posts_in_flight(self) -> int:
        return 0  # the receiver's inbox holds the arrays, not this rank


def run_workers(size: int, target: Callable[[InProcessComm], T]) -> list[T]:
    """Run ``target(comm)`` on ``size`` threads (rank 0 on the calling thread).

    Returns the per-rank results in rank order; re-raises the first worker exception.
    """
    group = _Group(size)
    results: list[object] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def body(rank: int) -> None:
        try:
            results[rank] = target(InProcessComm(group, rank))
        except BaseException as exc:
            errors[rank] = exc
            group.barrier.abort()

    threads = [
        threading.Thread(target=body, args=(r,), name=f"dsmlr-worker-{r}", daemon=True)
        for r in range(1, size)
    ]
    for t in threads:
        t.start()
    body(0)
    for t in threads:
        t.join()
    # The root cause, not the BrokenBarrierError it triggered on the other ranks.
    real = [e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)]
    if real:
        raise real[0]
    if any(e is not None for e in errors):
        raise next(e for e in errors if e is not None)
    return results  # type: ignore[return-value]
