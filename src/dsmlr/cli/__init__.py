"""Command-line interface: ``dsmlr train | evaluate | predict | generate | export | plot |
info | plan``.

Argument parsing, file handling and printing only; every computation is a call into the
library.  Each subcommand is a module of this package (``dsmlr.cli.train``, ...) that
owns its arguments, its embedded path and its path under ``mpiexec``, and ends in a
:class:`dsmlr.cli.common.Command`; :data:`COMMANDS` lists them by name.

Exit status: 0 success, 1 a problem with the data or files (one ``dsmlr: error: ...``
line on stderr, no traceback), 2 bad usage (from argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from dsmlr import __version__
from dsmlr.cli import evaluate, export, generate, info, plan, plot, predict, train
from dsmlr.cli.common import Command
from dsmlr.comm.launcher import launched_by_mpi
from dsmlr.errors import DataError, NumericalError

__all__ = ["COMMANDS", "build_parser", "main"]

#: The subcommands, by name, in the order ``dsmlr --help`` lists them.
COMMANDS: dict[str, Command] = {
    "train": train.COMMAND,
    "evaluate": evaluate.COMMAND,
    "predict": predict.COMMAND,
    "generate": generate.COMMAND,
    "export": export.COMMAND,
    "plot": plot.COMMAND,
    "info": info.COMMAND,
    "plan": plan.COMMAND,
}


def build_parser() -> argparse.ArgumentParser:
    """The ``dsmlr`` argument parser: one subparser per entry of :data:`COMMANDS`.

    The documentation's command-line reference is generated from it.
    """
    parser = argparse.ArgumentParser(
        prog="dsmlr",
        description="Multinomial logistic regression at extreme scale (DS-MLR).",
    )
    parser.add_argument("--version", action="version", version=f"dsmlr {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, command in COMMANDS.items():
        child = sub.add_parser(name, help=command.help, description=command.help)
        command.configure(child)
        child.set_defaults(run=command.run)
    return parser


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.filename is not None:
        text = f"{exc.filename}: {exc.strerror or exc}"
    else:
        text = str(exc) or type(exc).__name__
    return " ".join(text.split())


def _fail_under_mpi(exc: BaseException) -> int:
    """End this rank after ``exc`` without leaving the other ranks waiting.

    An error every rank raised alike (:func:`dsmlr.errors.on_all_ranks`) is printed once,
    by rank 0, and every rank exits with status 1.  Any other exception happened on this
    rank alone: print it with the rank, then abort the whole job.
    """
    from dsmlr.comm.mpi import abort_job, world_rank_and_size

    try:
        rank, size = world_rank_and_size()
    except ImportError as missing:  # launched by mpiexec, but no mpi4py here
        print(f"dsmlr: error: {_one_line(missing)}", file=sys.stderr, flush=True)
        return 1
    if getattr(exc, "all_ranks", False) or size == 1:
        if rank == 0:
            print(f"dsmlr: error: {_one_line(exc)}", file=sys.stderr, flush=True)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    print(f"dsmlr: error: rank {rank}: {_one_line(exc)}", file=sys.stderr, flush=True)
    abort_job(1)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = build_parser().parse_args(argv)
    if launched_by_mpi():
        try:
            return args.run(args)
        except BaseException as exc:  # no rank may be left waiting for this one
            return _fail_under_mpi(exc)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("dsmlr: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # stdout closed early (piped into head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (DataError, NumericalError, OSError, ValueError) as exc:
        print(f"dsmlr: error: {_one_line(exc)}", file=sys.stderr)
        return 1
