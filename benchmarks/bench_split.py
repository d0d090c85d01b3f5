"""Kernel work per rank when the problem is split over P ranks, on one core, no MPI.

Under the synchronous ring a rank holds ``N / P`` rows and, per epoch, visits each of the
``B`` class blocks once (``B = P``, the engine's default).  The arithmetic per rank
is ``1 / P`` of the whole problem's, but the rows are visited ``B`` times, once per block, so the
number of (row, non-zero) visits per rank is the same at every P: each touches a row of
the block (``K / B`` classes) at a random feature, and the shorter those rows the more
of a visit is memory latency rather than arithmetic.  This script measures that part of
the scaling alone: it times, on one thread, the kernel passes one rank makes in an epoch
(``B`` visits of ``N / P`` rows by ``K / B`` classes) against one pass of all rows by all
classes (P = 1), with no communication and no other process on the machine.

With ``--concurrent P`` it also runs P processes at once, each making its own rank's
passes over its own rows with no communication, and takes the slowest: the best an
epoch's kernel work can do at P on this machine, memory and caches shared.

Run: ``python benchmarks/bench_split.py [--ranks 1 2 4 8] [--repeats 5] [--concurrent
P]``; uses the problem of ``bench_mpi.py --only scaling`` (generated into
``benchmarks/cache/``) and writes ``benchmarks/results/split.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

import environment
from bench_mpi import _data
from dsmlr.engines import EngineConfig
from dsmlr.engines.sync_ring import blocks_per_group
from dsmlr.io import read_svmlight
from dsmlr.kernels.base import LocalRows, Snapshot, UpdateConfig
from dsmlr.kernels.numba_cpu import NumbaKernel

HERE = Path(__file__).resolve().parent
PASSES = ("sgd", "svrg", "gradient", "score")


def default_blocks_per_rank(n_ranks: int) -> int:
    """Blocks per rank of the synchronous engine's default (the same for every pass)."""
    return blocks_per_group(EngineConfig(n_samples=1, n_features=1, n_classes=2), n_ranks)


def rank_work(
    X, y, n_classes: int, n_ranks: int, what: str, seed: int = 0, kernel=None, rank: int = 0
):
    """``(reset, run)``: ``run`` makes rank ``rank``'s kernel passes of one epoch
    (float32, one-row steps) and ``reset`` puts back the starting weights, so that every
    timed run starts from the same point (weights drifting over repeated passes could
    slow them)."""
    kernel = kernel if kernel is not None else NumbaKernel()
    rng = np.random.default_rng(seed)
    n_rows, n_cols = X.shape[0] // n_ranks, X.shape[1]
    n_blocks = n_ranks * default_blocks_per_rank(n_ranks)
    width = n_classes // n_blocks
    mine = slice(rank * n_rows, (rank + 1) * n_rows)
    rows = LocalRows(X[mine], y[mine], False)
    W0 = (rng.standard_normal((n_cols, width)) * 0.01).astype(np.float32)
    W = W0.copy()
    anchor = Snapshot(W0.copy(), rng.standard_normal((n_cols, width)) * 1e-4,
                      np.full(n_rows, -np.log(n_classes)))  # fmt: skip
    partials = np.zeros((n_rows, n_blocks))
    b = np.full(n_rows, -np.log(n_classes))
    order = rng.permutation(n_rows)
    step = UpdateConfig(eta=0.05, lam=1e-5, n_penalized=n_cols, batch_size=1, adaptive=False,
                        unpenalized_scale=1.0)  # fmt: skip
    acc = np.zeros(n_cols)
    grad = np.zeros((n_cols, width))
    best = np.full(n_rows, -np.inf)
    true, best_class = np.zeros(n_rows), np.zeros(n_rows, dtype=np.int64)

    def visit(q: int) -> None:
        if what == "score":
            kernel.score_pass(rows, W, 0, partials, q, true, best, best_class)
        elif what == "gradient":
            kernel.gradient_pass(rows, W, 0, b, 1.0 / X.shape[0], grad)
        else:
            snapshot = anchor if what == "svrg" else None
            kernel.update_pass(rows, W, 0, acc, partials, q, b, order, step, snapshot)

    def reset() -> None:
        W[...] = W0
        b[...] = anchor.b
        partials[...] = 0.0
        grad[...] = 0.0

    return reset, lambda: [visit(q) for q in range(n_blocks)]


def timed_run(reset, run) -> float:
    """Seconds ``run()`` takes after ``reset()`` (a pair from :func:`rank_work`)."""
    reset()
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def write_report(out: str, result: dict, lines: list[str]) -> None:
    """``out.json`` with every figure, ``out.md`` with the table ``lines``."""
    Path(out + ".json").write_text(json.dumps(result, indent=1))
    Path(out + ".md").write_text("\n".join(lines) + "\n")


def load_problem(n: int, d: int, k: int):
    """``bench_mpi.py``'s scaling problem: float32 CSR training rows, labels 0..K-1, K."""
    data = read_svmlight(_data(f"mpi-n{n}-d{d}-k{k}", n, d, k, "--test-fraction", "0.2"))
    X = data.X.astype(np.float32).tocsr()
    X.sort_indices()
    return X, np.unique(data.y, return_inverse=True)[1].astype(np.int64), k


def _timed_together(reset, run, barrier) -> float:
    """Like :func:`timed_run`, the clock starting once every process meets ``barrier``."""
    reset()
    barrier.wait()
    return timed_run(lambda: None, run)


def _twin(X, y, k: int, p: int, what: str, rank: int, repeats: int, barrier, out) -> None:
    """Rank ``rank`` of a concurrent run (a forked process): time its passes each time
    all P processes meet at ``barrier``."""
    reset, work = rank_work(X, y, k, p, what, rank=rank)
    work()
    for _ in range(repeats):
        out.put((rank, _timed_together(reset, work, barrier)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=25_000)
    parser.add_argument("--features", type=int, default=20_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=None, metavar="P",
                        help="also run P processes at once, each rank's passes over its own "
                             "rows (no communication): what sharing the machine costs")  # fmt: skip
    parser.add_argument("--out", default=str(HERE / "results" / "split"))
    args = parser.parse_args()
    env = environment.describe()
    X, y, k = load_problem(args.samples, args.features, args.classes)
    results = {"machine": platform.platform(), "environment": env, "cpus": os.cpu_count(),
               "problem": [*X.shape, k], "passes": {}}  # fmt: skip
    fork = multiprocessing.get_context("fork")
    cp = args.concurrent
    for what in PASSES:
        works = {p: rank_work(X, y, k, p, what) for p in args.ranks}
        times: dict[int | str, list[float]] = {p: [] for p in args.ranks}
        for _reset, work in works.values():
            work()  # compile, warm the caches
        twins: list = []
        if cp:
            barrier, queue = fork.Barrier(cp), fork.Queue()
            twins = [fork.Process(target=_twin, args=(X, y, k, cp, what, r, args.repeats,
                                                      barrier, queue))
                     for r in range(1, cp)]  # fmt: skip
            for t in twins:
                t.start()
            reset0, work0 = rank_work(X, y, k, cp, what, rank=0)
            work0()
            times[f"{cp} at once"] = []
        for _ in range(args.repeats):  # interleaved, so drifts in machine speed hit all P
            for p, (reset, work) in works.items():
                times[p].append(timed_run(reset, work))
            if cp:
                mine = _timed_together(reset0, work0, barrier)
                others = [queue.get()[1] for _ in twins]
                times[f"{cp} at once"].append(max([mine, *others]))  # the slowest rank
        for t in twins:
            t.join()
        base = statistics.median(times[args.ranks[0]])
        results["passes"][what] = {
            p: {"seconds": statistics.median(t), "ratio": statistics.median(t) / base,
                "ideal": args.ranks[0] / (p if isinstance(p, int) else cp), "runs": t}
            for p, t in times.items()
        }  # fmt: skip
        print(what, {p: round(v["ratio"], 3) for p, v in results["passes"][what].items()})
    lines = [
        "# Kernel work per rank against P (`benchmarks/bench_split.py`)",
        "",
        environment.summary(env),
        "",
        f"{X.shape[0]} rows, {X.shape[1]} features, {k} classes, float32, one thread; "
        f"median of {args.repeats}. One rank's passes of an epoch against one pass of the "
        "whole problem."
        + (
            f" '{cp} at once': {cp} processes, each making its own rank's passes over its own "
            "rows at the same time (no communication), the slowest of them."
            if cp
            else ""
        ),
        "",
        "| pass | P | seconds | ratio to P = 1 | 1 / P |",
        "|---|---|---|---|---|",
    ]
    for what, per_p in results["passes"].items():
        for p, v in per_p.items():
            lines.append(f"| {what} | {p} | {v['seconds']:.3f} | {v['ratio']:.3f} | "
                         f"{v['ideal']:.3f} |")  # fmt: skip
    write_report(args.out, results, lines)


if __name__ == "__main__":
    main()
