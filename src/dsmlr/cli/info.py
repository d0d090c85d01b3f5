"""``dsmlr info``: print versions, MPI, GPUs and CPU cores (:mod:`dsmlr.info`)."""

from __future__ import annotations

import argparse
import json

from dsmlr.cli.common import Command
from dsmlr.info import collect_info, format_info, mpi_world

__all__ = ["COMMAND"]


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``info``'s arguments to ``p``."""
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    """Run ``dsmlr info``: print the report (under ``mpiexec``, on rank 0 only)."""
    rank, _ = mpi_world()
    if rank != 0:  # every rank would print the same report
        return 0
    info = collect_info()
    print(json.dumps(info) if args.json else format_info(info), flush=True)
    return 0


COMMAND = Command("print versions, MPI, GPUs and CPU cores", configure, run)
