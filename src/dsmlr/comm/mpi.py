"""MPI communicator: one rank per process, on one machine or many (mpi4py).

This is the only module that imports mpi4py, and only when an :class:`MPIComm` is made,
so ``import dsmlr`` never initialises MPI.  Array traffic uses mpi4py's uppercase
(buffer) calls, which send the arrays' memory directly with no pickling; only
:meth:`MPIComm.allgather` (small Python objects, never on a hot path) pickles, and only
between the ranks of one job.

Arrays of any shape travel: every transfer is preceded by a small fixed-size int64
header (count, dtype code, shape of each array) so the receiver can allocate exactly the
buffers that arrive.  The communicator works on a private duplicate of the given one, so
its tags never meet a user's own messages.

Sums are made deterministic: :meth:`MPIComm.allreduce_sum` gathers every rank's array
and adds them in rank order, so all ranks get bit-identical results (the engines take
decisions such as stopping on these values; ranks that disagreed by one rounding would
diverge) and a run on P processes adds in the same order as the in-process engine.
"""

from __future__ import annotations

import collections
import subprocess
import sys
import time
from typing import Any

import numpy as np

from dsmlr.comm.launcher import launched_by_mpi, launcher_local_rank
from dsmlr.comm.shared_memory import SharedWindow, node_window

__all__ = [
    "MPIComm",
    "abort_job",
    "mpi_library_version",
    "world_rank_and_size",
]

_DTYPES = [np.dtype(t) for t in ("float64", "float32", "int64", "int32", "uint8", "bool")]
_MAX_ARRAYS = 16
_MAX_DIM = 3
_HEADER = 1 + _MAX_ARRAYS * (2 + _MAX_DIM)  # count, then (dtype, ndim, shape...) per array

_TAG_RING_HEADER, _TAG_RING_READY, _TAG_RING = 11, 12, 1000
_READY = np.zeros(1, dtype=np.int8)
# Ring transfers go this many bytes at a time; those of equal shapes in place (MPI
# buffers one chunk internally for Sendrecv_replace).
_CHUNK_BYTES = 16 * 2**20
_TAG_POST_HEADER, _TAG_POST = 21, 2000
# Iprobes per look for a post (see MPIComm._probe); one that finds nothing costs under 1 us.
_PROBES = 16


def _mpi():
    """mpi4py's MPI module; the first import initialises MPI, so only on demand."""
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError(
            f"running under an MPI launcher needs mpi4py ({exc}); install it with "
            "pip install 'dsmlr[mpi]'"
        ) from None
    return MPI


def world_rank_and_size() -> tuple[int, int]:
    """This process's rank and the number of processes in the whole MPI job."""
    MPI = _mpi()
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def _header(buffers: list[np.ndarray]) -> np.ndarray:
    if len(buffers) > _MAX_ARRAYS:
        raise ValueError(f"at most {_MAX_ARRAYS} arrays per message, got {len(buffers)}")
    head = np.zeros(_HEADER, dtype=np.int64)
    head[0] = len(buffers)
    for i, a in enumerate(buffers):
        if a.ndim > _MAX_DIM:
            raise ValueError(f"arrays of at most {_MAX_DIM} dimensions travel, got {a.ndim}")
        base = 1 + i * (2 + _MAX_DIM)
        head[base] = _DTYPES.index(a.dtype)
        head[base + 1] = a.ndim
        head[base + 2 : base + 2 + a.ndim] = a.shape
    return head


def _chunks(a: np.ndarray) -> list[np.ndarray]:
    """Consecutive views of C-contiguous ``a``, each at most ``_CHUNK_BYTES``."""
    flat = a.reshape(-1)
    step = max(1, _CHUNK_BYTES // max(a.itemsize, 1))
    return [flat[start : start + step] for start in range(0, flat.size, step)]


def _pieces(a: np.ndarray, max_count: int) -> list[np.ndarray]:
    """Consecutive views of C-contiguous ``a`` of at most ``max_count`` elements (one,
    possibly empty, for a small array): sender and receiver cut alike."""
    flat = a.reshape(-1)
    return [flat[start : start + max_count] for start in range(0, max(flat.size, 1), max_count)]


def _described(head: np.ndarray) -> list[tuple[tuple[int, ...], np.dtype]]:
    """The (shape, dtype) of each array a header announces."""
    out = []
    for i in range(int(head[0])):
        base = 1 + i * (2 + _MAX_DIM)
        ndim = int(head[base + 1])
        shape = tuple(int(n) for n in head[base + 2 : base + 2 + ndim])
        out.append((shape, _DTYPES[int(head[base])]))
    return out


def _allocate(head: np.ndarray) -> list[np.ndarray]:
    return [np.empty(shape, dtype=dtype) for shape, dtype in _described(head)]


def _storage(a: np.ndarray) -> np.ndarray | None:
    """The writable flat memory ``a`` occupies from its start: the 1-D array it is a
    prefix view of (which may be longer), else ``a`` flattened; None if not writable."""
    if not (a.flags.c_contiguous and a.flags.writeable):
        return None
    base = a.base
    if (
        isinstance(base, np.ndarray)
        and base.ndim == 1
        and base.dtype == a.dtype
        and base.flags.c_contiguous
        and base.flags.writeable
        and base.__array_interface__["data"][0] == a.__array_interface__["data"][0]
    ):
        return base
    return a.reshape(-1)


class _MPIBarrier:
    def __init__(self, request: Any):
        self._request = request

    def test(self) -> bool:
        return bool(self._request.Test())


class MPIComm:
    """One process's handle on an MPI job (see module docstring).

    Parameters
    ----------
    comm : mpi4py.MPI.Comm, optional
        The group to run on (default ``MPI.COMM_WORLD``); it is duplicated.
    max_count : int, default 2**30
        Most elements one message of :meth:`post` carries: a longer array travels as
        several, since MPI's counts are C ints (at most ``2**31 - 1``) and a class block
        of a large model can hold more values.  The same on every rank.

    Attributes
    ----------
    local_rank : int
        This rank among the job's processes on its host, as the launcher tells it
        (:func:`dsmlr.comm.launcher.launcher_local_rank`; else ``rank``): which GPU of
        the host a rank takes.
    """

    def __init__(self, comm: Any = None, max_count: int = 2**30):
        MPI = _mpi()
        if not 1 <= max_count <= 2**31 - 1:
            raise ValueError(f"max_count must be in 1..2**31 - 1, got {max_count}")
        self.max_count = int(max_count)

        self._MPI = MPI
        self._comm = (MPI.COMM_WORLD if comm is None else comm).Dup()
        self.rank = self._comm.Get_rank()
        self.size = self._comm.Get_size()
        self.local_rank = launcher_local_rank(self.rank)
        self.bytes_sent = 0
        self.wait_seconds = 0.0
        self.needs_host_buffers = True
        # A ring shift on a helper thread while the main thread runs a kernel: only one
        # thread calls MPI at a time then (the engines wait for the shift before any
        # other call), which THREAD_SERIALIZED allows; mpi4py asks for MULTIPLE.
        self.overlaps_shifts = self.size > 1 and MPI.Query_thread() >= MPI.THREAD_SERIALIZED
        self._in_flight: list[tuple[list[Any], list[np.ndarray]]] = []
        self._to_self: collections.deque[list[np.ndarray]] = collections.deque()

    # -- collectives --------------------------------------------------------------------

    def ring_shift(self, buffers: list[np.ndarray], reverse: bool = False) -> list[np.ndarray]:
        left, right = (self.rank - 1) % self.size, (self.rank + 1) % self.size
        return self.sendrecv(buffers, *((right, left) if reverse else (left, right)))

    def sendrecv(self, buffers: list[np.ndarray], dest: int, source: int) -> list[np.ndarray]:
        if self.size == 1 or (dest == self.rank and source == self.rank):
            return buffers
        comm, MPI = self._comm, self._MPI
        # "left" is where this exchange sends and "right" where it receives from.
        left, right = dest, source
        buffers = [np.ascontiguousarray(a) for a in buffers]
        head = _header(buffers)
        incoming_head = np.empty_like(head)
        # A handshake with both neighbours before the payload: the header comes from
        # the right one, an empty "ready" from the left one (small sends complete at
        # once, the receives only when that neighbour has arrived).  It moves a few
        # bytes, so its time is this rank's wait; the payload's is transfer.
        t0 = time.perf_counter()
        comm.Sendrecv(
            head, dest=left, sendtag=_TAG_RING_HEADER,
            recvbuf=incoming_head, source=right, recvtag=_TAG_RING_HEADER,
        )  # fmt: skip
        comm.Sendrecv(
            _READY, dest=right, sendtag=_TAG_RING_READY,
            recvbuf=np.empty_like(_READY), source=left, recvtag=_TAG_RING_READY,
        )  # fmt: skip
        self.wait_seconds += time.perf_counter() - t0
        # On the wire every array travels as the same sequence of chunks, whichever way
        # each end stores it, so neighbours need not agree on storing in place.
        storages = [_storage(a) for a in buffers]
        described = _described(incoming_head)
        # Neighbours may hold different numbers of arrays (a model of B blocks on P ranks
        # with P not dividing B): then the incoming ones are allocated.
        if len(described) == len(buffers) and all(
            st is not None and st.dtype == dtype and st.size >= int(np.prod(shape))
            for st, (shape, dtype) in zip(storages, described, strict=True)
        ):
            incoming = self._exchange_in_place(buffers, storages, described, left, right)
        else:
            incoming = _allocate(incoming_head)
            requests = [
                comm.Irecv(chunk, source=right, tag=_TAG_RING + i)
                for i, a in enumerate(incoming)
                for chunk in _chunks(a)
            ] + [
                comm.Isend(chunk, dest=left, tag=_TAG_RING + i)
                for i, a in enumerate(buffers)
                for chunk in _chunks(a)
            ]
            MPI.Request.Waitall(requests)
        self.bytes_sent += sum(int(a.nbytes) for a in buffers)
        return incoming

    def _exchange_in_place(self, buffers, storages, described, left, right):
        """Receive the right neighbour's arrays into the storage of the ones sent.

        A chunk is received into a scratch chunk, the same chunk of this rank's array
        is sent, then the scratch is copied in: a rank never holds a second copy of its
        group, which is what lets memory per rank shrink as ``1 / P``.  Storage with
        room to spare (see :func:`dsmlr.engines.ring.block_array`) takes an incoming
        array wider than the outgoing one, so uneven class blocks qualify too.
        """
        MPI, comm = self._MPI, self._comm
        out = []
        for i, (a, flat, (shape, _)) in enumerate(zip(buffers, storages, described, strict=True)):
            n_out, n_in = a.size, int(np.prod(shape))
            step = max(1, _CHUNK_BYTES // max(a.itemsize, 1))
            scratch = np.empty(min(step, max(n_in, 1)), dtype=a.dtype)
            for start in range(0, max(n_in, n_out), step):
                got = max(0, min(step, n_in - start))
                put = max(0, min(step, n_out - start))
                requests = []
                if got:
                    requests.append(comm.Irecv(scratch[:got], source=right, tag=_TAG_RING + i))
                if put:
                    requests.append(
                        comm.Isend(flat[start : start + put], dest=left, tag=_TAG_RING + i)
                    )
                MPI.Request.Waitall(requests)
                if got:
                    flat[start : start + got] = scratch[:got]
            out.append(flat[:n_in].reshape(shape))
        return out

    def allreduce_sum(self, values: np.ndarray) -> np.ndarray:
        values = np.ascontiguousarray(values)
        if self.size == 1:
            return values.copy()
        everything = np.empty((self.size, *values.shape), dtype=values.dtype)
        # A few numbers: the time is the wait for the last rank to arrive.
        t0 = time.perf_counter()
        self._comm.Allgather(values, everything)
        self.wait_seconds += time.perf_counter() - t0
        self.bytes_sent += int(values.nbytes)
        total = np.zeros_like(values)
        for part in everything:  # rank order: identical on every rank
            total = total + part
        return total

    def allgather(self, value: object) -> list[object]:
        if self.size == 1:
            return [value]
        t0 = time.perf_counter()  # small objects: the time is waiting, as for allreduce
        out = self._comm.allgather(value)
        self.wait_seconds += time.perf_counter() - t0
        return out

    def barrier(self) -> None:
        if self.size > 1:
            t0 = time.perf_counter()
            self._comm.Barrier()
            self.wait_seconds += time.perf_counter() - t0

    def ibarrier(self) -> _MPIBarrier:
        return _MPIBarrier(self._comm.Ibarrier())

    def share(self, nbytes: int) -> SharedWindow | None:
        """``nbytes`` per rank of memory every rank maps, where the ranks share one host
        (collective; None elsewhere, see :mod:`dsmlr.comm.shared_memory`)."""
        return node_window(self._MPI, self._comm, nbytes, self)

    # -- point to point -----------------------------------------------------------------

    def post(self, dest: int, buffers: list[np.ndarray]) -> None:
        if dest == self.rank:
            self._to_self.append(buffers)
            return
        buffers = [np.ascontiguousarray(a) for a in buffers]
        head = _header(buffers)
        comm = self._comm
        # Messages between two ranks are matched in the order sent, so the data that
        # follows a header is the data the receiver reads right after that header.
        requests = [comm.Isend(head, dest=dest, tag=_TAG_POST_HEADER)]
        requests += [
            comm.Isend(piece, dest=dest, tag=_TAG_POST + i)
            for i, a in enumerate(buffers)
            for piece in _pieces(a, self.max_count)
        ]
        self._in_flight.append((requests, [head, *buffers]))  # keep the memory alive
        self.bytes_sent += sum(int(a.nbytes) for a in buffers)
        self._reap()

    def poll(self, timeout: float = 0.0) -> list[np.ndarray] | None:
        MPI = self._MPI
        deadline = time.monotonic() + timeout
        pause = 1e-4
        status = MPI.Status()
        while True:
            if self._to_self:
                return self._to_self.popleft()
            if self._probe(status):
                source = status.Get_source()
                head = np.empty(_HEADER, dtype=np.int64)
                self._comm.Recv(head, source=source, tag=_TAG_POST_HEADER)
                buffers = _allocate(head)
                for i, a in enumerate(buffers):
                    for piece in _pieces(a, self.max_count):
                        self._comm.Recv(piece, source=source, tag=_TAG_POST + i)
                return buffers
            self._reap()
            now = time.monotonic()
            if now >= deadline:
                return None
            # Sleep rather than spin: ranks often share cores, and a spinning idle rank
            # would steal cycles from the one it is waiting for.
            time.sleep(min(pause, deadline - now))
            self.wait_seconds += time.monotonic() - now
            pause = min(pause * 2, 5e-3)

    def _probe(self, status: object) -> bool:
        """Whether a post's header has arrived (its sender in ``status``).

        MPICH's Iprobe looks for a match before it drives progress, and one call's
        progress may serve only some of the senders: a header that arrived in shared
        memory while this rank computed showed only at the 2nd to 5th call (2 to 16
        ranks on one host).  A single probe would miss the tokens sent during a visit,
        so the rank would start its next visit without them and send tokens on stale
        queue lengths: on debian-files at P = 2 that left each rank idle for 0.1 s of
        an epoch of 1.2.
        """
        for _ in range(_PROBES):
            if self._comm.Iprobe(source=self._MPI.ANY_SOURCE, tag=_TAG_POST_HEADER, status=status):
                return True
        return False

    def flush(self) -> None:
        for requests, _ in self._in_flight:
            self._MPI.Request.Waitall(requests)
        self._in_flight.clear()

    def posts_in_flight(self) -> int:
        self._reap()
        return len(self._in_flight)

    def _reap(self) -> None:
        self._in_flight = [
            (reqs, bufs) for reqs, bufs in self._in_flight if not self._MPI.Request.Testall(reqs)
        ]

    # -- failure ------------------------------------------------------------------------

    def abort(self, code: int = 1) -> None:
        """End every process of the job now (after an error on this rank)."""
        abort_job(code)


def abort_job(code: int = 1) -> None:
    """Abort the whole MPI job (all ranks) with exit status ``code``.

    An exception on one rank would otherwise leave the others blocked in their next
    collective call forever; aborting makes the launcher kill them all.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    _mpi().COMM_WORLD.Abort(code)


# Run in a child process: MPI_Get_library_version may be called before MPI_Init, so the
# child never initialises MPI (no runtime needed, nothing to start or to hang on).
_LIBRARY_PROBE = """
import mpi4py
mpi4py.rc.initialize = False
mpi4py.rc.finalize = False
from mpi4py import MPI
print(MPI.Get_library_version())
"""


def mpi_library_version(timeout: float = 30.0) -> str:
    """The MPI library's version text (``MPI_Get_library_version``).

    Asked in a child process unless MPI is (or is about to be) initialised here anyway:
    importing ``mpi4py.MPI`` initialises MPI, which with some MPI installations and no
    runtime aborts the whole process, and would leave MPI initialised in the caller's.

    Raises
    ------
    ImportError
        mpi4py is not installed.
    RuntimeError
        The probe failed or gave no answer within ``timeout`` seconds (its reason).
    """
    import mpi4py  # noqa: F401  (the package alone does not initialise MPI)

    if launched_by_mpi() or "mpi4py.MPI" in sys.modules:
        return _mpi().Get_library_version()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _LIBRARY_PROBE],
            capture_output=True, text=True, timeout=timeout, check=False,
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"no answer in {timeout:g} s") from None
    if proc.returncode != 0:
        errors = [line for line in proc.stderr.splitlines() if line.strip()]
        raise RuntimeError(errors[-1] if errors else f"exit status {proc.returncode}")
    return proc.stdout
