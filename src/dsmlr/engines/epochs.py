"""The epoch loop every engine runs, and the stages of an epoch.

Each of P ranks owns a row shard ``I_p`` with its ``b_{I_p}`` and a table of per-block
partial normalisers ``partials[i, q] = log sum_{k in K_q} exp(w_k . x_i)``.  The classes
are split into B blocks, which travel between the ranks (:mod:`dsmlr.engines.ring`) and
are all back home, rank ``p`` holding group ``p``, between epochs.  An epoch is

1. (SVRG, from the second epoch, in the epochs right after a scoring stage) a *gradient
   stage*: each block's full data gradient at the current weights, the anchor of the
   variance-reduced steps, which needs the exact ``b`` only a scoring stage gives;
2. an *update stage*: every block makes stochastic passes over the ranks' rows (SVRG's
   anchored at the last gradient stage's weights);
3. a *scoring stage*: every block scores every rank's rows, which gives the exact
   objective and accuracy and refreshes every ``b_i`` in closed form; then one small
   allreduce combines the ranks' sums.  With ``eval_every = n > 1`` it runs every n-th
   epoch only (and after the last, and, for SVRG, after the first, whose plain pass the
   next epoch anchors at), so an epoch of plain SGD moves exactly the model once and
   SVRG's anchor spans n epochs of update stages; stopping is decided at those epochs.

Every epoch also takes the mean over the classes out of the weights of the features many
rows share, which the blocks' steps move and the loss cannot see
(:mod:`dsmlr.engines.centering`; the synchronous engine between its update and scoring
stages, the asynchronous one after each epoch, with the objective's allreduce where it
scores).

How the blocks travel through the stages is the engine's one job (an
:data:`EpochPhase` given an :class:`Epoch`): :mod:`~dsmlr.engines.sync_ring` runs each
stage as a ring in lockstep (:func:`~dsmlr.engines.sync_ring.ring_epoch`),
:mod:`~dsmlr.engines.async_tokens` sends every block through the three stages as a
free-running token.

Every decision (stopping, step halving, errors) is taken on allreduced values, so all
ranks take it together.

Communication per epoch and rank, with ``M = K * D_fit * itemsize`` the model's size:
the scoring stage sends ``M`` (only every ``eval_every`` epochs); the gradient stage
``2 M`` (weights and the gradient, in the weights' dtype); the update stage is the
engine's own; one allreduce of 8 float64s, and one of a float64 for every shared
feature (the class means; the asynchronous engine's ride with the first).  Only the
ring payloads count in ``bytes_sent``.  ``b`` and the rows never move.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import (
    EngineConfig,
    Monitor,
    ResumeState,
    Start,
    WorkerResult,
)
from dsmlr.engines.centering import (
    ClassMean,
    centre_classes,
    local_class_sums,
    shared_columns,
)
from dsmlr.engines.epoch_sums import EpochSums
from dsmlr.engines.optimizers import update_rule
from dsmlr.engines.policy import plan_epoch
from dsmlr.engines.records import RunProgress, checkpoint_if_due, epoch_record
from dsmlr.engines.relaxation import RelaxedRows, column_spread, relaxed_rows
from dsmlr.engines.ring import Block, Clock, Ring
from dsmlr.engines.scoring_stage import (
    HeldOutScorer,
    Scorer,
    initial_partials,
    score_block,
    scoring_ring,
)
from dsmlr.engines.step_size import batch_gain, step_config, sum_sq_norms
from dsmlr.errors import NumericalError, on_all_ranks
from dsmlr.kernels import Kernel, LocalRows, UpdateConfig, get_kernel
from dsmlr.kernels.anchor_table import KEEP, AnchorTable, uses_tables
from dsmlr.kernels.base import Snapshot
from dsmlr.partition import ring_cycle

__all__ = ["RELAX_CHOICES", "Epoch", "EpochPhase", "RunConstants", "run_epochs"]

#: The values of :attr:`dsmlr.engines.base.EngineConfig.relax`.
RELAX_CHOICES = ("columns", "intercept", "none")


@dataclass(frozen=True, eq=False)
class RunConstants:
    """What every epoch of one rank's run shares."""

    ring: Ring
    kernel: Kernel
    rows: LocalRows
    cfg: EngineConfig
    carry: tuple[str, ...]  # a block's arrays besides W that travel (the update rule's)
    # The features centre() centres (see dsmlr.engines.centering.shared_columns).
    shared: np.ndarray
    # column_spread of this rank's rows (None: SVRG's moves are kept whole).
    spread: np.ndarray | None
    # SVRG's anchor as this rank's probability tables, by block (None: anchor weights).
    tables: dict[int, AnchorTable] | None


@dataclass(eq=False)  # holds arrays: two epochs are equal only if they are one
class Epoch:
    """One epoch's work on this rank, for an engine to schedule.

    An engine's :data:`EpochPhase` sends every block through the stages the epoch has,
    each a set of visits of the block to ranks, and leaves every rank holding its own
    group again (``ring.gid == rank``):

    * ``gradient`` (SVRG, where ``anchoring``): one visit to every rank, between
      :meth:`begin_gradient` and :meth:`end_gradient` (without it, SVRG's blocks keep
      the anchor of an earlier epoch, which their update visits carry);
    * ``update``: visits making stochastic passes (the sync ring: one to every rank);
    * ``scoring`` (where ``scorers`` is set): one visit to every rank.

    ``ring``, ``kernel``, ``rows``, ``cfg``, ``carry``, ``shared``, ``spread`` and
    ``tables`` are the run's (:class:`RunConstants`).
    """

    run: RunConstants
    partials: np.ndarray
    b: np.ndarray
    step: UpdateConfig
    order: np.ndarray  # the row order of this epoch's stochastic passes
    b_anchor: np.ndarray | None = None  # exact b at the blocks' anchor (SVRG)
    scorers: list | None = None
    anchoring: bool = False  # a gradient stage (re)anchors the blocks at b_anchor
    penalty: float = 0.0  # this rank's share of the penalty, summed by score()
    centred: ClassMean | None = None  # set by centre()

    ring = property(lambda self: self.run.ring)
    kernel = property(lambda self: self.run.kernel)
    rows = property(lambda self: self.run.rows)
    cfg = property(lambda self: self.run.cfg)
    carry = property(lambda self: self.run.carry)
    shared = property(lambda self: self.run.shared)
    spread = property(lambda self: self.run.spread)
    tables = property(lambda self: self.run.tables)

    @functools.cached_property
    def relaxed(self) -> RelaxedRows | None:
        """The rows of a block whose SVRG moves this epoch relaxes (see
        :mod:`dsmlr.engines.relaxation`)."""
        if self.spread is None:
            return None
        ring, cfg = self.ring, self.cfg
        return relaxed_rows(self.spread, self.step, ring.size, ring.n_blocks, cfg.fit_intercept)

    @property
    def variance_reduced(self) -> bool:
        """Whether this epoch's update visits take SVRG steps (the blocks are anchored)."""
        return self.b_anchor is not None

    @property
    def update_fields(self) -> tuple[str, ...]:
        """The arrays of a block that travel between update visits (with its lag, where
        the kernel leaves columns behind between them, see :meth:`update`)."""
        lag = _lag(self.kernel)
        if self.variance_reduced and self.tables is None:
            return ("W", "W_anchor", "mean_grad", *self.carry, *lag)
        if self.variance_reduced:
            return ("W", "mean_grad", *self.carry, *lag)
        return ("W", *self.carry, *lag)

    @property
    def gradient_fields(self) -> tuple[str, ...]:
        return ("W", "mean_grad", *self.carry)

    @property
    def scoring_fields(self) -> tuple[str, ...]:
        return ("W", *self.carry)

    def update(self, blk: Block, final: bool = True) -> None:
        """One stochastic pass of ``blk`` over this rank's rows (SVRG if anchored).

        ``final``: the block's last update visit this epoch, which leaves none of its
        columns behind (``blk.lag``): the passes before it leave the columns they do not
        touch for a later one to bring up to date, so that a block's update stage sweeps
        the whole block once, not once a visit (per rank and epoch those sweeps were the
        whole model at any P: on ``debian-source`` in process, P = 8 reaches 0.1% in
        0.73x the time it took with them, ``benchmarks/results/lag_before_after.md``).
        """
        ring, kernel, lag = self.ring, self.kernel, blk.lag
        snapshot = None
        if self.variance_reduced:
            table = self.tables[blk.q] if self.tables is not None else None
            snapshot = Snapshot(blk.W_anchor, blk.mean_grad, self.b_anchor, table)
        relaxed = self.relaxed if snapshot is not None else None
        if relaxed is not None:  # it compares its rows' class sums before and after
            if lag is not None:
                kernel.settle(blk.W, lag, relaxed.rows, self.step, snapshot)
            sums_before = kernel.class_sums(blk.W, relaxed.rows)
        ring.clock.timed(
            "compute", kernel.update_pass, self.rows, blk.W, blk.k0, blk.acc, self.partials,
            blk.q, self.b, self.order, self.step, snapshot, lag, final,
        )  # fmt: skip
        if relaxed is not None:
            if lag is not None:
                kernel.settle(blk.W, lag, relaxed.rows, self.step, snapshot)
            relaxed.apply(kernel, blk.W, sums_before)
        ring.visited()

    def centre(self) -> None:
        """Take the class mean of the ``shared`` features out of the model (see
        :mod:`dsmlr.engines.centering`), ``b`` and the cached partials along with it.

        Every rank at once, between stages, while the blocks the ranks hold are the
        whole model.  Before a scoring stage ``b`` and the partials are left as they are:
        the scoring recomputes them.
        """
        ring = self.ring
        self.centred = centre_classes(
            ring.comm, self.kernel, ring.group, self.shared, self.cfg, ring.clock
        )
        if self.scorers is None:
            self.centred.shift_normalisers(self.rows, self.partials, self.b)

    def begin_gradient(self, blk: Block) -> None:
        """A zero gradient for ``blk`` to collect its visits' rows in, in the weights' dtype.

        The update visits read it at every step (a float32 model's steps stay float32
        arithmetic) and it travels with the block, so it is summed in that dtype too:
        one model-sized array beside the weights, and as many bytes on the gradient ring
        as the weights.  Its rounding in float32 is at the scale of the weights' own
        (the kernels sum the intercept column, which every row adds to, in float64);
        its effect on convergence is measured in ``benchmarks/results/svrg_anchor.md``.
        """
        blk.mean_grad = self.ring.zeros(blk.q, "mean_grad")

    def gradient(self, blk: Block) -> None:
        """Add this rank's rows' part of ``blk``'s full data gradient (at ``b_anchor``);
        with tables, keep the rows' largest anchor probabilities of the block here."""
        keep = KEEP if self.tables is not None else None
        table = self.ring.clock.timed(
            "compute", self.kernel.gradient_pass, self.rows, blk.W, blk.k0, self.b_anchor,
            1.0 / self.cfg.n_samples, blk.mean_grad, keep,
        )  # fmt: skip
        if self.tables is not None:
            self.tables[blk.q] = table
        self.ring.visited()

    def end_gradient(self, blk: Block) -> None:
        """Anchor ``blk`` at its current weights, once every rank added its part (a copy
        of the weights, unless the ranks' tables hold the anchor)."""
        if self.tables is not None:
            blk.W_anchor = None
            return
        blk.W_anchor = self.ring.zeros(blk.q, "W_anchor")
        blk.W_anchor[...] = blk.W

    def score(self, blk: Block) -> None:
        """Score ``blk`` against this rank's rows; the home rank counts its penalty.

        Timed as scoring (``clock.eval``), and slowed by the straggler knob like the
        other passes.
        """
        home = blk.q % self.ring.size == self.ring.comm.rank
        self.penalty += self.ring.clock.timed(
            "eval", score_block, self.kernel, self.scorers, blk, self.cfg, home
        )
        self.ring.visited()


#: An engine's schedule of an epoch's stages (see :class:`Epoch`).
EpochPhase = Callable[[Epoch], None]


def run_epochs(
    comm: Communicator,
    rows: LocalRows,
    cfg: EngineConfig,
    test_rows: LocalRows | None,
    n_test: int,
    monitor: Monitor | None,
    per_group: int,
    epoch_phase: EpochPhase,
    start: Start | None = None,
) -> WorkerResult:
    """The epoch loop every engine runs; the engine supplies ``epoch_phase``.

    The blocks live in memory the ranks share where the communicator offers some
    (:mod:`dsmlr.engines.shared_blocks`).

    With ``start`` weights (warm start, checkpoint) a scoring ring first makes ``b`` and
    the cached partials exact at those weights (bit for bit what the interrupted run
    had after its last scoring ring), and SVRG anchors from the first epoch: the plain
    warm-up pass is for starting far from the optimum.  ``start.state`` continues a
    checkpointed run where it stopped.  ``monitor.checkpoint`` is asked after each
    epoch with an exact objective.
    """
    rule = update_rule(cfg.optimizer)
    ring, tables = _make_ring(comm, cfg, per_group, start)
    kernel, clock = ring.kernel, ring.clock
    monitor = monitor or Monitor()
    visits = [0, 0, 0]  # epoch, visits done in it, visits it has (see below)
    carry = rule.carry
    partials, b = _starting_normalisers(ring, rows, cfg, start, carry)
    _count_visits(comm, ring, monitor, visits)  # from here on: the epochs' visits
    curvature, gain = _curvature(comm, rows, cfg), batch_gain(comm, rows, cfg)
    shared, spread = _run_constants(comm, rows, cfg, ring)
    run = RunConstants(ring, kernel, rows, cfg, carry, shared, spread, {} if tables else None)
    state = start.state if start is not None else None
    rng = _row_orders(comm, cfg, state)
    progress = RunProgress.begin(comm, cfg, state)
    b_anchor = None
    b_exact = True  # b is exact at the start: -log K at zero weights, or scored there
    for epoch in range(progress.first_epoch, cfg.max_epochs + 1):
        if progress.converged:
            break
        step = step_config(cfg, epoch, curvature, progress.backoff, gain)
        ring.set_cycle(ring_cycle(comm.size, cfg.seed, epoch))
        plan = plan_epoch(
            epoch, max_epochs=cfg.max_epochs, eval_every=cfg.eval_every,
            anchored=rule.anchored, b_exact=b_exact, started=start is not None,
        )  # fmt: skip
        if plan.anchoring:
            b_anchor = b.copy()
        # Without scoring this epoch, b keeps the values the steps refreshed from the
        # cached partials, and the next record covers this epoch's time and bytes.
        train, test = _scorers(plan.scoring, rows, test_rows, ring.n_blocks, cfg.n_classes)
        scorers = [s for s in (train, test) if s is not None]
        # Each stage brings every block to this rank once (the asynchronous engine's
        # update stage about once).
        visits[:] = [epoch, 0, ring.n_blocks * (1 + plan.anchoring + bool(scorers))]
        work = Epoch(
            run, partials, b, step, rng.permutation(rows.n_rows), b_anchor, scorers or None,
            plan.anchoring,
        )  # fmt: skip
        epoch_phase(work)
        b_exact = plan.scoring
        if work.centred is not None and comm.size > 1:  # its allreduce: not a ring payload
            progress.uncounted += work.centred.mean.nbytes
        if train is None:
            continue

        t_eval = time.perf_counter()
        partials, b, totals = _score_totals(
            comm, kernel, ring, rows, cfg, work, train, test, progress.ring_bytes(), shared
        )
        record = epoch_record(
            comm, cfg, epoch, totals, n_test if test is not None else 0, progress.seconds(),
            clock, clock.eval + time.perf_counter() - t_eval, progress.wait_seconds(),
        )  # fmt: skip
        previous = progress.add(record, clock)
        if monitor.checkpoint is not None:
            now = progress.resume_state(epoch, [rng.bit_generator.state])
            checkpoint_if_due(monitor.checkpoint, comm, ring, cfg, now, previous)
        # After the checkpoint, so that the record (a --metrics line) says what it took.
        if monitor.on_epoch is not None and (comm.rank == 0 or monitor.every_rank):
            monitor.on_epoch(record)

    return WorkerResult(
        rank=comm.rank, blocks=ring.release(), history=progress.history,
        converged=progress.converged,
    )  # fmt: skip


def _make_ring(
    comm: Communicator, cfg: EngineConfig, per_group: int, start: Start | None
) -> tuple[Ring, bool]:
    """This rank's ring (its kernel, its clock with the straggler knob, its blocks laid
    out for the update rule, in memory the ranks share where they can), and whether
    SVRG's anchor is held as tables."""
    kernel = get_kernel(cfg.kernel, cfg.device, comm.local_rank)
    clock = Clock(cfg.straggler[1] if cfg.straggler and cfg.straggler[0] == comm.rank else 1.0)
    tables = _anchor_as_tables(cfg, kernel)
    arrays = update_rule(cfg.optimizer).block_arrays(tables) + _lag(kernel)
    return Ring(comm, cfg, clock, per_group, start, kernel, arrays), tables


def _lag(kernel: Kernel) -> tuple[str, ...]:
    """The block's lag as an array it carries, where the kernel leaves columns behind."""
    return ("lag",) if kernel.carries_lag else ()


def _scorers(
    scoring: bool, rows: LocalRows, test_rows: LocalRows | None, n_blocks: int, n_classes: int
) -> tuple[Scorer | None, HeldOutScorer | None]:
    """An epoch's scorers of the training rows and of the held-out ones (None where the
    epoch does not score, or there are no held-out rows)."""
    if not scoring:
        return None, None
    test = HeldOutScorer(test_rows, n_classes) if test_rows is not None else None
    return Scorer(rows, n_blocks), test


def _starting_normalisers(
    ring: Ring, rows: LocalRows, cfg: EngineConfig, start: Start | None, carry: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray]:
    """The rows' per-block partial normalisers and ``b`` to start from: at zero weights
    (every class ``-log K``), or scored at ``start``'s weights by a scoring ring (whose
    time is not an epoch's)."""
    if start is None:
        b = np.full(rows.n_rows, -np.log(cfg.n_classes))
        return initial_partials(rows.n_rows, ring.blocks), b
    scores = Scorer(rows, ring.n_blocks)
    scoring_ring(ring, ring.kernel, [scores], cfg, carry)
    ring.clock.eval = 0.0
    return scores.partials, -scores.sums()[0]


def _count_visits(comm: Communicator, ring: Ring, monitor: Monitor, visits: list[int]) -> None:
    """Tell ``monitor.on_visit`` (rank 0) of every block visit: ``visits`` holds the
    epoch, the visits made in it and those it has, which the epoch loop keeps."""
    if monitor.on_visit is None or comm.rank != 0:
        return
    on_visit = monitor.on_visit

    def count_visit() -> None:
        visits[1] += 1
        on_visit(visits[0], min(visits[1], visits[2]), visits[2])

    ring.on_visit = count_visit


def _curvature(comm: Communicator, rows: LocalRows, cfg: EngineConfig) -> float:
    """The mean squared row norm over all ranks' rows: the unit of SVRG's and SGD's step."""
    with np.errstate(over="ignore"):
        total_sq = comm.allreduce_sum(np.array([sum_sq_norms(rows)]))[0]
    if not np.isfinite(total_sq):
        raise on_all_ranks(
            NumericalError(
                "feature values too large: the squared row norms overflow float64 (values "
                "above about 1e154); rescale the features"
            )
        )
    return max(float(total_sq) / cfg.n_samples, 1e-12)


def _anchor_as_tables(cfg: EngineConfig, kernel: Kernel) -> bool:
    """Whether SVRG holds its anchor as the ranks' probability tables rather than as
    anchor weights travelling with the blocks (:mod:`dsmlr.kernels.anchor_table`)."""
    return update_rule(cfg.optimizer).anchored and uses_tables(
        cfg.svrg_anchor, cfg.n_samples, cfg.n_classes, cfg.n_columns,
        np.dtype(cfg.dtype).itemsize, kernel.anchor_tables,
    )  # fmt: skip


def _run_constants(
    comm: Communicator, rows: LocalRows, cfg: EngineConfig, ring: Ring
) -> tuple[np.ndarray, np.ndarray | None]:
    """What every epoch of a run reuses: the features centred every epoch and the
    column spread SVRG's relaxation reads (None: moves kept whole)."""
    rule = update_rule(cfg.optimizer)
    if cfg.relax not in RELAX_CHOICES:
        raise ValueError(f"relax must be one of {RELAX_CHOICES}, got {cfg.relax!r}")
    shared = shared_columns(comm, rows, cfg) if cfg.centre_shared else np.zeros(0, np.int64)
    # SVRG's moves are relaxed only where two or more ranks move blocks at once.
    relaxing = rule.anchored and comm.size > 1 and ring.n_blocks > 1 and cfg.relax != "none"
    spread = column_spread(rows) if relaxing else None
    if spread is not None and cfg.relax == "intercept":
        spread[: cfg.n_features] = 0.0  # the features' moves kept whole
    return shared, spread


def _score_totals(
    comm: Communicator,
    kernel: Kernel,
    ring: Ring,
    rows: LocalRows,
    cfg: EngineConfig,
    work: Epoch,
    train: Scorer,
    test: HeldOutScorer | None,
    sent: float,
    shared: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, EpochSums]:
    """After a scoring stage: the rows' new partials and exact ``b``, and the epoch's
    sums over all ranks (collective).

    An engine whose blocks are never all between two stages at once (the asynchronous
    one) has the model it scored centred here, its class sums riding with the
    objective's (see :mod:`dsmlr.engines.centering`).
    """
    lse, loss, correct = train.sums()
    partials, b = train.partials, -lse
    sums = EpochSums(loss, correct, work.penalty, sent)
    if test is not None:
        sums.test_loss, sums.test_correct, sums.test_top, sums.test_known = test.sums()
    late = work.centred is None
    if late:
        sums.class_sums = local_class_sums(kernel, ring.group, shared, cfg)
    totals = ring.clock.timed("comm", sums.allreduce, comm)
    if late:
        centred = ClassMean(totals.class_sums, shared, cfg)
        centred.subtract(kernel, ring.group)
        centred.shift_normalisers(rows, partials, b)
        totals.penalty -= centred.penalty_drop  # scored before the centring
    return partials, b, totals


def _row_orders(comm: Communicator, cfg: EngineConfig, state: ResumeState | None):
    """This rank's random stream of row orders: its own seed's, or a checkpointed run's
    as it stopped (fresh streams, still reproducible, on another number of ranks)."""
    if state is None:
        return np.random.default_rng([cfg.seed, comm.rank])
    if state.rng is not None and len(state.rng) == comm.size:
        rng = np.random.default_rng([cfg.seed, comm.rank])
        rng.bit_generator.state = state.rng[comm.rank]
        return rng
    return np.random.default_rng([cfg.seed, comm.rank, state.epoch])
