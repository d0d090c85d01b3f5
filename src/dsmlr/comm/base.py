"""The communicator interface the engines program against.

Engines are written SPMD-style: the same function runs on every rank and talks to the
others only through these calls, so one engine serves the in-process (threads) and the
MPI (processes) implementations.  Every call is collective: all ranks of the group make
it, in the same order.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["Communicator"]


class Communicator(Protocol):
    """Collective operations among ``size`` ranks.

    Attributes
    ----------
    rank : int
        This worker's index, ``0 <= rank < size``.
    size : int
        Number of workers.
    bytes_sent : int
        Payload bytes this rank has sent so far (for metrics).
    """

    rank: int
    size: int
    bytes_sent: int

    def ring_shift(self, buffers: list[np.ndarray]) -> list[np.ndarray]:
        """Send ``buffers`` to rank ``rank - 1``; return those rank ``rank + 1`` sent.

        The returned arrays may be new objects; callers must use them and drop the ones
        they passed in (which may now belong to another rank).
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
