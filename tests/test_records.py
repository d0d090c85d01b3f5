"""The epoch loop's carried state (dsmlr.engines.records.RunProgress), without ranks."""

from types import SimpleNamespace

import pytest

from dsmlr.engines import EngineConfig, EpochRecord
from dsmlr.engines.records import RunProgress
from dsmlr.engines.ring import Clock


def _comm():
    return SimpleNamespace(bytes_sent=0, wait_seconds=0.0)


def _cfg():
    return EngineConfig(n_samples=10, n_features=3, n_classes=2, tol=1e-3, n_iter_no_change=2)


def _record(epoch, objective):
    return EpochRecord(epoch=epoch, time=float(epoch), objective=objective, train_accuracy=0.5)


def test_a_record_counts_the_bytes_and_waiting_since_the_last_and_resets_the_clock():
    comm = _comm()
    progress = RunProgress.begin(comm, _cfg(), None)
    assert (progress.first_epoch, progress.backoff, progress.converged) == (1, 1.0, False)
    comm.bytes_sent, comm.wait_seconds = 1000, 0.5
    progress.uncounted = 200  # sent, but no ring payload (an allreduce)
    assert progress.ring_bytes() == 800
    assert progress.wait_seconds() == 0.5
    clock = Clock(1.0)
    clock.compute, clock.comm, clock.eval = 1.0, 2.0, 3.0
    assert progress.add(_record(1, 2.0), clock) is None
    assert (clock.compute, clock.comm, clock.eval) == (0.0, 0.0, 0.0)
    assert progress.ring_bytes() == 0 and progress.wait_seconds() == 0.0
    comm.bytes_sent = 1500
    assert progress.ring_bytes() == 500


def test_the_step_backs_off_when_the_objective_rises_and_the_run_stops_when_quiet():
    progress = RunProgress.begin(_comm(), _cfg(), None)
    clock = Clock(1.0)
    progress.add(_record(1, 2.0), clock)
    assert progress.add(_record(2, 2.5), clock).objective == 2.0  # the one before
    assert progress.backoff == 0.5 and not progress.converged
    progress.add(_record(3, 1.0), clock)
    progress.add(_record(4, 0.9999), clock)  # a decrease below tol: one quiet epoch
    assert progress.backoff == 0.5 and not progress.converged
    progress.add(_record(5, 0.9998), clock)  # two: stop
    assert progress.converged


def test_a_resumed_run_continues_where_the_checkpoint_left_it():
    clock = Clock(1.0)
    first = RunProgress.begin(_comm(), _cfg(), None)
    for epoch, objective in enumerate([2.0, 2.5, 1.0, 0.9999], start=1):
        first.add(_record(epoch, objective), clock)
    state = first.resume_state(4, ["rng"])
    assert (state.epoch, state.backoff, state.converged, state.rng) == (4, 0.5, False, ["rng"])
    resumed = RunProgress.begin(_comm(), _cfg(), state)
    assert resumed.first_epoch == 5 and resumed.backoff == 0.5
    assert [r.objective for r in resumed.history] == [2.0, 2.5, 1.0, 0.9999]
    assert resumed.seconds() >= state.elapsed
    # The stopping rule's count carried over: one more quiet epoch stops the run.
    resumed.add(_record(5, 0.9998), clock)
    assert resumed.converged
    assert resumed.history is not state.history  # a checkpoint's list is not grown


@pytest.mark.parametrize("objective", [float("nan"), float("inf")])
def test_a_non_finite_objective_is_an_error_on_every_rank(objective):
    from dsmlr.engines.epoch_sums import EpochSums
    from dsmlr.engines.records import epoch_record
    from dsmlr.errors import NumericalError

    comm = SimpleNamespace(size=1, allgather=lambda v: [v])
    totals = EpochSums(objective, 0.0, 0.0, 0.0)
    with pytest.raises(NumericalError, match="eta"):
        epoch_record(comm, _cfg(), 3, totals, 0, 1.0, Clock(1.0), 0.0, 0.0)
