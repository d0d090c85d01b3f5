"""What every adapter shares: the objective, accuracy, a pausable clock, the run record and
the ladder of fresh fits of the libraries without a per-iteration callback."""

from __future__ import annotations

import re
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

__all__ = [
    "Clock",
    "RunResult",
    "Skipped",
    "TracePoint",
    "accuracy",
    "describe_failure",
    "fit_ladder",
    "objective",
    "peak_rss_mb",
]

# Rows per block when scoring: the objective never holds an N x K array, so evaluating
# it for the trace adds little to a run's peak memory (N x K is 800 MB at medium).
_CHUNK = 4096


class Skipped(Exception):
    """The method cannot run here (library, Java or CUDA missing); the message says why."""


@dataclass
class TracePoint:
    """One point of a run's trace: a model the method had after ``time`` seconds.

    Attributes
    ----------
    time : float
        Training seconds, the trace's own evaluation excluded.
    objective : float
        Exact objective of that model on the training rows (float64).
    test_accuracy : float or None
    epochs : float
        Passes over the data (or solver iterations) done by then.
    """

    time: float
    objective: float
    test_accuracy: float | None
    epochs: float


@dataclass
class RunResult:
    """Everything one (problem, method, repeat) run reports to the suite (JSON-ready)."""

    method: str
    trace: list[TracePoint] = field(default_factory=list)
    stopped: str = ""
    peak_rss_mb: float = 0.0
    settings: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    gpu_peak_mb: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


class Clock:
    """Wall seconds of training only: :meth:`paused` excludes the trace's own evaluation."""

    def __init__(self) -> None:
        self._start = time.perf_counter()
        self._paused = 0.0

    def __call__(self) -> float:
        return time.perf_counter() - self._start - self._paused

    def paused(self) -> _Pause:
        return _Pause(self)


class _Pause:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.clock._paused += time.perf_counter() - self.t0


def _scores(X, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    S = X @ W.T
    S = np.asarray(S.toarray() if sp.issparse(S) else S, dtype=np.float64)
    return S if b is None else S + b


def objective(W: np.ndarray, b: np.ndarray | None, X, y: np.ndarray, lam: float) -> float:
    """``(1/N) sum_i [logsumexp(x_i W^T + b) - x_i . w_{y_i} - b_{y_i}] + lam/2 ||W||^2``.

    ``W`` is (K, D), ``b`` (K,) or None; the intercept is not penalised.  Computed in
    float64 over blocks of rows.
    """
    W = np.asarray(W, dtype=np.float64)
    n = X.shape[0]
    total = 0.0
    for i in range(0, n, _CHUNK):
        S = _scores(X[i : i + _CHUNK], W, b)
        yy = y[i : i + _CHUNK]
        total += float(np.sum(logsumexp(S, axis=1) - S[np.arange(len(yy)), yy]))
    return total / n + 0.5 * lam * float(np.einsum("ij,ij->", W, W))


def accuracy(W: np.ndarray, b: np.ndarray | None, X, y: np.ndarray) -> float:
    """Share of rows whose highest score is their label (label -1 is always wrong)."""
    W = np.asarray(W, dtype=np.float64)
    correct = 0
    for i in range(0, X.shape[0], _CHUNK):
        correct += int(np.sum(_scores(X[i : i + _CHUNK], W, b).argmax(axis=1) == y[i : i + _CHUNK]))
    return correct / X.shape[0]


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB (ru_maxrss is KB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0**2 if sys.platform == "darwin" else rss / 1024.0


def fit_ladder(
    fit: Callable[[int], tuple[TracePoint, bool]],
    time_limit: float,
    stop_at: float | None,
    targets: tuple[float, ...],
) -> tuple[dict[int, TracePoint], str, float]:
    """Fresh fits of 1, 2, 4, ... iterations, then the first count reaching each target.

    ``fit(k)`` trains anew for ``k`` iterations and returns the model's trace point (its
    ``time`` that fit's seconds) and whether the solver stopped on its own tolerance.
    The ladder doubles ``k`` until a fit converges, reaches ``stop_at`` or would take the
    summed fit times past ``time_limit`` (extrapolated from the last fit's time per
    iteration); then, shortest fits first, it bisects the first ``k`` reaching each
    target.  Returns ``(fits by k, why it stopped, seconds of all fits)``.
    """
    fits: dict[int, TracePoint] = {}
    spent = 0.0
    converged = False

    def run(k: int) -> TracePoint:
        nonlocal spent, converged
        point, done = fit(k)
        fits[k] = point
        spent += point.time
        converged = converged or done
        return point

    def affordable(k: int) -> bool:
        if not fits:
            return True
        last = fits[max(fits)]
        return spent + last.time / max(last.epochs, 1.0) * k <= time_limit

    stopped = "time limit"
    k = 1
    while affordable(k):
        point = run(k)
        if converged:
            stopped = "converged"
            break
        if stop_at is not None and point.objective <= stop_at:
            stopped = "target"
            break
        k *= 2
    for target in sorted(targets, reverse=True):
        reached = [j for j, p in fits.items() if p.objective <= target]
        if not reached:
            continue
        hi = min(reached)
        below = [j for j, p in fits.items() if j < hi and p.objective > target]
        lo = max(below) if below else 0
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if not affordable(mid):
                break
            if run(mid).objective <= target:
                hi = mid
            else:
                lo = mid
    return fits, stopped, spent


# Lines of a failed child's output that name its cause, the most telling first: running
# out of memory, a JVM's root cause (its last "Caused by:"), any error.
_CAUSES = (
    re.compile(r"OutOfMemoryError|MemoryError|Cannot allocate memory"),
    re.compile(r"^Caused by:"),
    re.compile(r"\w+(Error|Exception):"),
)


def describe_failure(returncode: int, stderr: str) -> str:
    """How a child process failed, in one line.

    Killed by a signal: its name, and the first frame faulthandler printed (run the
    child with ``python -X faulthandler``).  Otherwise its exit status, the line naming
    the cause (a JVM's ``java.lang.OutOfMemoryError`` or root ``Caused by:`` comes long
    before the Python traceback that ends the output), and the last lines.
    """
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    if returncode < 0:
        frames = [ln for ln in lines if ln.startswith("File")]
        where = f" in {frames[0]}" if frames else ""
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"killed by {name}{where}"
    cause = None
    for pattern in _CAUSES:
        found = [ln for ln in lines if pattern.search(ln)]
        if found:
            cause = found[-1] if pattern.pattern == "^Caused by:" else found[0]
            break
    tail = lines[-3:]
    shown = ([cause] if cause and cause not in tail else []) + tail
    return f"exit status {returncode}: " + " | ".join(shown)
