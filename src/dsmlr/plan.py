"""A cost model of training: memory, compute and communication per rank and epoch.

:func:`plan_training` predicts, for N examples, D features, K classes, ``nnz`` stored
non-zeros, P ranks and a network of a given bandwidth and latency, what one rank of the
synchronous ring (:mod:`dsmlr.engines.sync_ring`) needs per epoch.
:func:`dsmlr.calibration.calibrate` measures the kernel rates it uses on this machine;
``dsmlr plan`` prints the prediction (:mod:`dsmlr.cli.plan`). ``docs/cost-model.md``
shows the model checked against measured runs (``benchmarks/validate_plan.py``) and a
projection to the DS-MLR paper's Reddit-Full.

The model
---------
Notation: ``N_p = ceil(N / P)`` rows and ``Z_p = ceil(nnz / P)`` non-zeros per rank,
``D_fit = D + 1`` with an intercept (else D), ``s`` bytes per value (8 for float64, 4 for
float32), ``B`` class blocks (:func:`dsmlr.engines.n_class_blocks`) and
``M = K * D_fit * s``, the model's size in bytes.

**Memory** per rank is :func:`dsmlr.memory.plan_memory` (the estimate training itself
checks before it starts) with ``n_rows = N_p``, ``nnz = Z_p``: rows
``Z_p (s + 4) + 16 N_p``, per-row state ``8 N_p (2B + 2)``, the rank's share of the
class blocks ``ceil(K / P) D_fit`` values times ``s`` (SGD), ``3s`` (SVRG: weights,
anchor weights, anchor gradient; ``2s`` and the rows' anchor tables where
:func:`dsmlr.kernels.anchor_table.uses_tables` holds the anchor so) or ``s`` plus
``8 D_fit B / P`` (AdaGrad), and a fixed 300 MiB for Python and the libraries.  An
asynchronous rank under MPI is planned to hold :func:`dsmlr.memory.async_blocks_held`
blocks (up to two groups and one block) instead of its group.

**Compute.**  Each kernel pass visits every class of every local row: it does work
proportional to ::

    U = (Z_p + N_p) * K          # "units": one (non-zero or row) x class each

(a row's scores cost one multiply-add per non-zero and class, its softmax one exp per
class). A pass of kind ``k`` takes ``U / r_k`` seconds, with rates ``r_k`` in units per
second from :class:`Throughput` (:func:`dsmlr.calibration.calibrate` measures them). Per
epoch, in the steady state (from the second epoch on):

* update pass: 1, at ``r_update`` of the optimiser (SGD, SVRG or AdaGrad steps);
* gradient pass: ``1 / eval_every`` for SVRG (its anchor, in the epoch after each
  scoring pass), none for SGD and AdaGrad, and none in the first epoch (SVRG's first
  epoch is a plain pass, which scores whatever ``eval_every`` is);
* scoring pass: ``1 / eval_every`` (the exact objective every ``eval_every`` epochs).

``kernel_seconds = U / r_update + [svrg] U / r_gradient / eval_every`` is what an
:class:`~dsmlr.engines.base.EpochRecord`'s ``compute_seconds`` measures;
``score_seconds = U / r_score / eval_every`` is spent in the scoring ring
(``eval_seconds``); ``compute_seconds`` is their sum.

**Bytes sent** per rank per epoch (steady state; 0 when P = 1: nothing moves) are the
engines' documented volumes.  The arrays each ring moves round, in all::

    update ring   M                        SGD
                  3 M                      SVRG (weights, anchor weights and gradient;
                                           2 M with anchor tables)
                  M + 8 B D_fit            AdaGrad (its float64 accumulators travel)
    gradient ring 2 M                      SVRG only, from the second epoch, after
                                           each scoring ring (the gradient summed in
                                           float64)
    scoring ring  M [+ 8 B D_fit AdaGrad]  every eval_every epochs

A ring of P shifts moves all of that from every rank.  In an epoch that scores, each ring
makes P - 1 shifts, and after an anchored one a last shift of the scoring ring's arrays
brings every group home; otherwise the rings make P shifts each
(:func:`dsmlr.partition.ring_legs`; :func:`dsmlr.engines.sync_ring.ring_epoch`).  Per
epoch, averaged over ``eval_every`` epochs (the first of which anchors SVRG, the last of
which scores; with ``eval_every = 1`` one epoch does both)::

    SGD, AdaGrad   scoring:     (update + scoring) (P - 1) / P      (SGD: 2 M (P - 1) / P)
                   not scoring: update                              (SGD: M)
    SVRG           anchoring and scoring: (gradient + update + scoring) (P - 1) / P
                                          + scoring / P
                   anchoring:   gradient + update
                   neither:     update
                   scoring:     (update + scoring) (P - 1) / P

SVRG's first epoch is plain steps and scores: ``(M + scoring) (P - 1) / P``.

These are the ring payloads, as :attr:`~dsmlr.engines.base.EpochRecord.bytes_sent`
counts them: the 64-byte allreduce after each scoring ring is left out of both, and so
is the allreduce of the class means of the features many rows share (a float64 each,
:mod:`dsmlr.engines.centering`).  The asynchronous
engine is modelled as the synchronous one: its epochs move about as much, though the
routing of its tokens follows the ranks' timing (``benchmarks/results/mpi.md``, *Bytes per
epoch*, compares the two).

**Messages and communication time.**  A ring is P - 1 or P shifts (as above); the MPI
communicator makes each shift two small handshakes and then sends the payload in chunks of
``CHUNK_BYTES`` (16 MiB), each chunk one exchange.  So a shift of ``b`` bytes counts
about ``2 + ceil(b / CHUNK_BYTES)`` messages (each array is chunked on its own), and the
allreduce ``2 ceil(log2 P)``.  With
bandwidth ``beta`` (bytes per second each rank can send while it receives as much, a
full-duplex link) and latency ``alpha`` (seconds per message)::

    comm_seconds = bytes_sent / beta + messages * alpha

Waiting for a slower neighbour (load imbalance, a busy core) is not modelled: the
model assumes ranks of equal speed with rows balanced by non-zeros.

**Epoch time** is ``compute_seconds + comm_seconds``: *no overlap* of communication
with computation.  That is what the engines do with one block per rank (the
synchronous engine's default: a ring shift starts when the round's kernel pass is done
and the next round starts when it ends).  With two or more blocks per rank under MPI each block
travels while the next is visited (:meth:`dsmlr.engines.ring.Ring.travel`), so for
those runs the figure is an upper bound.  ``first_epoch_seconds`` is the first epoch
(SVRG: no gradient pass or ring; the update ring moves the weights only), and
:meth:`TrainingPlan.total_seconds` adds up E epochs.

In-process workers (``--workers P``) hand blocks over by reference, and the synchronous
engine's MPI ranks on one host through memory they share
(:mod:`dsmlr.engines.shared_blocks`): pass ``bandwidth=math.inf`` (the bytes are still
counted, as the engines count them) and the latency of a barrier (about 15 µs per
message on the development machine).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np

from dsmlr.engines import ENGINES, n_class_blocks
from dsmlr.engines.base import EngineConfig
from dsmlr.engines.optimizers import update_rule
from dsmlr.memory import MemoryPlan, plan_memory
from dsmlr.partition import ring_legs

__all__ = [
    "CHUNK_BYTES",
    "DEFAULT_LATENCY",
    "MEASURED_THROUGHPUT",
    "Throughput",
    "TrainingPlan",
    "check_dtype",
    "default_throughput",
    "plan_training",
]

#: Bytes the MPI communicator sends as one message of a ring shift
#: (:mod:`dsmlr.comm.mpi` transfers blocks in chunks this large).
CHUNK_BYTES = 16 * 2**20

#: Seconds per message of a typical cluster network (TCP over Ethernet: tens of µs).
DEFAULT_LATENCY = 50e-6

_ITEMSIZE = {"float64": 8, "float32": 4}


@dataclass(frozen=True)
class Throughput:
    """Kernel rates, in units per second (one unit = one non-zero or row times a class).

    Attributes
    ----------
    update_sgd, update_svrg, update_adagrad : float
        The update pass (one stochastic pass of a block over the local rows) with plain,
        variance-reduced and AdaGrad steps.
    gradient : float
        SVRG's full-gradient pass.
    score : float
        The scoring pass (partial log-sum-exp, true-class score, arg-max).
    source : str
        Where the figures come from (machine, problem, date).
    update_svrg_tables, gradient_tables : float, optional
        SVRG's update and gradient passes where the anchor is held as the rows'
        probability tables (:mod:`dsmlr.kernels.anchor_table`); the anchor-weights
        rates stand in where they are not given.
    """

    update_sgd: float
    update_svrg: float
    update_adagrad: float
    gradient: float
    score: float
    source: str = ""
    update_svrg_tables: float | None = None
    gradient_tables: float | None = None

    def update(self, optimizer: str, tables: bool = False) -> float:
        """The update pass's rate for ``optimizer`` (SVRG's with anchor ``tables``)."""
        if update_rule(optimizer).anchored and tables and self.update_svrg_tables:
            return self.update_svrg_tables
        return {"sgd": self.update_sgd, "svrg": self.update_svrg,
                "adagrad": self.update_adagrad}[optimizer]  # fmt: skip

    def gradient_pass(self, tables: bool = False) -> float:
        """SVRG's gradient pass's rate (with anchor ``tables``)."""
        return self.gradient_tables if tables and self.gradient_tables else self.gradient


_SOURCE = "calibrate() defaults, median of 3, 2-core development machine, 2026-12-06"

#: Rates of the numba kernels measured with :func:`dsmlr.calibration.calibrate` at its
#: defaults (5000 rows, 20000 features, 50 non-zeros a row, one block of 500 classes,
#: one rank), the median of 3 calibrations on 2026-12-06, on this project's 2-core
#: development machine (Intel Xeon, a VM shared with other jobs, whose single
#: calibrations vary: hence the median). They are *that machine's* figures, kept so that
#: ``dsmlr plan`` answers at once: run ``dsmlr plan --calibrate`` (or pass
#: ``calibrate()``'s result) to plan for another one.
MEASURED_THROUGHPUT: dict[str, Throughput] = {
    "float64": Throughput(
        update_sgd=1.21e9,
        update_svrg=3.12e8,
        update_adagrad=3.49e8,
        gradient=8.34e8,
        score=2.32e9,
        update_svrg_tables=6.82e8,
        gradient_tables=8.49e8,
        source=_SOURCE,
    ),
    "float32": Throughput(
        update_sgd=1.78e9,
        update_svrg=8.51e8,
        update_adagrad=5.04e8,
        gradient=1.81e9,
        score=2.43e9,
        update_svrg_tables=1.2e9,
        gradient_tables=1.61e9,
        source=_SOURCE,
    ),
}


def default_throughput(dtype: str = "float32") -> Throughput:
    """The rates measured on the development machine for ``dtype``
    (:data:`MEASURED_THROUGHPUT`)."""
    return MEASURED_THROUGHPUT[check_dtype(dtype)]


def check_dtype(dtype: str) -> str:
    """The name of ``dtype``, one the cost model knows (float32 or float64); else a
    ValueError."""
    name = np.dtype(dtype).name
    if name not in _ITEMSIZE:
        raise ValueError(f"dtype must be float64 or float32, got {dtype!r}")
    return name


@dataclass(frozen=True)
class TrainingPlan:
    """One rank's predicted costs (see the module docstring for every formula).

    Per-epoch figures are the steady state (second epoch on); ``first_epoch_*`` the
    first.  Seconds assume no overlap of communication with computation.
    """

    n_samples: int
    n_features: int
    n_classes: int
    nnz: int
    n_ranks: int
    n_blocks: int
    optimizer: str
    dtype: str
    engine: str
    eval_every: int
    bandwidth: float
    latency: float
    memory: MemoryPlan
    model_bytes: int
    units_per_pass: float
    update_seconds: float
    gradient_seconds: float
    score_seconds: float
    bytes_sent: int
    first_epoch_bytes: int
    messages: int
    first_epoch_messages: int
    throughput: Throughput = field(repr=False)

    @property
    def kernel_seconds(self) -> float:
        """Update and gradient passes: what ``EpochRecord.compute_seconds`` measures."""
        return self.update_seconds + self.gradient_seconds

    @property
    def compute_seconds(self) -> float:
        """All kernel passes of an epoch, the scoring pass included."""
        return self.kernel_seconds + self.score_seconds

    @property
    def comm_seconds(self) -> float:
        """``bytes_sent / bandwidth + messages * latency``."""
        return _transfer(self.bytes_sent, self.messages, self.bandwidth, self.latency)

    @property
    def epoch_seconds(self) -> float:
        """``compute_seconds + comm_seconds`` (no overlap)."""
        return self.compute_seconds + self.comm_seconds

    @property
    def first_epoch_seconds(self) -> float:
        """The first epoch: no gradient pass (SVRG starts with a plain pass)."""
        comm = _transfer(self.first_epoch_bytes, self.first_epoch_messages, self.bandwidth,
                         self.latency)  # fmt: skip
        return self.update_seconds + self.score_seconds + comm

    def total_seconds(self, epochs: int) -> float:
        """Predicted wall time of ``epochs`` epochs (the first one, then steady ones)."""
        if epochs <= 0:
            return 0.0
        return self.first_epoch_seconds + (epochs - 1) * self.epoch_seconds

    def as_dict(self) -> dict:
        """Every input, part and derived figure, JSON-ready."""
        out = asdict(self)
        out["memory"] = {**asdict(self.memory), "total": self.memory.total}
        out["bandwidth"] = None if math.isinf(self.bandwidth) else self.bandwidth
        for name in ("kernel_seconds", "compute_seconds", "comm_seconds", "epoch_seconds",
                     "first_epoch_seconds"):  # fmt: skip
            out[name] = getattr(self, name)
        return out


def _transfer(n_bytes: float, messages: int, bandwidth: float, latency: float) -> float:
    wire = 0.0 if math.isinf(bandwidth) else n_bytes / bandwidth
    return wire + messages * latency


def _ring_messages(n_shifts: int, shift_bytes: float) -> int:
    """Messages of ``n_shifts`` ring shifts, each two handshakes and the payload's chunks."""
    return n_shifts * (2 + max(1, math.ceil(shift_bytes / CHUNK_BYTES)))


def plan_training(
    *,
    n_samples: int,
    n_features: int,
    n_classes: int,
    nnz: int,
    n_ranks: int,
    bandwidth: float,
    latency: float = DEFAULT_LATENCY,
    optimizer: str = "svrg",
    dtype: str = "float32",
    engine: str = "sync",
    blocks_per_rank: int | None = None,
    eval_every: int = 1,
    fit_intercept: bool = True,
    throughput: Throughput | None = None,
) -> TrainingPlan:
    """Predict one rank's memory, compute and communication per epoch.

    Every formula is in the module docstring of :mod:`dsmlr.plan`; in short, per rank
    and steady-state epoch::

        U              = (ceil(nnz/P) + ceil(N/P)) * K
        compute        = U/r_update + ([svrg] U/r_gradient + U/r_score) / eval_every
        M              = K * D_fit * itemsize
        bytes_sent     = update ring + ([svrg] gradient ring + scoring ring) / eval_every
                         (each ring (P - 1) / P of its size, or all of it, see
                         above; SGD (2M + L) (P - 1) / P with eval_every = 1, L the
                         blocks' lag; 0 when P = 1)
        comm           = bytes_sent / bandwidth + messages * latency
        epoch          = compute + comm          (no overlap, as the engines run)
        memory         = dsmlr.memory.plan_memory(ceil(N/P) rows, ceil(nnz/P), ...)

    Parameters
    ----------
    n_samples, n_features, n_classes : int
        N, D and K.  Count held-out rows in ``n_samples`` and ``nnz`` for memory if a
        ``--test`` set is loaded too (it is scored, not trained on).
    nnz : int
        Stored non-zeros of the whole training set (N times the mean per row).
    n_ranks : int
        P.
    bandwidth : float
        Bytes per second one rank sends (while receiving as much); ``math.inf`` for
        in-process workers, which hand blocks over by reference.
    latency : float
        Seconds per message.
    optimizer : {"svrg", "sgd", "adagrad"}
    dtype : {"float32", "float64"}, default "float32"
    engine : {"sync", "async"}
        Sets the default number of class blocks and the blocks a rank holds (see
        above); the asynchronous engine's traffic is modelled as the synchronous one's
        (see above).
    blocks_per_rank : int, optional
        B / P; None for the engine's default.
    eval_every : int
        The exact objective (a scoring ring) every this many epochs.
    fit_intercept : bool
        A per-class intercept (one more column of the model).
    throughput : Throughput, optional
        Kernel rates; default :func:`default_throughput` (this project's development
        machine), or :func:`dsmlr.calibration.calibrate`'s for the machine at hand.

    Returns
    -------
    TrainingPlan

    Raises
    ------
    ValueError
        A size that is not positive, an unknown optimiser, dtype or engine.
    """
    _check_problem(n_samples, n_features, n_classes, nnz, n_ranks, eval_every, engine,
                   bandwidth, latency)  # fmt: skip
    rule = update_rule(optimizer)
    dtype = check_dtype(dtype)
    rates = throughput if throughput is not None else default_throughput(dtype)
    s = _ITEMSIZE[dtype]
    P, K = int(n_ranks), int(n_classes)
    d_fit = int(n_features) + int(fit_intercept)
    n_blocks = _n_blocks(engine, P, blocks_per_rank, n_samples, n_features, K, fit_intercept)
    rows_p, nnz_p = -(-int(n_samples) // P), -(-int(nnz) // P)

    memory = plan_memory(
        n_rows=rows_p, nnz=nnz_p, n_features=int(n_features), n_classes=K, n_ranks=P,
        n_blocks=n_blocks, itemsize=s, optimizer=optimizer, fit_intercept=fit_intercept,
        engine=engine, n_samples=int(n_samples),
    )  # fmt: skip
    tables = memory.anchor_tables

    units = float(nnz_p + rows_p) * K
    svrg = rule.anchored
    update_s = units / rates.update(optimizer, tables)
    gradient_s = units / rates.gradient_pass(tables) / eval_every if svrg else 0.0
    score_s = units / rates.score / eval_every

    M = K * d_fit * s
    carried = n_blocks * rule.carried_bytes(d_fit)  # AdaGrad's state
    lag = n_blocks * d_fit * 8 * memory.lag  # the update passes' lag, update ring only
    # SVRG's update ring: weights and anchor gradient, and the anchor weights unless the
    # ranks hold the anchor as probability tables.
    update_bytes = rule.model_arrays(tables) * M + carried + lag
    first_update = M + carried + lag  # SVRG's first epoch: plain steps, weights only
    gradient_bytes = 2 * M if svrg else 0  # weights and gradient, in the weights' dtype
    scoring_bytes = M + carried
    if P == 1:
        steady = first = msgs = first_msgs = 0.0
    else:
        steady, msgs = _averaged_traffic(P, eval_every, svrg, gradient_bytes, update_bytes,
                                         scoring_bytes)  # fmt: skip
        if svrg:  # its first epoch: plain steps, scored whatever eval_every is
            first, first_msgs = _epoch_traffic(P, [first_update, scoring_bytes], False, True)
            first_msgs += _allreduce_messages(P)
        else:
            first, first_msgs = steady, msgs
    return TrainingPlan(
        n_samples=int(n_samples), n_features=int(n_features), n_classes=K, nnz=int(nnz),
        n_ranks=P, n_blocks=n_blocks, optimizer=optimizer, dtype=dtype, engine=engine,
        eval_every=int(eval_every), bandwidth=float(bandwidth), latency=float(latency),
        memory=memory, model_bytes=M, units_per_pass=units, update_seconds=update_s,
        gradient_seconds=gradient_s, score_seconds=score_s, bytes_sent=round(steady),
        first_epoch_bytes=round(first), messages=math.ceil(msgs),
        first_epoch_messages=math.ceil(first_msgs), throughput=rates,
    )  # fmt: skip


def _check_problem(n_samples, n_features, n_classes, nnz, n_ranks, eval_every, engine,
                   bandwidth, latency) -> None:  # fmt: skip
    """ValueError for a size, engine or network :func:`plan_training` cannot plan for."""
    sizes = {"n_samples": n_samples, "n_features": n_features, "n_classes": n_classes,
             "n_ranks": n_ranks, "eval_every": eval_every}  # fmt: skip
    for name, value in sizes.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if nnz < 0:
        raise ValueError(f"nnz must be >= 0, got {nnz!r}")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {tuple(ENGINES)}, got {engine!r}")
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0 bytes/s, got {bandwidth!r}")
    if not (latency >= 0 and math.isfinite(latency)):
        raise ValueError(f"latency must be >= 0 seconds, got {latency!r}")


def _allreduce_messages(n_ranks: int) -> int:
    """Messages of one small allreduce (a scored epoch's sums): 2 log2 P."""
    return 2 * math.ceil(math.log2(n_ranks)) if n_ranks > 1 else 0


def _epoch_traffic(
    n_ranks: int, rings: list[float], anchored: bool, scoring: bool
) -> tuple[float, int]:
    """Bytes and messages of an epoch's rings (the sizes of the arrays each moves round
    the ring), with the shifts the engine makes in them: each shift moves 1/P."""
    legs, home = ring_legs(anchored, scoring, n_ranks)
    shifts = [n for _, n in legs]
    shifts[-1] += home  # the shift home moves what the last ring moves
    pairs = list(zip(rings, shifts, strict=True))
    sent = sum(size * n / n_ranks for size, n in pairs)
    return sent, sum(_ring_messages(n, size / n_ranks) for size, n in pairs)


def _averaged_traffic(
    n_ranks: int, eval_every: int, anchored: bool, gradient_bytes: float, update_bytes: float,
    scoring_bytes: float,
) -> tuple[float, float]:  # fmt: skip
    """Bytes and messages per epoch over ``eval_every`` epochs, the first of which
    anchors (where ``anchored``) and the last of which scores."""
    e = eval_every
    epochs = [
        _epoch_traffic(
            n_ranks,
            [gradient_bytes] * (anchored and i == 0) + [update_bytes]
            + [scoring_bytes] * (i == e - 1),
            anchored and i == 0,
            i == e - 1,
        )
        for i in range(e)
    ]  # fmt: skip
    sent = sum(bytes_ for bytes_, _ in epochs) / e
    return sent, (sum(msgs for _, msgs in epochs) + _allreduce_messages(n_ranks)) / e


def _n_blocks(engine: str, n_ranks: int, blocks_per_rank: int | None, n_samples: int,
              n_features: int, n_classes: int, fit_intercept: bool) -> int:  # fmt: skip
    """B as the engine chooses it (the engines' own rule, not a copy of it)."""
    cfg = EngineConfig(n_samples=n_samples, n_features=n_features, n_classes=n_classes,
                       fit_intercept=fit_intercept, blocks_per_rank=blocks_per_rank)  # fmt: skip
    return int(n_class_blocks(engine, cfg, n_ranks))
