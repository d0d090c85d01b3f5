"""PyTorch: the same objective with a sparse CSR matmul and ``cross_entropy``.

Methods: ``torch-lbfgs`` and ``torch-adam`` on the CPU (all of torch's threads), and
``torch-lbfgs-cuda`` / ``torch-adam-cuda`` on a CUDA device (skipped without one).

* ``torch-lbfgs``: full batch ``torch.optim.LBFGS`` (``lr=1``, ``history_size=10`` as
  scikit-learn's lbfgs, ``line_search_fn="strong_wolfe"``), float64.  The trace is
  recorded inside the closure, i.e. at every function evaluation, line-search trials
  included: the closure's loss *is* the exact full objective, so no extra evaluation is
  needed, and counting trial points can only make torch's times shorter.  ``epochs`` is
  L-BFGS iterations.
* ``torch-adam``: ``torch.optim.Adam(lr=1e-2)``, minibatches of 1024 rows, float32 (the
  usual deep-learning setting), the L2 term added to every minibatch loss.  The rows are
  shuffled once and cut into fixed minibatches (prepared before the clock starts, as
  dsmlr's data layout is); each epoch visits them in a fresh random order.  The trace
  has one point per epoch, its objective and accuracy computed in float64 off the
  clock.

The data are converted to torch tensors (and moved to the device) before the clock
starts.  The backward pass of ``X @ W.T`` uses a pre-transposed CSR copy of ``X``
(``X^T @ G``), about twice as fast as autograd's own sparse backward on the CPU.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp

from .common import Clock, RunResult, Skipped, TracePoint, accuracy, objective, peak_rss_mb

__all__ = ["ADAM_BATCH", "ADAM_LR", "METHODS", "run"]

METHODS = ("torch-lbfgs", "torch-adam", "torch-lbfgs-cuda", "torch-adam-cuda")
ADAM_LR = 1e-2
ADAM_BATCH = 1024
_MAX_EPOCHS = 1000


class _Stop(Exception):
    """Raised inside the L-BFGS closure to end training."""


def _tensor(X, dtype, device):
    import torch

    if sp.issparse(X):
        X = sp.csr_matrix(X)
        return torch.sparse_csr_tensor(
            torch.from_numpy(X.indptr.astype(np.int64)),
            torch.from_numpy(X.indices.astype(np.int64)),
            torch.from_numpy(X.data.astype(dtype)),
            size=X.shape,
            device=device,
        )
    return torch.from_numpy(np.ascontiguousarray(X, dtype=dtype)).to(device)


def _matmul_fn():
    import torch

    class SparseLinear(torch.autograd.Function):
        """``X @ W.T`` whose backward is ``(X^T @ G)^T`` with ``X^T`` given."""

        @staticmethod
        def forward(ctx, W, X, XT):
            ctx.save_for_backward(XT)
            return X @ W.T

        @staticmethod
        def backward(ctx, G):
            (XT,) = ctx.saved_tensors
            return (XT @ G).T, None, None

    return SparseLinear.apply


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
    """Train with PyTorch and return the trace (see the module docstring).

    Parameters
    ----------
    method : {"torch-lbfgs", "torch-adam", "torch-lbfgs-cuda", "torch-adam-cuda"}
    data : problems.Data
    lam, fit_intercept : the problem's objective.
    time_limit : float
        Training seconds after which the run stops.
    stop_at : float or None
        Stop once the objective is at most this.
    seed : int
        Seeds torch and the minibatch order.
    """
    import torch

    device = "cuda" if method.endswith("-cuda") else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise Skipped(f"{method}: no CUDA device (torch.cuda.is_available() is False)")
    if device == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(seed)
    adam = "-adam" in method
    dtype = np.float32 if adam else np.float64
    settings: dict = {"device": device, "dtype": np.dtype(dtype).name, "threads": None}
    if device == "cpu":
        settings["threads"] = torch.get_num_threads()
    if device == "cuda":
        settings["gpu"] = torch.cuda.get_device_name()
        torch.cuda.reset_peak_memory_stats()
    if adam:
        result = _adam(data, lam, fit_intercept, time_limit, stop_at, seed, dtype, device)
        settings |= {"lr": ADAM_LR, "batch_size": ADAM_BATCH}
    else:
        result = _lbfgs(data, lam, fit_intercept, time_limit, stop_at, dtype, device)
        settings |= {"lr": 1.0, "history_size": 10, "line_search_fn": "strong_wolfe"}
    result.method = method
    result.settings = settings
    result.peak_rss_mb = peak_rss_mb()
    if device == "cuda":
        result.gpu_peak_mb = torch.cuda.max_memory_allocated() / 2**20
    return result


def _params(K: int, D: int, fit_intercept: bool, dtype, device):
    import torch

    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    W = torch.zeros(K, D, dtype=tdtype, device=device, requires_grad=True)
    b = torch.zeros(K, dtype=tdtype, device=device, requires_grad=True) if fit_intercept else None
    return W, b


def _numpy(W, b):
    Wn = W.detach().double().cpu().numpy()
    return Wn, None if b is None else b.detach().double().cpu().numpy()


def _lbfgs(data, lam, fit_intercept, time_limit, stop_at, dtype, device) -> RunResult:
    import torch
    import torch.nn.functional as F

    X = _tensor(data.X_train, dtype, device)
    XT = _tensor(data.X_train.T, dtype, device)
    y = torch.from_numpy(data.y_train).to(device)
    W, b = _params(data.n_classes, data.X_train.shape[1], fit_intercept, dtype, device)
    params = [W] if b is None else [W, b]
    linear = _matmul_fn()
    opt = torch.optim.LBFGS(
        params,
        lr=1.0,
        max_iter=100_000,
        max_eval=250_000,
        history_size=10,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )
    trace: list[TracePoint] = []
    best = np.inf
    clock = Clock()

    def closure():
        nonlocal best
        opt.zero_grad()
        S = linear(W, X, XT)
        if b is not None:
            S = S + b
        loss = F.cross_entropy(S, y) + 0.5 * lam * (W * W).sum()
        loss.backward()
        f = float(loss.item())  # .item() waits for the device, so the clock is fair
        now = clock()
        with clock.paused():
            n_iter = opt.state[W].get("n_iter", 0) if W in opt.state else 0
            # Accuracy only for new bests: only those can be first to reach a target.
            acc = None
            if f < best:
                best = f
                acc = accuracy(*_numpy(W, b), data.X_test, data.y_test)
            trace.append(TracePoint(now, f, acc, float(n_iter)))
        if stop_at is not None and f <= stop_at:
            raise _Stop("target")
        if clock() >= time_limit:
            raise _Stop("time limit")
        return loss

    try:
        opt.step(closure)
        stopped = "converged"
    except _Stop as stop:
        stopped = str(stop)
    return RunResult("", trace, stopped)


def _adam(data, lam, fit_intercept, time_limit, stop_at, seed, dtype, device) -> RunResult:
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    n = data.X_train.shape[0]
    order = rng.permutation(n)
    batches = []
    for i in range(0, n, ADAM_BATCH):
        rows = order[i : i + ADAM_BATCH]
        Xb = data.X_train[rows]
        XbT = Xb.T.tocsr() if sp.issparse(Xb) else Xb.T
        yb = torch.from_numpy(data.y_train[rows]).to(device)
        batches.append((_tensor(Xb, dtype, device), _tensor(XbT, dtype, device), yb))
    W, b = _params(data.n_classes, data.X_train.shape[1], fit_intercept, dtype, device)
    params = [W] if b is None else [W, b]
    linear = _matmul_fn()
    opt = torch.optim.Adam(params, lr=ADAM_LR)
    trace: list[TracePoint] = []
    stopped = "max epochs"
    clock = Clock()
    for epoch in range(1, _MAX_EPOCHS + 1):
        for j in rng.permutation(len(batches)):
            Xb, XbT, yb = batches[j]
            opt.zero_grad()
            S = linear(W, Xb, XbT)
            if b is not None:
                S = S + b
            loss = F.cross_entropy(S, yb) + 0.5 * lam * (W * W).sum()
            loss.backward()
            opt.step()
        if device == "cuda":
            torch.cuda.synchronize()
        now = clock()
        with clock.paused():
            Wn, bn = _numpy(W, b)
            f = objective(Wn, bn, data.X_train, data.y_train, lam)
            acc = accuracy(Wn, bn, data.X_test, data.y_test)
            trace.append(TracePoint(now, f, acc, float(epoch)))
        if not np.isfinite(f):
            stopped = "diverged"
            break
        if stop_at is not None and f <= stop_at:
            stopped = "target"
            break
        if clock() >= time_limit:
            stopped = "time limit"
            break
    return RunResult("", trace, stopped)
