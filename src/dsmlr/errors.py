"""Exceptions raised by dsmlr.

Everything a user can cause with bad input surfaces as a :class:`DataError`
whose message is one line of the form ``file:line: what is wrong`` (or just
``what is wrong`` when no file is involved).  The command-line interface prints
that line and exits with status 1; it never shows a traceback for them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["DataError", "NumericalError", "agreed", "on_all_ranks"]


class DataError(ValueError):
    """Invalid input data (a file, an array or a model directory).

    Parameters
    ----------
    message : str
        What is wrong, in words a user can act on.
    path : str, optional
        The file the problem was found in.
    line : int, optional
        1-based line number inside ``path``.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None):
        self.problem = message
        self.path = path
        self.line = line
        if path is not None and line is not None:
            text = f"{path}:{line}: {message}"
        elif path is not None:
            text = f"{path}: {message}"
        else:
            text = message
        super().__init__(text)


class NumericalError(ArithmeticError):
    """Training produced non-finite values (overflow, NaN) that cannot be recovered."""


def on_all_ranks(exc: BaseException) -> BaseException:
    """Mark ``exc`` as raised identically on every rank of a distributed run.

    Such an error ends the job cleanly (every rank exits with status 1, rank 0 prints
    it); any other exception on one rank must abort the whole job instead, or the other
    ranks would wait for it forever in their next collective call.
    """
    exc.all_ranks = True  # type: ignore[attr-defined]
    return exc


def agreed(comm: Any, fn: Callable[[], object]) -> object:
    """Run the local step ``fn`` on every rank; if it fails anywhere, fail everywhere.

    A rank that raised alone would leave the others blocked in their next collective
    call, so failures are exchanged first and every rank raises the same
    :class:`DataError` (the lowest failing rank's message).  ``comm`` is a
    :class:`~dsmlr.comm.base.Communicator`.
    """
    problem, out = "", None
    try:
        out = fn()
    except (DataError, ValueError, OSError) as exc:
        problem = str(exc) if comm.size == 1 else f"rank {comm.rank}: {exc}"
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise on_all_ranks(DataError(str(problems[0])))
    return out
