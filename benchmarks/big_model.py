"""A model past 2^31 coefficients trained on one machine under ``mpiexec``.

The problem is generated once into ``benchmarks/cache/big/`` (``dsmlr generate``,
seed 0): 250K rows (200K to train, 50K held out) x 1M features x 2200 classes, about 50
non-zeros a row: 2.2 billion coefficients, 8.8 GB in float32, past Spark MLlib's 2^31
limit and more than half this development machine's 24 GB.  For each ``--ranks`` P:

* **predicted**: ``dsmlr plan --calibrate --ranks-per-host P`` (this machine's kernel
  rates with P ranks sharing its cores) with the loopback's bandwidth and latency
  measured by ``validate_plan.py``'s probe (the communicator's own ring shift);
* **train**: ``mpiexec -n P dsmlr train`` with every default (SVRG, float32, the sync
  engine), ``--epochs E``, a checkpoint every epoch, ``--metrics`` and ``--model``.
  Epoch time is the median over epochs 2..E of the wall time between records less the
  previous epoch's ``checkpoint_seconds`` (the plan counts no checkpoints); memory is
  each rank's whole-process peak (the metrics' ``peak_rss`` covers training only);
* **read**: each rank loads its blocks of the last checkpoint
  (:func:`dsmlr.distributed.load_sharded`, what evaluate, predict and resume read);
* **resume**: ``--resume --epochs E+1`` must continue at epoch E+1;
* **evaluate** and **predict --top-k 5** under ``mpiexec -n P``: every rank's peak
  memory, which stays below the model's size (no rank holds the whole model).

``--peers`` runs scikit-learn (lbfgs), PyTorch on the CPU (Adam on a dense weight
matrix, float32) and Spark MLlib (local mode, multinomial L-BFGS) on the same training
set through the benchmark suite's adapters, each in a child process capped at
``--peer-memory`` GiB (address space for Python, driver heap for Spark) and
``--peer-seconds``: what each does at this size, an error or its time and memory.

Run: ``python benchmarks/big_model.py [--ranks 2 4] [--epochs 3] [--peers]``; writes
``benchmarks/results/big_model.{json,md}``.  Needs about 21 GB of free memory; run it
on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import environment  # noqa: E402
import validate_plan  # noqa: E402
from adapters.common import describe_failure  # noqa: E402

PY = sys.executable
MPIEXEC = validate_plan.MPIEXEC
CACHE = HERE / "cache" / "big"
RESULTS = HERE / "results"
SAMPLES, FEATURES, CLASSES, TEST_FRACTION = 250_000, 1_000_000, 2200, 0.2
LAM = 1e-4  # dsmlr train's default, used for the peers too
MEMORY_BAR, TIME_BAR = 0.15, 0.25
PSS_EVERY = 0.5  # seconds between samples of a rank's proportional set size
PEERS = ("sklearn-lbfgs", "torch-adam", "spark-lbfgs")


def _data(samples: int, features: int, classes: int) -> tuple[Path, Path]:
    """The generated problem, cached (``big`` is the default size)."""
    default = (samples, features, classes) == (SAMPLES, FEATURES, CLASSES)
    prefix = CACHE / ("big" if default else f"gen-{samples}-{features}-{classes}")
    train, test = Path(f"{prefix}.train.svm"), Path(f"{prefix}.test.svm")
    if not (train.exists() and test.exists()):
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [PY, "-m", "dsmlr", "generate", str(prefix), "--samples", str(samples),
             "--features", str(features), "--classes", str(classes),
             "--test-fraction", str(TEST_FRACTION), "--seed", "0"],
            check=True,
        )  # fmt: skip
    return train, test


# -- running ranks -----------------------------------------------------------------------


def _pss(pid: int) -> int:
    """A process's proportional set size in bytes (0 where Linux does not say): its
    private pages and its share of each page it shares with others."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_wrap_main(out_dir: str, cmd: list[str]) -> None:
    """Under mpiexec: run ``cmd`` and write its peak RSS, peak PSS (sampled every
    :data:`PSS_EVERY` seconds) and wall time for this rank.

    Where the ranks share the blocks' memory, a rank's RSS counts every page of the
    shared window it touched, other ranks' blocks included; its PSS counts each such
    page over the ranks that map it, so the ranks' PSS add up to the host's memory.
    """
    rank = os.environ.get("PMI_RANK") or os.environ.get("OMPI_COMM_WORLD_RANK") or "0"
    t0 = time.perf_counter()
    # The MPI launcher's descriptors must reach the child, which is the MPI process.
    child = subprocess.Popen(cmd, close_fds=False)
    peak_pss = 0
    while child.poll() is None:
        peak_pss = max(peak_pss, _pss(child.pid))
        time.sleep(PSS_EVERY)
    code = child.returncode
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    record = {"rank": int(rank), "peak_rss": peak, "peak_pss": peak_pss,
              "wall": time.perf_counter() - t0}  # fmt: skip
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(record))
    sys.exit(code)


def _env(copy: bool) -> dict:
    """The environment of the ranks: ``copy`` has them copy the blocks at every shift
    rather than share them (``DSMLR_SHARED_MEMORY=0``)."""
    return {**os.environ, **({"DSMLR_SHARED_MEMORY": "0"} if copy else {})}


def _mpi(p: int, args: list[str], copy: bool, timeout: float = 3600) -> dict:
    """``mpiexec -n p python -m dsmlr ARGS``: stdout, wall and every rank's peak RSS
    and PSS."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [MPIEXEC, "-n", str(p), PY, __file__, "--rss-wrap", tmp, "--",
               PY, "-m", "dsmlr", *args]  # fmt: skip
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(copy))
        wall = time.perf_counter() - t0
        if run.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:1])} failed: {run.stderr.strip()[-2000:]}")
        ranks = sorted(
            (json.loads(f.read_text()) for f in Path(tmp).glob("rank*.json")),
            key=lambda r: r["rank"],
        )
    return {
        "stdout": run.stdout, "wall": wall, "peak_rss": [r["peak_rss"] for r in ranks],
        "peak_pss": [r["peak_pss"] for r in ranks],
    }  # fmt: skip


def read_model_main(path: str) -> None:
    """Under mpiexec: time this rank's read of its blocks of model directory ``path``."""
    from dsmlr.comm.mpi import MPIComm
    from dsmlr.distributed import load_sharded

    comm = MPIComm()
    comm.barrier()
    t0 = time.perf_counter()
    model = load_sharded(path, comm)
    seconds = time.perf_counter() - t0
    held = sum(int(W.nbytes) for _, W in model.blocks)
    everyone = comm.allgather({"seconds": seconds, "bytes": held})
    if comm.rank == 0:
        print(json.dumps(everyone))


# -- one P -------------------------------------------------------------------------------


def _plan(p: int, stats: dict, loopback: dict, epochs: int, copy: bool) -> dict:
    """``dsmlr plan`` for P ranks on this host: blocks copied over the loopback, or
    handed on in shared memory (no bytes copied: ``--bandwidth inf``)."""
    bandwidth = loopback["bandwidth"] if copy else "inf"
    cmd = [PY, "-m", "dsmlr", "plan", "--samples", str(stats["n_samples"]),
           "--features", str(stats["n_features"]), "--classes", str(stats["n_classes"]),
           "--nnz", str(stats["nnz"]), "--ranks", str(p), "--calibrate",
           "--ranks-per-host", str(p), "--bandwidth", str(bandwidth),
           "--latency", str(loopback["latency"]), "--epochs", str(epochs), "--json"]  # fmt: skip
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)[0]


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _epoch_seconds(records: list[dict]) -> list[float]:
    """Wall seconds of epochs 2..E, the previous epoch's checkpoint write left out."""
    return [
        b["time"] - a["time"] - a.get("checkpoint_seconds", 0.0)
        for a, b in itertools.pairwise(records)
    ]


def run_ranks(p: int, train: Path, test: Path, stats: dict, loopback: dict, epochs: int,
              work: Path, copy: bool) -> dict:  # fmt: skip
    plan = _plan(p, stats, loopback, epochs, copy)
    model, ckpt, metrics = work / f"model-p{p}", work / f"ckpt-p{p}", work / f"m-p{p}.jsonl"
    for old in (model, ckpt, metrics):
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    common = ["--quiet", "--seed", "0", "--checkpoint-dir", str(ckpt)]
    trained = _mpi(p, ["train", str(train), "--epochs", str(epochs), "--model", str(model),
                       "--metrics", str(metrics), *common], copy)  # fmt: skip
    records = _records(metrics)
    steady = _epoch_seconds(records)
    last_ckpt = sorted(ckpt.glob("epoch-*"))[-1]
    read = subprocess.run(
        [MPIEXEC, "-n", str(p), PY, __file__, "--read-model", str(last_ckpt)],
        check=True, capture_output=True, text=True, env=_env(copy),
    )  # fmt: skip
    reads = json.loads(read.stdout.strip().splitlines()[-1])
    resumed_metrics = work / f"m-p{p}-resumed.jsonl"
    resumed_metrics.unlink(missing_ok=True)
    resumed = _mpi(
        p,
        ["train", str(train), "--epochs", str(epochs + 1), "--resume", "--model", str(model),
         "--metrics", str(resumed_metrics), *common],
        copy,
    )  # fmt: skip
    resumed_records = _records(resumed_metrics)
    evaluated = _mpi(p, ["evaluate", "--model", str(model), str(test)], copy)
    predictions = work / f"pred-p{p}.tsv"
    predicted = _mpi(p, ["predict", "--model", str(model), "--top-k", "5",
                         "--out", str(predictions), str(test)], copy)  # fmt: skip
    with open(predictions) as f:
        n_predicted = sum(1 for _ in f)
    block_files = sorted(model.glob("block_*.npy"))
    out = {
        "ranks": p,
        "blocks": "copied" if copy else "shared",
        "plan": {
            "memory": plan["memory"]["total"],
            "epoch_seconds": plan["epoch_seconds"],
            "model_bytes": plan["model_bytes"],
            "throughput": plan["throughput"],
        },
        "train": {
            "wall": trained["wall"],
            "peak_rss": trained["peak_rss"],
            "peak_pss": trained["peak_pss"],
            "training_peak_rss": records[-1]["peak_rss"],
            "epoch_seconds": steady,
            "epoch_seconds_median": statistics.median(steady),
            "objective": [r["objective"] for r in records],
            "train_accuracy": [r["train_accuracy"] for r in records],
            "checkpoint_seconds": [r.get("checkpoint_seconds") for r in records],
            "bytes_sent": [r["bytes_sent"] for r in records],
        },
        "model_files": [f.name for f in block_files],
        "model_file_bytes": [f.stat().st_size for f in block_files],
        "checkpoint_read": reads,
        "resume": {
            "wall": resumed["wall"],
            "epochs": [r["epoch"] for r in resumed_records],
            "objective": [r["objective"] for r in resumed_records],
            "peak_rss": resumed["peak_rss"],
            "peak_pss": resumed["peak_pss"],
        },
        "evaluate": {
            "wall": evaluated["wall"],
            "peak_rss": evaluated["peak_rss"],
            "peak_pss": evaluated["peak_pss"],
            "output": evaluated["stdout"].strip(),
        },
        "predict": {
            "wall": predicted["wall"],
            "peak_rss": predicted["peak_rss"],
            "peak_pss": predicted["peak_pss"],
            "rows_written": n_predicted,
        },
    }
    shutil.rmtree(ckpt, ignore_errors=True)
    return out


# -- peers -------------------------------------------------------------------------------


def peer_main(method: str, train: str, test: str, seconds: float, memory_gib: float) -> None:
    """In a child process: run ``method`` on the problem; print what happened as JSON."""
    import traceback

    from adapters import Skipped, run_method
    from dsmlr.io import load_dataset
    from problems import Data

    t0 = time.perf_counter()
    out: dict = {"method": method}
    try:
        tr, te = load_dataset(train), load_dataset(test)
        out["load_seconds"] = time.perf_counter() - t0
        data = Data(tr.X.astype("float64").tocsr(), tr.y.astype("int64"),
                    te.X.astype("float64").tocsr(), te.y.astype("int64"))  # fmt: skip
        # The JVM needs room beside its heap, and the data's Python copy is held too.
        spark = method.startswith("spark")
        extra = {"driver_memory": f"{max(1, int(memory_gib) - 4)}g"} if spark else {}
        if not spark:
            cap = int(memory_gib * 2**30)
            resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
        t1 = time.perf_counter()
        res = run_method(method, data, lam=LAM, fit_intercept=True, time_limit=seconds,
                         stop_at=None, seed=0, targets=(), **extra)  # fmt: skip
        out |= {"outcome": "ran", "seconds": time.perf_counter() - t1, "result": res.as_dict()}
    except Skipped as skip:
        out |= {"outcome": "skipped", "error": str(skip)}
    except BaseException as exc:  # what the peer does at this size is the measurement
        last = traceback.format_exception_only(type(exc), exc)[-1].strip()
        out |= {"outcome": "failed", "error": last[:600],
                "seconds": time.perf_counter() - t0}  # fmt: skip
    out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    out["peak_rss_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    print(json.dumps(out))


def run_peer(method: str, train: Path, test: Path, seconds: float, memory_gib: float) -> dict:
    cmd = [PY, "-X", "faulthandler", __file__, "--peer", method, "--peer-seconds", str(seconds),
           "--peer-memory", str(memory_gib), "--train", str(train),
           "--test", str(test)]  # fmt: skip
    guard = seconds + 1800  # loading the data and building Spark's DataFrame come first
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, capture_output=True, text=True, timeout=guard)
    except subprocess.TimeoutExpired:
        return {"method": method, "outcome": "failed", "error": f"killed after {guard:.0f} s"}
    lines = [ln for ln in run.stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        what = describe_failure(run.returncode, run.stderr)
        return {"method": method, "outcome": "failed", "error": what[:600],
                "wall": time.perf_counter() - t0}  # fmt: skip
    out = json.loads(lines[-1])
    out["wall"] = time.perf_counter() - t0
    return out


# -- report ------------------------------------------------------------------------------


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def _mem(values: list[int]) -> str:
    return " / ".join(_gib(v) for v in values)


def _err(measured: float, predicted: float) -> str:
    return f"{(predicted - measured) / measured:+.0%}"


def _peaks(r: dict, part: dict) -> list[int]:
    """Every rank's peak memory in a run's ``part``: its PSS where the ranks share the
    blocks (its RSS counts the other ranks' blocks it read), else its RSS."""
    return part["peak_pss"] if r.get("blocks") == "shared" else part["peak_rss"]


def markdown(results: dict) -> str:
    s = results["problem"]
    lines = [
        "# A model past 2^31 coefficients on one machine (`benchmarks/big_model.py`)",
        "",
        environment.summary(results["environment"]),
        "",
        f"Problem: `dsmlr generate` seed 0, {s['n_samples']} training rows, "
        f"{s['n_features']} features, {s['n_classes']} classes, {s['nnz']} non-zeros: "
        f"{s['n_classes'] * s['n_features'] / 1e9:.2f} billion coefficients "
        f"({_gib(s['n_classes'] * (s['n_features'] + 1) * 4)} in float32). dsmlr with every "
        f"default (SVRG, float32, sync engine, lam = {LAM}), {results['epochs']} epochs, a "
        "checkpoint every epoch. Loopback measured by the communicator's own ring shift: "
        f"{results['loopback']['bandwidth'] / 1e9:.2f} GB/s, "
        f"{results['loopback']['latency'] * 1e6:.0f} us a message. Blocks 'shared': the "
        "ranks keep them in a shared-memory window and a shift copies nothing (the "
        "default on one host); 'copied': `DSMLR_SHARED_MEMORY=0`. Predictions: `dsmlr "
        "plan --calibrate --ranks-per-host P` with that loopback where the blocks are "
        "copied, `--bandwidth inf` where they are shared. Measured memory: each rank's "
        "peak resident set (RSS) where the blocks are copied; where they are shared, its "
        "peak proportional set (PSS, sampled every "
        f"{PSS_EVERY:g} s), which counts a page of the window over the ranks that map it "
        "(the RSS counts every page of other ranks' blocks a rank read). Error = "
        f"(predicted - measured) / measured; bars {MEMORY_BAR:.0%} (memory) and "
        f"{TIME_BAR:.0%} (epoch).",
        "",
        "| P | blocks | peak memory a rank (measured, largest) | plan | error | peak RSS "
        "(largest) | epoch (s, median of 2..E) | plan | error | objective by epoch | "
        "checkpoint write (s) | checkpoint read (s, slowest rank) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        t, plan = r["train"], r["plan"]
        peak = max(_peaks(r, t))
        ckpt = [round(c, 1) for c in t["checkpoint_seconds"] if c is not None]
        read = max(x["seconds"] for x in r["checkpoint_read"])
        epoch = t["epoch_seconds_median"]
        lines.append(
            f"| {r['ranks']} | {r.get('blocks', 'copied')} | {_gib(peak)} | "
            f"{_gib(plan['memory'])} | {_err(peak, plan['memory'])} | "
            f"{_gib(max(t['peak_rss']))} | {epoch:.1f} | "
            f"{plan['epoch_seconds']:.1f} | {_err(epoch, plan['epoch_seconds'])}"
            f" | {', '.join(f'{v:.4f}' for v in t['objective'])} | "
            f"{', '.join(map(str, ckpt))} | {read:.1f} |"
        )
    lines += [
        "",
        "After training, under the same `mpiexec -n P`: the model directory, resuming from "
        "the last checkpoint for one more epoch, `dsmlr evaluate` and `dsmlr predict "
        "--top-k 5` on the held-out rows. Peak memory is every rank's, in rank order (PSS "
        "where the blocks are shared); the whole model is "
        f"{_gib(results['runs'][0]['plan']['model_bytes']) if results['runs'] else '-'}.",
        "",
        "| P | model files (GB each) | resume: epochs run, objective | resume peak memory | "
        "evaluate: wall (s), peak memory | predict: wall (s), rows, peak memory |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["runs"]:
        files = ", ".join(f"{n / 1e9:.2f}" for n in r["model_file_bytes"])
        res, ev, pr = r["resume"], r["evaluate"], r["predict"]
        lines.append(
            f"| {r['ranks']} | {len(r['model_files'])}: {files} | {res['epochs']}, "
            f"{', '.join(f'{v:.4f}' for v in res['objective'])} | {_mem(_peaks(r, res))} | "
            f"{ev['wall']:.0f}, {_mem(_peaks(r, ev))} | {pr['wall']:.0f}, "
            f"{pr['rows_written']}, {_mem(_peaks(r, pr))} |"
        )
    if results["runs"]:
        lines += ["", "`dsmlr evaluate` printed (P = " + str(results["runs"][0]["ranks"]) + "):",
                  "", "```", results["runs"][0]["evaluate"]["output"], "```"]  # fmt: skip
    if results.get("peers"):
        lines += [
            "",
            f"Peers on the same training set, each in a child process capped at "
            f"{results['peer_memory_gib']:g} GiB (address space; Spark: driver heap) and "
            f"{results['peer_seconds']:g} s of fitting:",
            "",
            "| method | outcome | seconds | peak memory | what happened |",
            "|---|---|---|---|---|",
        ]
        for p in results["peers"]:
            res = p.get("result") or {}
            trace = res.get("trace") or []
            what = p.get("error") or (
                f"{len(trace)} trace point(s), last objective {trace[-1]['objective']:.4f}"
                if trace
                else "no trace point"
            )
            peak = max(p.get("peak_rss", 0), p.get("peak_rss_children", 0))
            secs = p.get("seconds")
            lines.append(
                f"| {p['method']} | {p['outcome']} | "
                f"{'-' if secs is None else f'{secs:.0f}'} | {_gib(peak) if peak else '-'} | "
                f"{what.replace('|', '/')} |"
            )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", type=int, nargs="+", default=[2, 4])
    ap.add_argument("--samples", type=int, default=SAMPLES, help="generated rows (250K)")
    ap.add_argument("--features", type=int, default=FEATURES, help="features (1M)")
    ap.add_argument("--classes", type=int, default=CLASSES, help="classes (2200)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--peers", action="store_true", help="also run the peers")
    ap.add_argument("--peers-only", action="store_true", help="run the peers, no dsmlr")
    ap.add_argument("--peer-seconds", type=float, default=600.0)
    ap.add_argument("--peer-memory", type=float, default=20.0, metavar="GIB")
    ap.add_argument(
        "--copy",
        action="store_true",
        help="the ranks copy the blocks at every shift (DSMLR_SHARED_MEMORY=0)",
    )
    ap.add_argument("--work", default=str(CACHE / "runs"), help="model and checkpoint dir")
    # helpers run by this script in child processes
    ap.add_argument("--rss-wrap", help=argparse.SUPPRESS)
    ap.add_argument("--read-model", help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--train", help=argparse.SUPPRESS)
    ap.add_argument("--test", help=argparse.SUPPRESS)
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.rss_wrap:
        rss_wrap_main(args.rss_wrap, [c for c in args.cmd if c != "--"])
        return
    if args.read_model:
        read_model_main(args.read_model)
        return
    if args.peer:
        peer_main(args.peer, args.train, args.test, args.peer_seconds, args.peer_memory)
        return

    train, test = _data(args.samples, args.features, args.classes)
    stats = validate_plan._child("--stats", str(train))
    results: dict = {
        "environment": environment.describe(), "problem": stats, "epochs": args.epochs,
        "runs": [], "peers": [], "peer_seconds": args.peer_seconds,
        "peer_memory_gib": args.peer_memory,
    }  # fmt: skip
    results["loopback"] = validate_plan._child("--probe-mpi", mpi=2)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not args.peers_only:
        for p in args.ranks:
            print(f"P = {p} ...", flush=True)
            results["runs"].append(run_ranks(p, train, test, stats, results["loopback"],
                                             args.epochs, work, args.copy))  # fmt: skip
            print(json.dumps(results["runs"][-1]["train"], indent=1), flush=True)
    if args.peers or args.peers_only:
        for method in PEERS:
            print(f"{method} ...", flush=True)
            results["peers"].append(
                run_peer(method, train, test, args.peer_seconds, args.peer_memory)
            )
            print(json.dumps(results["peers"][-1])[:800], flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "big_model.json").write_text(json.dumps(results, indent=1) + "\n")
    (RESULTS / "big_model.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
