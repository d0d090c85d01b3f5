"""dsmlr: ``dsmlr-sync``, ``dsmlr-async`` and ``dsmlr-gpu``, each with default settings,
the default engine with another optimiser: ``dsmlr-sgd`` (the DS-MLR paper's
decaying-step SGD) and ``dsmlr-adagrad``, to measure the default SVRG against them, and
``dsmlr-f64``: the defaults with ``dtype="float64"`` (the default float32 stores weights
and computes scores in float32; the objective, ``b`` and the SVRG anchor gradient are
float64 either way), and ``dsmlr-eval3``: the defaults with ``eval_every=3`` (SVRG then
scores and anchors once every three epochs; its trace has those epochs only).

The trace is read from the estimator's per-epoch records: ``time`` is wall seconds since
training started (after input validation and layout), ``objective`` the exact training
objective of the epoch's model.  Unlike the peers' traces, that time *includes* dsmlr's
per-epoch scoring pass: the algorithm needs it (it refreshes every row's auxiliary
variable, anchors the next SVRG epoch and halves the step when the objective rose), and
it also scores the held-out rows for the test accuracy, a few percent of an epoch that
are charged to dsmlr.  ``epochs`` counts update epochs.
"""

from __future__ import annotations

import numpy as np

from .common import RunResult, Skipped, TracePoint, peak_rss_mb

__all__ = ["METHODS", "run"]

METHODS = ("dsmlr-sync", "dsmlr-async", "dsmlr-gpu", "dsmlr-sgd", "dsmlr-adagrad", "dsmlr-f64",
           "dsmlr-eval3")  # fmt: skip


class _Stop(Exception):
    """Raised from the epoch callback to end training (time limit or target reached)."""


def run(
    method: str,
    data,
    *,
    lam: float,
    fit_intercept: bool,
    time_limit: float,
    stop_at: float | None,
    seed: int,
) -> RunResult:
    """Train dsmlr's default estimator on ``data`` and return its per-epoch trace.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`: the engine and settings (module docstring);
        ``dsmlr-gpu`` is the synchronous engine with ``device="cuda"``.
    data : problems.Data
    lam, fit_intercept : the problem's objective.
    time_limit : float
        Training stops at the first epoch that ends past this many seconds.
    stop_at : float or None
        Training stops at the first epoch whose objective is at most this.
    seed : int
        ``random_state``.
    """
    from dsmlr import DSMLRClassifier

    params: dict = {"lam": lam, "fit_intercept": fit_intercept, "random_state": seed}
    params["engine"] = "async" if method == "dsmlr-async" else "sync"
    if method in ("dsmlr-sgd", "dsmlr-adagrad"):
        params["optimizer"] = method.removeprefix("dsmlr-")
    if method == "dsmlr-f64":
        params["dtype"] = "float64"
    if method == "dsmlr-eval3":
        params["eval_every"] = 3
    if method == "dsmlr-gpu":
        import torch

        if not torch.cuda.is_available():
            raise Skipped("dsmlr-gpu: no CUDA device (torch.cuda.is_available() is False)")
        params["device"] = "cuda"
    clf = DSMLRClassifier(**params)
    records: list[dict] = []

    def on_epoch(entry: dict) -> None:
        records.append(entry)
        if stop_at is not None and entry["objective"] <= stop_at:
            raise _Stop("target")
        if entry["time"] >= time_limit:
            raise _Stop("time limit")

    stopped = ""
    try:
        clf.fit(data.X_train, data.y_train, X_val=data.X_test, y_val=data.y_test, callback=on_epoch)
        stopped = "converged" if clf.converged_ else "max epochs"
    except _Stop as stop:
        stopped = str(stop)
    trace = [
        TracePoint(
            time=float(r["time"]),
            objective=float(r["objective"]),
            test_accuracy=None if r.get("test_accuracy") is None else float(r["test_accuracy"]),
            epochs=float(r["epoch"]),
        )
        for r in records
    ]
    settings = {k: v for k, v in clf.get_params().items() if _plain(v)}
    result = RunResult(method, trace, stopped, peak_rss_mb(), settings)
    eval_seconds = float(np.sum([r.get("eval_seconds", 0.0) for r in records]))
    result.notes.append(f"scoring passes (train + test) took {eval_seconds:.2f} s of the time")
    return result


def _plain(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
