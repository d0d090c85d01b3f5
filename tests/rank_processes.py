"""Find the processes of an MPI job's ranks, to kill one (Linux ``/proc`` only).

Used by the kill tests of ``tests/test_mpi.py`` and by ``benchmarks/fault_campaign.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

__all__ = ["rank_pid"]


def rank_pid(marker: str, rank: int, timeout: float = 60) -> int | None:
    """The pid of MPI rank ``rank`` of the job whose command line contains ``marker``,
    or None if none shows up within ``timeout`` seconds.

    A rank is recognised by the ``PMI_RANK`` its launcher put in its environment.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile, or not ours to read
                continue
            if marker.encode() in cmdline and f"PMI_RANK={rank}".encode() in environ:
                return int(entry.name)
        time.sleep(0.02)
    return None
