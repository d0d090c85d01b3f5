"""Measuring this machine's kernel rates for the cost model (``dsmlr plan --calibrate``).

:func:`calibrate` times each kernel pass of one class block on a generated text-like
problem, as one rank runs it in an epoch, and returns the rates as a
:class:`dsmlr.plan.Throughput` for :func:`dsmlr.plan.plan_training`.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np

from dsmlr.kernels.anchor_table import KEEP
from dsmlr.plan import Throughput, check_dtype

__all__ = ["calibrate"]


def calibrate(
    *,
    n_rows: int = 5000,
    n_features: int = 20000,
    block_classes: int = 500,
    nnz_per_row: int = 50,
    dtype: str = "float32",
    ranks_per_host: int = 1,
    repeats: int = 3,
    seed: int = 0,
) -> Throughput:
    """Measure the numba kernels' rates on this machine.

    Generates a small text-like problem (:func:`dsmlr.datagen.make_extreme_multiclass`)
    and times each kernel pass of one class block of ``block_classes`` classes over its
    ``n_rows`` rows, as one rank runs them in an epoch.  With ``ranks_per_host`` > 1 as
    many threads run the same passes at the same time, each on its own copy (the numba
    kernels release the GIL), so the rates are those of one of that many ranks sharing
    the host's cores, caches and memory bandwidth.  Each pass's rate is
    ``(nnz + n_rows) * block_classes / seconds``, with the best of ``repeats`` timings
    of each thread (the least disturbed by other jobs), the median over threads.  A first
    untimed call compiles the kernels (numba caches the compiled code on disk, so this is
    slow only once).

    Choose ``block_classes`` near ``K / B`` of the problem to plan (``dsmlr plan
    --calibrate`` does) and ``n_features`` large enough that the block,
    ``(n_features + 1) * block_classes * itemsize`` bytes, is far larger than the CPU
    caches, as a real model's blocks are.

    Returns
    -------
    Throughput
    """
    import threading

    from dsmlr.datagen import make_extreme_multiclass

    dtype = check_dtype(dtype)
    problem = make_extreme_multiclass(n_rows, n_features, block_classes,
                                      nnz_per_row=nnz_per_row, random_state=seed)  # fmt: skip
    X = problem.X.astype(dtype)
    X.sort_indices()
    units = float(X.nnz + n_rows) * block_classes
    y = np.asarray(problem.y, dtype=np.int64)
    n_threads = max(1, int(ranks_per_host))
    benches = [_KernelBench(X.copy(), y, block_classes, dtype, seed) for _ in range(n_threads)]
    names = list(benches[0].passes)
    best = np.full((n_threads, len(names)), np.inf)
    start = threading.Barrier(n_threads)
    errors: list[BaseException] = []

    def body(t: int) -> None:
        try:
            for j, name in enumerate(names):
                run = benches[t].passes[name]
                start.wait()
                run()  # compile (or load from numba's cache) and warm the caches
                for _ in range(max(1, repeats)):
                    start.wait()  # the threads' passes run at the same time
                    t0 = time.perf_counter()
                    run()
                    best[t, j] = min(best[t, j], time.perf_counter() - t0)
        except BaseException as exc:
            errors.append(exc)
            start.abort()

    threads = [threading.Thread(target=body, args=(t,)) for t in range(1, n_threads)]
    for th in threads:
        th.start()
    body(0)
    for th in threads:
        th.join()
    if errors:
        raise errors[0]
    rates = {name: units / float(np.median(best[:, j])) for j, name in enumerate(names)}
    where = f"{platform.machine()} {os.cpu_count()} cores"
    return Throughput(**rates, source=(
        f"calibrate(n_rows={n_rows}, n_features={n_features}, block_classes={block_classes}, "
        f"nnz_per_row={nnz_per_row}, dtype={dtype}, ranks_per_host={n_threads}) on {where}"
    ))  # fmt: skip


class _KernelBench:
    """One rank's block, rows and state, and its kernel passes (for :func:`calibrate`)."""

    def __init__(self, X, y: np.ndarray, n_classes: int, dtype: str, seed: int) -> None:
        from dsmlr.kernels import LocalRows, UpdateConfig, get_kernel
        from dsmlr.kernels.base import Snapshot

        n, d = X.shape
        rows = LocalRows(X, y, True)
        kernel = get_kernel("numba")
        W = np.zeros((d + 1, n_classes), dtype=dtype)
        mean_grad = np.zeros((d + 1, n_classes), dtype=dtype)  # as the engines hold it
        acc = np.zeros(d + 1)
        b = np.full(n, -np.log(n_classes))
        partials = np.full((n, 1), np.log(n_classes))
        order = np.random.default_rng(seed).permutation(n)
        # The engines' step: eta over the mean squared row norm (intercept included).
        curvature = float(np.mean(np.asarray(X.multiply(X).sum(axis=1)).ravel() + 1.0))
        anchor: list[Snapshot] = []

        def step(adaptive: bool) -> UpdateConfig:
            return UpdateConfig(eta=0.5 / curvature, lam=1e-4, n_penalized=d, batch_size=1,
                                adaptive=adaptive)  # fmt: skip

        def update(adaptive: bool) -> None:
            kernel.update_pass(rows, W, 0, acc, partials, 0, b, order, step(adaptive))

        def gradient() -> None:
            mean_grad[...] = 0.0
            kernel.gradient_pass(rows, W, 0, b, 1.0 / n, mean_grad)

        def svrg() -> None:
            if not anchor:  # anchored at the weights the gradient pass saw
                anchor.append(Snapshot(W.copy(), mean_grad.copy(), b.copy()))
            kernel.update_pass(rows, W, 0, acc, partials, 0, b, order, step(False), anchor[0])

        def gradient_tables() -> None:
            mean_grad[...] = 0.0
            table[:] = [kernel.gradient_pass(rows, W, 0, b, 1.0 / n, mean_grad, keep=KEEP)]

        def svrg_tables() -> None:
            snapshot = Snapshot(None, mean_grad, b.copy(), table[0])
            kernel.update_pass(rows, W, 0, acc, partials, 0, b, order, step(False), snapshot)

        table: list = []

        def score() -> None:
            kernel.score_pass(rows, W, 0, np.empty((n, 1)), 0, np.zeros(n),
                              np.full(n, -np.inf), np.full(n, -1, np.int64))  # fmt: skip

        # Dict order is run order: the SVRG pass needs the gradient pass's anchor.
        self.passes = {
            "update_sgd": lambda: update(False),
            "update_adagrad": lambda: update(True),
            "gradient": gradient,
            "update_svrg": svrg,
            "gradient_tables": gradient_tables,
            "update_svrg_tables": svrg_tables,
            "score": score,
        }
