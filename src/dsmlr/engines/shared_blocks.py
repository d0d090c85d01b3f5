"""Class blocks in memory every rank maps, so that passing one on copies nothing.

Where the communicator can share memory among its ranks (MPI ranks on one host, see
:mod:`dsmlr.comm.shared_memory`), the engines keep every block's arrays in one window:
block ``q`` always in the part of rank ``q % P`` (the rank its group starts and ends
every epoch on), at slot ``q // P``, each of its arrays at a fixed offset there.  A
block never moves: a ring shift hands the right to use its memory to the next rank
(:meth:`~dsmlr.comm.shared_memory.SharedWindow.handoff`), as does an asynchronous
token's message, then its header alone, and that rank makes views of the arrays the
stage passes on.  Arrays a stage does not pass are dropped by the receiver as after a
copy, so the epochs compute exactly what they compute when the blocks are copied.

Each rank's part holds its group's arrays, as many bytes as a private group (one
model-sized array per name in :meth:`~dsmlr.engines.optimizers.UpdateRule.block_arrays`,
each with room for the widest block, and AdaGrad's float64 ``acc``): memory per rank
still falls as ``1 / P``.
"""

from __future__ import annotations

import numpy as np

from dsmlr.comm.base import Communicator

__all__ = ["SharedBlocks"]

#: Arrays start on cache-line boundaries (and vector loads are aligned).
_ALIGN = 64

#: A block's arrays of one value a column (AdaGrad's accumulators, the update passes'
#: lag, see dsmlr.engines.ring.Block), and their types; every other is weights-sized.
_PER_COLUMN = {"acc": np.float64, "lag": np.int64}


def _aligned(nbytes: int) -> int:
    return -(-nbytes // _ALIGN) * _ALIGN


class SharedBlocks:
    """The arrays of every block, in a window every rank maps (see module docstring).

    Parameters
    ----------
    window : SharedWindow or None
        The memory (:meth:`create` asks the ring's communicator for it; None: the
        layout alone, to size the window).
    names : tuple of str
        The arrays a block holds (``"acc"`` float64 and ``"lag"`` int64, one a column;
        every other one ``(n_columns, width)`` in ``dtype``).
    n_columns, capacity : int
        Columns of the model and classes of the widest block.
    dtype : numpy dtype
        The weights' dtype.
    per_group : int
        Blocks of a group (slots of a rank's part).
    """

    def __init__(self, window, names, n_columns: int, capacity: int, dtype, per_group: int):
        self.window = window
        self.names = tuple(names)
        self.n_columns, self.dtype = n_columns, np.dtype(dtype)
        self._offsets, offset = {}, 0
        for name in names:
            self._offsets[name] = offset
            offset += _aligned(self._nbytes(name, n_columns, capacity, self.dtype))
        self._slot = offset

    @staticmethod
    def _nbytes(name: str, n_columns: int, capacity: int, dtype: np.dtype) -> int:
        return n_columns * 8 if name in _PER_COLUMN else n_columns * capacity * dtype.itemsize

    @classmethod
    def create(
        cls, comm: Communicator, names, n_columns: int, capacity: int, dtype, per_group: int
    ) -> SharedBlocks | None:
        """The store on a window ``comm`` shares (collective); None where it shares none."""
        layout = cls(None, names, n_columns, capacity, dtype, per_group)
        window = comm.share(layout._slot * per_group)
        if window is None:
            return None
        return cls(window, names, n_columns, capacity, dtype, per_group)

    def array(self, q: int, name: str, width: int, n_ranks: int) -> np.ndarray:
        """Block ``q``'s array ``name`` (``width`` classes wide), a view into the window;
        its values are whatever was last written there."""
        start = (q // n_ranks) * self._slot + self._offsets[name]
        part = self.window.segment(q % n_ranks)
        if name in _PER_COLUMN:
            return part[start : start + self.n_columns * 8].view(_PER_COLUMN[name])
        count = self.n_columns * width * self.dtype.itemsize
        return part[start : start + count].view(self.dtype).reshape(self.n_columns, width)

    def zeros(self, q: int, name: str, width: int, n_ranks: int) -> np.ndarray:
        """:meth:`array`, set to zero."""
        out = self.array(q, name, width, n_ranks)
        out.fill(0)
        return out

    def handoff(self, dest: int, source: int, nbytes: int) -> None:
        """A ring shift: the held blocks (``nbytes`` of arrays passed on) to ``dest``,
        ``source``'s to this rank."""
        self.window.handoff(dest, source, nbytes)

    def sending(self, nbytes: int) -> None:
        """Before a message that hands a block (``nbytes`` of its arrays) to another
        rank: this rank's writes to it come first, and the bytes count as sent."""
        self.window.fence()
        self.window.count(nbytes)

    def received(self) -> None:
        """After a message that handed a block to this rank: the sender's writes to it
        come first."""
        self.window.fence()

    def discard(self, view: np.ndarray) -> None:
        """Give the memory of ``view``, no longer read by any rank, back to the system
        (see :meth:`~dsmlr.comm.shared_memory.SharedWindow.discard`)."""
        self.window.discard(view)

    def free(self) -> None:
        """Unmap the window (collective); no view of it may be used afterwards."""
        self.window.free()
