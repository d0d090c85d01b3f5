"""cyanure: ``cyanure``, its multinomial ``LogisticRegression`` (C++/OpenMP, exact).

Skipped, with the reason, when ``cyanure`` cannot be imported (it is not a dependency of
this project: ``pip install cyanure``).

The objective is the suite's exactly: cyanure minimises ``(1/N) sum_i loss_i +
lambda_1/2 ||W||^2`` with ``loss="multiclass-logistic"`` the same softmax loss and its
intercept not penalised, so ``lambda_1 = lam`` (on ``tiny`` its optimum is scikit-learn
lbfgs's to 3e-11 relative, on ``digits``, with an intercept, to 1e-12).  With two classes
cyanure fits a binary logistic regression instead whatever ``multi_class`` says; the
multinomial optimum then has ``w_1 = -w_0``, so the binary fit takes ``lambda_1 = lam/2``
and its ``w`` and ``b`` become ``W = [-w/2, w/2]``, ``b = [-b/2, b/2]``.

Settings: ``solver="auto"`` (cyanure's default: QNing-ISTA below 1000 rows, QNing-MISO
when ill-conditioned or with an intercept, else Catalyst-MISO, which falls back to plain
MISO on a well-conditioned problem; the choice of the first fit is recorded in
``settings["solver_used"]``), ``n_threads`` = every core (``os.cpu_count()``, as
PyTorch's CPU methods use), ``random_state`` = the run's seed (MISO's row order), the
data in float64 as given.

cyanure has no callback, so the trace is made of fresh fits, as for scikit-learn (see
``sklearn_adapter``): ``k`` = 1, 2, 4, ... solver epochs, each point's time the whole
``fit`` (input checks included), its objective and accuracy computed afterwards off the
clock, and once a fit reaches a target the epoch count is bisected to the first fit
that does.  A fit is deterministic in ``k`` (with a fixed seed the model after ``k``
epochs is the same whatever ``max_iter``; checked to 1e-14 on ``tiny`` and ``digits``).

One detail of cyanure shapes how a fit is asked for ``k`` epochs.  Its loop tests the
stopping criterion (the primal objective and a duality gap, about a pass over the data)
every ``duality_gap_interval`` epochs *before* that epoch's update, and returns the best
iterate among those tests: with ``max_iter = k`` it would run ``k`` epochs but return the
model of epoch ``k - 1`` (or of the last multiple of the interval), the last epoch's work
thrown away.  So each fit has ``max_iter = duality_gap_interval = k + 1`` and
``tol = inf``: one test, after ``k`` epochs, which stops the fit there and returns that
model.  Each fit thus pays one duality-gap evaluation, where a user's fit with a ``tol``
pays one every 10 epochs (its default interval): the trace's times are at most what
cyanure needs.  The relative duality gap of that test is still computed; the ladder
stops as converged once it is at most 1e-10.  ``epochs`` is cyanure's epochs (outer
iterations of its solver: one MISO pass, more with QNing's line search).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
import warnings
from contextlib import contextmanager, nullcontext
from importlib.metadata import version

import numpy as np

from .common import RunResult, Skipped, TracePoint, accuracy, fit_ladder, objective, peak_rss_mb

__all__ = ["GAP_TOL", "METHODS", "run"]

METHODS = ("cyanure",)
#: A fit whose relative duality gap is at most this ends the ladder ("converged").
GAP_TOL = 1e-10


@contextmanager
def _stderr_into(out: list[str]):
    """Catch what is written to file descriptor 2 (cyanure's C++ log) into ``out``."""
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            out.append(sink.read().decode(errors="replace"))


def _solver_used(log: str) -> str:
    """Which algorithm ``solver="auto"`` ran, from cyanure's verbose log."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in log.splitlines()]
    lines = [line.removeprefix("Info : ") for line in lines]
    kept = [
        line
        for line in lines
        if (line.endswith(("Accelerator", "Solver")) and "Incremental" not in line)
        or "regular solver" in line
    ]
    return "; ".join(dict.fromkeys(kept)) or "?"


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
    """Trace cyanure's multinomial logistic regression by fresh fits of growing epochs.

    Parameters
    ----------
    method : {"cyanure"}
    data : problems.Data
    lam, fit_intercept : the problem's objective (``lambda_1 = lam``; ``lam/2`` with
        two classes, see the module docstring).
    time_limit : float
        Cap on the summed wall time of all the fits.
    stop_at : float or None
        Stop the ladder at the first fit whose objective is at most this.
    seed : int
        ``random_state`` (MISO's row order).
    targets : tuple of float
        Objective values whose first epoch count is bisected after the ladder.
    """
    try:
        from cyanure.estimators import LogisticRegression
    except ImportError:
        raise Skipped("cyanure: cyanure is not installed (pip install cyanure)") from None
    # Its Python logger says at INFO on every multinomial fit that it switched the loss.
    logging.getLogger("Cyanure").setLevel(logging.WARNING)

    n_classes = data.n_classes
    binary = n_classes == 2
    n_features = data.X_train.shape[1]
    threads = os.cpu_count() or 1
    settings: dict = {
        "solver": "auto",
        # "multinomial" with two classes fits the binary model all the same but loses
        # optimization_info_ (repeated once per class, zero times): "auto" keeps it.
        "multi_class": "auto" if binary else "multinomial",
        "lambda_1": lam / 2.0 if binary else lam,
        "binary": binary,
        "n_threads": threads,
        "random_state": seed,
        "dtype": str(data.X_train.dtype),  # cyanure computes in the data's dtype
        "max_iter": "k + 1 (k epochs, see the adapter)",
        "duality_gap_interval": "k + 1",
        "tol": "inf (stop at the one test, after k epochs)",
        "cyanure": version("cyanure"),
    }

    def fit(k: int) -> tuple[TracePoint, bool]:
        verbose = "solver_used" not in settings  # the first fit says which "auto" chose
        clf = LogisticRegression(
            lambda_1=settings["lambda_1"],
            multi_class=settings["multi_class"],
            solver="auto",
            tol=float("inf"),
            max_iter=k + 1,
            duality_gap_interval=k + 1,
            fit_intercept=fit_intercept,
            n_threads=threads,
            random_state=seed,
            verbose=verbose,
        )
        log: list[str] = []
        with warnings.catch_warnings():
            # tol=inf makes every fit end at max_iter, which cyanure warns about.
            warnings.simplefilter("ignore")
            with _stderr_into(log) if verbose else nullcontext():
                t0 = time.perf_counter()
                clf.fit(data.X_train, data.y_train)
                elapsed = time.perf_counter() - t0
        if verbose:
            settings["solver_used"] = _solver_used(log[0])
        info = np.asarray(clf.optimization_info_)  # (classes, 6, tests): epoch, primal, ...
        done = int(info[0, 0, -1]) - 1  # the test at epoch k + 1 comes before its update
        gap = float(info[0, 3, -1])
        W, b = _weights(clf, n_features, fit_intercept, binary)
        point = TracePoint(
            time=elapsed,
            objective=objective(W, b, data.X_train, data.y_train, lam),
            test_accuracy=accuracy(W, b, data.X_test, data.y_test),
            epochs=float(done),
        )
        return point, gap <= GAP_TOL

    fits, stopped, spent = fit_ladder(fit, time_limit, stop_at, targets)
    trace = sorted(fits.values(), key=lambda p: p.epochs)
    result = RunResult(method, trace, stopped, peak_rss_mb(), settings)
    result.notes.append(
        f"{len(fits)} fresh fits (epochs {sorted(fits)}), {spent:.1f} s in all; each "
        f"point's time is its own fit's (one duality-gap test each); {threads} threads"
    )
    return result


def _weights(clf, n_features: int, fit_intercept: bool, binary: bool):
    """``(W, b)`` in the suite's layout, ``W`` (K, D) and ``b`` (K,) or None."""
    coef = np.asarray(clf.coef_, dtype=np.float64).reshape(n_features, -1).T
    b = np.asarray(clf.intercept_, dtype=np.float64).ravel() if fit_intercept else None
    if binary:  # class 0 is cyanure's -1, class 1 its +1: z = s_1 - s_0
        coef = np.vstack([-coef[0] / 2.0, coef[0] / 2.0])
        if b is not None:
            b = np.array([-b[0] / 2.0, b[0] / 2.0])
    return coef, b
