"""The command line under ``mpiexec``: every rank reads its byte range of the files.

``dsmlr train | evaluate | predict`` take this path when an MPI launcher started them
(:func:`dsmlr.comm.mpi.launched_by_mpi`), with one worker per rank; ``mpiexec -n 1``
takes it too, and gives the same model as the embedded default with one worker.  Only
rank 0 prints and writes the metrics and predictions files; each rank writes its own
model blocks.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext

import numpy as np

from dsmlr.cli import DTYPES, ZERO_BASED, epoch_reporter, print_report
from dsmlr.comm.mpi import MPIComm
from dsmlr.distributed import ShardedModel, fit_sharded, load_sharded
from dsmlr.io.sharded import Shard, read_svmlight_shard

__all__ = ["evaluate_mpi", "predict_mpi", "train_mpi"]


def _say(comm: MPIComm, text: str) -> None:
    if comm.rank == 0:
        print(text, flush=True)


def train_mpi(args: argparse.Namespace) -> int:
    """``dsmlr train`` with one worker per MPI rank (see module docstring)."""
    comm = MPIComm()
    if args.workers is not None and args.workers != comm.size:
        _say(comm, f"dsmlr: note: --workers ignored: one worker per MPI rank ({comm.size})")
    dtype = DTYPES[args.dtype]
    train = read_svmlight_shard(
        args.train, comm, zero_based=ZERO_BASED[args.zero_based], dtype=dtype
    )
    test = None
    if args.test:
        test = read_svmlight_shard(
            args.test, comm, zero_based=train.zero_based, n_features=train.n_features,
            dtype=dtype, allow_extra_features=True,
        )  # fmt: skip
    params = dict(
        lam=args.lam, fit_intercept=not args.no_intercept, max_epochs=args.epochs, tol=args.tol,
        engine=args.engine, optimizer=args.optimizer, eta=args.eta, batch_size=args.batch_size,
        dtype=args.dtype, random_state=args.seed, eval_every=args.eval_every,
    )  # fmt: skip
    metrics_file = args.metrics if comm.rank == 0 else None
    with open(metrics_file, "w", encoding="utf-8") if metrics_file else nullcontext() as metrics:
        on_epoch = epoch_reporter(args.quiet, metrics)
        nnz = int(comm.allreduce_sum(np.array([train.X.nnz], dtype=np.int64))[0])
        if not args.quiet:
            _say(
                comm,
                f"training on {train.n_samples} rows, {train.n_features} features ({nnz} "
                f"non-zeros) with {comm.size} MPI rank(s)",
            )
        model = fit_sharded(
            train.X, train.y, comm=comm, n_features=train.n_features,
            X_val=None if test is None else test.X, y_val=None if test is None else test.y,
            callback=on_epoch, straggler=args.straggler, **params,
        )  # fmt: skip
    last = model.history_[-1]
    stop = "converged" if model.converged_ else "reached the epoch limit"
    _say(comm, f"{stop} after {len(model.history_)} epoch(s) in {last['time']:.2f}s")
    _say(
        comm,
        f"train objective {last['objective']:.6g}  train accuracy {last['train_accuracy']:.4f}",
    )
    if test is not None:
        report = model.evaluate(test.X, test.y, 5)
        _say(
            comm,
            f"test accuracy {report['accuracy']:.4f}  test top-5 accuracy "
            f"{report['top_5_accuracy']:.4f}",
        )
    model.save(args.model, metadata={"zero_based": bool(train.zero_based)})
    _say(comm, f"model saved to {args.model} ({len(model.classes_)} classes in blocks)")
    return 0


def _model_and_data(args: argparse.Namespace) -> tuple[MPIComm, ShardedModel, Shard]:
    comm = MPIComm()
    model = load_sharded(args.model, comm)
    zero_based = ZERO_BASED[args.zero_based]
    if zero_based == "auto":
        zero_based = model.metadata.get("zero_based", "auto")
    data = read_svmlight_shard(
        args.data, comm, zero_based=zero_based, n_features=model.n_features_in_,
        dtype=model.dtype, allow_extra_features=True,
    )  # fmt: skip
    return comm, model, data


def evaluate_mpi(args: argparse.Namespace) -> int:
    """``dsmlr evaluate`` on a model whose blocks are spread over the ranks."""
    comm, model, data = _model_and_data(args)
    report = model.evaluate(data.X, data.y, args.top_k)
    if comm.rank == 0:
        print_report(report, args.json)
    return 0


def predict_mpi(args: argparse.Namespace, write_table) -> int:
    """``dsmlr predict``: ranks score their rows; rank 0 writes the table in file order."""
    comm, model, data = _model_and_data(args)
    labels, proba = model.predict_top_k(data.X, args.top_k)
    parts = comm.allgather((labels, proba))
    if comm.rank == 0:
        all_labels = np.concatenate([p[0] for p in parts])  # type: ignore[index]
        all_proba = np.concatenate([p[1] for p in parts])  # type: ignore[index]
        write_table(args.out, all_labels, all_proba)
        print(f"wrote {args.out}: {len(all_labels)} rows, top {all_labels.shape[1]} label(s) each")
    comm.barrier()
    return 0
