"""Machinery the engines share: class blocks on a ring of ranks, and the epoch loop.

Each of P ranks owns a row shard ``I_p`` with its ``b_{I_p}`` and a table of per-block
partial normalisers ``partials[i, q] = log sum_{k in K_q} exp(w_k . x_i)``.  The classes
are split into B blocks, gathered into P groups of ``B / P`` blocks; rank ``p`` holds
group ``p`` at the start and at the end of every ring.  An epoch is

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
stage as a ring in lockstep (:func:`ring_epoch`), :mod:`~dsmlr.engines.async_tokens`
sends every block through the three stages as a free-running token.

Every decision (stopping, step halving, errors) is taken on allreduced values, so all
ranks take it together.

Communication per epoch and rank, with ``M = K * D_fit * itemsize`` the model's size:
the scoring stage sends ``M`` (only every ``eval_every`` epochs); the gradient stage
``M * (1 + 8 / itemsize)`` (weights and the float64 gradient); the update stage is the
engine's own; one allreduce of 8 float64s, and one of a float64 for every shared
feature (the class means; the asynchronous engine's ride with the first).  Only the
ring payloads count in ``bytes_sent``.  ``b`` and the rows never move.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy.special import logsumexp

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import (
    EngineConfig,
    EpochRecord,
    Monitor,
    ResumeState,
    Start,
    StoppingRule,
    WorkerResult,
    peak_rss_bytes,
)
from dsmlr.engines.centering import (
    ClassMean,
    center_classes,
    local_class_sums,
    shared_columns,
)
from dsmlr.engines.relaxation import RelaxedRows, column_spread, relaxed_rows
from dsmlr.errors import NumericalError, on_all_ranks
from dsmlr.kernels import HostBlocks, Kernel, LocalRows, UpdateConfig, get_kernel
from dsmlr.kernels.base import Snapshot
from dsmlr.partition import class_blocks, ring_block, ring_shifts
from dsmlr.scoring import BlockScores, summarise

#: Top-k accuracy reported on a held-out set each epoch.
TEST_TOP_K = 5

__all__ = [
    "Block",
    "Clock",
    "Epoch",
    "EpochPhase",
    "Ring",
    "block_array",
    "ring_epoch",
    "run_epochs",
]


class Clock:
    """Splits wall time into compute, communication (which includes waiting) and scoring.

    ``slowdown`` > 1 stretches this rank's kernel calls (update, gradient and scoring
    passes) by sleeping ``slowdown - 1`` times as long as each took: the test-only
    straggler knob (:attr:`EngineConfig.straggler`).
    """

    def __init__(self, slowdown: float = 1.0) -> None:
        self.compute = 0.0
        self.comm = 0.0
        self.eval = 0.0  # the scoring stage (see EpochRecord.eval_seconds)
        self.slowdown = slowdown

    def stretched(self, fn, *args):
        """``fn(*args)``, made ``slowdown`` times as long (not counted in a bucket)."""
        t0 = time.perf_counter()
        out = fn(*args)
        if self.slowdown > 1.0:
            time.sleep((self.slowdown - 1.0) * (time.perf_counter() - t0))
        return out

    def timed(self, bucket: str, fn, *args):
        t0 = time.perf_counter()
        out = self.stretched(fn, *args) if bucket in ("compute", "eval") else fn(*args)
        setattr(self, bucket, getattr(self, bucket) + time.perf_counter() - t0)
        return out


def block_array(n_columns: int, width: int, capacity: int, dtype) -> np.ndarray:
    """A zeroed ``(n_columns, width)`` host block in storage with room for ``capacity``
    classes.

    Blocks differ in width by at most one class; with room for the widest, the MPI ring
    can receive any block into the storage of the one it sends, so a rank never holds
    a second copy of its group (:meth:`dsmlr.comm.mpi.MPIComm.ring_shift`).
    """
    return HostBlocks().zeros_block(n_columns, width, capacity, dtype)


def _group_blocks(gid: int, n_workers: int, per_group: int) -> list[int]:
    """Blocks of group ``gid``: ``gid, gid + P, gid + 2P, ...`` (groups travel whole)."""
    return [gid + j * n_workers for j in range(per_group)]


class _ShiftInFlight:
    """One ring shift running on a helper thread.

    The kernels release the GIL and mpi4py's calls do too, so the shift's transfer
    proceeds while the calling thread computes; MPI moves data only inside its calls, so
    without the thread nothing would travel until the next call.  A daemon thread: a rank
    that fails mid-shift must not be kept alive by it (the job is aborted).

    The communicator's ``wait_seconds`` then counts only the part of the shift's wait
    for its neighbours that held up the calling thread: at most the time
    :meth:`result` blocked (a wait that ran beside a kernel cost nothing).
    """

    def __init__(self, comm: Communicator, arrays: list[np.ndarray], reverse: bool = False):
        self._comm = comm
        self._out: list[np.ndarray] | None = None
        self._error: BaseException | None = None
        self._waited = 0.0
        self._thread = threading.Thread(
            target=self._run, args=(arrays, reverse), name="dsmlr-ring-shift", daemon=True
        )
        self._thread.start()

    def _run(self, arrays: list[np.ndarray], reverse: bool) -> None:
        comm = self._comm
        # The calling thread makes no communication call until result(): the counter
        # is this thread's alone meanwhile.
        before = comm.wait_seconds
        try:
            self._out = comm.ring_shift(arrays, reverse)
        except BaseException as exc:  # re-raised in the calling thread
            self._error = exc
        self._waited = comm.wait_seconds - before
        comm.wait_seconds = before

    def result(self) -> list[np.ndarray]:
        """The arrays that arrived (waits for the shift to finish)."""
        t0 = time.perf_counter()
        self._thread.join()
        self._comm.wait_seconds += min(self._waited, time.perf_counter() - t0)
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


@dataclass
class Block:
    """One class block as a rank holds it: weights, optimiser state, SVRG anchor."""

    q: int
    classes: tuple[int, int]
    W: np.ndarray
    acc: np.ndarray
    W_anchor: np.ndarray | None = None
    mean_grad: np.ndarray | None = None

    @property
    def k0(self) -> int:
        return self.classes[0]


def _initial_partials(n_rows: int, blocks: list[tuple[int, int]]) -> np.ndarray:
    """Partials at W = 0: ``log |K_q|`` (``-inf`` for an empty block)."""
    sizes = np.array([hi - lo for lo, hi in blocks], dtype=np.float64)
    with np.errstate(divide="ignore"):
        row = np.log(sizes)
    return np.tile(row, (n_rows, 1))


class _Scorer:
    """Accumulates one scoring ring's statistics for one set of rows."""

    def __init__(self, rows: LocalRows, n_blocks: int):
        n = rows.n_rows
        self.rows = rows
        self.partials = np.empty((n, n_blocks))
        self.true_score = np.zeros(n)
        self.best_score = np.full(n, -np.inf)
        self.best_class = np.full(n, -1, dtype=np.int64)

    def visit(self, kernel: Kernel, W_block: np.ndarray, k0: int, q: int) -> None:
        kernel.score_pass(
            self.rows, W_block, k0, self.partials, q, self.true_score, self.best_score,
            self.best_class,
        )  # fmt: skip

    def sums(self) -> tuple[np.ndarray, float, float]:
        """Log-partition per row, summed (weighted) log-loss, number correct."""
        lse = logsumexp(self.partials, axis=1) if self.rows.n_rows else np.zeros(0)
        row_loss = lse - self.true_score
        if self.rows.weighted:
            row_loss *= self.rows.weight
        loss = float(np.sum(row_loss))
        correct = float(np.sum(self.best_class == self.rows.y))
        return lse, loss, correct


class _HeldOutScorer:
    """Held-out rows: the scoring module's streaming top-k (compiled, in
    :mod:`dsmlr.kernels.fold_topk`), so top-5 accuracy comes with the loss and accuracy
    from the same pass; labels unseen in training are -1."""

    def __init__(self, rows: LocalRows, n_classes: int):
        self.rows = rows
        k = max(1, min(TEST_TOP_K, n_classes))
        self.state = BlockScores.empty(rows.n_rows, k, with_truth=True)
        from dsmlr.kernels.fold_topk import fold_block  # numba: compiled on first use

        self._fold = fold_block

    def visit(self, kernel: Kernel, W_block: np.ndarray, k0: int, q: int) -> None:
        # The streaming top-k runs on the host, compiled and without the GIL (worker
        # threads score at the same time): a device block is copied once per scoring
        # ring, beside a pass that costs as much as a training epoch's.
        self._fold(self.rows.X, kernel.to_host(W_block), k0, self.rows.fit_intercept,
                   self.rows.y, self.state)  # fmt: skip

    def sums(self) -> np.ndarray:
        """Summed log-loss, correct, correct in the top k, rows with a known label."""
        return np.array(summarise(self.state, self.rows.y, self.state.k), dtype=np.float64)


def _sum_sq_norms(rows: LocalRows) -> float:
    """Sum over local rows of ``s_i ||x_i||^2`` (``||x_i||^2`` plus 1 for the intercept).

    Divided by N this is the typical curvature of one row's weighted loss (softmax
    probabilities are at most 1), so ``eta / mean`` is a step that needs no tuning to
    the data's scale.
    """
    if rows.n_rows == 0:
        return 0.0
    # Summed in float64 whatever the data's type: float32 squares overflow at 1e19.
    X = rows.X
    if rows.weighted:
        if rows.is_sparse:
            sq_rows = np.asarray(X.multiply(X).sum(axis=1, dtype=np.float64)).ravel()
        else:
            sq_rows = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        return float(rows.weight @ (sq_rows + float(rows.fit_intercept)))
    values = X.data if rows.is_sparse else X.ravel()
    sq = float(np.einsum("i,i->", values, values, dtype=np.float64))
    return sq + rows.n_rows * float(rows.fit_intercept)


#: Mini-batches sampled per rank to measure how much a batch's rows overlap.
GAIN_SAMPLES = 8

#: Sparse data at most this dense takes the full gain ``m`` (see :func:`batch_gain`).
SPARSE_DENSITY = 0.1


def _batch_overlap(rows: LocalRows, m: int, seed: int) -> np.ndarray:
    """``[sum ||sum_b x_i||^2, sum sum_b ||x_i||^2]`` over a few sampled mini-batches.

    Their ratio is 1 when a batch's rows touch disjoint features and ``m`` when the rows
    are identical; see :func:`batch_gain`.
    """
    n = rows.n_rows
    if n == 0:
        return np.zeros(2)
    order = np.random.default_rng(seed).permutation(n)
    total = np.zeros(2)
    for t in range(min(GAIN_SAMPLES, -(-n // m))):
        Xb = rows.X[np.sort(order[t * m : (t + 1) * m])]
        summed = np.asarray(Xb.sum(axis=0), dtype=np.float64).ravel()
        sq = Xb.multiply(Xb).sum() if rows.is_sparse else np.einsum("ij,ij->", Xb, Xb)
        total += [summed @ summed, float(sq)]
    return total


def batch_gain(comm: Communicator, rows: LocalRows, cfg: EngineConfig) -> float:
    """How many times longer a step on the mean gradient of a mini-batch can be.

    The kernels step on the mean of a mini-batch's ``m`` row gradients.  Where the rows
    touch mostly different features (sparse data: text, one-hot) each row's part of the
    mean is ``m`` times smaller than its own one-row step, so the step is ``m`` times
    longer: on generated text-like data (20K rows, 5K features, 50 non-zeros a row)
    batches of 64 and 256 rows then made the same progress per epoch as one-row steps,
    where a step of the same length made 10-30 times less.  Denser data
    (more than :data:`SPARSE_DENSITY` of the entries) gets the cautious gain
    ``m / overlap``, the overlap being ``||sum x_i||^2 / sum ||x_i||^2`` over sampled
    batches (a Rayleigh quotient of the batch's Gram matrix: ``m`` for identical rows).
    The intercept, which every row shares, keeps one row's step
    (:attr:`UpdateConfig.unpenalized_scale`): with it scaled too, batches of 64 rows
    diverged in the first epoch.  All ranks agree on the result (one allreduce).
    """
    m = cfg.batch_size
    if m <= 1:
        return 1.0
    nnz = float(rows.X.nnz if rows.is_sparse else np.count_nonzero(rows.X))
    local = [
        *_batch_overlap(rows, m, cfg.seed + 7919 * comm.rank),
        nnz,
        rows.n_rows * cfg.n_features,
    ]
    num, den, nnz, cells = comm.allreduce_sum(np.array(local, dtype=np.float64))
    if cells > 0 and nnz / cells <= SPARSE_DENSITY:
        return float(m)
    if den <= 0.0:
        return 1.0
    return float(np.clip(m / max(num / den, 1.0), 1.0, m))


def _step_config(
    cfg: EngineConfig, epoch: int, curvature: float, backoff: float, gain: float = 1.0
) -> UpdateConfig:
    adaptive = cfg.optimizer == "adagrad"
    if adaptive:
        eta, gain = cfg.eta, 1.0  # AdaGrad scales its own steps.
    elif cfg.optimizer == "svrg":
        eta = cfg.eta / curvature  # Variance reduction converges with a constant step.
    else:
        eta = cfg.eta / curvature / np.sqrt(epoch)  # The paper's decaying-step SGD.
    eta *= backoff * gain
    return UpdateConfig(
        eta=float(eta), lam=cfg.lam, n_penalized=cfg.n_features, batch_size=cfg.batch_size,
        adaptive=adaptive, unpenalized_scale=1.0 / gain,
    )  # fmt: skip


class Ring:
    """This rank's view of the ring: the group of blocks it holds, and how to pass it on.

    Parameters
    ----------
    per_group : int
        Blocks per group, so ``B = P * per_group`` blocks in all.
    start : Start, optional
        Starting weights (and AdaGrad state) of each class range; None starts from zero.
    """

    def __init__(
        self,
        comm: Communicator,
        cfg: EngineConfig,
        clock: Clock,
        per_group: int,
        start: Start | None = None,
        kernel: Kernel | None = None,
    ):
        self.comm = comm
        self.clock = clock
        self.kernel = kernel if kernel is not None else get_kernel("reference")
        self.dtype = cfg.dtype
        # MPI moves host buffers: device blocks are staged through host memory.
        self.staged = getattr(comm, "needs_host_buffers", True) and not isinstance(
            self.kernel, HostBlocks
        )
        self.size = comm.size
        self.per_group = per_group
        self.blocks = class_blocks(cfg.n_classes, self.size * self.per_group)
        self.gid = comm.rank  # rank p starts, and ends every ring, with group p
        self.scratch_acc = self.kernel.zeros(cfg.n_columns)  # optimisers without AdaGrad
        self.on_visit: Callable[[], None] | None = None  # progress hook (rank 0)
        self.capacity = max(hi - lo for lo, hi in self.blocks)
        self.group = []
        for q in _group_blocks(self.gid, self.size, self.per_group):
            lo, hi = self.blocks[q]
            W = self.kernel.zeros_block(cfg.n_columns, hi - lo, self.capacity, cfg.dtype)
            acc = self.kernel.zeros(cfg.n_columns)
            if start is not None:
                W[...] = self.kernel.from_host(np.asarray(start.weights(lo, hi), cfg.dtype).T)
                saved = start.acc(q, lo, hi) if start.acc is not None else None
                if saved is not None:
                    acc[...] = self.kernel.from_host(np.asarray(saved, np.float64))
            self.group.append(Block(q, (lo, hi), W, acc))

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def visited(self) -> None:
        """A block's visit to this rank ended (any stage): tell the progress hook."""
        if self.on_visit is not None:
            self.on_visit()

    def make_block(self, q: int, arrays: dict[str, np.ndarray]) -> Block:
        """A block rebuilt from arrays that arrived (the scratch AdaGrad state if none)."""
        return Block(q, self.blocks[q], **{"acc": self.scratch_acc, **arrays})

    def to_wire(self, arrays: list) -> list[np.ndarray]:
        """Arrays as the communicator sends them (device blocks copied to the host)."""
        return [self.kernel.to_host(a) for a in arrays] if self.staged else arrays

    def from_wire(self, arrays: list[np.ndarray]) -> list:
        """Arrays that arrived, where this rank's kernel keeps them."""
        return [self.kernel.from_host(a) for a in arrays] if self.staged else arrays

    def host_group(self) -> list[Block]:
        """The held group with host copies of the weights and AdaGrad state (saving)."""
        k = self.kernel
        return [Block(b.q, b.classes, k.to_host(b.W), k.to_host(b.acc)) for b in self.group]

    def shift(self, fields: tuple[str, ...], reverse: bool = False) -> None:
        """Hand the held group, with the named arrays of each block, to the left (to the
        right if ``reverse``)."""
        sent = self.to_wire([getattr(blk, f) for blk in self.group for f in fields])
        got = iter(self.from_wire(self.clock.timed("comm", self.comm.ring_shift, sent, reverse)))
        # The right neighbour held the next group, the left one the previous.
        self.gid = ring_block(self.gid, -1 if reverse else 1, self.size)
        self.group = [
            self.make_block(q, {f: next(got) for f in fields})
            for q in _group_blocks(self.gid, self.size, self.per_group)
        ]

    def travel(
        self,
        fields: tuple[str, ...],
        visit: Callable[[Block, int], None],
        reverse: bool = False,
        n_shifts: int | None = None,
    ) -> None:
        """A ring: P rounds of ``visit(block, round)`` for each held block, after which
        the group (the named arrays of each block) passes to the left (to the right if
        ``reverse``).

        ``n_shifts``: P (the default) or P - 1, when the ring ends holding the group it
        visited last rather than passing it on (the next ring starts with it, see
        :func:`ring_epoch`).

        Where the communicator can shift on a helper thread (MPI) and a group has two or
        more blocks, each block leaves as soon as its visit is done and travels while the
        next one is visited: a round's communication hides behind its computation,
        except the last block's, which hides behind the next round's first visit.  The
        blocks visited, their order and the arrays each visit sees are the same either
        way, so results are identical; only the ``comm`` clock, now the time spent
        waiting for a block to arrive, shrinks.
        """
        n_shifts = self.size if n_shifts is None else n_shifts
        if self.per_group < 2 or not getattr(self.comm, "overlaps_shifts", False):
            for r in range(self.size):
                for blk in self.group:
                    visit(blk, r)
                if r < n_shifts:
                    self.shift(fields, reverse)
            return
        in_flight: tuple[int, _ShiftInFlight] | None = None
        for r in range(self.size):
            for j, blk in enumerate(self.group):
                visit(blk, r)
                if in_flight is not None:
                    self._land(*in_flight, fields, reverse)
                    in_flight = None
                if r < n_shifts:
                    arrays = self.to_wire([getattr(blk, f) for f in fields])
                    in_flight = (j, _ShiftInFlight(self.comm, arrays, reverse))
        if in_flight is not None:
            self._land(*in_flight, fields, reverse)

    def _land(self, j: int, shift: _ShiftInFlight, fields: tuple[str, ...], reverse: bool) -> None:
        """Put the block that arrived by ``shift`` in place ``j`` of the held group."""
        got = iter(self.from_wire(self.clock.timed("comm", shift.result)))
        # self.gid moves on with the group's last block; block j comes from the next group.
        gid = ring_block(self.gid, -1 if reverse else 1, self.size)
        q = _group_blocks(gid, self.size, self.per_group)[j]
        self.group[j] = self.make_block(q, {f: next(got) for f in fields})
        if j == self.per_group - 1:  # the whole group has moved on
            self.gid = gid


def _score_block(kernel: Kernel, scorers: list, blk: Block, cfg, home: bool) -> float:
    """Score ``blk`` against this rank's rows into each scorer; return the block's
    penalty where this rank counts it (``home``: each block on exactly one rank)."""
    for scorer in scorers:
        scorer.visit(kernel, blk.W, blk.k0, blk.q)
    if not home:
        return 0.0
    return 0.5 * cfg.lam * float(kernel.squared_norm(blk.W[: cfg.n_features]))


def _scoring_ring(
    ring: Ring,
    kernel: Kernel,
    scorers: list,
    cfg,
    carry,
    reverse: bool = False,
    n_shifts: int | None = None,
) -> float:
    """Score every set of rows against every block; return this rank's penalty share.

    ``reverse`` and ``n_shifts`` as for :meth:`Ring.travel`.  Its wall time, the shifts'
    waits included, goes to ``ring.clock.eval``.
    """
    clock, t0, penalty = ring.clock, time.perf_counter(), 0.0

    def visit(blk: Block, r: int) -> None:
        nonlocal penalty
        # A straggler is slow here too; a block is in exactly one rank's round-0 group.
        penalty += clock.stretched(_score_block, kernel, scorers, blk, cfg, r == 0)
        ring.visited()

    ring.travel(("W", *carry), visit, reverse, n_shifts)
    clock.eval += time.perf_counter() - t0
    return penalty


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
    """

    ring: Ring
    kernel: Kernel
    rows: LocalRows
    cfg: EngineConfig
    partials: np.ndarray
    b: np.ndarray
    step: UpdateConfig
    carry: tuple[str, ...]
    order: np.ndarray  # the row order of this epoch's stochastic passes
    b_anchor: np.ndarray | None = None  # exact b at the blocks' anchor (SVRG)
    scorers: list | None = None
    anchoring: bool = False  # a gradient stage (re)anchors the blocks at b_anchor
    penalty: float = 0.0  # this rank's share of the penalty, summed by score()
    # The features center() centres (see dsmlr.engines.centering.shared_columns).
    shared: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    centred: ClassMean | None = None  # set by center()
    # column_spread of this rank's rows (None: SVRG's moves are kept whole).
    spread: np.ndarray | None = None

    @functools.cached_property
    def relaxed(self) -> RelaxedRows | None:
        """The rows of a block whose SVRG moves this epoch relaxes (see
        :mod:`dsmlr.engines.relaxation`)."""
        if self.spread is None:
            return None
        ring, cfg = self.ring, self.cfg
        return relaxed_rows(self.spread, self.step, ring.size, ring.n_blocks, cfg.fit_intercept)

    @property
    def update_fields(self) -> tuple[str, ...]:
        """The arrays of a block that travel between update visits."""
        svrg = self.b_anchor is not None
        return ("W", "W_anchor", "mean_grad", *self.carry) if svrg else ("W", *self.carry)

    @property
    def gradient_fields(self) -> tuple[str, ...]:
        return ("W", "mean_grad", *self.carry)

    @property
    def scoring_fields(self) -> tuple[str, ...]:
        return ("W", *self.carry)

    def update(self, blk: Block) -> None:
        """One stochastic pass of ``blk`` over this rank's rows (SVRG if anchored)."""
        ring, kernel = self.ring, self.kernel
        snapshot = None
        if self.b_anchor is not None:
            snapshot = Snapshot(blk.W_anchor, blk.mean_grad, self.b_anchor)
        relaxed = self.relaxed if snapshot is not None else None
        if relaxed is not None:
            sums_before = kernel.class_sums(blk.W, relaxed.rows)
        ring.clock.timed(
            "compute", kernel.update_pass, self.rows, blk.W, blk.k0, blk.acc, self.partials,
            blk.q, self.b, self.order, self.step, snapshot,
        )  # fmt: skip
        if relaxed is not None:
            relaxed.apply(kernel, blk.W, sums_before)
        ring.visited()

    def center(self) -> None:
        """Take the class mean of the ``shared`` features out of the model (see
        :mod:`dsmlr.engines.centering`), ``b`` and the cached partials along with it.

        Every rank at once, between stages, while the blocks the ranks hold are the
        whole model.  Before a scoring stage ``b`` and the partials are left as they are:
        the scoring recomputes them.
        """
        ring = self.ring
        self.centred = center_classes(
            ring.comm, self.kernel, ring.group, self.shared, self.cfg, ring.clock
        )
        if self.scorers is None:
            self.centred.shift_normalisers(self.rows, self.partials, self.b)

    def begin_gradient(self, blk: Block) -> None:
        """A zero float64 gradient for ``blk`` to collect its visits' rows in."""
        blk.mean_grad = self.kernel.zeros_block(*blk.W.shape, self.ring.capacity, np.float64)

    def gradient(self, blk: Block) -> None:
        """Add this rank's rows' part of ``blk``'s full data gradient (at ``b_anchor``)."""
        self.ring.clock.timed(
            "compute", self.kernel.gradient_pass, self.rows, blk.W, blk.k0, self.b_anchor,
            1.0 / self.cfg.n_samples, blk.mean_grad,
        )  # fmt: skip
        self.ring.visited()

    def end_gradient(self, blk: Block) -> None:
        """Anchor ``blk`` at its current weights, once every rank added its part.

        The gradient, summed in float64, is then kept in the weights' dtype: the update
        visits read it at every step (a float32 model's steps stay float32 arithmetic,
        and a touched weight costs 16 bytes of memory traffic instead of 20: itself read
        and written, its anchor and gradient read) and it travels with the block between
        them.  Its rounding (float32: 6e-8 relative) is that of the weights themselves.
        """
        dtype, capacity = self.ring.dtype, self.ring.capacity
        if np.dtype(dtype) != np.float64:
            summed = blk.mean_grad
            blk.mean_grad = self.kernel.zeros_block(*blk.W.shape, capacity, dtype)
            blk.mean_grad[...] = summed
            del summed  # before the anchor weights: a block at most 2s + 8 bytes a value
        blk.W_anchor = self.kernel.zeros_block(*blk.W.shape, capacity, dtype)
        blk.W_anchor[...] = blk.W

    def score(self, blk: Block) -> None:
        """Score ``blk`` against this rank's rows; the home rank counts its penalty.

        Timed as scoring (``clock.eval``), and slowed by the straggler knob like the
        other passes.
        """
        home = blk.q % self.ring.size == self.ring.comm.rank
        self.penalty += self.ring.clock.timed(
            "eval", _score_block, self.kernel, self.scorers, blk, self.cfg, home
        )
        self.ring.visited()


#: An engine's schedule of an epoch's stages (see :class:`Epoch`).
EpochPhase = Callable[[Epoch], None]


def ring_epoch(epoch: Epoch) -> None:
    """Every stage as a ring of P lockstep rounds (the synchronous engine's epoch): each
    block visits every rank once per stage, in the update stage making one pass over its
    rows.

    Each ring starts with the groups where the one before left them (the last round's
    groups, whose visits of that stage are done) and runs the other way round, so it
    needs no shift before its first visits: the rings make P - 1 shifts each, and one
    more at the end of an epoch with an odd number of them, which brings every group
    home (:func:`dsmlr.partition.ring_shifts`).  That extra shift falls on the last
    ring, the scoring ring where there is one, which moves the weights alone.  A plain
    epoch that scores thus makes 2(P - 1) shifts of the model instead of 2P.
    """
    ring = epoch.ring
    anchored, scoring = epoch.anchoring, epoch.scorers is not None
    # Each ring's direction (every second one reversed) and shifts, in order.
    legs = ((bool(i % 2), n) for i, n in enumerate(ring_shifts(anchored + 1 + scoring, ring.size)))
    if anchored:
        for blk in ring.group:
            epoch.begin_gradient(blk)
        ring.travel(epoch.gradient_fields, lambda blk, _round: epoch.gradient(blk), *next(legs))
        for blk in ring.group:  # each held block has had every rank's visit
            epoch.end_gradient(blk)
    ring.travel(epoch.update_fields, lambda blk, _round: epoch.update(blk), *next(legs))
    # Before the scoring ring, which then scores (and makes b exact for) the model the
    # epoch ends with.
    epoch.center()
    if scoring:
        epoch.penalty = _scoring_ring(
            ring, epoch.kernel, epoch.scorers, epoch.cfg, epoch.carry, *next(legs)
        )


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

    With ``start`` weights (warm start, checkpoint) a scoring ring first makes ``b`` and
    the cached partials exact at those weights (bit for bit what the interrupted run
    had after its last scoring ring), and SVRG anchors from the first epoch: the plain
    warm-up pass is for starting far from the optimum.  ``start.state`` continues a
    checkpointed run where it stopped.  ``monitor.checkpoint`` is asked after each
    epoch with an exact objective.
    """
    kernel = get_kernel(cfg.kernel, cfg.device, comm.rank)
    clock = Clock(cfg.straggler[1] if cfg.straggler and cfg.straggler[0] == comm.rank else 1.0)
    ring = Ring(comm, cfg, clock, per_group, start, kernel)
    monitor = monitor or Monitor()
    visits = [0, 0, 0]  # epoch, visits done in it, visits it has (see below)
    carry = ("acc",) if cfg.optimizer == "adagrad" else ()
    if start is None:
        partials = _initial_partials(rows.n_rows, ring.blocks)
        b = np.full(rows.n_rows, -np.log(cfg.n_classes))
    else:
        start_scores = _Scorer(rows, ring.n_blocks)
        _scoring_ring(ring, kernel, [start_scores], cfg, carry)
        partials, b = start_scores.partials, -start_scores.sums()[0]
        clock.eval = 0.0
    if monitor.on_visit is not None and comm.rank == 0:  # from here on: epochs' visits

        def count_visit() -> None:
            visits[1] += 1
            monitor.on_visit(visits[0], min(visits[1], visits[2]), visits[2])

        ring.on_visit = count_visit
    rng = np.random.default_rng([cfg.seed, comm.rank])
    stopper = StoppingRule(cfg.tol, cfg.n_iter_no_change)
    with np.errstate(over="ignore"):
        total_sq = comm.allreduce_sum(np.array([_sum_sq_norms(rows)]))[0]
    if not np.isfinite(total_sq):
        raise on_all_ranks(
            NumericalError(
                "feature values too large: the squared row norms overflow float64 (values "
                "above about 1e154); rescale the features"
            )
        )
    curvature = max(float(total_sq) / cfg.n_samples, 1e-12)
    # A mini-batch's mean gradient takes a longer step where its rows overlap little
    # (the gain is exactly 1 for one-row batches).
    gain = batch_gain(comm, rows, cfg)
    shared = shared_columns(comm, rows, cfg)  # the features centred every epoch
    # SVRG's moves are relaxed only where two or more ranks move blocks at once.
    relaxing = cfg.optimizer == "svrg" and comm.size > 1 and ring.n_blocks > 1
    spread = column_spread(rows) if relaxing else None
    history: list[EpochRecord] = []
    converged = False
    backoff = 1.0
    first_epoch, elapsed = 1, 0.0
    state = start.state if start is not None else None
    if state is not None:
        history, backoff, converged = list(state.history), state.backoff, state.converged
        stopper.restore(state.best, state.quiet)
        first_epoch, elapsed = state.epoch + 1, state.elapsed
        if state.rng is not None and len(state.rng) == comm.size:
            rng.bit_generator.state = state.rng[comm.rank]
        else:  # another number of ranks: fresh streams, still reproducible
            rng = np.random.default_rng([cfg.seed, comm.rank, state.epoch])
    t_start = time.perf_counter() - elapsed

    bytes_before, wait_before, uncounted = comm.bytes_sent, comm.wait_seconds, 0
    svrg, b_anchor = cfg.optimizer == "svrg", None
    b_exact = True  # b is exact at the start: -log K at zero weights, or scored there
    for epoch in range(first_epoch, cfg.max_epochs + 1):
        if converged:
            break
        step = _step_config(cfg, epoch, curvature, backoff, gain)
        # SVRG's anchor gradient helps little far from the optimum: the first epoch is
        # a plain stochastic pass, which gets there faster.  Its anchor needs the exact
        # b at the anchor: an epoch right after a scoring stage (or a start, which
        # scores) anchors at the current W; the others keep the last anchor.
        anchoring = svrg and b_exact and (epoch > 1 or start is not None)
        if anchoring:
            b_anchor = b.copy()
        # Without scoring this epoch, b keeps the values the steps refreshed from the
        # cached partials, and the next record covers this epoch's time and bytes.
        # SVRG scores its first plain epoch too, so that the second can anchor.
        scoring = not (epoch % cfg.eval_every and epoch < cfg.max_epochs) or (
            svrg and start is None and epoch == 1
        )
        train = _Scorer(rows, ring.n_blocks) if scoring else None
        test = None
        if scoring and test_rows is not None:
            test = _HeldOutScorer(test_rows, cfg.n_classes)
        scorers = [s for s in (train, test) if s is not None]
        # Each stage brings every block to this rank once (the asynchronous engine's
        # update stage about once).
        visits[:] = [epoch, 0, ring.n_blocks * (1 + anchoring + bool(scorers))]
        work = Epoch(
            ring, kernel, rows, cfg, partials, b, step, carry, rng.permutation(rows.n_rows),
            b_anchor, scorers or None, anchoring, shared=shared, spread=spread,
        )  # fmt: skip
        epoch_phase(work)
        b_exact = train is not None
        if work.centred is not None and comm.size > 1:  # its allreduce: not a ring payload
            uncounted += work.centred.mean.nbytes
        if train is None:
            continue

        t_eval = time.perf_counter()
        lse, loss, correct = train.sums()
        partials, b = train.partials, -lse
        held_out = test.sums() if test is not None else np.zeros(4)
        sent = float(comm.bytes_sent - bytes_before - uncounted)
        # An engine whose blocks are never all between two stages at once (the
        # asynchronous one) has the model it scored centred now, its class sums riding
        # with the objective's (see dsmlr.engines.centering).
        late = work.centred is None
        class_sums = local_class_sums(kernel, ring.group, shared, cfg) if late else []
        sums = np.array([loss, correct, work.penalty, sent, *held_out, *class_sums])
        totals = clock.timed("comm", comm.allreduce_sum, sums)
        if late:
            centred = ClassMean(totals[8:], shared, cfg)
            centred.subtract(kernel, ring.group)
            centred.shift_normalisers(rows, partials, b)
            totals[2] -= centred.penalty_drop  # scored before the centring
        eval_seconds = clock.eval + time.perf_counter() - t_eval
        objective = totals[0] / cfg.n_samples + totals[2]
        if not np.isfinite(objective):
            raise on_all_ranks(
                NumericalError(
                    f"objective became {objective} at epoch {epoch}: the step size eta={cfg.eta} "
                    "is too large for this data (or the data holds huge values); lower --eta or "
                    "rescale the features"
                )
            )
        record = EpochRecord(
            epoch=epoch,
            time=time.perf_counter() - t_start,
            objective=float(objective),
            train_accuracy=float(totals[1] / cfg.n_samples),
            compute_seconds=clock.compute,
            comm_seconds=clock.comm,
            wait_seconds=comm.wait_seconds - wait_before,
            eval_seconds=eval_seconds,
            bytes_sent=int(totals[3] / comm.size),
            peak_rss=[int(v) for v in comm.allgather(peak_rss_bytes())],  # type: ignore[call-overload]
        )
        if test is not None and n_test > 0:
            t_loss, t_correct, t_top, t_known = totals[4:8]
            record.test_objective = float(t_loss / t_known + totals[2]) if t_known else None
            record.test_accuracy = float(t_correct / n_test)
            record.test_top5_accuracy = float(t_top / n_test)
        history.append(record)
        clock.compute = clock.comm = clock.eval = 0.0
        bytes_before, wait_before, uncounted = comm.bytes_sent, comm.wait_seconds, 0
        if monitor.on_epoch is not None and (comm.rank == 0 or monitor.every_rank):
            monitor.on_epoch(record)
        if len(history) > 1 and record.objective > history[-2].objective:
            # A rising objective means the step is too long for this data; every rank
            # sees the same allreduced objective, so all shorten it together.
            backoff *= 0.5
        converged = stopper.update(record.objective)
        saver = monitor.checkpoint
        previous = history[-2].epoch if len(history) > 1 else 0
        if saver is not None and (
            converged or epoch == cfg.max_epochs or saver.due(epoch, previous)
        ):
            now = ResumeState(
                epoch, list(history), backoff, stopper.best, stopper.quiet,
                time.perf_counter() - t_start, converged, [rng.bit_generator.state],
            )  # fmt: skip
            saver.save(comm, epoch, ring.host_group(), now)

    return WorkerResult(
        rank=comm.rank,
        blocks=[(blk.classes, kernel.to_host(blk.W)) for blk in ring.group],
        history=history,
        converged=converged,
    )
