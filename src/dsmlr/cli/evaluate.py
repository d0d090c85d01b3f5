"""``dsmlr evaluate``: accuracy, top-k accuracy and the objective of a saved model on data.

Embedded, one process loads the model and the file.  Under ``mpiexec`` each rank loads
its own class blocks and reads its byte range of the file, so no rank holds the whole
model or the whole file; rank 0 prints the report.
"""

from __future__ import annotations

import argparse
import json
import math

import numpy as np

from dsmlr.cli.common import (
    DTYPES,
    Command,
    add_model_input,
    model_zero_based,
    positive_int,
    read_aligned,
)
from dsmlr.comm.launcher import launched_by_mpi
from dsmlr.progress import ReadingProgress

__all__ = ["COMMAND", "load_model_and_data", "print_report", "sharded_model_and_data"]


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``evaluate``'s arguments to ``p``."""
    add_model_input(p)
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="top-k accuracy (5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def load_model_and_data(args: argparse.Namespace):
    """The saved model (``--model``) and ``DATA`` read against it, in one process."""
    from dsmlr.estimator import load_model  # scikit-learn: only when needed

    model = load_model(args.model)
    dtype = DTYPES.get(str(model.coef_.dtype), np.float64)
    zero_based = model_zero_based(args, model.metadata_)
    X, y = read_aligned(args.data, model.n_features_in_, zero_based, dtype)
    return model, X, y


def sharded_model_and_data(args: argparse.Namespace):
    """Under ``mpiexec``: the communicator, this rank's blocks of the model and its rows."""
    from dsmlr.comm.mpi import MPIComm
    from dsmlr.distributed import load_sharded
    from dsmlr.io.datasets import read_dataset_shard

    comm = MPIComm()
    model = load_sharded(args.model, comm)
    zero_based = model_zero_based(args, model.metadata)
    with ReadingProgress(args.data, show=False if comm.rank else None) as progress:
        data = read_dataset_shard(
            args.data, comm, zero_based=zero_based, n_features=model.n_features_in_,
            dtype=model.dtype, allow_extra_features=True, progress=progress,
        )  # fmt: skip
    return comm, model, data


def print_report(report: dict, as_json: bool) -> None:
    """``evaluate``'s output: one JSON object, or one aligned line per figure."""
    if as_json:
        finite = {k: v if not isinstance(v, float) or math.isfinite(v) else None
                  for k, v in report.items()}  # fmt: skip
        print(json.dumps(finite))
    else:
        for name, value in report.items():
            print(f"{name:<16} {value:.6g}" if isinstance(value, float) else f"{name:<16} {value}")


def run(args: argparse.Namespace) -> int:
    """Run ``dsmlr evaluate`` (under ``mpiexec`` on the model's blocks, see module)."""
    if launched_by_mpi():
        comm, sharded, data = sharded_model_and_data(args)
        report = sharded.evaluate(data.X, data.y, args.top_k)
        if comm.rank == 0:
            print_report(report, args.json)
        return 0
    from dsmlr.objective import l2_penalty, squared_norm
    from dsmlr.scoring import encode_labels, evaluation_report, model_scores, summarise

    model, X, y = load_model_and_data(args)
    # One pass over the classes gives accuracy, top-k accuracy and the objective.
    k = max(1, min(args.top_k, len(model.classes_)))
    y_idx = encode_labels(y, model.classes_)
    scores = model_scores(X, model.coef_, model.intercept_, fit_intercept=model.fit_intercept,
                          k=k, y=y_idx)  # fmt: skip
    penalty = l2_penalty(model.lam, squared_norm(model.coef_))
    report = evaluation_report(X.shape[0], summarise(scores, y_idx, k), penalty, args.top_k)
    print_report(report, args.json)
    return 0


COMMAND = Command("score a saved model on data", configure, run)
