"""SVRG's gap to the optimum, epoch by epoch, for workers x blocks-per-worker layouts.

Blocks that different workers move at the same time each settle a shift of probability
mass between them, so together they overshoot it; the engines keep a share of each SVRG
visit's move along the directions a visit settles, ``1 - 1 / B`` where it settles them
exactly (the intercept), to prevent that (:mod:`dsmlr.engines.relaxation`).  This shows
the effect on a small generated problem, in one process (in-process workers; float64, so
that rounding does not limit the gaps): for each layout, with whole moves and with the
relaxation, the relative gap ``(f - f*) / f*`` after every fifth epoch, ``f*`` from
scikit-learn's lbfgs at ``tol=1e-12``.

``--problem dense`` takes scikit-learn's ``make_classification`` instead (3000 rows, 50
dense features, 6 classes, lam = 1e-3), where every column is shared by every row, as
the intercept is.

Run: ``python benchmarks/svrg_layouts.py [--problem text|dense] [--epochs 30]``; writes
``results/svrg_layouts.{json,md}`` (``svrg_layouts_dense.*`` for the dense problem).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
from pathlib import Path

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import dsmlr.engines.relaxation as relaxation
import environment
from dsmlr import DSMLRClassifier
from dsmlr.datagen import make_extreme_multiclass
from dsmlr.objective import add_intercept_column, plain_objective

HERE = Path(__file__).resolve().parent
#: (workers, blocks per worker)
LAYOUTS = [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1)]


#: Per problem: rows, features, classes, lam.
PROBLEMS = {"text": (4000, 3000, 40, 1e-4), "dense": (3000, 50, 6, 1e-3)}


class WholeMoves(DSMLRClassifier):
    """The estimator with SVRG's moves kept whole (the engines' ``relax="none"``)."""

    def _engine_config(self, *args, **kwargs):
        return dataclasses.replace(super()._engine_config(*args, **kwargs), relax="none")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problem", choices=sorted(PROBLEMS), default="text")
    parser.add_argument("--samples", type=int, help="rows (text: 4000, dense: 3000)")
    parser.add_argument("--features", type=int, help="features (text: 3000, dense: 50)")
    parser.add_argument("--classes", type=int, help="classes (text: 40, dense: 6)")
    parser.add_argument("--lam", type=float, help="L2 strength (text: 1e-4, dense: 1e-3)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", help="output path without suffix (results/svrg_layouts[_dense])")
    args = parser.parse_args()
    env = environment.describe()
    defaults = PROBLEMS[args.problem]
    for name, value in zip(("samples", "features", "classes", "lam"), defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, value)
    if args.out is None:
        suffix = "" if args.problem == "text" else f"_{args.problem}"
        args.out = str(HERE / "results" / f"svrg_layouts{suffix}")
    if args.problem == "text":
        problem = make_extreme_multiclass(args.samples, args.features, args.classes, random_state=0)
        X, y = problem.X, problem.y
        described = "Generated text-like problem"
    else:
        X, y = make_classification(args.samples, args.features, n_informative=20,
                                   n_classes=args.classes, random_state=3)  # fmt: skip
        described = "Dense problem (`sklearn.datasets.make_classification`)"
    lam = args.lam
    ref = LogisticRegression(C=1 / (lam * len(y)), tol=1e-12, max_iter=50_000).fit(X, y)
    W = np.hstack([ref.coef_, ref.intercept_[:, None]])
    labels = np.searchsorted(ref.classes_, y)
    best = plain_objective(W, add_intercept_column(X), labels, lam, X.shape[1])
    rows = []
    for moves in ("whole", "relaxed"):
        estimator = DSMLRClassifier if moves == "relaxed" else WholeMoves
        for workers, per_worker in LAYOUTS:
            kept = 1.0
            if moves == "relaxed":
                kept = relaxation.intercept_relaxation(workers, workers * per_worker)
            if moves == "relaxed" and kept == 1.0:
                continue  # one worker keeps its moves whole: the same run as above
            clf = estimator(lam, n_workers=workers, blocks_per_rank=per_worker,
                                  optimizer="svrg", max_epochs=args.epochs, tol=0.0,
                                  dtype="float64", random_state=0).fit(X, y)  # fmt: skip
            gaps = [h["objective"] / best - 1 for h in clf.history_]
            rows.append({"workers": workers, "blocks_per_worker": per_worker,
                         "exact_kept": kept, "gaps": gaps})  # fmt: skip
            print(moves, workers, per_worker, " ".join(f"{g:.1e}" for g in gaps[4::5]), flush=True)
    shown = list(range(4, args.epochs, 5))
    lines = [
        "# SVRG's gap to the optimum by layout (`benchmarks/svrg_layouts.py`)",
        "",
        environment.summary(env),
        "",
        f"{described}: {args.samples} rows, {args.features} features, {args.classes} "
        f"classes, lam = {lam:g}, intercept; float64, in-process workers; "
        f"f* = {best:.10f} (lbfgs, tol 1e-12).  Relative gap `(f - f*) / f*` after epoch, "
        "with each SVRG visit's moves kept whole (1) or relaxed (the engines' rule, "
        "`dsmlr.engines.relaxation`: for B blocks moved by two or more workers, a direction "
        "a visit settles exactly keeps 1 - 1/B of its move, one it settles a share s of "
        "keeps (1 - 1/B) / s where that is below 1; the column gives 1 - 1/B; one worker "
        "keeps its moves whole, so its rows appear once):",
        "",
        "| workers | blocks per worker | exact direction's move kept | "
        + " | ".join(str(e + 1) for e in shown)
        + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for row in rows:
        gaps = " | ".join(f"{row['gaps'][e]:.1e}" for e in shown)
        lines.append(f"| {row['workers']} | {row['blocks_per_worker']} | "
                     f"{row['exact_kept']:.4g} | {gaps} |")  # fmt: skip
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    record = {"machine": platform.platform(), "environment": env, "optimum": best,
              "args": vars(args), "runs": rows}  # fmt: skip
    Path(args.out + ".json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
