"""What the subcommands share: argument types, reading data against a model, writing
files atomically, and the :class:`Command` record the registry holds.

Nothing here runs a command; each command's module (``train``, ``evaluate``, ...) owns
its arguments, its embedded path and its path under ``mpiexec``.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from dsmlr.errors import DataError
from dsmlr.io import load_dataset
from dsmlr.progress import ReadingProgress

__all__ = [
    "DTYPES",
    "ZERO_BASED",
    "Command",
    "add_model_input",
    "add_zero_based",
    "atomic_write_text",
    "device_name",
    "fraction",
    "model_zero_based",
    "nonnegative_float",
    "positive_float",
    "positive_int",
    "read_aligned",
    "straggler",
    "warn",
]

ZERO_BASED = {"auto": "auto", "yes": True, "no": False}
DTYPES = {"float64": np.float64, "float32": np.float32}


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how to add its arguments, and what it runs."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


# -- argument types (a bad value is a usage error: exit 2) -------------------------------


def _number(kind: type, low: float, inclusive: bool = True) -> Callable[[str], float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a valid {kind.__name__}: {text!r}") from None
        if not math.isfinite(value) or value < low or (value == low and not inclusive):
            bound = ">=" if inclusive else ">"
            raise argparse.ArgumentTypeError(f"must be {bound} {low}, got {text}")
        return value

    return parse


positive_int = _number(int, 1)
nonnegative_float = _number(float, 0.0)
positive_float = _number(float, 0.0, inclusive=False)


def fraction(text: str) -> float:
    """A number strictly between 0 and 1."""
    value = positive_float(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be < 1, got {text}")
    return value


def device_name(text: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``."""
    if re.fullmatch(r"cpu|cuda(:\d+)?", text) is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def straggler(text: str) -> tuple[int, float]:
    """``RANK:FACTOR`` with ``FACTOR >= 1``."""
    rank, sep, factor = text.partition(":")
    try:
        value = (int(rank), float(factor))
    except ValueError:
        value = None
    if not sep or value is None or value[0] < 0 or not value[1] >= 1.0:
        raise argparse.ArgumentTypeError(f"expected RANK:FACTOR with FACTOR >= 1, got {text!r}")
    return value


def add_zero_based(p: argparse.ArgumentParser) -> None:
    """The ``--zero-based`` option of every command that reads LIBSVM files."""
    p.add_argument(
        "--zero-based", choices=sorted(ZERO_BASED), default="auto",
        help="LIBSVM feature indices start at 0 (yes), 1 (no) or auto (the default: detect "
        "from the training file; evaluate/predict use the base the model was trained with); "
        "ignored for .npz files",
    )  # fmt: skip


def add_model_input(p: argparse.ArgumentParser) -> None:
    """The arguments of the commands that apply a saved model to data."""
    p.add_argument("--model", metavar="DIR", required=True, help="model directory")
    p.add_argument("data", metavar="DATA", help="data: LIBSVM/svmlight, or a .npz file")
    add_zero_based(p)


def model_zero_based(args: argparse.Namespace, metadata: dict) -> bool | str:
    """The index base to read ``args.data`` with: the option, else the model's.

    Detecting it per file would shift every index of a 0-based file that lacks feature 0.
    """
    zero_based = ZERO_BASED[args.zero_based]
    if zero_based == "auto":
        zero_based = metadata.get("zero_based", "auto")
    return zero_based


# -- files -------------------------------------------------------------------------------


def warn(message: str) -> None:
    """One ``dsmlr: warning: ...`` line on stderr."""
    print(f"dsmlr: warning: {message}", file=sys.stderr)


def read_aligned(path: str, n_features: int, zero_based, dtype, show: bool | None = None):
    """Read ``path`` (LIBSVM, or ``.npz`` by its name) with exactly ``n_features`` columns:
    missing ones are zero, extra ones (features the model never saw) are dropped with a
    warning.  ``zero_based`` None (a model trained on ``.npz``) means ``"auto"``.  ``show``
    a bar while it is read (default: on a terminal)."""
    with ReadingProgress(path, show=show) as progress:
        data = load_dataset(path, zero_based=zero_based, dtype=dtype, progress=progress)
    X = data.X
    if X.shape[1] > n_features:
        dropped = int(np.count_nonzero(X.indices >= n_features))
        warn(
            f"{path}: {X.shape[1] - n_features} feature(s) beyond the model's {n_features} "
            f"dropped ({dropped} non-zero value(s))"
        )
        X = X[:, :n_features].tocsr()
    elif X.shape[1] < n_features:
        X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], n_features))
    return X, data.y


def atomic_write_text(path: str, write: Callable) -> None:
    """Call ``write(fh)`` on a temporary file next to ``path``, then rename it into place
    (directly into ``path`` when it is a device or pipe such as ``/dev/stdout``)."""
    if Path(path).exists() and not Path(path).is_file():
        with open(path, "w", encoding="utf-8", newline="\n") as fh:
            write(fh)
        return
    target = Path(path).resolve()  # through a symlink: replace the file, not the link
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, BrokenPipeError):
            raise DataError(f"cannot write: {exc.strerror or exc}", path) from None
        raise
