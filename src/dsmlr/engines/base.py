"""What engines share: settings, per-epoch records, results, and the stopping rule."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from dsmlr import defaults
from dsmlr.engines.optimizers import UPDATE_RULES

__all__ = [
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
    "peak_rss_bytes",
]

#: Per-block update rules' names (see :mod:`dsmlr.engines.optimizers`).
OPTIMIZERS = tuple(UPDATE_RULES)


def peak_rss_bytes() -> int:
    """This process's peak resident set size so far, in bytes (0 where unknown)."""
    try:
        import resource
    except ImportError:  # not on Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS counts bytes


@dataclass(frozen=True)
class EngineConfig:
    """Everything an engine needs besides the data; identical on every rank.

    Attributes
    ----------
    n_samples : int
        Global number of training rows N (the ``1/N`` in the objective).
    n_features : int
        Number of real features D (the intercept column, if any, comes after).
    n_classes : int
        Number of classes K.
    fit_intercept : bool
        Learn an unpenalised per-class intercept.
    lam : float
        L2 strength (``C = 1 / (lam * N)`` in scikit-learn terms).
    max_epochs : int
        Upper bound on passes over the data.
    tol : float
        Stop when the relative objective decrease stays below ``tol`` for
        ``n_iter_no_change`` consecutive epochs.
    n_iter_no_change : int
        See ``tol``.
    eta : float
        Step size.  For ``"svrg"`` and ``"sgd"`` in units of ``1 / mean_i ||x_i||^2``
        (``"sgd"`` decays it as ``1/sqrt(epoch)``); for ``"adagrad"`` its raw scale.
    batch_size : int
        Rows per stochastic step.
    optimizer : str
        ``"svrg"`` (default: variance-reduced steps after one plain epoch),
        ``"adagrad"`` or ``"sgd"`` (the paper's decaying-step SGD).
    dtype : numpy dtype
        Storage type of the weights (float32 or float64).
    seed : int
        Seed from which every rank derives its own random stream.
    kernel : str
        Name in :data:`dsmlr.kernels.KERNELS`.
    device : str
        Where the kernel keeps blocks and rows: ``"cpu"``, or ``"cuda"`` / ``"cuda:N"``
        for the ``torch`` kernel (``"cuda"`` gives each rank of a host its own GPU).
    blocks_per_rank : int or None
        Class blocks per rank, B / P; None for the engine's default (sync: 1; async: 4, so
        tokens can flow around a slow rank, or 2 where 4 would make narrow tokens).
    eval_every : int
        Score the exact objective (a ring pass over all blocks) every this many epochs
        and after the last; stopping is decided at those epochs.
    svrg_anchor : {"auto", "weights", "probabilities"}
        How SVRG holds its anchor: a copy of the weights that travels with each block,
        or each rank's table of its rows' largest anchor probabilities
        (:mod:`dsmlr.kernels.anchor_table`); ``"auto"`` takes the one of fewer bytes.
    straggler : (rank, factor) or None
        Test-only knob: make ``rank`` compute ``factor`` times slower (it sleeps after
        each kernel call: update, gradient and scoring passes), to measure how the
        engines cope with a slow machine.
    centre_shared : bool
        Take the class mean of the features many rows share out of the model every
        epoch (:mod:`dsmlr.engines.centering`).  Off only to measure what it brings.
    relax : {"columns", "intercept", "none"}
        Which columns of SVRG's moves are relaxed where several ranks move blocks at
        once (:mod:`dsmlr.engines.relaxation`): every column by its spread (the
        default), the intercept alone, or none (whole moves).  The last two only to
        measure what the relaxation brings.
    """

    n_samples: int
    n_features: int
    n_classes: int
    fit_intercept: bool = True
    lam: float = defaults.LAM
    max_epochs: int = defaults.MAX_EPOCHS
    tol: float = defaults.TOL
    n_iter_no_change: int = defaults.N_ITER_NO_CHANGE
    eta: float = defaults.ETA
    batch_size: int = defaults.CPU_BATCH_SIZE
    optimizer: str = defaults.OPTIMIZER
    dtype: type = np.dtype(defaults.DTYPE).type
    seed: int = 0
    kernel: str = "numba"
    device: str = "cpu"
    blocks_per_rank: int | None = None
    eval_every: int = defaults.EVAL_EVERY
    svrg_anchor: str = "auto"
    straggler: tuple[int, float] | None = None
    centre_shared: bool = True
    relax: str = "columns"

    @property
    def n_columns(self) -> int:
        """Columns of the model: features plus the intercept column."""
        return self.n_features + int(self.fit_intercept)


@dataclass
class EpochRecord:
    """One epoch of training, as all ranks agree on it.

    ``objective`` is the exact ``L(W)`` on the training rows at the end of the epoch
    (a scoring pass, not the running stochastic estimate); ``time`` is wall seconds
    since training started.  With a held-out set, ``test_objective`` (over its rows
    with labels seen in training), ``test_accuracy`` and ``test_top5_accuracy`` (rows
    with unseen labels count as errors).  ``compute_seconds`` (kernels), ``comm_seconds``
    (communication, waiting included), ``wait_seconds`` (the part of it spent waiting
    for other ranks, see :attr:`~dsmlr.comm.base.Communicator.wait_seconds`),
    ``eval_seconds`` (the scoring stage and the allreduce: the sync engine's scoring
    ring, shifts included; the async engine's scoring visits) and ``bytes_sent``
    (payload per rank, averaged over ranks) cover the epochs since the previous record
    (one epoch unless :attr:`EngineConfig.eval_every` > 1).  ``peak_rss`` is
    each rank's peak resident memory so far, in bytes, in rank order (in-process
    workers share one process, so they report the same figure).  ``checkpoint_seconds``
    is the time the checkpoint written after this epoch took (None without one).
    """

    epoch: int
    time: float
    objective: float
    train_accuracy: float
    test_objective: float | None = None
    test_accuracy: float | None = None
    test_top5_accuracy: float | None = None
    compute_seconds: float = 0.0
    comm_seconds: float = 0.0
    wait_seconds: float = 0.0
    eval_seconds: float = 0.0
    bytes_sent: int = 0
    peak_rss: list[int] | None = None
    checkpoint_seconds: float | None = None

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass(frozen=True)
class Monitor:
    """What a training run reports while it goes.

    Attributes
    ----------
    on_epoch : callable, optional
        Called with each :class:`EpochRecord` on rank 0, or on every rank when
        ``every_rank`` (each rank's record then carries its own compute and
        communication seconds; everything else is agreed by all ranks).
    on_visit : callable, optional
        ``on_visit(epoch, done, total)`` on rank 0 after each block visit of any stage
        (SVRG's anchor gradient, the update, the scoring): ``done`` of about ``total``
        visits this rank makes in the epoch (``B`` per stage: exact for the synchronous
        ring; the asynchronous engine's share of the update visits varies, so ``done``
        is capped at ``total``).  For progress bars.
    every_rank : bool
        See ``on_epoch``.
    """

    on_epoch: Callable[[EpochRecord], None] | None = None
    on_visit: Callable[[int, int, int], None] | None = None
    every_rank: bool = False
    checkpoint: Checkpoint | None = None


class Checkpoint(Protocol):
    """Saves training state at the end of epochs (see :mod:`dsmlr.checkpoint`)."""

    def due(self, epoch: int, previous: int) -> bool:
        """Whether a checkpoint is wanted after ``epoch`` (one with an exact objective),
        the one before with an exact objective being ``previous`` (0 if none)."""
        ...

    def save(self, comm, epoch: int, blocks: list, state: ResumeState) -> None:
        """Write one checkpoint (collective); ``blocks`` are this rank's ring blocks."""
        ...


@dataclass
class ResumeState:
    """Where a training run stands after an epoch: what continuing it exactly needs
    besides the weights.

    Attributes
    ----------
    epoch : int
        The last finished epoch.
    history : list of EpochRecord
    backoff : float
        The step-size factor (halved at each rise of the objective).
    best, quiet : float, int
        The stopping rule's state (:class:`StoppingRule`).
    elapsed : float
        Wall seconds of training so far (``time`` of the records goes on from it).
    converged : bool
        The run had already stopped on ``tol``.
    rng : list of dict or None
        Every rank's row-shuffle generator state (``bit_generator.state``), in rank
        order; None when it cannot be used (another number of ranks), in which case each
        rank starts a new stream from the seed and the epoch.
    """

    epoch: int
    history: list[EpochRecord]
    backoff: float
    best: float
    quiet: int
    elapsed: float
    converged: bool = False
    rng: list[dict] | None = None


@dataclass(frozen=True)
class Start:
    """How a run starts other than from zero weights.

    Attributes
    ----------
    weights : callable
        ``weights(k0, k1)``: the starting weights of classes ``k0:k1``, shape
        ``(k1 - k0, D_fit)`` (warm start, or a checkpoint).
    acc : callable, optional
        ``acc(q, k0, k1)``: the AdaGrad accumulator of block ``q``, or None for zeros.
    state : ResumeState, optional
        Continue a checkpointed run (its epoch count, step size, stopping rule and
        random streams) instead of starting a new one at these weights.
    """

    weights: Callable[[int, int], np.ndarray]
    acc: Callable[[int, int, int], np.ndarray | None] | None = None
    state: ResumeState | None = None


@dataclass
class WorkerResult:
    """What one rank returns: the class blocks it holds at the end, and the history.

    ``blocks`` lists ``((k0, k1), W_block)`` pairs, ``W_block`` feature-major.
    """

    rank: int
    blocks: list[tuple[tuple[int, int], np.ndarray]]
    history: list[EpochRecord] = field(default_factory=list)
    converged: bool = False


class StoppingRule:
    """Relative-decrease test on values every rank agrees on (so all stop together)."""

    def __init__(self, tol: float, patience: int):
        self.tol = tol
        self.patience = patience
        self.best = np.inf
        self.quiet = 0

    def restore(self, best: float, quiet: int) -> None:
        """Continue from a checkpointed run's state."""
        self.best, self.quiet = float(best), int(quiet)

    def update(self, objective: float) -> bool:
        """Record an epoch's objective; return True when training should stop.

        Only a small *decrease* counts towards stopping: an epoch that ends above the
        best objective so far is instability (the engine shortens its step), not
        convergence, and resets the count.
        """
        gain = (self.best - objective) / max(abs(objective), 1e-300)
        self.best = min(self.best, objective)
        self.quiet = self.quiet + 1 if 0.0 <= gain < self.tol else 0
        return self.quiet >= self.patience


def format_epoch(entry: dict) -> str:
    """One progress line for an epoch's history entry (:meth:`EpochRecord.as_dict`)."""
    text = (
        f"epoch {entry['epoch']:4d}  time {entry['time']:8.2f}s  "
        f"objective {entry['objective']:.6g}  train acc {entry['train_accuracy']:.4f}"
    )
    if "test_accuracy" in entry:
        text += f"  test acc {entry['test_accuracy']:.4f}"
    return text


def centre_intercepts(comm, blocks: list[tuple[tuple[int, int], np.ndarray]], n_classes: int):
    """Shift every block's intercept row so the intercepts sum to zero (collective).

    Softmax is unchanged by a shift common to all intercepts and the intercepts are
    unpenalised, so the optimum fixes them only up to that shift: report the centred
    representative, as scikit-learn does.  One allreduce of a single number; summed in
    rank order, so in-process workers and MPI ranks get the same bits.
    """
    local = sum(float(W[-1].sum(dtype=np.float64)) for _, W in blocks)
    shift = comm.allreduce_sum(np.array([local]))[0] / n_classes
    for _, W in blocks:
        W[-1] -= W.dtype.type(shift)
