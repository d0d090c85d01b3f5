"""The cost model (:mod:`dsmlr.plan`) against measured training runs.

For each configuration (in-process ``--workers 1`` and ``--workers 2``, ``mpiexec -n 2``;
plain SGD and SVRG; float64) the script trains ``--epochs`` epochs with ``--metrics`` and
compares, per rank and epoch (medians over epochs 2..E of a run, then over
``--repeats`` runs), the measured

* kernel compute (``compute_seconds``: update and gradient passes),
* scoring (``eval_seconds``: the scoring pass and ring, and the allreduce),
* communication (``comm_seconds``: ring shifts and the allreduce, waiting included), and
  the same less ``wait_seconds`` (the waiting for a neighbour, which the model leaves
  out),
* bytes sent (``bytes_sent``),
* epoch wall time (differences of ``time``),
* peak resident memory (largest rank's ``peak_rss`` after the last epoch),

with :func:`dsmlr.plan.plan_training`'s prediction.  The prediction uses

* kernel rates from :func:`dsmlr.calibration.calibrate`, measured right before each run with
  the run's block width (``K / B`` classes) and D, so that both see the same machine
  load (this development machine has 2 cores shared with other jobs);
* for MPI, the bandwidth and per-message latency of this host's loopback, measured with
  :meth:`dsmlr.comm.mpi.MPIComm.ring_shift` itself (a large and a one-value shift);
* for in-process workers, an infinite bandwidth (blocks pass by reference; only the
  bytes a network would carry are counted) and the latency of an in-process ring shift
  (thread barriers), measured the same way.

Memory: an in-process run keeps P workers and the whole training set (read before it is
sharded) in one process, so its prediction is ``base + P * (rows + row state + blocks)``
plus the CSR matrix once more; an MPI rank is predicted as :func:`dsmlr.memory.plan_memory`.

Run: ``python benchmarks/validate_plan.py [--repeats 3] [--epochs 4]``; writes
``benchmarks/results/plan.{json,md}``.  ``--probe-mpi`` is the helper the script runs
under ``mpiexec -n 2`` to measure the loopback.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_mpi
import environment

HERE = Path(__file__).resolve().parent
CACHE = HERE / "cache"
RESULTS = HERE / "results"
PY = sys.executable
#: The runs' dtype, passed to the training runs, the calibration and the plan alike (the
#: library's default is float32; float64 is kept so that results compare across commits).
DTYPE = "float64"
MPIEXEC = shutil.which("mpiexec", path=str(Path(PY).parent)) or "mpiexec"

#: The bar of the issue: each quantity within 25% of the measurement.
BAR = 0.25

#: (label, launcher, P): how each configuration runs.
CONFIGS = [("workers=1", "workers", 1), ("workers=2", "workers", 2), ("mpiexec -n 2", "mpi", 2)]


# -- loopback probes ---------------------------------------------------------------------


def _shift_seconds(comm, n_values: int, repeats: int) -> float:
    """Median seconds of one ring shift of ``n_values`` float64s (after a warm-up)."""
    buf = np.ones(n_values)
    times = []
    for i in range(repeats + 1):
        comm.barrier()
        t0 = time.perf_counter()
        buf = comm.ring_shift([buf])[0]
        if i:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _probe(comm, big_values: int) -> dict:
    """Bandwidth and per-message latency as the model counts messages."""
    from dsmlr.plan import CHUNK_BYTES

    small = _shift_seconds(comm, 1, 200)
    large = _shift_seconds(comm, big_values, 5)
    n_bytes = big_values * 8
    # A shift is 2 handshakes plus one message per chunk (dsmlr.plan's count).
    latency = small / 3
    messages = 2 + math.ceil(n_bytes / CHUNK_BYTES)
    wire = max(large - messages * latency, 1e-9)
    return {"latency": latency, "bandwidth": n_bytes / wire, "shift_bytes": n_bytes,
            "small_shift_seconds": small, "large_shift_seconds": large}  # fmt: skip


def probe_mpi_main() -> None:
    """Run under ``mpiexec -n 2``: rank 0 prints the loopback's figures as JSON."""
    from dsmlr.comm.mpi import MPIComm

    comm = MPIComm()
    out = _probe(comm, 8 * 2**20)  # 64 MB, about one SVRG shift of the validation problem
    if comm.rank == 0:
        print(json.dumps(out))


def probe_inprocess() -> dict:
    from dsmlr.comm import run_workers

    out = run_workers(2, lambda comm: _probe(comm, 8 * 2**20))[0]
    # Blocks pass by reference: the large shift costs what the small one does.
    out["bandwidth"] = math.inf
    return out


def _child(*args: str, mpi: int = 0) -> dict:
    """Run this script with ``args`` in a child process; return the JSON it prints.

    Everything big happens in children: Linux carries a process's peak RSS across
    ``exec``, so a parent that had held the calibration's arrays would pass its peak on
    to every training run it starts (their ``peak_rss`` would read the parent's).
    """
    cmd = [PY, __file__, *args]
    if mpi:
        cmd = [MPIEXEC, "-n", str(mpi), *cmd]
    run = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(run.stdout.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> None:
    """The child-process side of :func:`_child`."""
    if args.probe_mpi:
        probe_mpi_main()
    elif args.probe_inprocess:
        print(json.dumps(probe_inprocess()))
    elif args.calibrate_json:
        from dsmlr.calibration import calibrate

        print(json.dumps(calibrate(**json.loads(args.calibrate_json)).__dict__))
    elif args.stats:
        from dsmlr.io import load_dataset

        data = load_dataset(args.stats)
        print(
            json.dumps(
                {
                    "n_samples": data.X.shape[0],
                    "n_features": data.X.shape[1],
                    "nnz": int(data.X.nnz),
                    "n_classes": len(np.unique(data.y)),
                }
            )
        )


# -- training runs -----------------------------------------------------------------------


def _data(name: str, samples: int, features: int, classes: int) -> Path:
    """The bench_mpi problem (20K training rows, 20K features, 1000 classes), cached."""
    return bench_mpi._data(name, samples, features, classes, "--test-fraction", "0.2")


def _train(launcher: str, p: int, train: Path, optimizer: str, epochs: int) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "m.jsonl"
        cmd = [PY, "-m", "dsmlr", "train", str(train), "--quiet", "--seed", "0",
               "--model", str(Path(tmp) / "model"), "--metrics", str(metrics),
               "--epochs", str(epochs), "--tol", "-1", "--optimizer", optimizer,
               "--dtype", DTYPE]  # fmt: skip
        cmd = [MPIEXEC, "-n", str(p), *cmd] if launcher == "mpi" else [*cmd, "--workers", str(p)]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return [json.loads(line) for line in metrics.read_text().splitlines()]


def measured(records: list[dict]) -> dict:
    """Per-epoch medians over epochs 2..E (the steady state), peak RSS after the last."""
    steady = records[1:]
    walls = [b["time"] - a["time"] for a, b in itertools.pairwise(records)]
    return {
        "kernel_seconds": statistics.median(r["compute_seconds"] for r in steady),
        "scoring_seconds": statistics.median(r["eval_seconds"] for r in steady),
        "comm_seconds": statistics.median(r["comm_seconds"] for r in steady),
        "transfer_seconds": statistics.median(
            r["comm_seconds"] - r["wait_seconds"] for r in steady
        ),
        "bytes_sent": statistics.median(r["bytes_sent"] for r in steady),
        "epoch_seconds": statistics.median(walls),
        "peak_rss": max(records[-1]["peak_rss"]),
    }


def predicted(plan, launcher: str, nnz: int, rows: int, itemsize: int) -> dict:
    """The model's figures for the quantities :func:`measured` reports."""
    from dsmlr.partition import ring_legs
    from dsmlr.plan import _ring_messages, _transfer

    P = plan.n_ranks
    # The scoring ring's own traffic (its shifts of the model, the last ring's of an
    # epoch, then the allreduce) is inside eval_seconds.
    legs, home = ring_legs(plan.optimizer == "svrg", True, P)
    shifts = legs[-1][1] + home if P > 1 else 0
    scoring_bytes = plan.model_bytes * shifts / P
    scoring_msgs = _ring_messages(shifts, plan.model_bytes / P) + (2 if P > 1 else 0)
    scoring_comm = _transfer(scoring_bytes, scoring_msgs, plan.bandwidth, plan.latency)
    mem = plan.memory
    if launcher == "workers":
        # One process: the whole CSR training set, then P workers' shards and state.
        whole = nnz * (itemsize + 4) + 8 * (rows + 1)
        memory = mem.base + whole + P * (mem.total - mem.base)
    else:
        memory = mem.total
    return {
        "kernel_seconds": plan.kernel_seconds,
        "scoring_seconds": plan.score_seconds + scoring_comm,
        "comm_seconds": plan.comm_seconds,
        "transfer_seconds": plan.comm_seconds,
        "bytes_sent": plan.bytes_sent,
        "epoch_seconds": plan.epoch_seconds,
        "peak_rss": memory,
    }


def _jsonable(net: dict) -> dict:
    return {**net, "bandwidth": None if math.isinf(net["bandwidth"]) else net["bandwidth"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--optimizers", nargs="+", default=["sgd", "svrg"])
    parser.add_argument("--configs", nargs="+", default=[c[0] for c in CONFIGS],
                        help="labels of CONFIGS to run")  # fmt: skip
    for flag in ("--probe-mpi", "--probe-inprocess"):
        parser.add_argument(flag, action="store_true", help=argparse.SUPPRESS)
    for flag in ("--calibrate-json", "--stats"):
        parser.add_argument(flag, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.probe_mpi or args.probe_inprocess or args.calibrate_json or args.stats:
        child_main(args)
        return
    env = environment.describe()

    from dsmlr.engines import n_class_blocks
    from dsmlr.engines.base import EngineConfig
    from dsmlr.plan import Throughput, plan_training

    train = _data("mpi-n25000-d20000-k1000", 25_000, 20_000, 1000)
    stats = _child("--stats", str(train))
    N, D, nnz, K = (stats[k] for k in ("n_samples", "n_features", "nnz", "n_classes"))
    probes = {"mpi": lambda: _child("--probe-mpi", mpi=2),
              "workers": lambda: _child("--probe-inprocess")}  # fmt: skip

    configs = [c for c in CONFIGS if c[0] in args.configs]
    runs: dict[str, list[dict]] = {}
    for repeat in range(args.repeats):
        rates: dict[tuple, object] = {}  # (block width, P) -> Throughput, fresh each repeat
        for label, launcher, P in configs:
            for optimizer in args.optimizers:
                cfg = EngineConfig(n_samples=N, n_features=D, n_classes=K)
                width = -(-K // n_class_blocks("sync", cfg, P))
                if (width, P) not in rates:
                    # P ranks share this host's two cores: calibrate P at a time.
                    settings = {
                        "n_rows": 5000,
                        "n_features": D,
                        "block_classes": width,
                        "nnz_per_row": round(nnz / N),
                        "ranks_per_host": P,
                        "dtype": DTYPE,
                    }
                    rates[width, P] = Throughput(**_child("--calibrate-json", json.dumps(settings)))
                net = probes[launcher]()  # the loopback as loaded as the run will see it
                plan = plan_training(
                    n_samples=N, n_features=D, n_classes=K, nnz=nnz, n_ranks=P,
                    bandwidth=net["bandwidth"], latency=net["latency"], optimizer=optimizer,
                    dtype=DTYPE, throughput=rates[width, P],
                )  # fmt: skip
                load = os.getloadavg()[0]
                records = _train(launcher, P, train, optimizer, args.epochs)
                got = measured(records)
                want = predicted(plan, launcher, nnz, N, np.dtype(DTYPE).itemsize)
                key = f"{label} {optimizer}"
                runs.setdefault(key, []).append({"measured": got, "predicted": want,
                                                 "load_before": load, "repeat": repeat,
                                                 "rates": plan.throughput.__dict__,
                                                 "network": _jsonable(net)})  # fmt: skip
                print(key, repeat, json.dumps({"measured": got, "predicted": want}), flush=True)

    summary = summarise(runs)
    out = {"environment": env,
           "problem": {"n_samples": N, "n_features": D, "n_classes": K, "nnz": nnz,
                       "dtype": DTYPE, "epochs": args.epochs},
           "bar": BAR, "summary": summary, "runs": runs, "cpu_count": os.cpu_count()}  # fmt: skip
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "plan.json").write_text(json.dumps(out, indent=1) + "\n")
    (RESULTS / "plan.md").write_text(markdown(out))
    print((RESULTS / "plan.md").read_text())


QUANTITIES = [
    ("kernel_seconds", "kernel compute (s)"),
    ("scoring_seconds", "scoring (s)"),
    ("comm_seconds", "communication (s)"),
    ("transfer_seconds", "comm. less waiting (s)"),
    ("bytes_sent", "bytes sent"),
    ("epoch_seconds", "epoch wall (s)"),
    ("peak_rss", "peak RSS (MB)"),
]


#: Quantities that are zero for one rank (the few µs measured there are bookkeeping).
NOTHING_MOVES = ("comm_seconds", "transfer_seconds", "bytes_sent")


def summarise(runs: dict[str, list[dict]]) -> dict:
    """Medians over repeats of each quantity, and the relative error of the prediction."""
    out = {}
    for key, reps in runs.items():
        row = {}
        for q, _ in QUANTITIES:
            m = statistics.median(r["measured"][q] for r in reps)
            p = statistics.median(r["predicted"][q] for r in reps)
            one_rank = key.startswith("workers=1 ")
            err = None if m <= 0 or (one_rank and q in NOTHING_MOVES) else (p - m) / m
            row[q] = {"measured": m, "predicted": p, "rel_error": err,
                      "within_bar": None if err is None else abs(err) <= BAR,
                      "measured_runs": [r["measured"][q] for r in reps],
                      "predicted_runs": [r["predicted"][q] for r in reps]}  # fmt: skip
        out[key] = row
    return out


def _fmt(q: str, v: float) -> str:
    if q == "peak_rss":
        return f"{v / 2**20:.0f}"
    if q == "bytes_sent":
        return f"{v:.4g}"
    return f"{v:.3g}"


def _median_net(out: dict, launcher: str, field: str) -> float:
    vals = [r["network"][field] for key, reps in out["runs"].items() for r in reps
            if (key.startswith("mpiexec") == (launcher == "mpi"))]  # fmt: skip
    return statistics.median(vals)


def summary_table(out: dict) -> list[str]:
    """One line per run: the relative error of each quantity (bold: outside the bar)."""
    lines = ["| run | " + " | ".join(label for _, label in QUANTITIES) + " |",
             "|---|" + "---|" * len(QUANTITIES)]  # fmt: skip
    for key, row in out["summary"].items():
        cells = []
        for q, _ in QUANTITIES:
            err = row[q]["rel_error"]
            if err is None:
                cells.append("n/a")
            else:
                cells.append(f"{err:+.0%}" if abs(err) <= BAR else f"**{err:+.0%}**")
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return lines


def markdown(out: dict) -> str:
    pr = out["problem"]
    n_runs = len(next(iter(out["runs"].values())))
    loads = [r["load_before"] for reps in out["runs"].values() for r in reps]
    lines = [
        "# Cost model against measured runs (`benchmarks/validate_plan.py`)",
        "",
        environment.summary(out["environment"]),
        "",
        f"Problem: {pr['n_samples']} training rows, {pr['n_features']} features, "
        f"{pr['n_classes']} classes, {pr['nnz']} non-zeros, {pr['dtype']}, "
        f"{pr['epochs']} epochs; figures per rank and epoch, medians of epochs 2-"
        f"{pr['epochs']} of a run, then the median of {n_runs} runs, on this project's "
        f"{out['cpu_count']}-core development machine, shared with other jobs (1-minute load "
        f"average before the runs: {min(loads):.1f} to {max(loads):.1f}). Predictions: "
        "`dsmlr.plan.plan_training` with kernel rates calibrated (`dsmlr.calibration.calibrate`, "
        "as many at once as the run has ranks) and the loopback measured with the "
        "communicators' own ring shift, both right before each run:",
        "",
        f"* MPI loopback: {_median_net(out, 'mpi', 'bandwidth') / 1e9:.2f} GB/s, "
        f"{_median_net(out, 'mpi', 'latency') * 1e6:.0f} µs per message (medians);",
        "* in-process: blocks pass by reference (bandwidth infinite), "
        f"{_median_net(out, 'workers', 'latency') * 1e6:.0f} µs per message (thread barriers).",
        "",
        f"Relative error = (predicted - measured) / measured; the bar is {BAR:.0%}. "
        "n/a: one rank sends nothing (the model says 0; the run measures a few µs of "
        "bookkeeping).",
        "",
        *summary_table(out),
        "",
        "Every figure (measured: median, and the range over the runs):",
        "",
        "| run | quantity | predicted | measured | measured range | error | within bar |",
        "|---|---|---|---|---|---|---|",
    ]
    met = total = 0
    for key, row in out["summary"].items():
        for q, label in QUANTITIES:
            cell = row[q]
            err = cell["rel_error"]
            if err is None:
                verdict, err_s = "n/a", "-"
            else:
                total += 1
                met += bool(cell["within_bar"])
                verdict, err_s = ("yes" if cell["within_bar"] else "**no**"), f"{err:+.0%}"
            spread = cell["measured_runs"]
            lines.append(f"| {key} | {label} | {_fmt(q, cell['predicted'])} | "
                         f"{_fmt(q, cell['measured'])} | {_fmt(q, min(spread))} - "
                         f"{_fmt(q, max(spread))} | {err_s} | {verdict} |")  # fmt: skip
    lines += ["", f"{met} of {total} comparisons within {BAR:.0%}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
