"""The communicator interface the engines program against.

Engines are written SPMD-style: the same function runs on every rank and talks to the
others only through these calls, so one engine serves the in-process (threads) and the
MPI (processes) implementations.  The collective calls (``ring_shift``, ``sendrecv``,
``allreduce_sum``, ``allgather``, ``barrier``, ``ibarrier``) are made by all ranks of the
group in the same order; ``post`` and ``poll`` are point-to-point, for engines without lockstep (the
asynchronous engine passes class blocks as tokens with them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from dsmlr.comm.shared_memory import SharedWindow

__all__ = ["BarrierRequest", "Communicator"]


class BarrierRequest(Protocol):
    """A non-blocking barrier in progress (see :meth:`Communicator.ibarrier`)."""

    def test(self) -> bool:
        """True once every rank has entered the barrier (never blocks)."""
        ...


class Communicator(Protocol):
    """Collective operations among ``size`` ranks.

    Attributes
    ----------
    rank : int
        This worker's index, ``0 <= rank < size``.
    size : int
        Number of workers.
    local_rank : int
        This worker's index among the group's workers on its host (which of the host's
        GPUs it takes).
    bytes_sent : int
        Payload bytes this rank has sent so far (for metrics), including arrays handed
        on by reference (in process) or in shared memory (:meth:`share`).
    wait_seconds : float
        Seconds this rank has spent inside communication calls waiting for other ranks
        rather than moving data (for metrics; a part of the time the calls took): in a
        collective (small payloads: all of its time), in a ring shift's handshake with
        its two neighbours, or in an idle :meth:`poll`.  A ring shift counts only the
        wait for the neighbours themselves: when a neighbour is held up by its own
        neighbour, that delay shows as transfer time.  A shift made on a helper thread
        (see ``overlaps_shifts``) counts only what held up the calling thread.
    needs_host_buffers : bool
        Whether arrays must be host numpy arrays (MPI); False when they are handed over
        as objects (in process), so device tensors pass as they are.
    overlaps_shifts : bool
        Whether a ring shift may run on a helper thread while the calling thread
        computes (the engines then pass one block on while visiting the next, see
        :meth:`dsmlr.engines.ring.Ring.travel`).  True where a shift copies data and
        the library allows a second thread to call it (MPI); False in process, where a
        shift only swaps references.
    """

    rank: int
    size: int
    local_rank: int
    bytes_sent: int
    wait_seconds: float
    needs_host_buffers: bool
    overlaps_shifts: bool

    def ring_shift(self, buffers: list[np.ndarray], reverse: bool = False) -> list[np.ndarray]:
        """Send ``buffers`` to rank ``rank - 1``; return those rank ``rank + 1`` sent
        (``reverse``: send to ``rank + 1``, return those of ``rank - 1``; every rank
        shifts the same way).

        The returned arrays may be new objects; callers must use them and drop the ones
        they passed in (which may now belong to another rank).
        """
        ...

    def sendrecv(self, buffers: list[np.ndarray], dest: int, source: int) -> list[np.ndarray]:
        """Send ``buffers`` to rank ``dest``; return those rank ``source`` sent here.

        Collective: every rank calls it at the same time, and the ranks' ``dest`` form a
        permutation whose inverse their ``source`` give (a ring shift along any cyclic
        order of the ranks, or one round of an all-to-all).  ``dest == source == rank``
        hands the buffers back.  As for :meth:`ring_shift`, callers use the returned
        arrays and drop the ones they passed in.
        """
        ...

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``values`` over all ranks, returned on every rank."""
        ...

    def allgather(self, value: object) -> list[object]:
        """Small Python objects from every rank, in rank order (not for hot paths)."""
        ...

    def barrier(self) -> None:
        """Wait until every rank has arrived."""
        ...

    def share(self, nbytes: int) -> SharedWindow | None:
        """``nbytes`` per rank of memory that every rank maps, handed between ranks
        without copies (collective); None where the ranks cannot share memory, or need
        not (in process, where a shift already passes references).  See
        :mod:`dsmlr.comm.shared_memory`."""
        ...

    def ibarrier(self) -> BarrierRequest:
        """Enter a barrier without waiting; the request tells when all ranks have entered.

        Used for termination: a rank enters once it has nothing left to do but may still
        serve messages from others; when the barrier completes nobody will send again.
        """
        ...

    def post(self, dest: int, buffers: list[np.ndarray]) -> None:
        """Send ``buffers`` to rank ``dest`` without waiting (``dest`` may be this rank).

        The caller hands the arrays over and must not modify them afterwards.  Messages
        from one rank to another arrive in the order they were posted.
        """
        ...

    def poll(self, timeout: float = 0.0) -> list[np.ndarray] | None:
        """One message posted to this rank, waiting up to ``timeout`` seconds; else None."""
        ...

    def flush(self) -> None:
        """Wait until every message this rank posted has left its buffers."""
        ...

    def posts_in_flight(self) -> int:
        """Messages this rank posted whose buffers it still holds (not received yet)."""
        ...
