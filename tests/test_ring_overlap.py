"""Ring shifts overlapped with computation (:meth:`dsmlr.engines.ring.Ring.travel`).

The in-process communicator never overlaps (its shifts swap references), so these tests
switch overlapping on for it: the helper threads then meet in its barrier exactly as
MPI ranks' helper threads meet over the wire (``tests/mpi`` runs the same path across
processes).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import dsmlr.comm.inprocess as inprocess
import dsmlr.engines.ring as ring_module
from dsmlr.engines import EngineConfig
from dsmlr.engines.ring import _ShiftInFlight
from dsmlr.training import train_embedded
from problems import planted_sparse_problem


class _OverlappingComm(inprocess.InProcessComm):
    def __init__(self, group, rank):
        super().__init__(group, rank)
        self.overlaps_shifts = True


def _train(overlap: bool, monkeypatch, workers: int, **params):
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=9, seed=11)
    Xt, yt = planted_sparse_problem(n_samples=60, n_features=40, n_classes=9, seed=12)
    started = []

    class CountedShift(_ShiftInFlight):
        def __init__(self, comm, arrays, dest, source):
            started.append(comm.rank)
            super().__init__(comm, arrays, dest, source)

    with monkeypatch.context() as m:
        if overlap:
            m.setattr(inprocess, "InProcessComm", _OverlappingComm)
        m.setattr(ring_module, "_ShiftInFlight", CountedShift)
        cfg = EngineConfig(n_samples=300, n_features=40, n_classes=9, max_epochs=3, tol=0.0,
                           dtype="float64", **params)  # fmt: skip
        result = train_embedded(X, y, cfg, workers, "sync", Xt, yt)
    # Overlapped: every block of every ring leaves on a helper thread; else none does.
    assert bool(started) == overlap
    return result


@pytest.mark.parametrize(
    ("workers", "params"),
    [
        (2, {"optimizer": "svrg", "blocks_per_rank": 2}),  # SVRG's anchor travels too
        (2, {"optimizer": "sgd", "blocks_per_rank": 3}),
        (3, {"optimizer": "adagrad", "blocks_per_rank": 2}),  # AdaGrad state travels
    ],
)
def test_overlapped_shifts_change_no_result(monkeypatch, workers, params):
    # The synchronous engine's rings (the asynchronous engine has none).
    plain = _train(False, monkeypatch, workers, **params)
    overlapped = _train(True, monkeypatch, workers, **params)
    # Same visits in the same order on the same arrays: bit for bit.
    np.testing.assert_array_equal(overlapped.W, plain.W)
    got = [(r.objective, r.test_accuracy, r.bytes_sent) for r in overlapped.history]
    assert got == [(r.objective, r.test_accuracy, r.bytes_sent) for r in plain.history]
    assert not [t for t in threading.enumerate() if t.name == "dsmlr-ring-shift"]


class _SlowComm:
    """A communicator whose shift waits ``seconds`` for its neighbours."""

    def __init__(self, seconds: float, fail: bool = False):
        self.seconds, self.fail = seconds, fail
        self.wait_seconds = 0.0

    def sendrecv(self, buffers, dest, source):
        time.sleep(self.seconds)
        self.wait_seconds += self.seconds
        if self.fail:
            raise RuntimeError("neighbour gone")
        return [b + 1 for b in buffers]


def test_a_shift_hands_back_what_arrived():
    shift = _ShiftInFlight(_SlowComm(0.01), [np.zeros(3)], 1, 1)
    np.testing.assert_array_equal(shift.result()[0], np.ones(3))


def test_a_failed_shift_raises_in_the_caller():
    shift = _ShiftInFlight(_SlowComm(0.01, fail=True), [np.zeros(3)], 1, 1)
    with pytest.raises(RuntimeError, match="neighbour gone"):
        shift.result()


def test_only_the_wait_that_held_up_the_caller_counts():
    comm = _SlowComm(0.2)
    shift = _ShiftInFlight(comm, [np.zeros(3)], 1, 1)
    time.sleep(0.4)  # a kernel running meanwhile: the neighbours' wait cost nothing
    shift.result()
    assert comm.wait_seconds < 0.05
    shift = _ShiftInFlight(comm, [np.zeros(3)], 1, 1)
    shift.result()  # nothing to do meanwhile: the whole wait held the caller up
    assert comm.wait_seconds > 0.15
