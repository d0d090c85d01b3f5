"""The cost model's projection for the DS-MLR paper's Reddit-Full problem.

Prints the tables and figures of the "Projection: Reddit-Full" section of
docs/cost-model.md from :func:`dsmlr.plan.plan_training` with the development machine's
kernel rates (:data:`dsmlr.plan.MEASURED_THROUGHPUT`), so the section can be regenerated
whenever the model or the rates change::

    python benchmarks/project_reddit.py

N = 211M examples, D = 1.35M features, K = 33K classes (the paper); 80 non-zeros per
row is our assumption (the paper gives the data's size, not its non-zeros).
"""

from __future__ import annotations

import argparse

from dsmlr.plan import default_throughput, plan_training

N, D, K, NNZ_PER_ROW = 211_000_000, 1_350_000, 33_000, 80
GBIT = 1.25e8  # bytes per second in one Gb/s
BUDGET_GIB = 64


def _plan(optimizer: str, dtype: str, ranks: int, gbit: float):
    return plan_training(
        n_samples=N, n_features=D, n_classes=K, nnz=N * NNZ_PER_ROW, n_ranks=ranks,
        bandwidth=gbit * GBIT, optimizer=optimizer, dtype=dtype,
    )  # fmt: skip


def _time(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _gib(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f}"


def _per_rank_table() -> list[str]:
    lines = [
        "| optimizer, dtype | P | memory per rank (rows + row state + blocks + 0.3) | compute "
        "| sent | comm 10 Gb/s | comm 100 Gb/s | epoch 10 Gb/s | epoch 100 Gb/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for optimizer in ("svrg", "sgd"):
        for dtype in ("float64", "float32"):
            for ranks in (16, 32, 64, 128):
                slow, fast = _plan(optimizer, dtype, ranks, 10), _plan(optimizer, dtype, ranks, 100)
                m = slow.memory
                lines.append(
                    f"| {optimizer}, {dtype} | {ranks} | **{_gib(m.total)} GiB** ({_gib(m.rows)} "
                    f"+ {_gib(m.row_state)} + {_gib(m.blocks)} + {_gib(m.base)}) | "
                    f"{_time(slow.compute_seconds)} | {slow.bytes_sent / 2**40:.2f} TiB | "
                    f"{_time(slow.comm_seconds)} | {_time(fast.comm_seconds)} | "
                    f"{_time(slow.epoch_seconds)} | {_time(fast.epoch_seconds)} |"
                )
    return lines


def _smallest_fit_table() -> list[str]:
    lines = [
        f"| optimizer, dtype | smallest P with at most {BUDGET_GIB} GiB per rank | memory per "
        "rank there | epoch there, 10 Gb/s |",
        "|---|---|---|---|",
    ]
    for optimizer in ("svrg", "sgd", "adagrad"):
        for dtype in ("float64", "float32"):
            ranks = 1
            while _plan(optimizer, dtype, ranks, 10).memory.total > BUDGET_GIB * 2**30:
                ranks += 1
            plan = _plan(optimizer, dtype, ranks, 10)
            lines.append(
                f"| {optimizer}, {dtype} | {ranks} | {_gib(plan.memory.total)} GiB | "
                f"{_time(plan.epoch_seconds)} |"
            )
    return lines


def _crossover(gbit: float) -> int:
    """Smallest P (to two significant digits) at which communication exceeds compute."""
    ranks = 16
    while True:
        plan = _plan("svrg", "float64", ranks, gbit)
        if plan.comm_seconds >= plan.compute_seconds:
            return int(float(f"{ranks:.2g}"))
        ranks = int(ranks * 1.02) + 1


def main() -> None:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args()
    rates = default_throughput("float64")
    print(f"rates (float64): {rates}\nrates (float32): {default_throughput('float32')}\n")
    print("\n".join(_per_rank_table()), "\n")
    print("\n".join(_smallest_fit_table()), "\n")
    print(f"compute meets communication (svrg, float64): near P = {_crossover(10)} at 10 Gb/s, "
          f"P = {_crossover(100)} at 100 Gb/s")  # fmt: skip
    cluster = _plan("svrg", "float64", 512, 10)
    print(
        f"P = 512 (16 hosts x 32 cores), svrg float64, 10 Gb/s: epoch "
        f"{_time(cluster.epoch_seconds)}, {_gib(cluster.memory.total)} GiB per rank, "
        f"row state {_gib(cluster.memory.row_state)} GiB"
    )


if __name__ == "__main__":
    main()
