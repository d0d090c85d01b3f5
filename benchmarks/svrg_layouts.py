"""SVRG's gap to the optimum, epoch by epoch, for workers x blocks-per-worker layouts.

The synchronous engine gives two SVRG workers two class blocks each
(:func:`dsmlr.engines.sync_ring.blocks_per_worker`); this shows why, on a small generated
problem, in one process (in-process workers; float64, so that rounding does not limit
the gaps): for each layout, the relative gap ``(f - f*) / f*`` after every fifth epoch,
``f*`` from scikit-learn's lbfgs at ``tol=1e-12``.

Run: ``python benchmarks/svrg_layouts.py [--epochs 30]``; writes
``results/svrg_layouts.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from dsmlr import DSMLRClassifier
from dsmlr.datagen import make_extreme_multiclass
from dsmlr.objective import add_intercept_column, plain_objective

HERE = Path(__file__).resolve().parent
#: (workers, blocks per worker)
LAYOUTS = [(1, 1), (1, 2), (1, 4), (2, 1), (2, 2), (3, 1), (4, 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=4000)
    parser.add_argument("--features", type=int, default=3000)
    parser.add_argument("--classes", type=int, default=40)
    parser.add_argument("--lam", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", default=str(HERE / "results" / "svrg_layouts"))
    args = parser.parse_args()
    problem = make_extreme_multiclass(args.samples, args.features, args.classes, random_state=0)
    X, y = problem.X, problem.y
    lam = args.lam
    ref = LogisticRegression(C=1 / (lam * len(y)), tol=1e-12, max_iter=20_000).fit(X, y)
    W = np.hstack([ref.coef_, ref.intercept_[:, None]])
    labels = np.searchsorted(ref.classes_, y)
    best = plain_objective(W, add_intercept_column(X), labels, lam, X.shape[1])
    rows = []
    for workers, per_worker in LAYOUTS:
        clf = DSMLRClassifier(lam, n_workers=workers, blocks_per_rank=per_worker,
                              optimizer="svrg", max_epochs=args.epochs, tol=0.0,
                              dtype="float64", random_state=0).fit(X, y)  # fmt: skip
        gaps = [h["objective"] / best - 1 for h in clf.history_]
        rows.append({"workers": workers, "blocks_per_worker": per_worker, "gaps": gaps})
        print(workers, per_worker, " ".join(f"{g:.1e}" for g in gaps[4::5]), flush=True)
    shown = list(range(4, args.epochs, 5))
    lines = [
        "# SVRG's gap to the optimum by layout (`benchmarks/svrg_layouts.py`)",
        "",
        f"Generated problem: {args.samples} rows, {args.features} features, {args.classes} "
        f"classes, lam = {lam:g}, intercept; float64, in-process workers; "
        f"f* = {best:.10f} (lbfgs, tol 1e-12).  Relative gap `(f - f*) / f*` after epoch:",
        "",
        "| workers | blocks per worker | " + " | ".join(str(e + 1) for e in shown) + " |",
        "|---|---|" + "---|" * len(shown),
    ]
    for row in rows:
        gaps = " | ".join(f"{row['gaps'][e]:.1e}" for e in shown)
        lines.append(f"| {row['workers']} | {row['blocks_per_worker']} | {gaps} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    record = {"machine": platform.platform(), "optimum": best, "args": vars(args), "runs": rows}
    Path(args.out + ".json").write_text(json.dumps(record, indent=1))


if __name__ == "__main__":
    main()
