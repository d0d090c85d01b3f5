"""The stopping rule stops on small decreases only."""

from __future__ import annotations

from dsmlr.engines import StoppingRule


def test_stops_after_patience_small_decreases():
    rule = StoppingRule(tol=1e-3, patience=2)
    assert not rule.update(10.0)
    assert not rule.update(9.0)
    assert not rule.update(8.9999)
    assert rule.update(8.9998)


def test_a_rise_is_not_convergence():
    rule = StoppingRule(tol=1e-3, patience=2)
    rule.update(10.0)
    rule.update(9.0)
    # Two epochs above the best so far: unstable, not converged.
    assert not rule.update(9.5)
    assert not rule.update(9.4)
    # Progress resumes, then stalls for real.
    assert not rule.update(8.0)
    assert not rule.update(7.99999)
    assert rule.update(7.99998)
