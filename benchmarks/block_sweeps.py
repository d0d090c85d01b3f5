"""Per-visit work over a whole class block: the penalty's squared norm and the update
pass's closing sweep, measured.

Two costs of a block visit that do not shrink with the rows a rank holds:

* ``norm``: a block's squared norm, which the scoring stage adds up (its home visit):
  numpy's ``einsum(..., dtype=float64)`` (:func:`dsmlr.objective.squared_norm`, the
  reference kernel's and what the CPU kernel used) against the CPU kernel's compiled sum
  (:meth:`dsmlr.kernels.numba_cpu.NumbaKernel.squared_norm`), on a float32 block;
* ``update pass``: one SVRG pass of the CPU kernel over half of ``debian-source``'s rows
  (one rank's at P = 2) with a block of 604 classes (the asynchronous engine's at P = 2),
  as a block's last visit of the epoch (``final``: every column brought up to date, the
  sweep each visit used to end with) and as an earlier one (untouched columns left
  behind in the block's lag): the difference is the sweep a visit no longer makes.

Medians over ``--repeats`` (each from the same starting weights), and the peak of
:mod:`tracemalloc` (NumPy's allocations) of one call.

Run: ``python benchmarks/block_sweeps.py [--repeats 7]``; writes
``benchmarks/results/block_sweeps.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from environment import describe, summary  # noqa: E402

WIDTH = 604  # classes of a token of debian-source's 2416 at P = 2, two tokens a rank


def _timed(fn, repeats: int, setup=lambda: None) -> tuple[float, int]:
    """Median seconds of ``fn()`` over ``repeats`` calls (``setup()`` before each,
    untimed), and the tracemalloc peak of one call."""
    seconds = []
    for _ in range(repeats + 1):  # the first compiles
        setup()
        t0 = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - t0)
    setup()
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return statistics.median(seconds[1:]), peak


def measure_norm(n_columns: int, repeats: int) -> list[dict]:
    from dsmlr.kernels import get_kernel
    from dsmlr.objective import squared_norm

    W = np.random.default_rng(0).standard_normal((n_columns, WIDTH)).astype(np.float32)
    numba = get_kernel("numba")
    rows = []
    for name, fn in (("numpy einsum", squared_norm), ("compiled", numba.squared_norm)):
        s, peak = _timed(lambda fn=fn: fn(W), repeats)
        rows.append({"what": "norm", "how": name, "seconds": s, "peak_bytes": peak})
    return rows


def measure_update(repeats: int) -> list[dict]:
    from dsmlr.kernels import LocalRows, UpdateConfig, get_kernel
    from dsmlr.kernels.base import Snapshot
    from problems import get_problem

    data = get_problem("debian-source").load()
    X, y = data.X_train.astype(np.float32).tocsr(), data.y_train
    rng = np.random.default_rng(0)
    mine = np.sort(rng.permutation(X.shape[0])[: X.shape[0] // 2])
    rows = LocalRows(X[mine], y[mine], False)
    n, d = rows.n_rows, X.shape[1]
    kernel = get_kernel("numba")
    W0 = (0.01 * rng.standard_normal((d, WIDTH))).astype(np.float32)
    mu = (1e-4 * rng.standard_normal((d, WIDTH))).astype(np.float32)
    b0 = np.full(n, -np.log(2416.0))
    snapshot = Snapshot(W0.copy(), mu, b0.copy(), None)
    config = UpdateConfig(eta=0.5, lam=1e-5, batch_size=1, n_penalized=d)
    order = rng.permutation(n)
    state: dict = {}

    def setup() -> None:
        state.update(W=W0.copy(), partials=np.zeros((n, 4)), b=b0.copy(),
                     lag=np.full(d, -1, dtype=np.int64))  # fmt: skip

    out = []
    for final in (True, False):

        def one_pass(final=final) -> None:
            kernel.update_pass(rows, state["W"], 0, None, state["partials"], 0, state["b"],
                               order, config, snapshot, state["lag"], final)  # fmt: skip

        s, peak = _timed(one_pass, repeats, setup)
        how = "last visit (whole block swept)" if final else "earlier visit (columns left behind)"
        out.append({"what": f"update pass, {n} rows", "how": how, "seconds": s, "peak_bytes": peak})
    return out


def report(result: dict, out: Path) -> None:
    lines = [
        "# Per-visit sweeps of a whole block (`benchmarks/block_sweeps.py`)",
        "",
        summary(result["environment"]),
        "",
        f"Command: `{result['command']}`",
        "",
        f"Float32 blocks of {WIDTH} classes and {result['n_columns']} columns "
        "(debian-source's features and intercept); medians over the repeats; peak: "
        "tracemalloc's, one call.",
        "",
        "| what | how | ms | vs first | peak MB |",
        "|---|---|---|---|---|",
    ]
    first: dict = {}
    for row in result["rows"]:
        base = first.setdefault(row["what"], row["seconds"])
        lines.append(
            f"| {row['what']} | {row['how']} | {row['seconds'] * 1e3:.1f} | "
            f"{row['seconds'] / base:.2f} | {row['peak_bytes'] / 2**20:.1f} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default=str(HERE / "results" / "block_sweeps"))
    args = parser.parse_args(argv)
    from problems import get_problem

    n_columns = get_problem("debian-source").load().X_train.shape[1] + 1
    rows = measure_norm(n_columns, args.repeats) + measure_update(args.repeats)
    result = {
        "environment": describe(),
        "command": " ".join(["python benchmarks/block_sweeps.py", *sys.argv[1:]]),
        "n_columns": n_columns,
        "rows": rows,
    }
    report(result, Path(args.out))
    print(Path(args.out).with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
