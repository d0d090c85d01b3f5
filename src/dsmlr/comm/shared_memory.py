"""Memory that every rank of a one-host MPI job maps: ring shifts that move no bytes.

Where the ranks of a job share one host, a class block need not be copied from one
rank's memory to the next: each rank maps every rank's part of one MPI-3 shared window
(``MPI_Win_allocate_shared``), the blocks live there, and a ring shift only tells the
neighbours that a block is free to use (:meth:`SharedWindow.handoff`).  Copying the
blocks took a third of an epoch at two ranks on a two-core host, and the copies pushed
the model out of the caches the passes read it from
(``benchmarks/results/parallel_timing.md`` times both ways); a handoff takes
microseconds.

The window is used only where it cannot fail late: every rank of the group is on one
host (MPI's ``COMM_TYPE_SHARED`` split says so), the host's shared-memory file system
has room for the whole window (a tmpfs that runs out kills the process touching the
page with SIGBUS, long after the allocation succeeded), and ``DSMLR_SHARED_MEMORY=0``
is not set in the environment.  Otherwise the ranks copy (see
:meth:`dsmlr.comm.mpi.MPIComm.sendrecv`), as they always do between hosts.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

__all__ = ["SharedWindow", "shared_memory_enabled", "shared_memory_room"]

#: Where MPICH (and Open MPI) keep shared segments on Linux.
_SHM_DIR = "/dev/shm"
#: Room kept free beyond the window on that file system (the MPI library's own
#: segments live there too).
_SHM_SPARE = 64 * 2**20
#: Each rank's part is allocated in a multiple of this, so that every part starts on a
#: page boundary (the window does) and its pages can be given back one by one.
_PART_ALIGN = 2 * 2**20
#: ``madvise`` advice that frees a range of a shared mapping's pages and their backing
#: store (Linux; the range then reads as zeros).
_MADV_REMOVE = 9
_TAG_HANDOFF = 31
_TOKEN = np.zeros(1, dtype=np.int8)


def shared_memory_enabled() -> bool:
    """False where ``DSMLR_SHARED_MEMORY=0`` asks every shift to copy."""
    return os.environ.get("DSMLR_SHARED_MEMORY", "1") != "0"


def shared_memory_room() -> int | None:
    """Bytes free for shared memory on this host (``/dev/shm``), None where it cannot be
    told (no such file system)."""
    try:
        st = os.statvfs(_SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def _room_for(nbytes: int) -> bool:
    """Whether the shared-memory file system can hold ``nbytes`` more (True where the
    platform has none to ask: the MPI library then allocates otherwise)."""
    room = shared_memory_room()
    return room is None or room >= nbytes + _SHM_SPARE


class SharedWindow:
    """``nbytes`` of memory per rank, which every rank of the group maps.

    Made by :meth:`dsmlr.comm.mpi.MPIComm.share` (collective); :meth:`segment` is rank
    ``r``'s part as bytes.  Ranks coordinate who writes where themselves, passing
    parts on with :meth:`handoff`.  :meth:`free` (collective) unmaps the memory: no
    view of it may be used afterwards.
    """

    def __init__(self, mpi: Any, comm: Any, nbytes: int, counters: Any):
        self._MPI = mpi
        self._comm = comm
        self._counters = counters  # the MPIComm whose wait_seconds a handoff adds to
        allocated = max(-(-int(nbytes) // _PART_ALIGN) * _PART_ALIGN, _PART_ALIGN)
        self._win = mpi.Win.Allocate_shared(allocated, 1, comm=comm)
        self._segments = []
        for r in range(comm.Get_size()):
            buf, _ = self._win.Shared_query(r)
            self._segments.append(np.frombuffer(buf, dtype=np.uint8)[:nbytes])
        # One passive epoch for the window's life: Sync then orders a rank's loads and
        # stores against the messages that hand the memory on (the unified model's
        # rule for shared windows).
        self._win.Lock_all(mpi.MODE_NOCHECK)
        self.nbytes = int(nbytes)

    def segment(self, rank: int) -> np.ndarray:
        """Rank ``rank``'s part of the window, as uint8."""
        return self._segments[rank]

    def fence(self) -> None:
        """Order this rank's loads and stores of the window against the messages it
        sends and receives next: before a message that hands memory on, and after one
        that hands memory here (as :meth:`handoff` does around its own)."""
        self._win.Sync()

    def count(self, nbytes: int) -> None:
        """Count ``nbytes`` of arrays handed on by another message as sent (see
        :meth:`handoff`)."""
        self._counters.bytes_sent += int(nbytes)

    def handoff(self, dest: int, source: int, nbytes: int = 0) -> None:
        """Tell ``dest`` that what this rank wrote for it is done, and wait until
        ``source`` says the same to this rank (a ring shift of shared blocks).

        ``nbytes``, the arrays handed on, count as sent (``bytes_sent``), as the
        in-process communicator counts the arrays whose references it hands on: the
        figure is the ring's payload whatever carries it.
        """
        if dest == source == self._comm.Get_rank():
            return
        self.count(nbytes)
        t0 = time.perf_counter()
        self._win.Sync()
        self._comm.Sendrecv(
            _TOKEN, dest=dest, sendtag=_TAG_HANDOFF,
            recvbuf=np.empty_like(_TOKEN), source=source, recvtag=_TAG_HANDOFF,
        )  # fmt: skip
        self._win.Sync()
        self._counters.wait_seconds += time.perf_counter() - t0

    def discard(self, view: np.ndarray) -> bool:
        """Give the pages that lie wholly inside ``view`` (a contiguous array in the
        window that no rank will read again) back to the operating system, for every
        rank; False where the platform cannot (the memory then stays until
        :meth:`free`).  Lets a rank copy its blocks out of the window at the end of
        training without holding both copies at once."""
        return _release_pages(view.__array_interface__["data"][0], view.nbytes)

    def free(self) -> None:
        """Unmap the window on every rank (collective)."""
        self._segments = []
        self._win.Unlock_all()
        self._win.Free()


def _release_pages(address: int, nbytes: int) -> bool:
    """``madvise(MADV_REMOVE)`` on the whole pages of ``[address, address + nbytes)``."""
    page = mmap.PAGESIZE
    start, stop = -(-address // page) * page, (address + nbytes) // page * page
    if stop <= start:
        return True
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    return libc.madvise(start, stop - start, _MADV_REMOVE) == 0


def node_window(mpi: Any, comm: Any, nbytes: int, counters: Any) -> SharedWindow | None:
    """A :class:`SharedWindow` of ``nbytes`` per rank, or None where the group cannot
    share one (see module docstring); collective, every rank gets the same answer."""
    if comm.Get_size() < 2:
        return None
    node = comm.Split_type(mpi.COMM_TYPE_SHARED)
    one_host = node.Get_size() == comm.Get_size()
    node.Free()
    wanted = one_host and shared_memory_enabled()
    room = _room_for(nbytes * comm.Get_size())
    # Every rank must take the same road: the allocation is collective.
    if not comm.allreduce(int(wanted and room), op=mpi.MIN):
        if wanted and not room and comm.Get_rank() == 0:
            warnings.warn(
                f"{_SHM_DIR} lacks room for the class blocks "
                f"({nbytes * comm.Get_size() / 2**30:.2f} GiB): the ranks copy them at every "
                "shift instead, which is slower (a container's --shm-size raises the room)",
                RuntimeWarning,
                stacklevel=2,
            )
        return None
    return SharedWindow(mpi, comm, nbytes, counters)
