"""Fault campaign: kill one of 4 MPI ranks at a random point, then resume.

For each engine, ``--trials`` times: start ``mpiexec -n 4 dsmlr train`` with checkpoints,
wait a random time after its first checkpoint, ``kill -9`` a random rank, and measure how
long the job takes to end; then ``dsmlr train --resume`` and compare the final model with
an uninterrupted run of the same settings (synchronous engine: the same bytes;
asynchronous engine: the final objective within 0.5%).  Also checks that the watchdog
named the killed rank.  Linux only (finds the ranks' pids in ``/proc``).

    python benchmarks/fault_campaign.py [--trials 10] [--engines sync async]

Writes ``benchmarks/results/faults.md`` and ``faults.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
import environment  # noqa: E402
from rank_processes import rank_pid  # noqa: E402  (the tests' helper, found above)

BIN = Path(sys.executable).parent
MPIEXEC = shutil.which("mpiexec", path=str(BIN)) or shutil.which("mpiexec")
RANKS = 4


def dsmlr(args: list[str], cwd: Path, n: int | None = RANKS) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dsmlr", *args]
    if n is not None:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)


def final(model: Path) -> dict:
    return json.loads((model / "manifest.json").read_text())["history"][-1]


def same_blocks(a: Path, b: Path) -> bool:
    return all(f.read_bytes() == (b / f.name).read_bytes() for f in a.glob("block_*.npy"))


def trial(work: Path, engine: str, train: list[str], index: int, rng: random.Random) -> dict:
    ck = work / f"ck-{engine}-{index}"
    model = work / f"m-{engine}-{index}"
    cmd = [MPIEXEC, "-n", str(RANKS), sys.executable, "-m", "dsmlr", *train,
           "--checkpoint-dir", str(ck), "--model", str(model)]  # fmt: skip
    job = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not list(ck.glob("epoch-*")) and job.poll() is None:
        time.sleep(0.02)
    delay = rng.uniform(0.0, 3.0)
    time.sleep(delay)
    victim = rng.randrange(RANKS)
    pid = rank_pid(str(ck), victim, timeout=5)
    out = {"engine": engine, "trial": index, "rank": victim, "delay_s": round(delay, 2)}
    if pid is None or job.poll() is not None:
        job.wait()
        return {**out, "killed": False, "note": "the run ended before the kill"}
    os.kill(pid, signal.SIGKILL)
    t_kill = time.monotonic()
    _, stderr = job.communicate(timeout=300)
    out["exit_s"] = round(time.monotonic() - t_kill, 2)
    out["exit_code"] = job.returncode
    record = ck / "failure.txt"
    out["rank_named"] = record.is_file() and f"rank {victim} (pid {pid} " in record.read_text()
    out["named_on_stderr"] = f"rank {victim} (pid {pid} " in stderr
    done = sorted(p.name for p in ck.glob("epoch-*"))
    out["checkpoint"] = done[-1] if done else None
    resumed = dsmlr([*train, "--checkpoint-dir", str(ck), "--resume", "--model", str(model)], work)
    out["resume_exit_code"] = resumed.returncode
    out["killed"] = True
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--engines", nargs="+", default=["sync", "async"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results")
    args = parser.parse_args()
    if MPIEXEC is None or not Path("/proc/self/environ").exists():
        print("needs mpiexec (pip install '.[mpi]') and Linux /proc", file=sys.stderr)
        return 1
    env = environment.describe()
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        gen = ["generate", "f", "--samples", "10000", "--features", "3000", "--classes", "200",
               "--seed", "1"]  # fmt: skip
        assert dsmlr(gen, work, n=None).returncode == 0
        for engine in args.engines:
            train = ["train", "f.train.svm", "--epochs", "10", "--tol", "0", "--seed", "3",
                     "--engine", engine, "--quiet"]  # fmt: skip
            base = dsmlr([*train, "--model", str(work / f"base-{engine}")], work)
            assert base.returncode == 0, base.stderr
            reference = final(work / f"base-{engine}")["objective"]
            for i in range(args.trials):
                row = trial(work, engine, train, i, rng)
                if row["killed"] and row["resume_exit_code"] == 0:
                    got = final(work / f"m-{engine}-{i}")
                    row["final_objective"] = got["objective"]
                    row["relative_gap"] = abs(got["objective"] - reference) / reference
                    row["identical_model"] = same_blocks(work / f"base-{engine}",
                                                         work / f"m-{engine}-{i}")  # fmt: skip
                row["reference_objective"] = reference
                rows.append(row)
                print(json.dumps(row), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    record = {"environment": env, "trials": rows}
    (args.out / "faults.json").write_text(json.dumps(record, indent=1) + "\n")
    (args.out / "faults.md").write_text(report(rows, env))
    print(report(rows, env))
    return 0


def report(rows: list[dict], env: dict) -> str:
    lines = [
        "# Fault campaign (`benchmarks/fault_campaign.py`)",
        "",
        environment.summary(env),
        "",
        f"`mpiexec -n {RANKS} dsmlr train` (10K rows of which 8K train, 3000 features, 200 "
        "classes, 10 epochs, a checkpoint every epoch), one random rank killed with "
        "`kill -9` at a random time after the first checkpoint, then `--resume`; compared "
        "with an uninterrupted run of the same settings.",
        "",
        "| engine | trial | rank | exit after kill (s) | exit code | rank named | resumed from "
        "| resume exit | final objective gap | same model |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if not r["killed"]:
            lines.append(f"| {r['engine']} | {r['trial']} | {r['rank']} | - | - | - | - | - | "
                         f"{r.get('note', '')} | - |")  # fmt: skip
            continue
        lines.append(
            f"| {r['engine']} | {r['trial']} | {r['rank']} | {r['exit_s']} | {r['exit_code']} | "
            f"{'yes' if r['rank_named'] else 'no'} | {r['checkpoint']} | "
            f"{r['resume_exit_code']} | {r.get('relative_gap', float('nan')):.2e} | "
            f"{'yes' if r.get('identical_model') else 'no'} |"
        )
    lines.append("")
    for engine in sorted({r["engine"] for r in rows}):
        done = [r for r in rows if r["engine"] == engine and r["killed"]]
        within = all(r["exit_s"] < 30 and r["exit_code"] != 0 for r in done)
        if engine == "sync":
            ok = all(r.get("identical_model") for r in done)
            bar = "the resumed model is the uninterrupted one, byte for byte"
        else:
            ok = all(r.get("relative_gap", 1.0) <= 5e-3 for r in done)
            bar = "the final objective within 0.5% of the uninterrupted run's"
        lines.append(
            f"* {engine}: {len(done)} kills; every job ended within 30 s with a non-zero "
            f"status: {'yes' if within else 'NO'}; {bar}: {'yes' if ok else 'NO'}; the "
            f"watchdog named the killed rank {sum(r['rank_named'] for r in done)} of "
            f"{len(done)} times."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
