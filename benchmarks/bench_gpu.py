"""dsmlr on one GPU against a straightforward PyTorch softmax regression on the same GPU.

Both train the same L2-regularised softmax regression on the same generated sparse
problem (default: 100K rows, 50K features, 10K classes, about 50 non-zeros a row),
float32, on the same card, in one run:

* ``dsmlr``: :class:`dsmlr.DSMLRClassifier` with ``device="cuda"`` (torch kernel,
  one worker), SVRG and plain SGD.  Its epoch time is the wall time between the
  per-epoch records (the update pass, SVRG's gradient pass, and the exact objective),
  and the update pass alone is timed too, as the kernel throughput in
  ``nnz x K`` per second.
* ``torch``: the model a PyTorch user writes first: ``W`` of shape (D, K) and an
  intercept as parameters, ``torch.sparse.mm`` of a CSR mini-batch, ``cross_entropy``,
  the penalty in the loss, and ``torch.optim.SGD`` or ``Adam``; an epoch is one pass of
  mini-batches over the shuffled rows (the CSR rows of each batch gathered on the GPU),
  synchronised before the clock stops.

Both run at two batch sizes (256, dsmlr's GPU default, and 4096).

Also reported: the card's measured copy bandwidth (a large device-to-device copy) and,
for each method, the bytes of ``W`` an epoch must at least read (every non-zero reads
its feature's row of K weights once for the scores) divided by the epoch time.

Run: ``python benchmarks/bench_gpu.py [--samples N --features D --classes K --repeats R]``.
Writes ``results/gpu.json`` and ``results/gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

import environment

HERE = Path(__file__).resolve().parent


def _problem(args):
    from dsmlr.datagen import make_extreme_multiclass

    prob = make_extreme_multiclass(
        args.samples, args.features, args.classes, nnz_per_row=args.nnz, random_state=0
    )
    X = prob.X.astype(np.float32)
    X.sort_indices()
    return X, prob.y.astype(np.int64)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def copy_bandwidth(dev, n: int = 2**30) -> float:
    """Bytes per second of a device-to-device copy of ``n`` floats (read + write), best
    of 5."""
    a = torch.empty(n, dtype=torch.float32, device=dev)
    b = torch.empty_like(a)
    best = 0.0
    for _ in range(5):
        _sync()
        t0 = time.perf_counter()
        b.copy_(a)
        _sync()
        best = max(best, 2 * a.nbytes / (time.perf_counter() - t0))
    del a, b
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return best


def run_dsmlr(X, y, args, optimizer: str, batch_size: int) -> dict:
    from dsmlr import DSMLRClassifier

    clf = DSMLRClassifier(
        args.lam, device=args.device, kernel="torch", dtype="float32", optimizer=optimizer,
        max_epochs=args.epochs, tol=0.0, batch_size=batch_size, random_state=0,
    )  # fmt: skip
    clf.fit(X, y)
    times = [h["time"] for h in clf.history_]
    epochs = np.diff([0.0, *times])
    # The first epoch includes copying the rows to the GPU and warming up cuSPARSE.
    return {
        "method": f"dsmlr {optimizer}",
        "batch_size": batch_size,
        "epoch_seconds": [float(e) for e in epochs],
        "median_epoch": float(statistics.median(epochs[1:])) if len(epochs) > 1 else None,
        "compute_seconds": [h["compute_seconds"] for h in clf.history_],
        "eval_seconds": [h["eval_seconds"] for h in clf.history_],
        "objective": [h["objective"] for h in clf.history_],
    }


def update_pass_seconds(X, y, args, batch_size: int) -> float:
    """One plain update pass of the whole model as one block (the kernel alone)."""
    from dsmlr.kernels import LocalRows, UpdateConfig, get_kernel

    kernel = get_kernel("torch", args.device)
    rows = LocalRows(X, y, True)
    n, d = X.shape
    k = args.classes
    W = kernel.zeros_block(d + 1, k, k, np.float32)
    acc = kernel.zeros(d + 1)
    partials = np.zeros((n, 1))
    b = np.full(n, -np.log(k))
    cfg = UpdateConfig(eta=0.1, lam=args.lam, n_penalized=d, batch_size=batch_size,
                       adaptive=False)  # fmt: skip
    order = np.random.default_rng(0).permutation(n)
    best = float("inf")
    for _ in range(args.repeats + 1):  # the first one warms up
        _sync()
        t0 = time.perf_counter()
        kernel.update_pass(rows, W, 0, acc, partials, 0, b, order, cfg)
        _sync()
        best = min(best, time.perf_counter() - t0)
    return best


def run_torch(X, y, args, opt_name: str, batch_size: int) -> dict:
    dev = torch.device(args.device)
    n, d = X.shape
    k = args.classes
    crow = torch.as_tensor(X.indptr.astype(np.int64), device=dev)
    col = torch.as_tensor(X.indices.astype(np.int64), device=dev)
    val = torch.as_tensor(X.data, device=dev)
    lens = crow[1:] - crow[:-1]
    yt = torch.as_tensor(y, device=dev)
    W = torch.zeros((d, k), device=dev, requires_grad=True)
    b = torch.zeros(k, device=dev, requires_grad=True)
    if opt_name == "sgd":
        opt = torch.optim.SGD([W, b], lr=0.5)
    else:
        opt = torch.optim.Adam([W, b], lr=1e-3)
    gen = torch.Generator(device=dev).manual_seed(0)
    epochs = []
    for _ in range(args.epochs):
        _sync()
        t0 = time.perf_counter()
        perm = torch.randperm(n, device=dev, generator=gen)
        for lo in range(0, n, batch_size):
            rows = perm[lo : lo + batch_size]
            # The CSR rows of the batch, gathered on the GPU.
            rl = lens[rows]
            bcrow = torch.zeros(len(rows) + 1, dtype=torch.int64, device=dev)
            torch.cumsum(rl, 0, out=bcrow[1:])
            starts = torch.repeat_interleave(crow[rows] - bcrow[:-1], rl)
            pos = starts + torch.arange(starts.numel(), device=dev)
            Xb = torch.sparse_csr_tensor(bcrow, col[pos], val[pos], size=(len(rows), d))
            logits = torch.sparse.mm(Xb, W) + b
            loss = torch.nn.functional.cross_entropy(logits, yt[rows])
            loss = loss + 0.5 * args.lam * torch.sum(W * W)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync()
        epochs.append(time.perf_counter() - t0)
    with torch.no_grad():  # the objective after the last epoch, off the clock
        loss = 0.0
        for lo in range(0, n, 8192):
            hi = min(n, lo + 8192)
            Xc = torch.sparse_csr_tensor(crow[lo : hi + 1] - crow[lo], col[crow[lo] : crow[hi]],
                                         val[crow[lo] : crow[hi]], size=(hi - lo, d))  # fmt: skip
            logits = torch.sparse.mm(Xc, W) + b
            loss += float(torch.nn.functional.cross_entropy(logits, yt[lo:hi], reduction="sum"))
        objective = loss / n + 0.5 * args.lam * float(torch.sum(W * W))
    return {
        "method": f"torch {opt_name}",
        "batch_size": batch_size,
        "epoch_seconds": epochs,
        "median_epoch": float(statistics.median(epochs[1:])),
        "objective": [objective],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=100_000)
    ap.add_argument("--features", type=int, default=50_000)
    ap.add_argument("--classes", type=int, default=10_000)
    ap.add_argument("--nnz", type=int, default=50)
    ap.add_argument("--lam", type=float, default=1e-5)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--torch-batch", type=int, default=4096, help="the peer's own batch size")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda", help="cuda; cpu only to try the script")
    ap.add_argument("--out", default=str(HERE / "results" / "gpu"))
    args = ap.parse_args()
    env = environment.describe()
    torch.backends.cuda.matmul.allow_tf32 = False  # same arithmetic for both
    X, y = _problem(args)
    print(f"problem: {X.shape[0]} rows, {X.shape[1]} features, {args.classes} classes, "
          f"nnz {X.nnz}", flush=True)  # fmt: skip
    bandwidth = copy_bandwidth(torch.device(args.device), 2**30 if args.device != "cpu" else 2**24)
    runs = []
    for opt in ("svrg", "sgd"):
        for bs in (args.batch_size, args.torch_batch):
            runs.append(run_dsmlr(X, y, args, opt, bs))
            print(runs[-1]["method"], bs, runs[-1]["epoch_seconds"], flush=True)
    for opt in ("sgd", "adam"):
        for bs in (args.batch_size, args.torch_batch):
            runs.append(run_torch(X, y, args, opt, bs))
            print(runs[-1]["method"], bs, runs[-1]["epoch_seconds"], flush=True)
    w_bytes = X.nnz * args.classes * 4  # every non-zero reads one row of W, once
    update = []
    for bs in (args.batch_size, args.torch_batch):
        seconds = update_pass_seconds(X, y, args, bs)
        update.append({
            "batch_size": bs,
            "seconds": seconds,
            "nnz_classes_per_second": X.nnz * args.classes / seconds,
            "min_bytes_per_second": w_bytes / seconds,
        })  # fmt: skip
    result = {
        "device": torch.cuda.get_device_name(0) if args.device != "cpu" else "cpu",
        "torch": torch.__version__,
        "platform": platform.platform(),
        "environment": env,
        "problem": {
            "rows": X.shape[0],
            "features": X.shape[1],
            "classes": args.classes,
            "nnz": int(X.nnz),
            "lam": args.lam,
        },
        "copy_bandwidth": bandwidth,
        "update_pass": update,
        "runs": runs,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2))
    out.with_suffix(".md").write_text(_markdown(result))
    print(_markdown(result))


def _markdown(r: dict) -> str:
    p = r["problem"]
    best_torch = min(x["median_epoch"] for x in r["runs"] if x["method"].startswith("torch"))
    lines = [
        f"# dsmlr on one GPU ({r['device']}, torch {r['torch']})",
        "",
        environment.summary(r["environment"]),
        "",
        f"Problem: {p['rows']} rows, {p['features']} features, {p['classes']} classes, "
        f"{p['nnz']} non-zeros, lam = {p['lam']}, float32.  Median epoch time over epochs "
        "2 and later (the first includes copying to the GPU and warm-up).",
        "",
        "| method | batch | median epoch (s) | epochs (s) | ratio to torch sgd, same batch "
        "| ratio to fastest torch | objective after the last epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    runs = r["runs"]
    torch_sgd = {x["batch_size"]: x["median_epoch"] for x in runs if x["method"] == "torch sgd"}
    for x in r["runs"]:
        eps = ", ".join(f"{e:.3f}" for e in x["epoch_seconds"])
        same = torch_sgd.get(x["batch_size"])
        lines.append(
            f"| {x['method']} | {x['batch_size']} | {x['median_epoch']:.3f} | {eps} | "
            + (f"{x['median_epoch'] / same:.2f}" if same else "-")
            + f" | {x['median_epoch'] / best_torch:.2f} | {x['objective'][-1]:.5f} |"
        )
    lines += [
        "",
        "Update pass alone (plain SGD, the whole model as one block), and the bytes of W "
        "it must at least read (each non-zero's row once) per second, against the card's "
        f"measured copy bandwidth of {r['copy_bandwidth'] / 1e9:.0f} GB/s:",
        "",
        "| batch | seconds | (non-zeros x classes) per second | GB/s of W read |",
        "|---|---|---|---|",
    ]
    for u in r["update_pass"]:
        lines.append(
            f"| {u['batch_size']} | {u['seconds']:.3f} | {u['nnz_classes_per_second']:.3g} | "
            f"{u['min_bytes_per_second'] / 1e9:.0f} |"
        )
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
