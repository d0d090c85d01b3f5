"""How much memory training needs per rank, checked before anything large is allocated.

The estimate follows the table in ``docs/scaling-out.md`` ("Memory planning"): a rank's
rows, its per-row state (``b`` and one partial normaliser per class block, a second such
table while the exact objective is computed) and its share of the class blocks (with
SVRG's anchor gradient and its anchor weights or, where
:func:`dsmlr.kernels.anchor_table.uses_tables` says so, the rows' tables of anchor
probabilities, at most :func:`~dsmlr.kernels.anchor_table.table_bytes_bound`; or AdaGrad's
accumulators), plus a fixed allowance for Python and the libraries.  Training refuses to
start when the estimate exceeds the memory available to the rank, with a message saying
how many ranks would fit, instead of being killed by the kernel half-way through.

``DSMLR_MEMORY_CHECK=0`` in the environment skips the check (for machines whose
available memory is misreported, e.g. some containers).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

import numpy as np

from dsmlr.engines import ENGINES
from dsmlr.engines.optimizers import update_rule
from dsmlr.errors import DataError, on_all_ranks
from dsmlr.kernels.anchor_table import table_bytes_bound, uses_tables

__all__ = [
    "MemoryPlan",
    "async_blocks_held",
    "available_bytes",
    "check_memory",
    "count_nonzeros",
    "plan_memory",
]

#: Allowance for the Python, numpy, scipy, numba and MPI libraries a rank loads (about
#: 250 MB), with a margin.
BASE_BYTES = 300 * 2**20


def async_blocks_held(n_ranks: int, n_blocks: int) -> int:
    """Blocks an asynchronous engine's rank is planned to hold at most under MPI.

    A rank takes tokens in while it holds less than its group and one block more, or,
    with nothing to do, while it holds at most half of them
    (:data:`dsmlr.engines.async_tokens.HELD_BEYOND_GROUP`), and one more may be arriving:
    ``B / 2 + 1`` blocks at most, which for P <= 4 is at most two groups and one block.
    Beyond that the plan takes two groups and one block, about the most a rank holds in
    practice (``benchmarks/results/mpi.md``, *Peak memory per rank*), though half the
    blocks could in principle gather on one rank.
    """
    per_group = -(-n_blocks // n_ranks)
    return min(n_blocks // 2 + 1, 2 * per_group + 1)


@dataclass(frozen=True)
class MemoryPlan:
    """Estimated bytes per rank, by part."""

    rows: int
    row_state: int
    blocks: int
    base: int = BASE_BYTES
    #: Whether SVRG holds its anchor as the rows' probability tables (counted in
    #: ``row_state``) rather than as anchor weights (in ``blocks``).
    anchor_tables: bool = False
    #: Whether each block carries its update passes' lag (one int64 a column, and two
    #: float64 a column while a pass runs, in ``blocks``;
    #: :data:`dsmlr.kernels.LAGGING_KERNELS`).
    lag: bool = False

    @property
    def total(self) -> int:
        return self.rows + self.row_state + self.blocks + self.base


def plan_memory(
    *,
    n_rows: int,
    nnz: int,
    n_features: int,
    n_classes: int,
    n_ranks: int,
    n_blocks: int,
    itemsize: int,
    optimizer: str,
    fit_intercept: bool = True,
    index_bytes: int = 4,
    engine: str = "sync",
    n_samples: int | None = None,
    svrg_anchor: str = "auto",
    anchor_tables: bool = True,
    lag: bool = True,
) -> MemoryPlan:
    """Estimate one rank's memory (see the module docstring).

    Parameters
    ----------
    n_rows, nnz : int
        The rank's training rows (and held-out rows) and their non-zeros.
    n_features, n_classes : int
        D and K.
    n_ranks, n_blocks : int
        P and the total number of class blocks B.
    itemsize : int
        Bytes per value (8 for float64, 4 for float32).
    optimizer : str
        ``"svrg"``, ``"adagrad"`` or ``"sgd"``.
    engine : str
        ``"sync"`` or ``"async"``: under MPI (``n_ranks > 1``) an asynchronous rank holds
        up to :func:`async_blocks_held` blocks rather than its group.
    n_samples : int, optional
        All ranks' training rows N (default ``n_rows * n_ranks``), which with
        ``svrg_anchor`` and whether the kernel supports ``anchor_tables`` decides how SVRG
        holds its anchor (:func:`dsmlr.kernels.anchor_table.uses_tables`).
    lag : bool
        Whether the kernel's blocks carry a lag (the CPU kernel's do): 8 bytes a column
        with each block held, and 16 bytes a column while a pass runs (the decay each
        column owes from before the pass).
    """
    rows = nnz * (itemsize + index_bytes) + 16 * n_rows
    row_state = 8 * n_rows * (2 * n_blocks + 2)  # b, its anchor copy, two partials tables
    columns = n_features + int(fit_intercept)
    per_rank = -(-n_classes // n_ranks) * columns
    held = -(-n_blocks // n_ranks)
    if ENGINES[engine].roaming and n_ranks > 1:
        held = async_blocks_held(n_ranks, n_blocks)
        per_rank = held * -(-n_classes // n_blocks) * columns
    rule = update_rule(optimizer)
    tables = rule.anchored and uses_tables(
        svrg_anchor, n_samples or n_rows * n_ranks, n_classes, columns, itemsize, anchor_tables
    )
    if tables:  # weights and gradient; the anchor in rows-sized tables
        row_state += table_bytes_bound(n_rows, n_classes, n_blocks, itemsize)
    blocks = per_rank * rule.model_arrays(tables) * itemsize
    blocks += (rule.carried_bytes(columns) + 8 * columns * lag) * held
    # While a lagging pass runs: the decay each column owes from before it (two float64,
    # SVRG's), so that the pass's own tables reach only its steps.
    blocks += 16 * columns * lag
    return MemoryPlan(int(rows), int(row_state), int(blocks), anchor_tables=bool(tables),
                      lag=bool(lag))  # fmt: skip


def available_bytes() -> int | None:
    """Memory this host can still give (Linux ``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def count_nonzeros(X) -> int:
    """Stored values of a sparse matrix, non-zeros of a dense array."""
    return int(X.nnz) if hasattr(X, "nnz") else int(np.count_nonzero(X))


def _gb(n: float) -> str:
    return f"{n / 2**30:.1f} GB" if n >= 2**30 else f"{n / 2**20:.0f} MB"


def check_memory(comm, plan_for, workers_here: int = 1) -> None:
    """Refuse to train when the estimate exceeds the memory available (collective).

    The rows are already loaded when this runs, so what must still fit into the host's
    available memory is every rank's per-row state and class blocks.

    Parameters
    ----------
    comm : Communicator
        The ranks (one allgather).
    plan_for : callable
        ``plan_for(n_ranks) -> MemoryPlan`` for this rank's part with ``n_ranks`` ranks,
        so the message can say how many ranks would fit.
    workers_here : int
        Workers sharing this process (in-process workers), each with such a plan.

    Raises
    ------
    DataError
        The same on every rank, naming the host, the estimate, what is available and how
        many ranks would fit.
    """
    if os.environ.get("DSMLR_MEMORY_CHECK", "1") == "0":
        return
    plan = plan_for(comm.size)
    resident = (plan.rows + plan.base) * workers_here
    facts = comm.allgather((socket.gethostname(), plan.total * workers_here, resident,
                            available_bytes()))  # fmt: skip
    hosts: dict[str, list] = {}
    for host, total, loaded, free in facts:
        entry = hosts.setdefault(host, [0, 0, free, 0])
        entry[0] += total - loaded  # still to allocate
        entry[1] += loaded
        entry[3] += 1
    short = [(h, *v) for h, v in hosts.items() if v[2] is not None and v[0] > v[2]]
    if not short:
        return
    host, need, loaded, free, ranks = max(short, key=lambda item: item[1] - item[3])
    budget = (free + loaded) / ranks  # what one rank there could use in all
    fits = next(
        (p for p in range(comm.size + 1, 64 * comm.size + 1)
         if plan_for(p).total * workers_here <= budget),
        None,
    )  # fmt: skip
    advice = (
        f"{fits} ranks with as much memory each would fit it (so would --dtype float32 or "
        "--optimizer sgd, which need less per class)"
        if fits is not None
        else "more ranks alone would not fit it: use --dtype float32 or --optimizer sgd"
    )
    raise on_all_ranks(
        DataError(
            f"training needs about {_gb(need)} more on {host} but {_gb(free)} is available "
            f"({ranks} rank(s) there); {advice}; DSMLR_MEMORY_CHECK=0 skips this check"
        )
    )
