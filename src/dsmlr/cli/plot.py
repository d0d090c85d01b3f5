"""``dsmlr plot``: draw training curves from ``--metrics`` files (:mod:`dsmlr.plotting`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dsmlr import plotting
from dsmlr.cli.common import Command, warn
from dsmlr.errors import DataError

__all__ = ["COMMAND"]


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid float: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text}")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``plot``'s arguments to ``p``."""
    p.add_argument(
        "runs", metavar="RUN.jsonl", nargs="+", help="metrics files of 'dsmlr train --metrics'"
    )
    p.add_argument(
        "--out", metavar="FIG.png", required=True,
        help="output figure (format from the suffix: .png, .pdf, .svg, ...)",
    )  # fmt: skip
    p.add_argument(
        "--optimum", type=_finite_float, metavar="F",
        help="optimal objective: plot relative suboptimality (f - F)/|F| on a log scale",
    )  # fmt: skip
    p.add_argument(
        "--labels", metavar="A,B,...",
        help="legend labels, one per file, comma-separated (default: file names)",
    )  # fmt: skip
    p.add_argument("--title", metavar="T", help="figure title")
    # The label count can only be checked against the files after parsing; this keeps
    # that check a usage error (status 2, with the usage line) like argparse's own.
    p.set_defaults(usage_error=p.error)


def run(args: argparse.Namespace) -> int:
    """Run ``dsmlr plot``: read the runs, draw them, write the figure."""
    if args.labels is None:
        labels = [Path(run).stem for run in args.runs]
        if len(set(labels)) < len(labels):  # run1/metrics.jsonl, run2/metrics.jsonl
            labels = [str(Path(run).with_suffix("")) for run in args.runs]
    else:
        labels = args.labels.split(",")
        if len(labels) != len(args.runs):
            args.usage_error(
                f"--labels has {len(labels)} label(s) for {len(args.runs)} file(s); "
                "give one per file, comma-separated"
            )
    try:
        import matplotlib  # noqa: F401  (fail before reading what cannot be drawn)
    except ImportError:
        raise DataError(plotting.MISSING_MATPLOTLIB) from None
    runs = [plotting.read_metrics(path) for path in args.runs]
    if any(plotting.has_test_accuracy(records) for records in runs):
        for path, records in zip(args.runs, runs, strict=True):
            if not plotting.has_test_accuracy(records):
                warn(f"{path}: no test accuracy; left out of those panels")
    fig = plotting.build_figure(runs, labels, optimum=args.optimum, title=args.title)
    plotting.save_figure(fig, args.out)
    print(f"wrote {args.out}: {len(runs)} run(s)")
    return 0


COMMAND = Command("draw training curves from --metrics files", configure, run)
