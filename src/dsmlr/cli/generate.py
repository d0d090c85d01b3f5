"""``dsmlr generate``: write a synthetic extreme-multiclass data set as LIBSVM files."""

from __future__ import annotations

import argparse

import numpy as np

from dsmlr.cli.common import Command, fraction, nonnegative_float, positive_int
from dsmlr.datagen import make_extreme_multiclass
from dsmlr.io import write_svmlight

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``generate``'s arguments to ``p``."""
    p.add_argument("prefix", metavar="OUT_PREFIX", help="writes PREFIX.train.svm, .test.svm")
    for flag, meta, text in [("--samples", "N", "rows"), ("--features", "D", "features"),
                             ("--classes", "K", "classes")]:  # fmt: skip
        p.add_argument(flag, type=positive_int, required=True, metavar=meta, help=text)
    p.add_argument("--nnz-per-row", type=positive_int, default=50, metavar="Z",
                   help="mean non-zeros a row (50)")  # fmt: skip
    p.add_argument("--test-fraction", type=fraction, default=0.2, metavar="F",
                   help="share of rows held out (0.2)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    for flag, default, text in [
        ("--feature-power", 1.0, "Zipf exponent of feature frequencies"),
        ("--class-power", 1.0, "Zipf exponent of class frequencies"),
        ("--signal", 4.0, "logit one informative feature adds: higher is easier"),
    ]:
        p.add_argument(flag, type=nonnegative_float, default=default, metavar="X",
                       help=f"{text} ({default})")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``dsmlr generate``: a random train/test split of one generated problem."""
    problem = make_extreme_multiclass(
        args.samples, args.features, args.classes, nnz_per_row=args.nnz_per_row,
        feature_power=args.feature_power, class_power=args.class_power, signal=args.signal,
        random_state=args.seed,
    )  # fmt: skip
    X, y = problem.X, problem.y
    order = np.random.default_rng(args.seed).permutation(X.shape[0])
    n_test = round(args.test_fraction * X.shape[0])
    splits = {"train": np.sort(order[n_test:]), "test": np.sort(order[:n_test])}
    for name, rows in splits.items():
        path = f"{args.prefix}.{name}.svm"
        X_part = X[rows]
        write_svmlight(path, X_part, y[rows])
        print(
            f"wrote {path}: {len(rows)} rows, {X.shape[1]} features, "
            f"{len(np.unique(y[rows]))} classes, {X_part.nnz} non-zeros"
        )
    return 0


COMMAND = Command("write a synthetic data set", configure, run)
