"""Asynchronous engine: class blocks circulate as tokens (NOMAD-style, no lockstep).

An epoch has no rounds and no ring.  There are B = 2P blocks by default (see
:data:`DEFAULT_BLOCKS_PER_RANK`), each a *token* that carries its weights (and optimiser
state) through the epoch's stages (see :mod:`dsmlr.engines.epochs`), each stage a set
of visits to ranks:

* gradient (SVRG, in the epochs that anchor): one visit to every rank, each adding its
  rows' part of the block's anchor gradient; after the last, the block anchors at its
  weights;
* update: a budget of P visits, each one stochastic pass over the rank's rows, to any
  ranks;
* scoring: one visit to every rank, each scoring the rank's rows against the block,
  the token's home rank last;

then home (block ``q`` lives on rank ``q mod P`` between epochs), where the last
scoring visit has left it.  Every rank loops:

1. take in the tokens that have arrived (non-blocking), while it has room (see Memory);
2. pop one from its queue, make its visit, and post it on, without waiting for the
   receiver, to the rank where its visit would be done soonest (:func:`choose_destination`):
   in the update stage preferring ranks this token has visited least this epoch, keeping
   it for another visit where the others would keep it waiting longer; in the other
   stages among the ranks it has still to visit.  Queue lengths and seconds per update
   visit (plain and SVRG visits apart, :class:`Paces`) are learnt from the tokens
   themselves (each carries its sender's); ranks within :data:`PACE_NOISE` of the
   fastest count as equally fast.

Different tokens are in different stages at once, so no stage waits for the slowest
rank as a whole: a slow rank's queue grows, the others stop sending it update visits
and make more of them themselves, and it catches up on the gradient and scoring visits
only it can make (they need its rows) meanwhile.  Nobody waits for the straggler until
the end of the epoch.

Each ``b_i`` is refreshed before every step from the rank's table of per-block partial
normalisers, which every update visit of a block brings up to date for that block, so
a rank always uses the newest normaliser it has seen of every block; when every block
has scored the rank's rows, they refresh ``b`` in closed form.  The anchor gradient's
visits use ``b`` as it was at the start of the epoch (exact after a scoring stage), as
do the variance-reduced steps.

Memory
    A rank holds its queue, its blocks home for the epoch and the tokens it posted that
    their receivers have not taken in yet.  It takes tokens in only while that is less
    than its group and one block more, or, with nothing else to do, at most half of all
    blocks (:data:`HELD_BEYOND_GROUP`): tokens sent to a busy or slow rank wait with
    their senders rather than pile up on it.

Termination
    A rank enters a non-blocking barrier once all its home blocks are back, then keeps
    serving tokens that still arrive.  When the barrier completes every rank has all its
    home blocks, so no token is in flight: the epoch ends with one allreduce of the
    ranks' sums (and class means, :mod:`dsmlr.engines.centering`), or, in an epoch that
    does not score, with a barrier (then the class means' allreduce), so that no rank
    sends the next epoch's tokens to one that has not yet seen the first barrier
    complete.
    The stopping rule decides on allreduced values, so all ranks stop at the same epoch.

Communication
-------------
A token is sent after every visit that leaves it for another rank: at most ``P`` sends
per stage and token, each of the arrays the stage needs (weights and the float64
gradient in the gradient stage; weights, anchor weights (unless the ranks hold the
anchor as tables) and gradient in SVRG's update stage, and there the block's lag with the
CPU kernel, one int64 a column, see :meth:`~dsmlr.engines.epochs.Epoch.update`; weights
alone in the others),
plus a header of ``6 + P`` int64s.  The scoring stage ends at the token's home, so no
trip home follows it (an epoch that does not score sends a token home after its last
update visit if that was elsewhere, with what the update stage carries, so that SVRG
keeps its anchor for the next epoch).  On average per rank an epoch moves about what the
synchronous engine's rings do (see :mod:`dsmlr.engines.sync_ring`;
``benchmarks/results/mpi.md``, *Bytes per epoch*, compares the two).  Where the ranks
share a host, the blocks stay in memory they all map (:mod:`dsmlr.engines.shared_blocks`)
and a token's message is its header alone; its arrays count as sent all the same.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import EngineConfig, Monitor, Start, WorkerResult
from dsmlr.engines.epochs import Epoch, run_epochs
from dsmlr.engines.ring import Block
from dsmlr.kernels import LocalRows

__all__ = [
    "DEFAULT_BLOCKS_PER_RANK",
    "async_token_worker",
    "choose_destination",
    "may_take_in",
]

#: Blocks (tokens) per rank: two keep a rank busy while another holds a token, and each
#: visit stays a worthwhile amount of work.  A visit's cost per row and non-zero
#: (reaching a random feature's row of the block) does not shrink with the width, so
#: narrower tokens cost more a class: on the Debian sets at P = 2, four tokens a rank
#: took 1.08-1.11x the time of two to 0.1% of the optimum, and 1.12-1.18x with one rank
#: slowed 2x (``benchmarks/results/async_tokens.md``).
DEFAULT_BLOCKS_PER_RANK = 2

#: A rank counts as slower than the fastest only when its pace is more than this many
#: times the fastest's.  Closer paces are mostly timing noise (ranks sharing cores with
#: other work): following them sends tokens to some ranks' rows more often than to
#: others', which costs plain SGD and AdaGrad accuracy, while a rank slowed 2x, as in
#: the straggler benchmark, is well beyond it (``benchmarks/results/mpi.md``, *Straggler:
#: sync against async*).
PACE_NOISE = 1.5

#: A rank's pace is the median of its last this many update visits: a few epochs' worth
#: (a rank makes about B of them an epoch), so that a rank slowed for a moment (another
#: process taking its core) does not look slow, while one slow for good still does
#: within an epoch or two.  The more visits, the less timing noise (ranks sharing cores)
#: spreads the paces of equally fast ranks beyond :data:`PACE_NOISE`
#: (``benchmarks/results/mpi.md``, *Straggler: sync against async*).
PACE_VISITS = 30

#: A rank takes in tokens only while it holds fewer blocks than its group and this many
#: more (its queue, its blocks home for the epoch and the tokens it posted that their
#: receivers have not taken in yet), so that tokens sent to a busy or slow rank wait with
#: their senders (whose sends do not block) instead of piling up there; a rank with an
#: empty queue takes one in while it holds at most half of the B blocks.  That keeps
#: every rank able to move on: a rank that can take nothing in either has work or holds
#: more than half the blocks; two ranks cannot both hold more than half, so the tokens
#: such a rank waits to hand over go to ranks that can take them in.
#: ``benchmarks/results/mpi.md`` (*Peak memory per rank*) has the ranks' peak memory with
#: and without the limit.
HELD_BEYOND_GROUP = 1

_POLL_SECONDS = 0.01


#: A token's stages, in order (those the epoch has), then the trip home.
GRADIENT, UPDATE, SCORING, HOME = range(4)


class Pace:
    """Each rank's seconds per update visit as this rank last heard, kept across epochs.

    Parameters
    ----------
    size : int
        Ranks in the group.

    Attributes
    ----------
    seconds : ndarray of shape (size,)
        Seconds per update visit of every rank (NaN: not heard from yet); this rank's
        own is the median of its last :data:`PACE_VISITS` visits, its first ever left
        out: it may include compiling the kernels, and one slow visit must not make a
        rank look slow for long, as the others would then stop sending it the visits
        that could show otherwise.
    """

    def __init__(self, size: int):
        self.seconds = np.full(size, np.nan)
        self._recent: deque[float] = deque(maxlen=PACE_VISITS)
        self._warmed_up = False

    def record(self, rank: int, seconds: float) -> None:
        """Count one update visit of ``seconds`` by this rank, ``rank``."""
        if self._warmed_up:
            self._recent.append(seconds)
            self.seconds[rank] = float(np.median(self._recent))
        self._warmed_up = True

    def heard(self, rank: int, pace_ns: int) -> None:
        """Take in the pace a token from ``rank`` carried (nanoseconds; 0: not known)."""
        self.seconds[rank] = pace_ns * 1e-9 if pace_ns else np.nan

    def own_ns(self, rank: int) -> int:
        """This rank's pace as a token carries it."""
        own = self.seconds[rank]
        return 0 if np.isnan(own) else round(own * 1e9)


class Paces:
    """A :class:`Pace` for each kind of update visit: plain (or AdaGrad) steps, and
    SVRG's variance-reduced ones, which cost about twice as much.

    One history mixing both would compare a rank that has made mostly SVRG visits with
    one that has made mostly plain ones (a slow rank makes few update visits, so its
    history changes kind later): in the first SVRG epochs a slow rank, its history still
    mostly cheap plain visits, would look within :data:`PACE_NOISE` of the others and get
    an even share of the update visits (``benchmarks/results/mpi.md``, *Straggler: sync
    against async*).  Within an epoch every update visit is of one kind, so the tokens
    need not say which.

    Parameters
    ----------
    size : int
        Ranks in the group.
    """

    def __init__(self, size: int):
        self._kinds = {False: Pace(size), True: Pace(size)}

    def of(self, svrg: bool) -> Pace:
        """The paces of the update visits of this kind."""
        return self._kinds[svrg]

    def seconds(self, svrg: bool) -> np.ndarray:
        """Every rank's seconds per update visit of this kind, for
        :func:`choose_destination`: where some rank has no such pace yet and every
        rank has one of the other kind, those (only the ratios between ranks count)."""
        own, other = self._kinds[svrg].seconds, self._kinds[not svrg].seconds
        return other if np.isnan(own).any() and not np.isnan(other).any() else own


@dataclass
class _Token:
    block: Block
    stage: int
    visits: np.ndarray  # this stage's visits per rank
    visits_left: int  # the update stage's budget


def choose_destination(
    rank: int,
    visits: np.ndarray,
    load: np.ndarray,
    per_group: int,
    once: bool = False,
    pace: np.ndarray | None = None,
    last: int | None = None,
) -> int:
    """Where a token goes next from ``rank``.

    The rank minimising ``pace[r] * (per_group * visits[r] + load[r] + 1)``: how long
    the token would take there, at ``pace[r]`` seconds a visit behind a queue of
    ``load[r]`` tokens (``load[rank]``: this rank's own), where a rank the token has
    visited once more this stage counts ``per_group`` tokens more, so that tokens cover
    every rank's rows unless a rank falls behind; then the fast ranks (this one
    included, with two ranks the only other choice) take its share.  ``pace`` None:
    every rank equally fast; a NaN entry (a rank not heard from yet): as fast as the
    median of the others; a pace within :data:`PACE_NOISE` times the fastest's counts
    as the fastest's.  ``once``: only ranks not yet visited this stage (the
    gradient and scoring stages visit each rank once); ``last``: a rank to visit only
    when no other is left (the scoring stage ends on the token's home rank, which
    spares the trip home).  Ties go to the nearest rank to the left, as in the
    synchronous ring, and to this rank last.
    """
    size = len(visits)
    candidates = [(rank - d) % size for d in range(1, size + 1)]
    if once:
        candidates = [r for r in candidates if visits[r] == 0]
        if last is not None and len(candidates) > 1:
            candidates = [r for r in candidates if r != last]
    speed = np.ones(size)
    if pace is not None:
        known = pace[~np.isnan(pace)]
        speed = np.nan_to_num(pace, nan=float(np.median(known)) if known.size else 1.0)
        speed = speed / speed.min()
        speed[speed < PACE_NOISE] = 1.0
    return min(candidates, key=lambda r: speed[r] * (per_group * visits[r] + load[r] + 1))


def may_take_in(queued: int, held: int, per_group: int, n_blocks: int) -> bool:
    """Whether a rank takes in another token (see :data:`HELD_BEYOND_GROUP`).

    Parameters
    ----------
    queued : int
        Tokens in its queue.
    held : int
        Blocks it holds: its queue, its blocks home for the epoch, and the tokens it
        posted that their receivers have not taken in yet.
    per_group, n_blocks : int
        Blocks a rank starts with, and B, the blocks in all.
    """
    return held < per_group + HELD_BEYOND_GROUP or (queued == 0 and held <= n_blocks // 2)


def _token_epoch(epoch: Epoch, paces: Paces) -> None:
    """Every block through the epoch's stages as a token; returns when all are home."""
    _TokenEpoch(epoch, paces).run()


class _TokenEpoch:
    """One rank's part of an asynchronous epoch: its queue of tokens, the blocks home
    for the epoch, and what it knows of the other ranks' queues."""

    def __init__(self, epoch: Epoch, paces: Paces):
        self.epoch, self.paces = epoch, paces
        self.svrg = epoch.variance_reduced  # the kind of this epoch's update visits
        self.pace = paces.of(self.svrg)
        self.ring = ring = epoch.ring
        self.comm, self.clock = ring.comm, ring.clock
        self.me, self.size = self.comm.rank, ring.size
        self.scoring = epoch.scorers is not None
        self.stages = [GRADIENT] * epoch.anchoring + [UPDATE] + [SCORING] * self.scoring + [HOME]
        # A token going home from its update stage keeps SVRG's anchor for the next epoch.
        home_fields = epoch.scoring_fields if self.scoring else epoch.update_fields
        self.fields = {GRADIENT: epoch.gradient_fields, UPDATE: epoch.update_fields,
                       SCORING: epoch.scoring_fields, HOME: home_fields}  # fmt: skip
        self.queue: deque[_Token] = deque()
        self.home: list[Block] = []
        self.load = np.zeros(self.size)  # what this rank knows of the queues' lengths

    def enter(self, blk: Block, stage: int) -> _Token:
        """``blk`` as a token at the start of ``stage``."""
        if stage == GRADIENT:
            self.epoch.begin_gradient(blk)
        return _Token(blk, stage, np.zeros(self.size, dtype=np.int64), self.size)

    def arrive(self, token: _Token) -> None:
        if token.stage == HOME:
            self.home.append(token.block)
        else:
            self.queue.append(token)

    def take(self, message: list[np.ndarray]) -> None:
        """A token another rank posted here."""
        meta, arrays = message[0], message[1:]
        q, stage, visits_left, sender, sender_load, sender_pace = (int(v) for v in meta[:6])
        self.load[sender] = sender_load
        self.pace.heard(sender, sender_pace)
        block = self.ring.unpack(q, self.fields[stage], arrays)
        self.arrive(_Token(block, stage, meta[6:].copy(), visits_left))

    def send(self, token: _Token, dest: int) -> None:
        blk = token.block
        meta = [blk.q, token.stage, token.visits_left, self.me, len(self.queue),
                self.pace.own_ns(self.me), *token.visits]  # fmt: skip
        arrays = [np.array(meta, dtype=np.int64), *self.ring.pack(blk, self.fields[token.stage])]
        self.clock.timed("comm", self.comm.post, dest, arrays)
        self.load[dest] += 1

    def work(self, token: _Token) -> _Token:
        """One visit; the token as it leaves (its next stage once this one is done)."""
        epoch, blk, stage = self.epoch, token.block, token.stage
        token.visits[self.me] += 1
        if stage == GRADIENT:
            epoch.gradient(blk)
            done = bool(token.visits.all())
            if done:
                epoch.end_gradient(blk)
        elif stage == UPDATE:
            t0 = time.perf_counter()
            epoch.update(blk, final=token.visits_left == 1)
            self.pace.record(self.me, time.perf_counter() - t0)
            token.visits_left -= 1
            done = token.visits_left == 0
        else:
            epoch.score(blk)
            done = bool(token.visits.all())
        return self.enter(blk, self.stages[self.stages.index(stage) + 1]) if done else token

    def room(self) -> bool:
        held = len(self.queue) + len(self.home) + self.comm.posts_in_flight()
        return may_take_in(len(self.queue), held, self.ring.per_group, self.ring.n_blocks)

    def take_in(self, timeout: float) -> bool:
        """Take in one token if one arrives within ``timeout`` seconds."""
        message = self.clock.timed("comm", self.comm.poll, timeout)
        if message is not None:
            self.take(message)
        return message is not None

    def visit_and_pass_on(self, token: _Token) -> None:
        token = self.work(token)
        if token.stage == HOME:
            dest = token.block.q % self.size
        else:
            self.load[self.me] = len(self.queue)
            once = token.stage != UPDATE
            last = token.block.q % self.size if token.stage == SCORING else None
            dest = choose_destination(
                self.me, token.visits, self.load, self.ring.per_group, once,
                self.paces.seconds(self.svrg), last,
            )  # fmt: skip
        if dest == self.me:
            self.arrive(token)
        else:
            self.send(token, dest)

    def run(self) -> None:
        ring, clock, comm = self.ring, self.clock, self.comm
        self.queue.extend(self.enter(blk, self.stages[0]) for blk in ring.group)
        ring.group = []  # the blocks travel as tokens now: nothing else may keep them alive
        everyone_home = None
        # Methods rather than loop variables hold each token and message, so that no
        # reference outlives its use and keeps a block's memory (see HELD_BEYOND_GROUP).
        while True:
            while self.room() and self.take_in(0.0):
                pass
            if self.queue:
                self.visit_and_pass_on(self.queue.popleft())
                continue
            if everyone_home is None and len(self.home) == ring.per_group:
                everyone_home = comm.ibarrier()
            if everyone_home is not None and clock.timed("comm", everyone_home.test):
                break
            if self.room():
                self.take_in(_POLL_SECONDS)
            else:  # holding over half the blocks: what it sent must be taken in first
                clock.timed("comm", time.sleep, _POLL_SECONDS)
        clock.timed("comm", comm.flush)
        ring.group = sorted(self.home, key=lambda blk: blk.q)
        if not self.scoring:
            # Every rank has all its blocks home, but one that has not yet seen the
            # barrier complete still serves this epoch: no rank may send it the next
            # epoch's tokens before it has left (an epoch that scores ends with the
            # objective's allreduce, which the class means ride; see
            # dsmlr.engines.epochs.run_epochs).
            clock.timed("comm", comm.barrier)
            self.epoch.centre()


def blocks_per_group(cfg: EngineConfig, n_ranks: int) -> int:
    """Class blocks each rank starts with: ``cfg.blocks_per_rank``, or
    :data:`DEFAULT_BLOCKS_PER_RANK`; never more blocks than classes (an empty token would
    be pure overhead)."""
    per_group = cfg.blocks_per_rank or DEFAULT_BLOCKS_PER_RANK
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
    phase = functools.partial(_token_epoch, paces=Paces(comm.size))
    return run_epochs(comm, rows, cfg, test_rows, n_test, monitor, per_group, phase, start)
