"""Training engines (orchestration only), registered by name.

An engine is a function run on every rank with signature
``(comm, rows, cfg, test_rows=None, n_test=0, monitor=None, start=None) -> WorkerResult``.
"""

from __future__ import annotations

from collections.abc import Callable

from dsmlr.engines.async_tokens import async_token_worker
from dsmlr.engines.base import (
    OPTIMIZERS,
    EngineConfig,
    EpochRecord,
    Monitor,
    ResumeState,
    Start,
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
    "ResumeState",
    "Start",
    "StoppingRule",
    "WorkerResult",
    "centre_intercepts",
    "format_epoch",
    "get_engine",
    "n_class_blocks",
]

ENGINES: dict[str, Callable[..., WorkerResult]] = {
    "sync": sync_ring_worker,
    "async": async_token_worker,
}


def n_class_blocks(engine: str, cfg: EngineConfig, n_ranks: int) -> int:
    """How many class blocks B the engine ``engine`` cuts the classes into on ``n_ranks``."""
    from dsmlr.engines import async_tokens, sync_ring

    module = async_tokens if engine == "async" else sync_ring
    return n_ranks * module.blocks_per_group(cfg, n_ranks)


def get_engine(name: str) -> Callable[..., WorkerResult]:
    """Return the engine registered as ``name``."""
    try:
        return ENGINES[name]
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
