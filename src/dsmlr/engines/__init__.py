"""Training engines (orchestration only), registered by name.

An engine's worker is a function run on every rank with signature
``(comm, rows, cfg, test_rows=None, n_test=0, monitor=None, start=None) -> WorkerResult``;
the registry (:data:`ENGINES`) also says how the engine lays out the class blocks, which
memory plans and cost models need before a run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dsmlr.engines import async_tokens, sync_ring
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
    "Engine",
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


@dataclass(frozen=True)
class Engine:
    """An engine as the registry knows it.

    Attributes
    ----------
    worker : callable
        Runs the training on every rank (see the module docstring).
    blocks_per_group : callable
        ``(cfg, n_ranks) -> int``: the class blocks each rank starts an epoch with.
    roaming : bool
        Whether blocks go to any rank within an epoch (so that with two or more ranks one
        may hold more than its group, see :func:`dsmlr.memory.async_blocks_held`) rather
        than along a ring, one group a rank at a time.
    """

    worker: Callable[..., WorkerResult]
    blocks_per_group: Callable[[EngineConfig, int], int]
    roaming: bool


ENGINES: dict[str, Engine] = {
    "sync": Engine(sync_ring_worker, sync_ring.blocks_per_group, roaming=False),
    "async": Engine(async_token_worker, async_tokens.blocks_per_group, roaming=True),
}


def n_class_blocks(engine: str, cfg: EngineConfig, n_ranks: int) -> int:
    """How many class blocks B the engine ``engine`` cuts the classes into on ``n_ranks``."""
    return n_ranks * ENGINES[engine].blocks_per_group(cfg, n_ranks)


def get_engine(name: str) -> Callable[..., WorkerResult]:
    """Return the worker of the engine registered as ``name``."""
    try:
        return ENGINES[name].worker
    except KeyError:
        raise ValueError(f"unknown engine {name!r}; choose one of {sorted(ENGINES)}") from None
