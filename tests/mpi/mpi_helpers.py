"""Helpers for tests that run inside an MPI job."""

from __future__ import annotations


def agree(comm, ok: bool, message: str = "") -> None:
    """Assert ``ok`` on every rank at once: it fails everywhere if it fails anywhere."""
    results = comm.allgather((bool(ok), message))
    failed = [(rank, msg) for rank, (good, msg) in enumerate(results) if not good]
    assert not failed, f"failed on rank(s): {failed}"
