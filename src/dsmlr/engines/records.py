"""A run's records: each scored epoch's :class:`~dsmlr.engines.base.EpochRecord` from the
ranks' summed figures, and what the epoch loop carries from one record to the next (the
step's back-off, the stopping rule, the time, bytes and waiting since the last record,
and a checkpoint's state)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import (
    EngineConfig,
    EpochRecord,
    ResumeState,
    StoppingRule,
    peak_rss_bytes,
)
from dsmlr.engines.epoch_sums import EpochSums
from dsmlr.engines.policy import checkpoint_now, step_backoff
from dsmlr.engines.ring import Clock, Ring
from dsmlr.errors import NumericalError, on_all_ranks

__all__ = ["RunProgress", "checkpoint_if_due", "epoch_record"]


@dataclass(eq=False)
class RunProgress:
    """What the epoch loop carries from one scored epoch to the next: the records, the
    step's back-off, the stopping rule, and the time, ring bytes and waiting since the
    last record (an unscored epoch's go in the next record)."""

    comm: Communicator
    stopper: StoppingRule
    history: list[EpochRecord]
    backoff: float
    converged: bool
    first_epoch: int
    t_start: float  # perf_counter() at the run's start (earlier for a resumed run)
    bytes_before: int = 0
    wait_before: float = 0.0
    uncounted: int = 0  # bytes sent since the last record that are no ring payload

    @classmethod
    def begin(cls, comm: Communicator, cfg: EngineConfig, state: ResumeState | None):
        """A fresh run's progress, or that of the run ``state`` checkpointed."""
        stopper = StoppingRule(cfg.tol, cfg.n_iter_no_change)
        if state is None:
            progress = cls(comm, stopper, [], 1.0, False, 1, time.perf_counter())
        else:
            stopper.restore(state.best, state.quiet)
            progress = cls(
                comm, stopper, list(state.history), state.backoff, state.converged,
                state.epoch + 1, time.perf_counter() - state.elapsed,
            )  # fmt: skip
        progress._mark()
        return progress

    def _mark(self) -> None:
        self.bytes_before, self.wait_before = self.comm.bytes_sent, self.comm.wait_seconds
        self.uncounted = 0

    def seconds(self) -> float:
        return time.perf_counter() - self.t_start

    def ring_bytes(self) -> float:
        return float(self.comm.bytes_sent - self.bytes_before - self.uncounted)

    def wait_seconds(self) -> float:
        return self.comm.wait_seconds - self.wait_before

    def add(self, record: EpochRecord, clock: Clock) -> EpochRecord | None:
        """Take a scored epoch's record: the next record counts from here, the step backs
        off where the objective rose, the stopping rule sees it.  Returns the record
        before it (None: none)."""
        self.history.append(record)
        clock.compute = clock.comm = clock.eval = 0.0
        self._mark()
        previous = self.history[-2] if len(self.history) > 1 else None
        self.backoff = step_backoff(self.backoff, record.objective, previous and previous.objective)
        self.converged = self.stopper.update(record.objective)
        return previous

    def resume_state(self, epoch: int, rng: list) -> ResumeState:
        """What a checkpoint after ``epoch`` holds to continue the run (``rng``: the
        ranks' row-order generators' states)."""
        stopper = self.stopper
        return ResumeState(
            epoch, list(self.history), self.backoff, stopper.best, stopper.quiet,
            self.seconds(), self.converged, rng,
        )  # fmt: skip


def checkpoint_if_due(
    saver, comm: Communicator, ring: Ring, cfg: EngineConfig, now: ResumeState,
    previous: EpochRecord | None,
) -> None:  # fmt: skip
    """Save the run as ``now`` says where the policy calls for a checkpoint; the time it
    took goes in the epoch's record."""
    epoch = now.epoch
    if not checkpoint_now(
        epoch, cfg.max_epochs, now.converged, saver.due(epoch, previous.epoch if previous else 0)
    ):
        return
    t_save = time.perf_counter()
    saver.save(comm, epoch, ring.host_group(), now)
    now.history[-1].checkpoint_seconds = time.perf_counter() - t_save


def epoch_record(
    comm: Communicator,
    cfg: EngineConfig,
    epoch: int,
    totals: EpochSums,
    n_test: int,
    seconds: float,
    clock: Clock,
    eval_seconds: float,
    wait_seconds: float,
) -> EpochRecord:
    """A scored epoch's record from the ranks' summed figures (``n_test``: held-out rows
    scored, 0 for none); raises when the objective is not finite."""
    objective = totals.loss / cfg.n_samples + totals.penalty
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
        time=seconds,
        objective=float(objective),
        train_accuracy=float(totals.correct / cfg.n_samples),
        compute_seconds=clock.compute,
        comm_seconds=clock.comm,
        wait_seconds=wait_seconds,
        eval_seconds=eval_seconds,
        bytes_sent=int(totals.sent / comm.size),
        peak_rss=[int(v) for v in comm.allgather(peak_rss_bytes())],  # type: ignore[call-overload]
    )
    if n_test > 0:
        known = totals.test_known
        record.test_objective = float(totals.test_loss / known + totals.penalty) if known else None
        record.test_accuracy = float(totals.test_correct / n_test)
        record.test_top5_accuracy = float(totals.test_top / n_test)
    return record
