"""The distributed engine under MPI: scaling, bytes per epoch, memory per rank, stragglers.

Every figure comes from ``mpiexec -n P python -m dsmlr train ... --metrics FILE``: the
per-epoch records carry wall time, bytes sent per rank and every rank's peak resident
memory.  Data sets are generated once into ``benchmarks/cache/`` (gitignored).

Experiments (``--only`` picks some):

``scaling``
    K = 1000 classes, 20K rows, 20K features: median epoch time (SVRG epochs, from the
    second on) for each P in ``--ranks``, the P values taking turns within each repeat;
    the ratio to P = 1; where rank 0's epochs went (compute, communication, waiting,
    scoring).  ``--baseline SRC`` adds runs of another checkout's code for an A/B;
    ``--blocks-per-rank N`` gives the ranks of P > 1 N blocks each.
``bytes``
    The same problem with plain SGD: bytes per rank of an update epoch that does not
    score against the model size ``K * D_fit * itemsize``, and of one that scores against
    ``2 (P - 1) / P`` of it.
``memory``
    A model of at least 2 GB (float32: about 3800 classes x 140K features), one SGD epoch:
    peak resident memory per rank for P = 1 and P = 4.
``straggler``
    K = 200, rank 1 slowed 2x (``--straggler 1:2``), P = 4: time to within 1% of the
    optimum (scikit-learn lbfgs, cached) for the sync and the async engine, taking turns,
    with each run's objective against time.  ``--straggler-ranks``,
    ``--straggler-classes``, ``--straggler-epochs`` and ``--eval-every`` (scoring every E
    epochs) change the setting; ``--baseline SRC`` adds the async engine of another
    checkout.

Run: ``python benchmarks/bench_mpi.py [--only scaling bytes] [--repeats 3]``; writes
``benchmarks/results/mpi.{json,md}``.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
PY = sys.executable
MPIEXEC = shutil.which("mpiexec", path=str(Path(PY).parent)) or "mpiexec"


def _data(name: str, samples: int, features: int, classes: int, *extra: str) -> Path:
    prefix = CACHE / name
    train = Path(f"{prefix}.train.svm")
    if not train.exists():
        CACHE.mkdir(exist_ok=True)
        cmd = [PY, "-m", "dsmlr", "generate", str(prefix), "--samples", str(samples),
               "--features", str(features), "--classes", str(classes), "--seed", "0",
               *extra]  # fmt: skip
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return train


def _train(n: int, train: Path, *options: str, source: str | None = None) -> list[dict]:
    """Run ``mpiexec -n n dsmlr train``; return its metrics records (the last one also
    gets ``model_bytes``, the size of the trained model).  ``source``: a ``src``
    directory of another checkout to run instead of the installed package."""
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.jsonl"
        cmd = [MPIEXEC, "-n", str(n), PY, "-m", "dsmlr", "train", str(train), "--quiet",
               "--seed", "0", "--model", str(Path(tmp) / "model"), "--metrics", str(metrics),
               *options]  # fmt: skip
        env = None if source is None else {**os.environ, "PYTHONPATH": source}
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, env=env)
        records = [json.loads(line) for line in metrics.read_text().splitlines()]
        manifest = json.loads((Path(tmp) / "model" / "manifest.json").read_text())
        itemsize = 4 if manifest["dtype"] == "float32" else 8
        columns = manifest["n_features"] + manifest["fit_intercept"]
        records[-1]["model_bytes"] = manifest["n_classes"] * columns * itemsize
        return records


def _epoch_times(records: list[dict]) -> list[float]:
    times = [r["time"] for r in records]
    return [b - a for a, b in itertools.pairwise(times)]


#: Where rank 0's epoch went (its metrics record; epochs 2-4): kernels, communication
#: (waiting included), waiting alone, the scoring ring (its kernels and shifts).
PARTS = ("compute_seconds", "comm_seconds", "wait_seconds", "eval_seconds")


def _blocks_option(args, n_ranks: int) -> list[str]:
    """``--blocks-per-rank`` for ``dsmlr train`` where one was given and P > 1 (P = 1
    runs its default, one block: the best one process does)."""
    if not args.blocks_per_rank or n_ranks == 1:
        return []
    return ["--blocks-per-rank", str(args.blocks_per_rank)]


def scaling(args) -> dict:
    """Epoch times per P.  Each repeat runs every P once, in turn, so that a machine
    whose speed drifts (shared virtual machines do) shifts every P alike; with
    ``--baseline SRC`` each P also runs the code in SRC (another checkout's ``src``), in
    the same turn, keyed ``"P-baseline"``; its ratio is to the baseline's first P."""
    n, d, k = args.scale_samples, args.scale_features, args.scale_classes
    train = _data(f"mpi-n{n}-d{d}-k{k}", n, d, k, "--test-fraction", "0.2")
    variants = [(str(p), p, None) for p in args.ranks]
    if args.baseline:
        variants += [(f"{p}-baseline", p, args.baseline) for p in args.ranks]
    runs: dict[str, list] = {key: [] for key, _, _ in variants}
    parts: dict[str, list] = {key: [] for key, _, _ in variants}
    for _ in range(args.repeats):
        for key, p, source in variants:
            records = _train(p, train, "--epochs", "4", "--tol", "-1", "--optimizer",
                             args.optimizer, *_blocks_option(args, p), source=source)  # fmt: skip
            runs[key].append(statistics.median(_epoch_times(records)))
            parts[key].append({f: statistics.median(r[f] for r in records[1:]) for f in PARTS})
            print(key, runs[key][-1], flush=True)
    first = str(args.ranks[0])
    out = {}
    for key, p, source in variants:
        epoch = statistics.median(runs[key])
        base = statistics.median(runs[first if source is None else f"{first}-baseline"])
        out[key] = {"epoch_seconds": epoch, "runs": runs[key], "ratio_to_first": epoch / base,
                    "optimizer": args.optimizer, "problem": [n, d, k], "source": source,
                    "blocks_per_rank": (args.blocks_per_rank if p > 1 else None),
                    "rank0_parts": parts[key]}  # fmt: skip
        if source is not None:  # this code's epoch against the baseline's, same P
            out[key]["current_over_baseline"] = statistics.median(runs[str(p)]) / epoch
    return out


def bytes_per_epoch(args) -> dict:
    """Plain SGD: bytes per rank of an update epoch that does not score (one run of 9
    epochs scoring only after the last, less a run of that last epoch alone) against the
    model, and of an epoch that scores (that one-epoch run) against ``2 M (P - 1) / P``;
    the async engine's epochs (that score) against the same (with ``--baseline SRC``,
    also the async engine of the code in SRC)."""
    train = _data("mpi-n25000-d20000-k1000", 25_000, 20_000, 1000, "--test-fraction", "0.2")
    out = {}
    epochs = 9
    for n in args.ranks:
        if n == 1:
            continue
        one, many = (
            _train(n, train, "--epochs", str(e), "--tol", "-1", "--optimizer", "sgd",
                   "--eval-every", str(e))[-1]
            for e in (1, epochs)
        )  # fmt: skip
        per_epoch = (many["bytes_sent"] - one["bytes_sent"]) / (epochs - 1)
        model = many["model_bytes"]
        scoring = 2 * model * (n - 1) / n
        out[n] = {"update_bytes_per_epoch": per_epoch, "model_bytes": model,
                  "ratio": per_epoch / model, "scoring_epoch_bytes": one["bytes_sent"],
                  "scoring_epoch_ratio": one["bytes_sent"] / scoring, "epochs": epochs}  # fmt: skip
        variants = [("async", None)] + [("async_baseline", args.baseline)] * bool(args.baseline)
        for key, source in variants:
            # Tokens go where the ranks' timing sends them: the median over epochs 2-5.
            records = _train(n, train, "--engine", "async", "--epochs", "5", "--tol", "-1",
                             "--optimizer", "sgd", source=source)  # fmt: skip
            async_epoch = statistics.median(r["bytes_sent"] for r in records[1:])
            out[n][f"{key}_scoring_epoch_bytes"] = async_epoch
            out[n][f"{key}_scoring_epoch_ratio"] = async_epoch / scoring
    return out


def memory(args) -> dict:
    train = _data("mpi-2gb", 10_000, 140_000, 4000, "--feature-power", "0", "--class-power",
                  "0", "--nnz-per-row", "40", "--test-fraction", "0.2")  # fmt: skip
    out = {}
    for n in (1, 4):
        rec = _train(n, train, "--epochs", "1", "--optimizer", "sgd", "--dtype", "float32")[-1]
        out[n] = {"peak_rss_bytes": rec["peak_rss"], "model_bytes": rec["model_bytes"]}
    out["ratio_max_rank_p4_to_p1"] = max(out[4]["peak_rss_bytes"]) / max(out[1]["peak_rss_bytes"])
    # The asynchronous engine at P = 4 (16 tokens), also with rank 1 slowed 2x, where
    # tokens wait for the slow rank: two epochs, so that blocks travel home and out
    # again; with --baseline, the async engine of the code in SRC too.
    sources = [("", None)] + [("-baseline", args.baseline)] * bool(args.baseline)
    for suffix, source in sources:
        for key, extra in (("4-async", ()), ("4-async-straggler", ("--straggler", "1:2"))):
            rec = _train(4, train, "--epochs", "2", "--optimizer", "sgd", "--dtype", "float32",
                         "--engine", "async", *extra, source=source)[-1]  # fmt: skip
            peak = rec["peak_rss"]
            out[key + suffix] = {"peak_rss_bytes": peak, "model_bytes": rec["model_bytes"],
                                 "ratio_max_rank_to_p1": max(peak) / max(out[1]["peak_rss_bytes"]),
                                 "source": source}  # fmt: skip
    return out


def _optimum(train: Path, lam: float, cached_only: bool = False) -> float:
    """scikit-learn's optimum objective on ``train``, cached beside it with the file's
    SHA-256 and ``lam`` (a cache carried to another machine, whose generator wrote other
    data, is recomputed rather than trusted; with ``cached_only`` the run stops instead,
    exit status 3, as a short lease of a machine could not wait for it)."""
    cache = train.with_suffix(".optimum.json")
    digest = hashlib.sha256(train.read_bytes()).hexdigest()
    if cache.exists():
        cached = json.loads(cache.read_text())
        if cached.get("sha256") == digest and cached.get("lam") == lam:
            return cached["objective"]
        if not cached_only:
            print(f"{cache} is for other data or lam: recomputing", flush=True)
    if cached_only:
        print(f"no cached optimum for {train} at lam {lam}: stopping (--cached-optimum)",
              flush=True)  # fmt: skip
        raise SystemExit(3)
    from sklearn.linear_model import LogisticRegression

    from dsmlr.io import read_svmlight
    from dsmlr.objective import add_intercept_column, plain_objective

    data = read_svmlight(train)
    import numpy as np

    _classes, y = np.unique(data.y, return_inverse=True)
    # tol 1e-8 fixes the objective far more closely than the 1% being measured.
    clf = LogisticRegression(C=1 / (lam * len(y)), tol=1e-8, max_iter=5000).fit(data.X, y)
    W = np.hstack([clf.coef_, clf.intercept_[:, None]])
    best = plain_objective(W, add_intercept_column(data.X), y, lam, data.X.shape[1])
    cache.write_text(json.dumps({"objective": best, "sha256": digest, "lam": lam}))
    return best


def straggler(args) -> dict:
    """Time to within 1% of the optimum, sync against async, one rank slowed 2x.  The
    engines take turns within each repeat (as the P values do in :func:`scaling`); with
    ``--baseline SRC`` the async engine of the code in SRC takes a turn too."""
    lam, p, k = 1e-5, args.straggler_ranks, args.straggler_classes
    train = _data(f"mpi-k{k}", 25_000, 20_000, k, "--test-fraction", "0.2")
    best = _optimum(train, lam, args.cached_optimum)
    out = {"optimizer": args.optimizer, "ranks": p, "classes": k, "eval_every": args.eval_every}
    variants = [("sync", "sync", None), ("async", "async", None)]
    if args.baseline:
        variants.append(("async-baseline", "async", args.baseline))
    runs: dict[str, list] = {key: [] for key, _, _ in variants}
    traces: dict[str, list] = {key: [] for key, _, _ in variants}
    for _ in range(args.repeats):
        for key, engine, source in variants:
            records = _train(p, train, "--engine", engine, "--straggler", "1:2", "--lam",
                             str(lam), "--epochs", str(args.straggler_epochs), "--tol", "1e-6",
                             "--optimizer", args.optimizer, "--eval-every",
                             str(args.eval_every), source=source)  # fmt: skip
            hit = next((r["time"] for r in records if r["objective"] <= best * 1.01), None)
            runs[key].append(hit)
            traces[key].append([[r["time"], r["objective"]] for r in records])
            print(key, hit, flush=True)
    for key, times in runs.items():
        done = [t for t in times if t is not None]
        out[key] = {"seconds_to_1pct": statistics.median(done) if done else None,
                    "runs": times, "time_objective": traces[key]}  # fmt: skip
    s, a = out["sync"]["seconds_to_1pct"], out["async"]["seconds_to_1pct"]
    out["sync_over_async"] = s / a if s and a else None
    return out


EXPERIMENTS = {"scaling": scaling, "bytes": bytes_per_epoch, "memory": memory,
               "straggler": straggler}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(EXPERIMENTS), default=None)
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--optimizer", default="svrg", help="for scaling and straggler (svrg)")
    parser.add_argument("--scale-samples", type=int, default=25_000, help="for scaling")
    parser.add_argument("--scale-features", type=int, default=20_000, help="for scaling")
    parser.add_argument("--scale-classes", type=int, default=1000, help="for scaling")
    parser.add_argument("--blocks-per-rank", type=int, default=None, metavar="N",
                        help="for scaling, P > 1: class blocks per rank (the engine's "
                             "default); from two, a block travels while the next is "
                             "visited")  # fmt: skip
    parser.add_argument("--straggler-ranks", type=int, default=4, help="for straggler (4)")
    parser.add_argument("--straggler-classes", type=int, default=200,
                        help="for straggler (200)")  # fmt: skip
    parser.add_argument("--straggler-epochs", type=int, default=12,
                        help="for straggler: at most this many epochs (12)")  # fmt: skip
    parser.add_argument("--eval-every", type=int, default=1,
                        help="for straggler: score every E epochs (1)")  # fmt: skip
    parser.add_argument("--cached-optimum", action="store_true",
                        help="for straggler: stop (exit 3) where no cached scikit-learn "
                             "optimum matches the data, rather than compute one")  # fmt: skip
    parser.add_argument("--baseline", metavar="SRC", default=None,
                        help="for scaling (each P), straggler, memory and bytes (the async "
                             "engine): also run the package in SRC (another checkout's src "
                             "directory), interleaved")  # fmt: skip
    parser.add_argument("--out", default=str(HERE / "results" / "mpi"))
    args = parser.parse_args()
    import environment  # beside this script

    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform()},
        "environment": environment.describe(),
    }
    for name in args.only or sorted(EXPERIMENTS):
        print(f"running {name} ...", flush=True)
        results[name] = EXPERIMENTS[name](args)
        print(json.dumps(results[name], indent=1), flush=True)
    Path(args.out).parent.mkdir(exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
