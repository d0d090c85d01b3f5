"""Training engines (orchestration only), registered by name.

An engine is a function run on every rank with signature
``(comm, rows, cfg, test_rows=None, n_test=0, monitor=None, initial=None) -> WorkerResult``.
"""

from __future__ import annotations

from collections.abc import Callable

from dsmlr.engines.async_tokens import async_token_worker
from dsmlr.engines.base import (
    OPTIMIZERS,
    EngineConfig,
    EpochRecord,
    Monitor,
    StoppingRule,
    WorkerResult,
    centre_intercepts,
    format_epoch,
)
from dsmlr.engines.sync_ring import sync_ring_worker

__all__ = [
    "ENGINES",
    "OPTIMIZERS",
    "EngineConfig",
    "EpochRecord",
    "Monitor",
    "StoppingRule",
    "WorkerResult",
    "centre_intercepts",
    "format_epoch",
    "get_engine",
]

ENGINES: dict[str, Callable[..., WorkerResult]] = {
    "sync": sync_ring_worker,
    "async": async_token_worker,
}


def get_engine(name: str) -> Callable[..., WorkerResult]:
    """Return the engine registered as ``name``."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
