"""Name the rank that died.

When one process of an MPI job dies (killed, out of memory, a crashed node), the
launcher ends the others within a second or two, and reports a process id, which is
often that of a rank it killed while cleaning up rather than the one that failed.  The
watchdog says which rank failed first.  Every rank keeps TCP connections open to rank 0
and to its ring neighbours, and a background thread on each end waits on them; the
kernel closes a process's connections the moment it dies, also on ``kill -9``, so each
rank has up to three observers.  The first connection that closes without a goodbye
names the dead rank:

    dsmlr: error: rank 2 (pid 4711 on node3) died; the launcher ends the job

With a ``record`` file (``DIR/failure.txt`` under ``--checkpoint-dir``), the first
observer to create it writes the report there and prints it; the others stay quiet.  The
file survives the launcher's cleanup, which may kill an observer before its output is
forwarded, and the next ``--resume`` shows it.  Without one, the lowest-ranked observer
prints.  Only the first loss is reported, so the ranks the launcher kills afterwards do
not add lines.

Setting up is best effort and never blocks the job: connections that cannot be made
(firewall, no route) are left out, and the job still ends when the launcher notices.
Only TCP and one exchange at start-up (an allgather of the ranks' addresses) are used,
so the watchdog cannot interfere with the MPI traffic of training.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import struct
import sys
import threading
import time

__all__ = ["Watchdog"]

_CONNECT_TIMEOUT = 3.0  # per address tried
_ACCEPT_SECONDS = 20.0  # rank 0 waits this long for the others to connect
_BYE = b"B"  # a normal end
_FAILING = b"F"  # this rank raised and reports it itself; the job is ending


def _local_ipv4_addresses() -> list[str]:
    """This host's IPv4 addresses, the non-loopback ones first."""
    found: list[str] = []
    try:
        import fcntl  # Linux and macOS

        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for _, name in socket.if_nameindex():
                request = struct.pack("256s", name.encode()[:15])
                with contextlib.suppress(OSError):
                    reply = fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
                    found.append(socket.inet_ntoa(reply[20:24]))
        finally:
            probe.close()
    except (ImportError, OSError):
        pass
    with contextlib.suppress(OSError):
        found += socket.gethostbyname_ex(socket.gethostname())[2]
    unique = list(dict.fromkeys(found))
    return [a for a in unique if not a.startswith("127.")] + [
        a for a in unique if a.startswith("127.")
    ]


def _targets(rank: int, size: int) -> set[int]:
    """The ranks ``rank`` connects to: rank 0 and its right ring neighbour."""
    return {0, (rank + 1) % size} - {rank}


def _observers(rank: int, size: int) -> set[int]:
    """The ranks holding a connection to ``rank``."""
    return _targets(rank, size) | {r for r in range(size) if rank in _targets(r, size)}


def _describe(rank: int, pid: int, host: str) -> str:
    return f"rank {rank} (pid {pid} on {host})"


class Watchdog:
    """Start watching (collective: every rank of ``comm`` constructs it at once).

    Parameters
    ----------
    comm : MPIComm
        The job's communicator (only its ``allgather``, once, is used).
    stream : text file, optional
        Where the report goes (default ``sys.stderr``).
    record : path, optional
        A file the first observer of a death creates and writes the report to (see the
        module docstring); it must not exist yet, and must be on a filesystem every rank
        sees.
    """

    def __init__(self, comm, stream=None, record: str | os.PathLike | None = None) -> None:
        self.rank = comm.rank
        self.size = comm.size
        self.stream = sys.stderr if stream is None else stream
        self.record = record
        self._me = (comm.rank, os.getpid(), socket.gethostname())
        self._peers: dict[socket.socket, tuple[int, int, str]] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        server, offer = None, None
        if comm.size > 1:
            with contextlib.suppress(OSError):
                server = socket.create_server(("", 0), backlog=comm.size)
                offer = (_local_ipv4_addresses(), server.getsockname()[1], self._me)
        offers = comm.allgather(offer)  # the one collective call, whatever the size
        if comm.size == 1:
            return
        # Connect first: the kernel completes a connection before it is accepted, so no
        # rank waits for another to reach accept().
        for target in _targets(comm.rank, comm.size):
            if offers[target] is not None:
                self._connect(*offers[target])
        expected = sum(comm.rank in _targets(r, comm.size) for r in range(comm.size))
        if server is not None:
            self._accept(server, expected)
        if self._peers:
            self._thread = threading.Thread(target=self._watch, daemon=True, name="dsmlr-watch")
            self._thread.start()

    # -- setting up -----------------------------------------------------------------

    def _accept(self, server: socket.socket, expected: int) -> None:
        deadline = time.monotonic() + _ACCEPT_SECONDS
        accepted = 0
        while accepted < expected and time.monotonic() < deadline:
            server.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                conn, _ = server.accept()
                conn.settimeout(_CONNECT_TIMEOUT)
                hello = conn.recv(512).decode(errors="replace").split("\t")
                self._peers[conn] = (int(hello[0]), int(hello[1]), hello[2])
                conn.settimeout(None)
                accepted += 1
            except (OSError, ValueError, IndexError):
                continue
        server.close()

    def _connect(self, addresses: list[str], port: int, peer: tuple[int, int, str]) -> None:
        for address in addresses:
            if address.startswith("127.") and peer[2] != self._me[2]:
                continue  # another host's loopback address is this host's own
            try:
                conn = socket.create_connection((address, port), timeout=_CONNECT_TIMEOUT)
                rank, pid, host = self._me
                conn.sendall(f"{rank}\t{pid}\t{host}".encode())
                conn.settimeout(None)
            except OSError:
                continue
            self._peers[conn] = tuple(peer)  # type: ignore[assignment]
            return

    # -- watching -------------------------------------------------------------------

    def _watch(self) -> None:
        selector = selectors.DefaultSelector()
        for conn in self._peers:
            selector.register(conn, selectors.EVENT_READ)
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.5):
                conn = key.fileobj
                try:
                    data = conn.recv(16)  # type: ignore[union-attr]
                except OSError:
                    data = b""
                if _FAILING in data:
                    self._stop.set()  # the failing rank said why: nothing to add
                    return
                if _BYE in data or self._stop.is_set():
                    selector.unregister(conn)
                    continue
                if data:
                    continue
                dead = self._peers[conn]  # type: ignore[index]
                self._report(dead)
                self._stop.set()  # report the first loss only
                return

    def _report(self, dead: tuple[int, int, str]) -> None:
        what = f"{_describe(*dead)} died"
        if self.record is not None:
            # The first observer to create the record reports; it is written first, as
            # it survives the launcher's cleanup.
            try:
                fd = os.open(self.record, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except OSError:
                return
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n")
                fh.flush()
                os.fsync(fh.fileno())
        elif self.rank != min(_observers(dead[0], self.size)):
            return
        self.stream.write(f"dsmlr: error: {what}; the launcher ends the job\n")
        self.stream.flush()

    def close(self, failing: bool = False) -> None:
        """Stop watching, saying so to the other side first: a normal end, or (with
        ``failing``) an error this rank reports itself before the job is aborted."""
        self._stop.set()
        for conn in self._peers:
            with contextlib.suppress(OSError):
                conn.sendall(_FAILING if failing else _BYE)
        if self._thread is not None:
            self._thread.join(timeout=2.0)
        for conn in self._peers:
            with contextlib.suppress(OSError):
                conn.close()
        self._peers.clear()

    def __enter__(self) -> Watchdog:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # An error raised on every rank alike ends the job normally (status 1); any other
        # one makes the command line abort the job.
        alike = exc is not None and getattr(exc, "all_ranks", False)
        failing = exc is not None and not alike
        if failing and self._thread is not None:
            # The error may be this rank's MPI library noticing a dead peer: give the
            # watcher a moment to name it before this rank's own report and the abort.
            self._thread.join(timeout=1.0)
        self.close(failing=failing)
