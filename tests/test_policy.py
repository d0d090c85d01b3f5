"""The epoch policy (dsmlr.engines.policy) and the scored epoch's sums, without ranks."""

from __future__ import annotations

import numpy as np
import pytest

from dsmlr.comm import run_workers
from dsmlr.engines.epoch_sums import EpochSums
from dsmlr.engines.policy import EpochPlan, checkpoint_now, plan_epoch, step_backoff


def _schedule(epochs: int, **kw) -> list[EpochPlan]:
    """The plans of a run's epochs, with b exact exactly after each scored epoch."""
    plans, b_exact = [], True
    for epoch in range(1, epochs + 1):
        plan = plan_epoch(epoch, max_epochs=epochs, b_exact=b_exact, **kw)
        plans.append(plan)
        b_exact = plan.scoring
    return plans


def test_svrg_from_zero_weights_warms_up_then_anchors_every_epoch():
    plans = _schedule(4, eval_every=1, anchored=True, started=False)
    assert [p.anchoring for p in plans] == [False, True, True, True]
    assert all(p.scoring for p in plans)


def test_svrg_with_eval_every_anchors_right_after_each_scoring():
    # Epoch 1 scores (so epoch 2 can anchor), then every third epoch and the last.
    plans = _schedule(8, eval_every=3, anchored=True, started=False)
    assert [p.scoring for p in plans] == [True, False, True, False, False, True, False, True]
    assert [p.anchoring for p in plans] == [False, True, False, True, False, False, True, False]


def test_a_start_from_given_weights_anchors_at_once_and_skips_the_warm_up_scoring():
    plans = _schedule(5, eval_every=2, anchored=True, started=True)
    assert [p.anchoring for p in plans] == [True, False, True, False, True]
    assert [p.scoring for p in plans] == [False, True, False, True, True]


@pytest.mark.parametrize("started", [False, True])
def test_plain_steps_never_anchor(started):
    plans = _schedule(6, eval_every=2, anchored=False, started=started)
    assert not any(p.anchoring for p in plans)
    assert [p.scoring for p in plans] == [False, True, False, True, False, True]


def test_the_step_halves_only_when_the_objective_rose():
    assert step_backoff(1.0, 2.0, None) == 1.0
    assert step_backoff(1.0, 2.0, 2.5) == 1.0
    assert step_backoff(1.0, 2.0, 2.0) == 1.0
    assert step_backoff(0.5, 2.1, 2.0) == 0.25


def test_checkpoints_when_due_and_when_training_ends():
    assert not checkpoint_now(3, 10, converged=False, due=False)
    assert checkpoint_now(3, 10, converged=False, due=True)
    assert checkpoint_now(3, 10, converged=True, due=False)
    assert checkpoint_now(10, 10, converged=False, due=False)


def test_epoch_sums_add_every_field_over_the_ranks():
    def share(comm) -> EpochSums:
        r = comm.rank + 1
        mine = EpochSums(1.0 * r, 2.0 * r, 0.5, 10.0 * r, 3.0 * r, 4.0, 5.0, 6.0 * r,
                         class_sums=np.array([r, -r], dtype=np.float64))  # fmt: skip
        return mine.allreduce(comm)

    got = run_workers(3, share)
    for totals in got[1:]:  # every rank the same sums
        assert vars(totals).keys() == vars(got[0]).keys()
        for name, value in vars(totals).items():
            np.testing.assert_array_equal(value, getattr(got[0], name))
    t = got[0]
    assert (t.loss, t.correct, t.penalty, t.sent) == (6.0, 12.0, 1.5, 60.0)
    assert (t.test_loss, t.test_correct, t.test_top, t.test_known) == (18.0, 12.0, 15.0, 36.0)
    np.testing.assert_array_equal(t.class_sums, [6.0, -6.0])
