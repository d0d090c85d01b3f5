"""The benchmark suite: time to within 1% and 0.1% of the optimum, dsmlr against its peers.

Run::

    python benchmarks/suite.py --problems small digits \\
        --methods dsmlr-sync dsmlr-async sklearn-saga sklearn-lbfgs torch-lbfgs torch-adam \\
        --repeats 3 [--time-limit 600] [--out benchmarks/results/suite]

For every problem (``problems.py``) the optimum ``f*`` is computed once by a long, tight
scikit-learn lbfgs and cached (``optimum.py``).  Then every (method, repeat) trains in a
fresh Python process, so its peak resident memory is its own, and returns a trace of
(training seconds, exact objective, test accuracy, epochs); how each library's seconds
are measured is in its adapter's docstring (``adapters/``).  From the traces:

* time to 1% / 0.1%: the first time the objective is within ``(f - f*)/f* <= 1e-2``
  (``1e-3``) of the optimum, with the test accuracy and epochs of that model; a run that
  never gets there is "not reached", never an extrapolated figure;
* medians over the repeats (a target counts as reached only if every repeat reached it);
* ratios: each method's median time over that of the best *peer* (the fastest
  non-dsmlr method to reach the target) in the same run of the suite.

Writes ``OUT.json`` (every run's full trace, the optima, the machine and library
versions) and ``OUT.md`` (one table per problem).  Repeats are interleaved (method A,
B, ..., then A, B, ... again) so that drift in the machine's load hits every method.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
TARGETS: dict[str, float] = {"1%": 1e-2, "0.1%": 1e-3}
DEFAULT_METHODS = (
    "dsmlr-sync",
    "dsmlr-async",
    "sklearn-saga",
    "sklearn-lbfgs",
    "torch-lbfgs",
    "torch-adam",
)
# Runs whose best objective undercuts the cached optimum by more than this (relative)
# mean the optimum was not tight: the lowest objective seen replaces it, with a warning.
_UNDERCUT = 1e-9

__all__ = [
    "TARGETS",
    "Hit",
    "analyse_run",
    "markdown",
    "ratio_table",
    "summarise",
    "time_to_target",
]


# -- analysis (pure functions of the traces; the tests exercise them directly) -----------


@dataclass(frozen=True)
class Hit:
    """Where a trace first reached a target: training seconds, test accuracy, epochs."""

    time: float
    test_accuracy: float | None
    epochs: float


def time_to_target(trace: list[dict], target: float) -> Hit | None:
    """The earliest trace point whose objective is at most ``target``, or None.

    "Earliest" is the smallest ``time``: for a continuous trace that is the first point
    to reach the target; for a trace of fresh fits (scikit-learn, Spark) it is the
    fastest fit that reached it.
    """
    reached = [p for p in trace if p["objective"] <= target]
    if not reached:
        return None
    p = min(reached, key=lambda q: q["time"])
    return Hit(float(p["time"]), p.get("test_accuracy"), float(p["epochs"]))


def analyse_run(run: dict, f_opt: float) -> dict:
    """Per-target hits and the best objective of one run (``run["trace"]`` as dicts)."""
    trace = run.get("trace") or []
    out: dict = {"hits": {}}
    for label, rel in TARGETS.items():
        hit = time_to_target(trace, f_opt * (1.0 + rel))
        out["hits"][label] = None if hit is None else vars(hit)
    best = min((p["objective"] for p in trace), default=None)
    out["best_objective"] = best
    out["best_rel_gap"] = None if best is None else (best - f_opt) / f_opt
    out["total_time"] = max((p["time"] for p in trace), default=None)
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarise(runs: list[dict], f_opt: float) -> dict:
    """Medians over the repeats of one method on one problem.

    A target's median time (and accuracy and epochs there) is given only when every
    repeat reached it; otherwise ``reached`` says how many did.
    """
    analysed = [analyse_run(r, f_opt) for r in runs]
    out: dict = {"repeats": len(runs), "targets": {}}
    for label in TARGETS:
        hits = [a["hits"][label] for a in analysed]
        got = [h for h in hits if h is not None]
        entry: dict = {"reached": len(got), "time": None, "test_accuracy": None, "epochs": None}
        if got and len(got) == len(hits):
            entry["time"] = _median([h["time"] for h in got])
            accs = [h["test_accuracy"] for h in got if h["test_accuracy"] is not None]
            entry["test_accuracy"] = _median(accs)
            entry["epochs"] = _median([h["epochs"] for h in got])
        out["targets"][label] = entry
    gaps = [a["best_rel_gap"] for a in analysed if a["best_rel_gap"] is not None]
    out["best_rel_gap"] = _median(gaps)
    out["peak_rss_mb"] = _median([r["peak_rss_mb"] for r in runs if r.get("peak_rss_mb")])
    gpu = [r["gpu_peak_mb"] for r in runs if r.get("gpu_peak_mb") is not None]
    out["gpu_peak_mb"] = _median(gpu)
    out["total_time"] = _median([a["total_time"] for a in analysed if a["total_time"]])
    out["stopped"] = sorted({r.get("stopped", "") for r in runs})
    return out


def certified_optimum(opt: dict) -> bool:
    """Whether a cached optimum record pins f* well inside the tightest target: lbfgs
    converged, or (stopped by its time cap) the gradient's bound on the gap, valid
    without an intercept, is under a thousandth of that target."""
    if opt.get("converged", True):
        return True
    bound = opt.get("gap_bound")
    return bound is not None and bound <= 1e-3 * min(TARGETS.values()) * opt["objective"]


def _is_peer(method: str) -> bool:
    return not method.startswith("dsmlr")


def ratio_table(summaries: dict[str, dict]) -> dict:
    """Each method's median time to each target over the best peer's.

    Returns ``{"best_peer": {label: method or None}, "ratios": {method: {label: ratio
    or None}}}``; the best peer is the non-dsmlr method with the smallest median time
    among those that reached the target in every repeat.
    """
    best: dict[str, str | None] = {}
    ratios: dict[str, dict[str, float | None]] = {m: {} for m in summaries}
    for label in TARGETS:
        peers = {
            m: s["targets"][label]["time"]
            for m, s in summaries.items()
            if _is_peer(m) and s["targets"][label]["time"] is not None
        }
        best[label] = min(peers, key=peers.__getitem__) if peers else None
        for m, s in summaries.items():
            t = s["targets"][label]["time"]
            ok = best[label] is not None and t is not None and peers[best[label]] > 0
            ratios[m][label] = t / peers[best[label]] if ok else None
    return {"best_peer": best, "ratios": ratios}


def _fmt(value: float | None, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def markdown(results: dict) -> str:
    """The results as one markdown table per problem."""
    m = results["machine"]
    lines = [
        "# Benchmark suite results",
        "",
        f"Run {m.get('date', 'at an unrecorded date')} on {m.get('cpu', 'an unrecorded CPU')}.",
        f"Machine: {m['platform']}, {m['cpu_count']} CPUs"
        + (f", GPU {m['gpu']}" if m.get("gpu") else "")
        + f"; python {m['python']}; "
        + ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
        + f"; dsmlr commit {m.get('commit') or '?'}.",
        f"Medians of {results['args']['repeats']} repeat(s), each run in a fresh process; "
        f"time limit {results['args']['time_limit']:g} s per run.  Times are training "
        "seconds (see benchmarks/README.md for how each library is timed).  "
        "'x peer' is the median time over the best peer's (the fastest non-dsmlr method) "
        "in this run.",
        *(f"Note: {note}" for note in results.get("notes", [])),
    ]
    for name, prob in results["problems"].items():
        opt = prob["optimum"]
        lines += [
            "",
            f"## {name}: {prob['description']}",
            "",
            f"N = {prob['n_train']} train / {prob['n_test']} test rows, D = "
            f"{prob['n_features']}, K = {prob['n_classes']}, lam = {prob['lam']:g}, "
            f"intercept: {'yes' if prob['fit_intercept'] else 'no'}.  Optimum f* = "
            f"{prob['reference']:.10g} ({prob['reference_source']}"
            + (
                ""
                if opt.get("converged", True)
                else f"; stopped after {opt['n_iter']} iterations, at "
                f"{opt['objective']:.10g}, its gradient bounding the gap by "
                f"{opt['gap_bound']:.1e}"
                if certified_optimum(opt)
                else f"; lbfgs stopped after {opt['n_iter']} iterations, before converging, "
                f"at {opt['objective']:.10g}: every run went on to the time limit"
            )
            + ").",
            "",
            "| method | time to 1% (s) | x peer | test acc | epochs | time to 0.1% (s) "
            "| x peer | test acc | epochs | best (f-f*)/f* | peak RSS (MB) | stopped |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        ratios = prob["ratios"]["ratios"]
        for method, s in prob["summary"].items():
            cells = [method]
            for label in TARGETS:
                t = s["targets"][label]
                if t["time"] is None:
                    cells += [f"not reached ({t['reached']}/{s['repeats']})", "-", "-", "-"]
                else:
                    cells += [
                        f"{t['time']:.2f}",
                        _fmt(ratios[method][label], ".2f"),
                        _fmt(t["test_accuracy"], ".4f"),
                        _fmt(t["epochs"], "g"),
                    ]
            rss = _fmt(s["peak_rss_mb"], ".0f")
            if s.get("gpu_peak_mb") is not None:
                rss += f" (GPU {s['gpu_peak_mb']:.0f})"
            cells += [_fmt(s["best_rel_gap"], ".2e"), rss, ", ".join(s["stopped"])]
            lines.append("| " + " | ".join(cells) + " |")
        best = prob["ratios"]["best_peer"]
        lines += ["", "Best peer: " + ", ".join(f"{k}: {v or 'none'}" for k, v in best.items())]
        loads = [
            r["load_average_before"]
            for rs in prob["runs"].values()
            for r in rs
            if r.get("load_average_before") is not None
        ]
        if loads:
            lines.append(
                f"1-minute load average before the runs: {min(loads):.1f} to {max(loads):.1f} "
                f"on {m['cpu_count']} CPUs."
            )
        for method, why in prob["skipped"].items():
            lines.append(f"- skipped {method}: {why}")
        for method, why in prob.get("failed", {}).items():
            lines.append(f"- failed {method}: {why}")
        for method in prob.get("not_repeated", []):
            lines.append(
                f"- {method} ran once: its first run reached no target within the time limit, "
                "so further repeats could not change a time or a ratio"
            )
        for warning in prob.get("warnings", []):
            lines.append(f"- warning: {warning}")
    return "\n".join(lines) + "\n"


# -- running ---------------------------------------------------------------------------


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {}
    for pkg in ("dsmlr", "numpy", "scipy", "scikit-learn", "numba", "torch", "pyspark", "cyanure"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def _machine() -> dict:
    import environment

    env = environment.describe()
    info: dict = {
        "date": env["date"],
        "cpu": env["cpu"],
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "versions": _versions(),
        "java": shutil.which("java"),
    }
    try:
        import torch

        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    try:  # read-only: which commit the numbers belong to, and whether it had edits
        rev = ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"]
        info["commit"] = subprocess.run(rev, capture_output=True, text=True).stdout.strip()
        st = ["git", "-C", str(HERE), "status", "--porcelain", "--untracked-files=no"]
        dirty = subprocess.run(st, capture_output=True, text=True).stdout.strip()
        info["commit_dirty"] = bool(dirty)
    except OSError:
        info["commit"] = None
    return info


def _child(spec: dict, result_path: str) -> None:
    """Run one (problem, method, repeat) in this fresh process; write its JSON result."""
    from adapters import Skipped, run_method
    from problems import PROBLEMS

    problem = PROBLEMS[spec["problem"]]
    data = problem.load(spec["cache_dir"])
    try:
        res = run_method(
            spec["method"],
            data,
            lam=problem.lam,
            fit_intercept=problem.fit_intercept,
            time_limit=spec["time_limit"],
            stop_at=spec["stop_at"],
            seed=spec["seed"],
            targets=tuple(spec["targets"]),
        )
        out = res.as_dict()
    except Skipped as skip:
        out = {"skipped": str(skip)}
    Path(result_path).write_text(json.dumps(out))


def _run_in_child(spec: dict, timeout: float) -> dict:
    from adapters.common import describe_failure

    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        cmd = [sys.executable, "-X", "faulthandler", str(Path(__file__).resolve()),
               "--child", json.dumps(spec)]  # fmt: skip
        cmd += ["--result", str(result)]
        try:
            proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
        except subprocess.TimeoutExpired:
            return {"failed": f"killed after {timeout:.0f} s (wall-clock guard)"}
        if proc.returncode != 0 or not result.exists():
            return {"failed": describe_failure(proc.returncode, proc.stderr or proc.stdout)}
        return json.loads(result.read_text())


def _ensure_optimum(
    name: str, cache_dir: str | None, max_iter: int, time_cap: float | None
) -> dict:
    from optimum import cached_optimum
    from problems import PROBLEMS

    record = cached_optimum(PROBLEMS[name], cache_dir)
    if record is None:
        # Its own process: a tight lbfgs holds several N x K arrays, not for this one.
        cmd = [sys.executable, str(HERE / "optimum.py"), name, "--max-iter", str(max_iter)]
        if time_cap is not None:
            cmd += ["--time-cap", str(time_cap)]
        if cache_dir:
            cmd += ["--cache-dir", cache_dir]
        subprocess.run(cmd, check=True)
        record = cached_optimum(PROBLEMS[name], cache_dir)
    assert record is not None
    return record


def run_suite(args: argparse.Namespace) -> dict:
    """Run every chosen (problem, method, repeat) and return the results document."""
    from problems import PROBLEMS

    results: dict = {"machine": _machine(), "args": vars(args) | {"targets": TARGETS}}
    results["problems"] = {}
    for name in args.problems:
        problem = PROBLEMS[name]
        opt = _ensure_optimum(name, args.cache_dir, args.optimum_max_iter, args.optimum_time_cap)
        f_opt = opt["objective"]
        certified = certified_optimum(opt)
        runs: dict[str, list[dict]] = {m: [] for m in args.methods}
        skipped: dict[str, str] = {}
        failed: dict[str, str] = {}
        not_repeated: list[str] = []
        for repeat in range(args.repeats):
            for method in args.methods:
                if method in skipped or method in not_repeated:
                    continue
                spec = {
                    "problem": name,
                    "method": method,
                    "cache_dir": args.cache_dir,
                    "time_limit": args.time_limit,
                    # Stop at the tightest target: nothing later is measured.  Unless
                    # lbfgs stopped short of the optimum: the targets may then lie below
                    # its value, so every run goes on to the time limit.
                    "stop_at": f_opt * (1.0 + min(TARGETS.values())) if certified else None,
                    "seed": args.seed + repeat,
                    "targets": [f_opt * (1.0 + rel) for rel in TARGETS.values()],
                }
                # Other jobs on the machine distort times: keep the load beside each run.
                load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
                t0 = time.perf_counter()
                res = _run_in_child(spec, timeout=4 * args.time_limit + 600)
                wall = time.perf_counter() - t0
                if "skipped" in res:
                    skipped[method] = res["skipped"]
                    print(f"[{name}] {method}: skipped ({res['skipped']})", flush=True)
                    continue
                if "failed" in res:
                    failed[method] = res["failed"]
                    print(f"[{name}] {method}: FAILED {res['failed']}", flush=True)
                    continue
                res["repeat"] = repeat
                res["process_wall_seconds"] = wall
                res["load_average_before"] = load
                runs[method].append(res)
                a = analyse_run(res, f_opt)
                hits = ", ".join(
                    f"{k}: " + ("-" if h is None else f"{h['time']:.2f}s")
                    for k, h in a["hits"].items()
                )
                print(
                    f"[{name}] {method} #{repeat}: {hits}; best gap {a['best_rel_gap']:.2e}; "
                    f"{res['stopped']}; RSS {res['peak_rss_mb']:.0f} MB; wall {wall:.1f}s",
                    flush=True,
                )
                # A target counts only if every repeat reached it, so a method that
                # reached none in its first run cannot change any time or ratio by
                # running again: spare the machine its remaining repeats.
                if not args.repeat_unreached and all(h is None for h in a["hits"].values()):
                    not_repeated.append(method)
        runs = {m: r for m, r in runs.items() if r}
        # A run below the cached optimum means lbfgs was not tight: measure against the
        # lowest objective anyone reached instead, and say so.
        warnings: list[str] = []
        reference, source = f_opt, f"cached optimum: {opt.get('solver', 'lbfgs')}"
        lowest = min(
            (p["objective"] for rs in runs.values() for r in rs for p in r["trace"]),
            default=f_opt,
        )
        if lowest < f_opt * (1.0 - _UNDERCUT):
            reference, source = lowest, "lowest objective of any run (below the cached optimum)"
            warnings.append(
                f"a run reached {lowest:.10g} < cached optimum {f_opt:.10g}; targets use it"
            )
        summaries = {m: summarise(r, reference) for m, r in runs.items()}
        results["problems"][name] = {
            "description": problem.description,
            **problem.shape,
            "lam": problem.lam,
            "fit_intercept": problem.fit_intercept,
            "optimum": opt,
            "reference": reference,
            "reference_source": source,
            "runs": runs,
            "summary": summaries,
            "ratios": ratio_table(summaries),
            "skipped": skipped,
            "failed": failed,
            "not_repeated": [m for m in not_repeated if m in runs],
            "warnings": warnings,
        }
    return results


def main(argv: list[str] | None = None) -> None:
    from adapters import METHODS
    from problems import PROBLEMS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["small"], choices=sorted(PROBLEMS))
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=METHODS)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--time-limit", type=float, default=600.0, help="training seconds per run (default 600)"
    )
    parser.add_argument("--seed", type=int, default=0, help="repeat r uses seed + r")
    parser.add_argument(
        "--repeat-unreached",
        action="store_true",
        help="repeat a method even when its first run reached no target (default: one run)",
    )
    parser.add_argument("--out", default=str(HERE / "results" / "suite"))
    parser.add_argument("--cache-dir", default=None, help="default: benchmarks/cache")
    parser.add_argument("--optimum-max-iter", type=int, default=20_000)
    parser.add_argument(
        "--optimum-time-cap", type=float, default=None, help="seconds, when not cached yet"
    )
    parser.add_argument(
        "--render", metavar="JSON", help="only rewrite the markdown of an earlier run's JSON"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(json.loads(args.child), args.result)
        return
    if args.render:
        results = json.loads(Path(args.render).read_text())
        text = markdown(results)
        Path(args.render).with_suffix(".md").write_text(text)
        print(text)
        return
    del args.child, args.result, args.render
    results = run_suite(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(results, indent=1))
    text = markdown(results)
    out.with_suffix(".md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
