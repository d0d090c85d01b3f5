"""Fixtures for the tests that run inside an MPI job (``mpiexec -n P python -m pytest``).

Every rank runs the same tests in the same order, so the collective calls of a test
line up across ranks.  Assertions are agreed first (:func:`mpi_helpers.agree`): a check that failed
on one rank fails on all, so no rank races ahead into the next test's collectives while
another is left waiting.  ``tests/test_mpi.py`` launches this suite under
``mpiexec -n 1..4`` with a deadlock timeout; run alone (not under MPI) it is skipped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest

from dsmlr.comm.launcher import launched_by_mpi

if not launched_by_mpi():
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def comm():
    from dsmlr.comm.mpi import MPIComm

    return MPIComm()


@pytest.fixture
def shared_dir(comm):
    """A directory every rank sees (rank 0 makes it; the ranks share a filesystem)."""
    path = tempfile.mkdtemp(prefix="dsmlr-mpi-") if comm.rank == 0 else None
    path = Path(comm.allgather(path)[0])
    yield path
    comm.barrier()
    if comm.rank == 0:
        shutil.rmtree(path, ignore_errors=True)
