"""``dsmlr predict``: the top-k labels of every row, with their probabilities, as a table.

Embedded, one process scores the file and writes the table.  Under ``mpiexec`` each
rank scores its byte range of the file with its own class blocks (no rank holds the
model); rank 0 then writes the table in file order: its own rows, then each other
rank's in turn, received as text a slice at a time, so no rank ever holds more than its
own predictions and one slice of another's.
"""

from __future__ import annotations

import argparse
import csv
import io
from typing import TextIO

import numpy as np

from dsmlr.cli.common import Command, add_model_input, atomic_write_text, positive_int
from dsmlr.cli.evaluate import load_model_and_data, sharded_model_and_data
from dsmlr.comm.launcher import launched_by_mpi

__all__ = ["COMMAND", "write_predictions", "write_predictions_mpi"]

#: Rows a rank formats and sends to rank 0 at a time under ``mpiexec``.
SLICE_ROWS = 65536


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``predict``'s arguments to ``p``."""
    add_model_input(p)
    p.add_argument("--top-k", type=positive_int, default=1, metavar="K", help="labels a row (1)")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="output table: comma-separated if FILE ends in .csv, else TSV")  # fmt: skip


def _delimiter(path: str) -> str:
    return "," if path.lower().endswith(".csv") else "\t"


def _write_header(fh: TextIO, k: int, delimiter: str) -> None:
    header = ["row", "label", "prob"] if k == 1 else ["row"]
    if k > 1:
        header += [f"{name}_{j}" for j in range(1, k + 1) for name in ("label", "prob")]
    csv.writer(fh, delimiter=delimiter, lineterminator="\n").writerow(header)


def _write_rows(
    fh: TextIO, labels: np.ndarray, proba: np.ndarray, first_row: int, delimiter: str
) -> None:
    out = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
    pairs_by_row = zip(labels.tolist(), proba.tolist(), strict=True)
    for i, (row_labels, row_proba) in enumerate(pairs_by_row, start=first_row):
        pairs = zip(row_labels, row_proba, strict=True)
        out.writerow([str(i)] + [v for a, p in pairs for v in (str(a), f"{p:.6g}")])


def write_predictions(path: str, labels: np.ndarray, proba: np.ndarray) -> None:
    """The predictions table: a header, then one row per data row (atomically).

    Comma-separated when ``path`` ends in ``.csv``, else tab-separated.  Both go through
    the csv module, so a field holding the separator, a quote or a line break (string
    labels from ``.npz`` files may) is quoted; other fields are written bare.
    """
    delimiter = _delimiter(path)

    def write(fh: TextIO) -> None:
        _write_header(fh, labels.shape[1], delimiter)
        _write_rows(fh, labels, proba, 0, delimiter)

    atomic_write_text(path, write)


def run(args: argparse.Namespace) -> int:
    """Run ``dsmlr predict`` (under ``mpiexec``: :func:`run_mpi`)."""
    if launched_by_mpi():
        return run_mpi(args)
    model, X, _ = load_model_and_data(args)
    labels, proba = model.predict_top_k(X, args.top_k)
    write_predictions(args.out, labels, proba)
    print(f"wrote {args.out}: {X.shape[0]} rows, top {labels.shape[1]} label(s) each")
    return 0


def run_mpi(args: argparse.Namespace) -> int:
    """``dsmlr predict`` on a model whose blocks are spread over the ranks (see module)."""
    comm, model, data = sharded_model_and_data(args)
    labels, proba = model.predict_top_k(data.X, args.top_k)
    n_rows = write_predictions_mpi(comm, args.out, labels, proba)
    if comm.rank == 0:
        print(f"wrote {args.out}: {n_rows} rows, top {labels.shape[1]} label(s) each")
    return 0


def write_predictions_mpi(
    comm, path: str, labels: np.ndarray, proba: np.ndarray, slice_rows: int = SLICE_ROWS
) -> int:
    """The table of :func:`write_predictions` from the ranks' rows, in rank order.

    Collective.  Rank 0 writes the file (atomically): its own rows, then each other
    rank's, asked for in turn and received ``slice_rows`` rows of text at a time.
    Returns the number of rows written (on every rank).
    """
    counts = [int(n) for n in comm.allgather(len(labels))]  # type: ignore[call-overload]
    delimiter = _delimiter(path)
    if comm.rank == 0:

        def write(fh: TextIO) -> None:
            _write_header(fh, labels.shape[1], delimiter)
            _write_rows(fh, labels, proba, 0, delimiter)
            for sender in range(1, comm.size):
                # One sender at a time, so its slices arrive in order and alone.
                comm.post(sender, [np.ones(1, dtype=np.uint8)])
                while (text := _receive(comm)[0]).size:  # an empty one ends its rows
                    fh.write(text.tobytes().decode("utf-8"))

        atomic_write_text(path, write)
    else:
        _receive(comm)  # rank 0 asks for this rank's rows
        first = sum(counts[: comm.rank])
        for start in range(0, len(labels), slice_rows):
            text = io.StringIO()
            stop = start + slice_rows
            _write_rows(text, labels[start:stop], proba[start:stop], first + start, delimiter)
            comm.post(0, [np.frombuffer(text.getvalue().encode("utf-8"), dtype=np.uint8)])
            comm.flush()  # one slice in memory at a time
        comm.post(0, [np.empty(0, dtype=np.uint8)])
        comm.flush()
    comm.barrier()
    return sum(counts)


def _receive(comm) -> list[np.ndarray]:
    while (message := comm.poll(timeout=1.0)) is None:
        pass
    return message


COMMAND = Command("write top-k predictions as TSV/CSV", configure, run)
