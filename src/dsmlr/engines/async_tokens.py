"""Asynchronous engine: class blocks circulate as tokens (NOMAD-style, no lockstep).

The update phase (see :mod:`dsmlr.engines.ring` for the rest of an epoch) has no
rounds.  There are B = 4P blocks by default (2P where 4P would leave fewer than
:data:`MIN_TOKEN_CLASSES` classes a block), each a *token* that carries its weights
(and optimiser state) and a budget of P visits per epoch.  Every rank loops:

1. take in the tokens that have arrived (non-blocking);
2. pop one from its queue, make one stochastic pass of that block over its own rows, and
   post it on, without waiting for the receiver: to the rank where it should wait least,
   preferring ranks this token has visited least this epoch, with queue lengths learnt
   from the tokens themselves (each carries its sender's queue length); a token whose
   budget is spent goes home instead (block ``q`` lives on rank ``q mod P`` between
   epochs).

A slow rank's queue grows, so other ranks stop sending it tokens and the fast ranks do
more of the epoch's visits: nobody waits for the straggler until the end of the phase.

Each ``b_i`` is refreshed before every step from the rank's table of per-block partial
normalisers, which every visit of a block brings up to date for that block, so a rank
always uses the newest normaliser it has seen of every block.

Termination
    A rank enters a non-blocking barrier once all its home blocks are back, then keeps
    serving tokens that still arrive.  When the barrier completes every rank has all its
    home blocks, so no token is in flight: the phase ends, and the scoring ring runs as
    in the synchronous engine.  The stopping rule decides on allreduced values, so all
    ranks stop at the same epoch.

Communication
-------------
Every visit but a token's last is followed by one send of the token (plus one send home
if its last visit was elsewhere): at most ``P`` sends per token per epoch, so on average
per rank the update phase moves what the synchronous update ring does (``M`` for plain
SGD, ``M * (2 + 8 / itemsize)`` for SVRG, ``M = K * D_fit * itemsize``), plus a header of
``4 + P`` int64s per send.  The gradient and scoring rings are as in
:mod:`dsmlr.engines.ring`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import EngineConfig, Monitor, Start, WorkerResult
from dsmlr.engines.ring import Block, Ring, run_epochs
from dsmlr.engines.sync_ring import update_fields, visit
from dsmlr.kernels import Kernel, LocalRows, UpdateConfig

__all__ = [
    "DEFAULT_BLOCKS_PER_RANK",
    "MIN_TOKEN_CLASSES",
    "async_token_worker",
    "choose_destination",
]

#: Blocks (tokens) per rank: enough that a rank rarely runs dry while tokens queue
#: elsewhere, few enough that each visit is a worthwhile amount of work.
DEFAULT_BLOCKS_PER_RANK = 4

#: Narrower tokens than this cost more per class: a visit's cost per row and non-zero
#: (reaching a random feature's row of the block) stops shrinking with the width.  At
#: K = 200 on 10K rows a rank's visits of 25 classes took 1.5x the time of visits of 50
#: for the same classes, and with 2 blocks per rank instead of 4 the async engine (P = 2,
#: one rank slowed 2x) reached 1% of the optimum in 10.6-11.8 s instead of 15.6-17.1 s.
MIN_TOKEN_CLASSES = 50

_POLL_SECONDS = 0.01


@dataclass
class _Token:
    block: Block
    visits_left: int
    visits: np.ndarray  # this epoch's visits per rank


def choose_destination(rank: int, visits: np.ndarray, load: np.ndarray, per_group: int) -> int:
    """Where a token goes next from ``rank``.

    The rank minimising ``per_group * visits[r] + load[r]`` among the others (``rank``
    itself only when alone): a rank the token has visited once more this epoch must have
    a queue ``per_group`` tokens shorter to be chosen, so tokens cover every rank's rows
    unless a rank falls behind.  Ties go to the nearest rank to the left, as in the
    synchronous ring.
    """
    size = len(visits)
    if size == 1:
        return rank
    candidates = [(rank - d) % size for d in range(1, size)]
    return min(candidates, key=lambda r: per_group * visits[r] + load[r])


def _token_phase(
    ring: Ring,
    kernel: Kernel,
    rows: LocalRows,
    partials: np.ndarray,
    b: np.ndarray,
    b_anchor: np.ndarray | None,
    step: UpdateConfig,
    carry: tuple[str, ...],
    rng: np.random.Generator,
    cfg: EngineConfig,
) -> None:
    comm, clock = ring.comm, ring.clock
    me, size = comm.rank, ring.size
    fields = update_fields(b_anchor is not None, carry)
    queue = deque(_Token(blk, size, np.zeros(size, dtype=np.int64)) for blk in ring.group)
    home: list[Block] = []
    load = np.zeros(size)  # what this rank knows of the others' queue lengths
    order = rng.permutation(rows.n_rows)
    everyone_home = None

    def take(message: list[np.ndarray]) -> None:
        meta, arrays = message[0], message[1:]
        q, visits_left, sender, sender_load = (int(v) for v in meta[:4])
        load[sender] = sender_load
        blk = ring.make_block(q, dict(zip(fields, ring.from_wire(arrays), strict=True)))
        if visits_left == 0:
            home.append(blk)
        else:
            queue.append(_Token(blk, visits_left, meta[4:].copy()))

    def send(token: _Token, dest: int) -> None:
        blk = token.block
        meta = np.concatenate([[blk.q, token.visits_left, me, len(queue)], token.visits])
        arrays = [meta.astype(np.int64), *ring.to_wire([getattr(blk, f) for f in fields])]
        clock.timed("comm", comm.post, dest, arrays)
        load[dest] += 1

    while True:
        while (message := clock.timed("comm", comm.poll, 0.0)) is not None:
            take(message)
        if queue:
            token = queue.popleft()
            visit(ring, kernel, rows, token.block, partials, b, b_anchor, order, step)
            token.visits_left -= 1
            token.visits[me] += 1
            if token.visits_left == 0:
                dest = token.block.q % size
            else:
                dest = choose_destination(me, token.visits, load, ring.per_group)
            if dest != me:
                send(token, dest)
            elif token.visits_left == 0:
                home.append(token.block)
            else:
                queue.append(token)
            continue
        if everyone_home is None and len(home) == ring.per_group:
            everyone_home = comm.ibarrier()
        if everyone_home is not None and clock.timed("comm", everyone_home.test):
            break
        message = clock.timed("comm", comm.poll, _POLL_SECONDS)
        if message is not None:
            take(message)
    clock.timed("comm", comm.flush)
    ring.group = sorted(home, key=lambda blk: blk.q)


def blocks_per_group(cfg: EngineConfig, n_ranks: int) -> int:
    """Class blocks each rank starts with: ``cfg.blocks_per_rank``, or 4, or 2 where 4
    would make tokens narrower than :data:`MIN_TOKEN_CLASSES` (two keep a rank busy while
    another holds a token); never more blocks than classes (an empty token would be pure
    overhead)."""
    per_group = cfg.blocks_per_rank or DEFAULT_BLOCKS_PER_RANK
    if not cfg.blocks_per_rank and cfg.n_classes < per_group * n_ranks * MIN_TOKEN_CLASSES:
        per_group = 2
    return max(1, min(per_group, cfg.n_classes // n_ranks))


def async_token_worker(
    comm: Communicator,
    rows: LocalRows,
    cfg: EngineConfig,
    test_rows: LocalRows | None = None,
    n_test: int = 0,
    monitor: Monitor | None = None,
    start: Start | None = None,
) -> WorkerResult:
    """Train on this rank's rows with the asynchronous engine; runs on every rank.

    Same parameters and result as :func:`~dsmlr.engines.sync_ring.sync_ring_worker`.
    """
    per_group = blocks_per_group(cfg, comm.size)
    return run_epochs(comm, rows, cfg, test_rows, n_test, monitor, per_group, _token_phase, start)
