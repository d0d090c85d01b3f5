"""``dsmlr export``: a model directory as one plain ``.npz`` (for other tools)."""

from __future__ import annotations

import argparse

from dsmlr.cli.common import Command
from dsmlr.comm.launcher import launched_by_mpi
from dsmlr.errors import DataError, on_all_ranks
from dsmlr.io import export_npz

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``export``'s arguments to ``p``."""
    p.add_argument("--model", metavar="DIR", required=True, help="model directory")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="output .npz: coef, intercept, classes, metadata (JSON)")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Run ``dsmlr export`` (one process: nothing here gains from more ranks)."""
    if launched_by_mpi():
        raise on_all_ranks(DataError("export runs in one process: start it without mpiexec"))
    info = export_npz(args.model, args.out)
    print(f"wrote {args.out}: {info['n_classes']} classes x {info['n_features']} features "
          "(arrays coef, intercept, classes, metadata)")  # fmt: skip
    return 0


COMMAND = Command("write a model as one plain .npz", configure, run)
