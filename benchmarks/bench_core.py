"""Time to reach within 1% of the optimum: dsmlr (embedded default) vs scikit-learn saga.

The problem is a generated sparse text-like set of the shape of a real topic-classification
corpus (about 50K documents, 55K features, 60 classes), lam = 1e-5, no intercept.  The
optimum is a long, tight scikit-learn lbfgs run, cached under ``benchmarks/cache/``.

For each method and repeat, a fresh process trains and reports wall time, the objective
reached and its peak resident memory.  dsmlr's time to 1% is read from its per-epoch
history (wall clock since the start of training, exact objective each epoch); saga's time
is its whole ``fit`` with default ``tol``, the figure a user waits for.  Medians over the
repeats are written as JSON and a markdown table.

dsmlr runs twice: with its defaults (which pick one worker for 60 classes) and with two
workers (data and model parallel, one per core).

Run: ``python benchmarks/bench_core.py [--repeats 3] [--samples 50000] ...``
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import resource
import statistics
import time
from pathlib import Path

import numpy as np

import environment

HERE = Path(__file__).resolve().parent


def _problem(args):
    from sklearn.model_selection import train_test_split

    from dsmlr.datagen import make_extreme_multiclass

    prob = make_extreme_multiclass(
        args.samples, args.features, args.classes, nnz_per_row=args.nnz, random_state=args.seed
    )
    return train_test_split(prob.X, prob.y, test_size=0.2, random_state=args.seed)


def _objective(coef, X, y, lam):
    from scipy.special import logsumexp

    S = np.asarray(X @ coef.T)
    loss = logsumexp(S, axis=1) - S[np.arange(len(y)), y]
    return float(loss.mean() + 0.5 * lam * np.sum(coef.astype(np.float64) ** 2))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_dsmlr(args, f_opt, n_workers=None):
    from dsmlr import DSMLRClassifier

    Xtr, Xte, ytr, yte = _problem(args)
    clf = DSMLRClassifier(
        lam=args.lam,
        fit_intercept=False,
        max_epochs=args.max_epochs,
        n_workers=n_workers,
        random_state=0,
    ).fit(Xtr, ytr)
    hit = next((h for h in clf.history_ if h["objective"] <= f_opt * 1.01), None)
    hit01 = next((h for h in clf.history_ if h["objective"] <= f_opt * 1.001), None)
    return {
        "method": "dsmlr" if n_workers is None else f"dsmlr-{n_workers}-worker",
        "time_to_1pct": hit["time"] if hit else None,
        "epochs_to_1pct": hit["epoch"] if hit else None,
        "time_to_0.1pct": hit01["time"] if hit01 else None,
        "total_time": clf.history_[-1]["time"],
        "final_objective": clf.history_[-1]["objective"],
        "test_accuracy": float(clf.score(Xte, yte)),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _run_sklearn(args, f_opt, solver):
    from sklearn.linear_model import LogisticRegression

    Xtr, Xte, ytr, yte = _problem(args)
    clf = LogisticRegression(C=1.0 / (args.lam * Xtr.shape[0]), solver=solver, fit_intercept=False)
    start = time.perf_counter()
    clf.fit(Xtr, ytr)
    elapsed = time.perf_counter() - start
    f = _objective(clf.coef_, Xtr, ytr, args.lam)
    return {
        "method": f"sklearn-{solver}",
        "time_to_1pct": elapsed if f <= f_opt * 1.01 else None,
        "time_to_0.1pct": elapsed if f <= f_opt * 1.001 else None,
        "total_time": elapsed,
        "n_iter": int(np.max(clf.n_iter_)),
        "final_objective": f,
        "test_accuracy": float(clf.score(Xte, yte)),
        "peak_rss_mb": _peak_rss_mb(),
    }


def _optimum(args) -> float:
    cache = (
        HERE
        / "cache"
        / (
            f"opt_{args.samples}_{args.features}_{args.classes}_{args.nnz}_{args.seed}_{args.lam:g}.json"
        )
    )
    if cache.exists():
        return json.loads(cache.read_text())["objective"]
    from sklearn.linear_model import LogisticRegression

    Xtr, _, ytr, _ = _problem(args)
    clf = LogisticRegression(
        C=1.0 / (args.lam * Xtr.shape[0]), tol=1e-10, max_iter=5000, fit_intercept=False
    ).fit(Xtr, ytr)
    f = _objective(clf.coef_, Xtr, ytr, args.lam)
    cache.parent.mkdir(exist_ok=True)
    cache.write_text(json.dumps({"objective": f, "n_iter": int(np.max(clf.n_iter_))}))
    return f


def _in_child(fn, *fargs):
    # A fresh process per run, so peak RSS belongs to that run alone.
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, fargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=62500)  # 50K train after the split
    parser.add_argument("--features", type=int, default=55000)
    parser.add_argument("--classes", type=int, default=60)
    parser.add_argument("--nnz", type=int, default=80)
    parser.add_argument("--lam", type=float, default=1e-5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-epochs", type=int, default=12)
    parser.add_argument("--out", default=str(HERE / "results" / "core"))
    args = parser.parse_args()
    env = environment.describe()

    f_opt = _in_child(_optimum, args)
    runs: dict[str, list[dict]] = {}
    for _ in range(args.repeats):
        variants = (
            ("dsmlr", _run_dsmlr, ()),  # the defaults (one worker at K = 60)
            ("dsmlr-2-worker", _run_dsmlr, (2,)),  # data and model parallel on 2 cores
            ("saga", _run_sklearn, ("saga",)),
        )
        for name, fn, extra in variants:
            res = _in_child(fn, args, f_opt, *extra)
            print(json.dumps(res), flush=True)
            runs.setdefault(name, []).append(res)

    def med(name, key):
        vals = [r[key] for r in runs[name] if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    summary = {
        "problem": vars(args) | {"optimum": f_opt},
        "machine": {"cpus": mp.cpu_count(), "platform": platform.platform()},
        "environment": env,
        "runs": runs,
        "median": {
            name: {k: med(name, k) for k in runs[name][0] if k != "method"} for name in runs
        },
    }
    d, s = summary["median"]["dsmlr"], summary["median"]["saga"]
    ratio = d["time_to_1pct"] / s["total_time"] if d["time_to_1pct"] and s["total_time"] else None
    summary["ratio_dsmlr_time_to_1pct_over_saga_converged"] = ratio
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(summary, indent=1))
    lines = [
        environment.summary(env),
        "",
        f"Problem: N={args.samples} (80% train), D={args.features}, K={args.classes}, "
        f"~{args.nnz} nnz/row, lam={args.lam:g}, no intercept; optimum {f_opt:.6f}; "
        f"medians of {args.repeats} runs on {mp.cpu_count()} CPUs.",
        "",
        "| method | time to 1% (s) | time to 0.1% (s) | total time (s) | final objective "
        "| test acc | peak RSS (MB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in runs:
        m = summary["median"][name]
        t1 = f"{m['time_to_1pct']:.2f}" if m["time_to_1pct"] else "not reached"
        t01 = f"{m['time_to_0.1pct']:.2f}" if m["time_to_0.1pct"] else "not reached"
        lines.append(
            f"| {name} | {t1} | {t01} | {m['total_time']:.2f} | {m['final_objective']:.6f} | "
            f"{m['test_accuracy']:.4f} | {m['peak_rss_mb']:.0f} |"
        )
    if ratio is not None:
        lines += ["", f"dsmlr time to 1% / saga time to converge: **{ratio:.3f}**"]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
