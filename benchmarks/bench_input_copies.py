"""What training copies of the caller's matrix: memory of the training layout, measured.

``DSMLRClassifier.fit`` turns ``X`` into the layout the kernels read (CSR with sorted,
summed indices in the training dtype, :func:`dsmlr.kernels.base.training_layout`).  The
layout used to sort the indices of the caller's matrix in place, which for float64 input
cast to float32 (the default) reordered the caller's indices but not its values; it now
copies the index arrays where they must be sorted.  This script measures what that costs
on a medium problem (100K rows, 50K features, about 50 non-zeros a row), float64 input
with sorted indices and with unsorted ones (each row's entries reversed, as ``A @ B`` and
``sp.diags(d) @ X`` leave them), for the layout as it is and as it was (kept below as
``layout_before``):

* ``layout``: the bytes the layout allocates (the peak of :mod:`tracemalloc`, which sees
  every NumPy array; the least of three calls), in this process;
* ``fit``: one process per measurement (the problem read from an uncompressed ``.npz``),
  its peak resident memory (``ru_maxrss``) before ``fit`` and at its end, ``fit`` with
  ``max_epochs=1``, one worker, and whether the caller's ``X`` came through unchanged.

Run: ``python benchmarks/bench_input_copies.py [--samples 100000] [--features 50000]
[--classes 100]``; writes ``benchmarks/results/input_copies.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import scipy.sparse as sp

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
CACHE = HERE / "cache" / "input-copies"

from environment import describe, summary  # noqa: E402

ORDERS = ("sorted", "unsorted")
LAYOUTS = ("after", "before")


def layout_before(X, dtype):
    """The training layout as it was: sorts and sums in place on arrays it may share
    with the caller's matrix (the value-range check left out: it allocates nothing)."""
    X = sp.csr_matrix(X, dtype=dtype)
    X.sum_duplicates()
    X.sort_indices()
    return X


def layout(name: str):
    from dsmlr.kernels.base import training_layout

    return training_layout if name == "after" else layout_before


# -- the problem ------------------------------------------------------------------------------


def _path(n: int, d: int, k: int, order: str) -> Path:
    return CACHE / f"n{n}-d{d}-k{k}-{order}.npz"


def prepare(n: int, d: int, k: int) -> None:
    """Generate the problem once; store it with sorted and with reversed row entries."""
    if all(_path(n, d, k, order).exists() for order in ORDERS):
        return
    from dsmlr.datagen import make_extreme_multiclass

    problem = make_extreme_multiclass(n, d, k, nnz_per_row=50, random_state=0)
    X = problem.X.astype(np.float64).tocsr()
    X.sort_indices()
    CACHE.mkdir(parents=True, exist_ok=True)
    for order in ORDERS:
        indices, data = X.indices.copy(), X.data.copy()
        if order == "unsorted":
            for i in range(n):
                a, b = X.indptr[i], X.indptr[i + 1]
                indices[a:b], data[a:b] = indices[a:b][::-1], data[a:b][::-1]
        np.savez(_path(n, d, k, order), data=data, indices=indices, indptr=X.indptr,
                 shape=np.array(X.shape), y=problem.y)  # fmt: skip


def load(n: int, d: int, k: int, order: str) -> tuple[sp.csr_matrix, np.ndarray]:
    with np.load(_path(n, d, k, order)) as f:
        X = sp.csr_matrix((f["data"], f["indices"], f["indptr"]), shape=tuple(f["shape"]))
        return X, f["y"]


# -- measurements -----------------------------------------------------------------------------


def layout_bytes(X: sp.csr_matrix, name: str) -> int:
    """Peak bytes allocated while ``X`` (a fresh copy each time) takes the layout."""
    X = X.copy()
    tracemalloc.start()
    M = layout(name)(X, np.float32)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    del M
    return int(peak)


def _maxrss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def fit_child(n: int, d: int, k: int, order: str, name: str) -> None:
    """One measurement in this (fresh) process: print a JSON line."""
    import dsmlr.estimator
    from dsmlr import DSMLRClassifier

    X, y = load(n, d, k, order)
    before = X.copy()
    X_bytes = X.data.nbytes + X.indices.nbytes + X.indptr.nbytes
    dsmlr.estimator.training_layout = layout(name)
    start = _maxrss_bytes()
    DSMLRClassifier(1e-5, max_epochs=1, n_workers=1, random_state=0).fit(X, y)
    peak = _maxrss_bytes()
    unchanged = (X != before).nnz == 0 and np.array_equal(X.indices, before.indices)
    # The check's copy of X was made before the fit, so it is in "start" and "peak" alike.
    print(json.dumps({"order": order, "layout": name, "x_bytes": X_bytes, "rss_before": start,
                      "rss_peak": peak, "x_unchanged": bool(unchanged)}))  # fmt: skip


def fit_rss(n: int, d: int, k: int, order: str, name: str) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", order, name, "--samples", str(n),
         "--features", str(d), "--classes", str(k)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


# -- report -----------------------------------------------------------------------------------


def _mb(n: float) -> str:
    return f"{n / 2**20:.1f}"


def report(args, layouts: list[dict], fits: list[dict]) -> None:
    env = describe()
    result = {**env, "samples": args.samples, "features": args.features,
              "classes": args.classes, "layout": layouts, "fit": fits}  # fmt: skip
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    x_bytes = fits[0]["x_bytes"]
    lines = [
        "# Copies of the caller's matrix in training (`benchmarks/bench_input_copies.py`)",
        "",
        summary(env),
        "",
        f"{args.samples} rows, {args.features} features, {args.classes} classes, about 50 "
        f"non-zeros a row; X float64 CSR with int32 indices ({_mb(x_bytes)} MiB: values, "
        "indices and row pointers), trained in float32 (the default). 'after': the layout "
        "as it is (copies the index arrays where it must sort them); 'before': as it was "
        "(sorted them in place, in the caller's matrix).",
        "",
        "Bytes the training layout allocates (tracemalloc peak, MiB):",
        "",
        "| X's indices | after | before |",
        "|---|---|---|",
    ]
    for order in ORDERS:
        row = {r["layout"]: r["bytes"] for r in layouts if r["order"] == order}
        lines.append(f"| {order} | {_mb(row['after'])} | {_mb(row['before'])} |")
    lines += [
        "",
        "`fit` (one epoch, one worker), a process each: peak resident memory before "
        "`fit` (X loaded, plus the copy that checks it afterwards) and at the end (MiB):",
        "",
        "| X's indices | layout | before fit | peak | peak - before | X unchanged |",
        "|---|---|---|---|---|---|",
    ]
    for r in fits:
        lines.append(
            f"| {r['order']} | {r['layout']} | {_mb(r['rss_before'])} | {_mb(r['rss_peak'])} "
            f"| {_mb(r['rss_peak'] - r['rss_before'])} | {'yes' if r['x_unchanged'] else 'no'} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--out", default=str(HERE / "results" / "input_copies"))
    parser.add_argument("--child", nargs=2, metavar=("ORDER", "LAYOUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    n, d, k = args.samples, args.features, args.classes
    if args.child:
        fit_child(n, d, k, *args.child)
        return
    prepare(n, d, k)
    layouts, fits = [], []
    for order in ORDERS:
        X, _ = load(n, d, k, order)
        for name in LAYOUTS:
            # The least of three: the first call also allocates one-time caches.
            peak = min(layout_bytes(X, name) for _ in range(3))
            layouts.append({"order": order, "layout": name, "bytes": peak})
            fits.append(fit_rss(n, d, k, order, name))
    report(args, layouts, fits)


if __name__ == "__main__":
    main()
