"""SVRG's anchor held as weights against the rows' largest anchor probabilities.

``python benchmarks/svrg_anchor.py [--problems ...] [--workers 1 4] [--epochs 10]``

For each problem, worker count and engine, one run a fresh process per anchor
(``EngineConfig.svrg_anchor``: ``"weights"``, the anchor weights travelling with every
block, or ``"probabilities"``, each rank's table of its rows' anchor probabilities of at
least ``dsmlr.kernels.anchor_table.KEEP``) records the exact objective after every epoch,
the process's peak memory and the bytes the ring moved.  The table gives epochs and
seconds to 0.1% and 1e-4 of the optimum (``benchmarks/optimum.py``), seconds per epoch,
peak memory and bytes per epoch, and which anchor ``"auto"`` picks for the problem.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from environment import describe, summary  # noqa: E402
from optimum import cached_optimum  # noqa: E402
from parallel_convergence import reached  # noqa: E402

ANCHORS = ("weights", "probabilities")


def _child(spec: dict) -> dict:
    """One training run as ``spec`` says, through the in-process engines."""
    import numpy as np

    from dsmlr.engines.base import EngineConfig
    from dsmlr.kernels.anchor_table import uses_tables
    from dsmlr.kernels.base import training_layout
    from dsmlr.training import train_embedded
    from problems import get_problem

    problem = get_problem(spec["problem"])
    data = problem.load()
    X = training_layout(data.X_train, np.float32)
    y = np.asarray(data.y_train, dtype=np.int64)
    n_classes = int(y.max()) + 1
    cfg = EngineConfig(
        n_samples=X.shape[0], n_features=X.shape[1], n_classes=n_classes,
        fit_intercept=problem.fit_intercept, lam=problem.lam, max_epochs=spec["epochs"],
        tol=0.0, eta=2.0, batch_size=1, dtype=np.float32, seed=spec["seed"],
        svrg_anchor=spec["anchor"],
    )  # fmt: skip
    auto = uses_tables("auto", cfg.n_samples, n_classes, cfg.n_columns, 4, True)
    result = train_embedded(X, y, cfg, spec["workers"], spec["engine"])
    records = [
        {"epoch": r.epoch, "time": r.time, "objective": r.objective, "bytes": r.bytes_sent,
         "peak": max(r.peak_rss)}
        for r in result.history
    ]  # fmt: skip
    return {"records": records, "auto": "probabilities" if auto else "weights"}


def _run(spec: dict) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE)
    if out.returncode != 0:
        raise RuntimeError(f"run {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+",
                        default=["debian-source", "debian-files", "small", "dense"])  # fmt: skip
    parser.add_argument("--workers", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--engines", nargs="+", default=["sync"])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "svrg_anchor")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    from problems import get_problem

    result = {"environment": describe(), "command": " ".join(sys.argv), "problems": {}}
    lines = ["# SVRG's anchor: weights against probability tables (`benchmarks/svrg_anchor.py`)",
             "", summary(result["environment"]), "", f"Command: `{result['command']}`", "",
             "One run per row (float32, SVRG, eta 2, in-process workers).  Epochs and "
             "seconds to a relative gap of the optimum; peak: the process's peak resident "
             "memory; bytes: ring payload per epoch and rank after the first epoch.",
             ""]  # fmt: skip
    for name in args.problems:
        problem = get_problem(name)
        cached = cached_optimum(problem)
        if cached is None:
            sys.exit(f"no cached optimum for {name}: run benchmarks/optimum.py {name} first")
        optimum = cached["objective"]
        rows = []
        lines += [f"## {name}", "", f"{problem.description}; lam = {problem.lam:g}.", "",
                  "| engine | P | anchor | to 0.1% | to 1e-4 | s to 0.1% | s to 1e-4 "
                  "| s/epoch | peak MiB | MiB/epoch | gap at the end |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for engine in args.engines:
            for p in args.workers:
                for anchor in ANCHORS:
                    spec = {"problem": name, "workers": p, "engine": engine, "anchor": anchor,
                            "epochs": args.epochs, "seed": args.seed}  # fmt: skip
                    run = _run(spec)
                    recs = run["records"]
                    hit3 = reached(recs, optimum, 1e-3)
                    hit4 = reached(recs, optimum, 1e-4)
                    row = {
                        **spec, "auto": run["auto"], "records": recs,
                        "epochs_0.001": hit3[0] if hit3 else None,
                        "epochs_0.0001": hit4[0] if hit4 else None,
                        "seconds_0.001": hit3[1] if hit3 else None,
                        "seconds_0.0001": hit4[1] if hit4 else None,
                        "seconds_per_epoch": recs[-1]["time"] / len(recs),
                        "peak_mib": max(r["peak"] for r in recs) / 2**20,
                        "mib_per_epoch": (sum(r["bytes"] for r in recs[1:]) / max(len(recs) - 1, 1))
                        / 2**20,
                        "final_gap": (recs[-1]["objective"] - optimum) / optimum,
                    }  # fmt: skip
                    rows.append(row)
                    mark = " (auto)" if anchor == run["auto"] else ""
                    lines.append(
                        f"| {engine} | {p} | {anchor}{mark} | {_fmt(row['epochs_0.001'])} "
                        f"| {_fmt(row['epochs_0.0001'])} | {_fmt(row['seconds_0.001'])} "
                        f"| {_fmt(row['seconds_0.0001'])} | {row['seconds_per_epoch']:.2f} "
                        f"| {row['peak_mib']:.0f} | {row['mib_per_epoch']:.0f} "
                        f"| {row['final_gap']:.1e} |"
                    )
                    print(lines[-1], flush=True)
        lines.append("")
        result["problems"][name] = {"optimum": optimum, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.with_suffix(".md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
