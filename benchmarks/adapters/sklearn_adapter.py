"""scikit-learn: ``sklearn-saga`` and ``sklearn-lbfgs`` (``LogisticRegression``).

scikit-learn has no per-iteration callback, so the trace is made of *fresh fits*: with
``max_iter`` = 1, 2, 4, 8, ... (each point's time is the full wall time of its own fit,
input checks included, the objective and accuracy computed afterwards off the clock).
Both solvers are deterministic in ``max_iter`` (saga with a fixed ``random_state``
draws the same rows in the same order), so a fit with ``max_iter = m`` ends at the
iterate a longer fit has after ``m`` iterations.  A doubling ladder would overstate the
time to a target by up to 2x, so once a fit reaches a target the iteration count is
bisected between the last fit short of it and the first one past it (while the time
limit allows): the time reported for a target is then that of the shortest fit that
reaches it.

The ladder stops when a fit ends before ``max_iter`` (converged at ``tol``), when one
reaches ``stop_at``, or when the next fit is predicted (from the last fit's time per
iteration) to end past the time limit, which caps the *sum* of all fits' times.
``tol`` is set tight (1e-8) so that only ``max_iter`` ends a fit early on the trace.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from .common import RunResult, TracePoint, accuracy, fit_ladder, objective, peak_rss_mb

__all__ = ["METHODS", "run"]

METHODS = ("sklearn-saga", "sklearn-lbfgs")
_TOL = 1e-8


def run(
    method: str,
    data,
    *,
    lam: float,
    fit_intercept: bool,
    time_limit: float,
    stop_at: float | None,
    seed: int,
    targets: tuple[float, ...] = (),
) -> RunResult:
    """Trace scikit-learn's ``LogisticRegression`` by fresh fits of growing ``max_iter``.

    Parameters
    ----------
    method : {"sklearn-saga", "sklearn-lbfgs"}
    data : problems.Data
    lam, fit_intercept : the problem's objective (``C = 1 / (lam * N)``).
    time_limit : float
        Cap on the summed wall time of all the fits.
    stop_at : float or None
        Stop the ladder at the first fit whose objective is at most this.
    seed : int
        ``random_state`` (saga's row order).
    targets : tuple of float
        Objective values whose first iteration count is bisected after the ladder.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    solver = method.removeprefix("sklearn-")
    n = data.X_train.shape[0]
    settings = {"solver": solver, "C": 1.0 / (lam * n), "tol": _TOL, "random_state": seed}

    def fit(max_iter: int) -> tuple[TracePoint, bool]:
        clf = LogisticRegression(
            C=settings["C"],
            solver=solver,
            tol=_TOL,
            max_iter=max_iter,
            fit_intercept=fit_intercept,
            random_state=seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            t0 = time.perf_counter()
            clf.fit(data.X_train, data.y_train)
            elapsed = time.perf_counter() - t0
        n_iter = int(np.max(clf.n_iter_))
        b = clf.intercept_ if fit_intercept else None
        point = TracePoint(
            time=elapsed,
            objective=objective(clf.coef_, b, data.X_train, data.y_train, lam),
            test_accuracy=accuracy(clf.coef_, b, data.X_test, data.y_test),
            epochs=float(n_iter),
        )
        return point, n_iter < max_iter  # stopped on its tolerance

    fits, stopped, spent = fit_ladder(fit, time_limit, stop_at, targets)
    trace = sorted(fits.values(), key=lambda p: p.epochs)
    result = RunResult(method, trace, stopped, peak_rss_mb(), settings)
    result.notes.append(
        f"{len(fits)} fresh fits (max_iter {sorted(fits)}), {spent:.1f} s in all; "
        "each point's time is its own fit's"
    )
    return result
