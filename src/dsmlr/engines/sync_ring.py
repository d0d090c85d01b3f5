"""Synchronous ring engine (bulk-synchronous DS-MLR).

Every stage of an epoch (see :mod:`dsmlr.engines.epochs`) is a ring of P rounds: in
round ``r`` a rank visits each block of the group it holds (in the update stage, one
pass of stochastic steps over its own rows), then passes the group on to the rank
before it in the epoch's cyclic order of the ranks, a new random one each epoch
(:func:`dsmlr.partition.ring_cycle`; the scoring ring goes the other way, see
:func:`ring_epoch`).  B = P blocks by default (see :func:`blocks_per_group`).  Every
rank waits for its neighbours each round, so the slowest rank sets the pace.

Communication
-------------
After each round a rank sends its group to one neighbour and takes one from the other,
except after a ring's last round where the next ring starts with the group held then.
Per ring of P shifts and rank, with ``M = K * D_fit * itemsize`` the model's size:

* gradient ring (SVRG only): ``2 M`` (weights, the gradient summed in their dtype);
* update ring: ``M`` for plain SGD, ``M + P * D_fit * 8`` for AdaGrad (its accumulators),
  ``3 M`` for SVRG (weights, anchor weights and anchor gradient; ``2 M`` where the ranks
  hold the anchor as probability tables, :mod:`dsmlr.kernels.anchor_table`); with the
  CPU kernel ``L = P * D_fit * 8`` more, the blocks' lag (one int64 a column: how far
  each column's steps are behind, which only the block's last update visit settles, see
  :meth:`dsmlr.engines.epochs.Epoch.update`);
* scoring ring: ``M`` (the weights);
* one allreduce of 8 float64s.

Each ring makes P - 1 shifts, and an anchored epoch that scores one more shift of the
weights (P shifts each for rings with no scoring ring after them), see
:func:`dsmlr.partition.ring_legs`: a ring of ``n`` shifts moves ``n / P`` of the above.
So a plain epoch that scores moves ``(2 M + L) (P - 1) / P`` per rank, one that does not
``M + L``; an SVRG epoch that scores ``(6 M + L) (P - 1) / P + M / P`` (``M (P - 1) / P``
less with anchor tables).
``b`` and the rows never move.

These are the bytes the ring hands on (``bytes_sent`` in the epochs' records).  Where the
ranks share a host, MPI's included, the blocks live in memory every rank maps
(:mod:`dsmlr.engines.shared_blocks`) and a shift copies none of them: it only tells the
neighbours that the blocks are theirs to use, as the in-process workers pass references.
Between hosts they are copied.
"""

from __future__ import annotations

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import EngineConfig, Monitor, Start, WorkerResult
from dsmlr.engines.epochs import Epoch, run_epochs
from dsmlr.engines.scoring_stage import scoring_ring
from dsmlr.kernels import LocalRows
from dsmlr.partition import ring_legs

__all__ = ["blocks_per_group", "ring_epoch", "sync_ring_worker"]


def blocks_per_group(cfg: EngineConfig, n_ranks: int) -> int:
    """Class blocks each rank holds: ``cfg.blocks_per_rank``, or one.

    One block a rank makes each visit as long as it can be, so a row's per-visit work
    (its normaliser, its exponentials) is spread over the most classes.  Two or more let
    a block travel while the next is visited (:meth:`~dsmlr.engines.ring.Ring.travel`):
    over shared memory that gains nothing measurable (``benchmarks/results/mpi.md``, *One
    block a rank for SVRG*); over a slower network it can pay.  SVRG's blocks moved at the
    same time by different ranks are kept from over-correcting each other by
    :mod:`dsmlr.engines.relaxation`, whatever their number.
    """
    return cfg.blocks_per_rank or 1


def ring_epoch(epoch: Epoch) -> None:
    """Every stage as a ring of P lockstep rounds (the synchronous engine's epoch): each
    block visits every rank once per stage, in the update stage making one pass over its
    rows.

    Every ring passes the groups along the epoch's random cycle, the update ring the same
    way as the anchor gradient's ring before it, so the rank where a block makes its last
    update visit, whose rows its last steps fit best, changes from epoch to epoch.  The
    scoring ring starts with the groups where the update ring left them and runs the
    other way round; neither ring needs a shift before its first visits, and one more
    shift of the weights brings every group home after an anchored epoch
    (:func:`dsmlr.partition.ring_legs`).
    """
    ring = epoch.ring
    anchored, scoring = epoch.anchoring, epoch.scorers is not None
    rings, home = ring_legs(anchored, scoring, ring.size)
    legs = iter(rings)
    if anchored:
        for blk in ring.group:
            epoch.begin_gradient(blk)
        ring.travel(epoch.gradient_fields, lambda blk, _round: epoch.gradient(blk), *next(legs))
        for blk in ring.group:  # each held block has had every rank's visit
            epoch.end_gradient(blk)
    last_round = ring.size - 1
    ring.travel(epoch.update_fields, lambda blk, r: epoch.update(blk, r == last_round), *next(legs))
    # Before the scoring ring, which then scores (and makes b exact for) the model the
    # epoch ends with.
    epoch.centre()
    if scoring:
        epoch.penalty = scoring_ring(
            ring, epoch.kernel, epoch.scorers, epoch.cfg, epoch.carry, *next(legs)
        )
    for _ in range(home):
        ring.shift(("W", *epoch.carry))


def sync_ring_worker(
    comm: Communicator,
    rows: LocalRows,
    cfg: EngineConfig,
    test_rows: LocalRows | None = None,
    n_test: int = 0,
    monitor: Monitor | None = None,
    start: Start | None = None,
) -> WorkerResult:
    """Train on this rank's rows; the same call runs on every rank.

    Parameters
    ----------
    comm : Communicator
        This rank's handle on the group.
    rows : LocalRows
        The training rows this rank owns.
    cfg : EngineConfig
        Settings, identical on all ranks.
    test_rows : LocalRows, optional
        This rank's share of a held-out set, scored each epoch.
    n_test : int
        Global number of held-out rows.
    monitor : Monitor, optional
        Per-epoch and per-visit progress hooks.
    start : Start, optional
        Starting weights, or a checkpointed run to continue; None starts from zero.

    Returns
    -------
    WorkerResult
        The blocks this rank holds at the end (its starting group ``rank``) and the
        history.
    """
    per_group = blocks_per_group(cfg, comm.size)
    return run_epochs(comm, rows, cfg, test_rows, n_test, monitor, per_group, ring_epoch, start)
