"""Parallel convergence: epochs and seconds to a relative gap of the optimum, against P.

Parallelism has to pay in time to accuracy, not in epoch time: a faster epoch that needs
more epochs can be a loss.  For each problem, engine and number of workers ``P``, one
training run in a fresh process records the exact objective after every epoch; its
relative gap ``(f - f*) / f*`` to the problem's optimum gives the epochs and the seconds
to reach 1%, 0.1% and 1e-4 (a run stops once it is within ``--stop-gap``, 1e-5 by
default, or after ``--epochs``).  The optimum is the cached scikit-learn lbfgs one
(``benchmarks/optimum.py``; compute it first), certified by its gradient norm.

In-process workers make epochs countable on any machine: they share its cores, so their
seconds say little beyond two cores, but their epochs are what P processes on P cores
would need (the synchronous engine gives bit for bit the model of as many MPI ranks).
``--mpi`` also runs ``mpiexec -n P dsmlr train`` on the real sets' files for
``--mpi-ranks`` (1 and 2 by default), where P processes each have a core, and
``--mpi-straggler RANK:FACTOR`` those runs again with one rank made FACTOR times slower
(``dsmlr train --straggler``), where the asynchronous engine should pay.

``--baseline SRC`` runs every configuration a second time with the package in ``SRC``
(another checkout's ``src``, e.g. ``git worktree add /tmp/old HEAD~3``), in the same
turns, for a before/after comparison of a change.  ``--repeats N`` makes N rounds, each
running every configuration once, and reports medians.

Run::

    python benchmarks/optimum.py debian-source debian-files small dense --start-epochs 40
    python benchmarks/parallel_convergence.py --problems debian-source debian-files \\
        small dense --workers 1 2 4 8 16 default --engines sync async --mpi

Results go to ``results/parallel_convergence.{json,md}`` and one figure per problem
(relative gap against epochs and against seconds, a line per P) to
``results/figures/parallel_<problem>.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from environment import describe, summary  # noqa: E402

#: The mode of the MPI runs whose ranks copy the blocks at every shift (``--mpi-copy``).
COPIED = "mpi, blocks copied"

#: The relative gaps whose epochs and seconds the tables give.
TARGETS = (1e-2, 1e-3, 1e-4)


# -- one run, in a child process --------------------------------------------------------


def _child(spec: dict) -> dict:
    """Train once as ``spec`` says; the objective after every epoch."""
    import inspect

    import numpy as np

    from dsmlr import DSMLRClassifier
    from problems import get_problem

    problem = get_problem(spec["problem"])
    data = problem.load()
    optimum = spec["optimum"]
    records: list[dict] = []

    class Reached(Exception):
        """Raised from the callback to end a run that is close enough."""

    def on_epoch(entry: dict) -> None:
        records.append({k: entry[k] for k in ("epoch", "time", "objective")})
        if (entry["objective"] - optimum) / optimum < spec["stop_gap"]:
            raise Reached

    params = {
        "fit_intercept": problem.fit_intercept,
        "max_epochs": spec["epochs"],
        "tol": 0.0,  # never stop on the decrease: the run ends on the gap or the epochs
        "n_workers": spec["workers"],
        "engine": spec["engine"],
        "random_state": spec["seed"],
        "blocks_per_rank": spec.get("blocks_per_rank"),  # None: the engine's default
    }
    # A baseline package may lack some of today's parameters; it runs with its defaults.
    known = inspect.signature(DSMLRClassifier).parameters
    clf = DSMLRClassifier(problem.lam, **{k: v for k, v in params.items() if k in known})
    n_classes = int(np.max(data.y_train)) + 1
    workers = clf._resolved_workers(data.X_train.shape[0], n_classes)
    try:
        clf.fit(data.X_train, data.y_train, callback=on_epoch)
    except Reached:
        pass
    return {"workers": workers, "records": records}


def _run_child(spec: dict, src: str | None) -> dict:
    env = dict(os.environ)
    if src is not None:
        env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=HERE)
    if out.returncode != 0:
        raise RuntimeError(f"run {spec} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _run_mpi(
    problem, spec: dict, ranks: int, straggler: str | None = None, copy: bool = False
) -> dict:
    """``mpiexec -n ranks dsmlr train`` on the problem's training file; its metrics.

    ``straggler`` (``RANK:FACTOR``) slows one rank down (``dsmlr train --straggler``);
    ``copy`` has the ranks copy the blocks at every shift rather than share them
    (``DSMLR_SHARED_MEMORY=0``, see :mod:`dsmlr.comm.shared_memory`)."""
    from problems import DATA_DIR

    mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
    dsmlr = shutil.which("dsmlr", path=str(Path(sys.executable).parent)) or "dsmlr"
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.jsonl"
        cmd = [
            mpiexec, "-n", str(ranks), dsmlr, "train",
            str(DATA_DIR / f"{problem.name}.train.svm.gz"), "--lam", str(problem.lam),
            "--epochs", str(spec["epochs"]), "--tol", "0", "--seed", str(spec["seed"]),
            "--engine", spec["engine"], "--quiet", "--metrics", str(metrics),
            "--model", str(Path(tmp) / "model"),
        ] + ([] if problem.fit_intercept else ["--no-intercept"])  # fmt: skip
        if straggler:
            cmd += ["--straggler", straggler]
        if spec.get("blocks_per_rank"):
            cmd += ["--blocks-per-rank", str(spec["blocks_per_rank"])]
        env = {**os.environ, **({"DSMLR_SHARED_MEMORY": "0"} if copy else {})}
        out = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
        lines = metrics.read_text().splitlines()
    records = [
        {k: entry[k] for k in ("epoch", "time", "objective")} for entry in map(json.loads, lines)
    ]
    return {"workers": ranks, "records": records}


# -- summaries ---------------------------------------------------------------------------


def reached(records: list[dict], optimum: float, target: float) -> tuple[int, float] | None:
    """The first epoch (and its time) within ``target`` of the optimum, or None."""
    for r in records:
        if (r["objective"] - optimum) / optimum <= target:
            return r["epoch"], r["time"]
    return None


def summarise(run: dict, optimum: float) -> dict:
    recs = run["records"]
    out = {"final_gap": (recs[-1]["objective"] - optimum) / optimum, "epochs_run": len(recs)}
    for target in TARGETS:
        hit = reached(recs, optimum, target)
        out[f"epochs_{target:g}"] = None if hit is None else hit[0]
        out[f"seconds_{target:g}"] = None if hit is None else hit[1]
    times = [b["time"] - a["time"] for a, b in itertools.pairwise(recs)]
    out["seconds_per_epoch"] = statistics.median(times) if times else recs[0]["time"]
    return out


def _base_mode(mode: str) -> str:
    """The run whose P = 1 seconds a row of this mode is compared with."""
    return "mpi" if mode.startswith("mpi") else mode


def _median(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return statistics.median(kept) if len(kept) == len(values) and kept else None


def _fmt(v, digits: int = 2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def report(result: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Parallel convergence (`benchmarks/parallel_convergence.py`)",
        "",
        summary(result["environment"]),
        "",
        f"Command: `{result['command']}`",
        "",
        "Epochs (and seconds) until the exact objective is within a relative gap of the "
        f"optimum; a run stops within {result.get('stop_gap', 1e-5):g} or after the epoch "
        "limit.  'in process': "
        "P worker threads sharing this machine's cores (their seconds only mean "
        "something up to the core count); 'mpi': `mpiexec -n P dsmlr train` on the "
        "data file (the ranks share the blocks' memory), 'mpi, blocks "
        "copied': the same with `DSMLR_SHARED_MEMORY=0`.  Times: medians over the "
        "repeats, taken in rounds (each runs every configuration once, so the runs a "
        "ratio compares are minutes apart); 'vs P=1': the seconds to 0.1% against those "
        "of the same engine and package at P = 1 (for every MPI run, the 'mpi' one).",
        "",
    ]
    for name, prob in result["problems"].items():
        opt = prob["optimum"]
        lines += [
            f"## {name}",
            "",
            f"{prob['description']}; lam = {prob['lam']:g}.  Optimum {opt['objective']:.10g} "
            f"({opt['solver']}; gradient norm {opt['gradient_norm']:.2e}"
            + (
                f", so at most {opt['gap_bound'] / opt['objective']:.1e} above f*)."
                if opt.get("gap_bound") is not None
                else ")."
            ),
            "",
            "| package | run | engine | P | epochs to 1% | to 0.1% | to 1e-4 | s to 0.1% "
            "| vs P=1 | s/epoch | gap at the end |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        base: dict = {}
        for row in prob["rows"]:
            key = (row["package"], _base_mode(row["mode"]), row["engine"])
            if row["workers"] == 1 and (key not in base or not row["default"]):
                base[key] = row["seconds_0.001"]  # an explicit P = 1 before the default's
        for row in prob["rows"]:
            key = (row["package"], _base_mode(row["mode"]), row["engine"])
            ratio = None
            if row["seconds_0.001"] is not None and base.get(key):
                ratio = row["seconds_0.001"] / base[key]
            p = f"{row['workers']}" + (" (default)" if row["default"] else "")
            lines.append(
                f"| {row['package']} | {row['mode']} | {row['engine']} | {p} "
                f"| {_fmt(row['epochs_0.01'])} | {_fmt(row['epochs_0.001'])} "
                f"| {_fmt(row['epochs_0.0001'])} | {_fmt(row['seconds_0.001'])} "
                f"| {_fmt(ratio)} | {_fmt(row['seconds_per_epoch'])} "
                f"| {row['final_gap']:.1e} |"
            )
        if prob.get("figure"):
            lines += ["", f"![{name}]({prob['figure']})"]
        lines.append("")
    out.with_suffix(".md").write_text("\n".join(lines))


def plot(name: str, prob: dict, path: Path) -> None:
    """Relative gap against epochs and seconds, a line per (package, run, engine, P)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    opt = prob["optimum"]["objective"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    # A colour for each P (and run mode), a line style for each engine: twelve or more
    # lines stay apart where the default colour cycle would repeat its ten colours.

    def key(run: dict) -> tuple:
        return str(run["workers"]), run["mode"], bool(run.get("default"))

    keys = list(dict.fromkeys(key(run) for run in prob["runs"]))
    colours = plt.get_cmap("tab20" if len(keys) > 10 else "tab10").colors
    for run in prob["runs"]:
        recs = run["records"]
        gaps = [max((r["objective"] - opt) / opt, 1e-9) for r in recs]
        label = f"{run['engine']} P={run['workers']}" + (" (default)" if run.get("default") else "")
        if run["mode"] != "in process":
            label += f" ({run['mode']})"
        if run["package"] != "current":
            label += f" [{run['package']}]"
        style = dict(
            color=colours[keys.index(key(run)) % len(colours)],
            ls="-" if run["engine"] == "sync" else "--",
            marker="." if run["package"] == "current" else "x",
            ms=3, label=label,
        )  # fmt: skip
        axes[0].semilogy([r["epoch"] for r in recs], gaps, **style)
        axes[1].semilogy([r["time"] for r in recs], gaps, **style)
    for ax, xlabel in zip(axes, ("epoch", "seconds"), strict=True):
        ax.set_xlabel(xlabel)
        ax.set_ylabel("(f - f*) / f*")
        ax.axhline(1e-3, color="grey", lw=0.5)
        ax.grid(True, which="both", lw=0.3)
    axes[1].legend(fontsize=6, ncol=2)
    fig.suptitle(f"{name}: relative gap to the optimum")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------


def _configs(args: argparse.Namespace, name: str, packages: list) -> list[tuple]:
    """Every ``(engine, mode, workers, package)`` the command asks for on ``name``."""
    configs = []
    for engine in args.engines:
        modes = [("in process", w) for w in args.workers]
        if args.mpi and name.startswith("debian-"):
            modes += [("mpi", str(r)) for r in args.mpi_ranks]
            if args.mpi_copy:
                modes += [(COPIED, str(r)) for r in args.mpi_ranks if r > 1]
            if args.mpi_straggler:
                slow = f"mpi, rank {args.mpi_straggler.replace(':', ' slowed ')}x"
                modes += [(slow, str(r)) for r in args.mpi_ranks if r > 1]
        for mode, w in modes:
            for package, _ in packages:
                if mode.startswith("mpi") and package != "current":
                    continue  # the baseline's CLI would need its own installation
                configs.append((engine, mode, w, package))
    return configs


def _run_config(args, problem, f_star: float, config: tuple, src: str | None) -> dict:
    """One run of ``config`` (see :func:`_configs`), labelled with it."""
    engine, mode, w, package = config
    spec = {
        "problem": problem.name, "engine": engine, "epochs": args.epochs,
        "workers": None if w == "default" else int(w),
        "seed": args.seed, "optimum": f_star, "stop_gap": args.stop_gap,
    }  # fmt: skip
    if mode.startswith("mpi"):
        slow = args.mpi_straggler if mode not in ("mpi", COPIED) else None
        run = _run_mpi(problem, spec, int(w), slow, copy=mode == COPIED)
    else:
        run = _run_child(spec, src)
    run.update(problem=problem.name, engine=engine, mode=mode, package=package,
               default=w == "default")  # fmt: skip
    return run


def _print_run(run: dict, f_star: float) -> None:
    s = summarise(run, f_star)
    tag = " (default)" if run["default"] else ""
    print(
        f"{run['problem']} {run['engine']} {run['mode']} P={run['workers']}{tag} "
        f"[{run['package']}] rep {run['repeat']}: 0.1% at epoch {_fmt(s['epochs_0.001'])} "
        f"({_fmt(s['seconds_0.001'])} s), 1e-4 at {_fmt(s['epochs_0.0001'])}, "
        f"final gap {s['final_gap']:.1e}",
        flush=True,
    )


def _median_row(runs: list[dict], f_star: float) -> dict:
    """A configuration's table row: the median of each figure over its repeats."""
    sums = [summarise(r, f_star) for r in runs]
    row = {k: _median([s[k] for s in sums]) for k in sums[0]}
    first = runs[0]
    row.update({k: first[k] for k in ("engine", "mode", "package", "workers", "default")})
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--problems", nargs="+", default=["debian-source", "debian-files"])
    parser.add_argument("--workers", nargs="*", default=["1", "2", "4", "8", "16", "default"],
                        help="P values (in process); 'default' is n_workers=None")  # fmt: skip
    parser.add_argument("--engines", nargs="+", default=["sync", "async"])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--stop-gap", type=float, default=1e-5)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--mpi", action="store_true", help="also mpiexec runs (real sets)")
    parser.add_argument("--mpi-ranks", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--mpi-straggler", metavar="RANK:FACTOR",
                        help="the MPI runs again, this rank slowed down (P > 1)")  # fmt: skip
    parser.add_argument("--mpi-copy", action="store_true",
                        help="the MPI runs again, blocks copied at each shift (P > 1)")  # fmt: skip
    parser.add_argument("--baseline", metavar="SRC", help="also run the package in SRC")
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=str(HERE / "results" / "parallel_convergence"))
    parser.add_argument("--no-plots", action="store_true")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return

    from optimum import cached_optimum
    from problems import get_problem

    out = Path(args.out)
    result: dict = {
        "environment": describe(),
        "command": " ".join(["python benchmarks/parallel_convergence.py", *sys.argv[1:]]),
        "stop_gap": args.stop_gap,
        "problems": {},
    }
    packages = [("current", None)] + ([("baseline", args.baseline)] if args.baseline else [])
    for name in args.problems:
        problem = get_problem(name)
        optimum = cached_optimum(problem, args.cache_dir)
        if optimum is None:
            raise SystemExit(
                f"no cached optimum for {name!r}: run python benchmarks/optimum.py {name} first"
            )
        f_star = optimum["objective"]
        problem.load(args.cache_dir, verbose=True)  # cache the data before timing anything
        for _, src in packages:  # each package compiles its kernels (cached) before timing
            warm = {"problem": name, "engine": "sync", "epochs": 2, "workers": 2,
                    "seed": args.seed, "optimum": f_star, "stop_gap": 0.0}  # fmt: skip
            _run_child(warm, src)
        configs = _configs(args, name, packages)
        got: dict[tuple, list[dict]] = {c: [] for c in configs}
        # Repeats are rounds over every configuration, so that each ratio compares runs
        # made minutes apart, not one configuration's repeats in a quiet spell and the
        # other's in a busy one (a shared machine's speed drifts by 10% over a benchmark).
        for rep in range(args.repeats):
            for config in configs:
                run = _run_config(args, problem, f_star, config, src=dict(packages)[config[3]])
                run["repeat"] = rep
                got[config].append(run)
                _print_run(run, f_star)
        runs = [run for config in configs for run in got[config]]
        rows = [_median_row(got[config], f_star) for config in configs]
        entry = {
            "description": problem.description, "lam": problem.lam, "optimum": optimum,
            "runs": runs, "rows": rows,
        }  # fmt: skip
        if not args.no_plots:
            figure = out.parent / "figures" / f"parallel_{name}.png"
            plot(name, entry, figure)
            entry["figure"] = os.path.relpath(figure, out.parent)
        result["problems"][name] = entry
        report(result, out)  # after every problem: a long run leaves what it has
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
