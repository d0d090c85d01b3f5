"""The command line under ``mpiexec``: every rank reads its byte range of the files.

``dsmlr train | evaluate | predict`` take this path when an MPI launcher started them
(:func:`dsmlr.comm.mpi.launched_by_mpi`), with one worker per rank; ``mpiexec -n 1``
takes it too, and gives the same model as the embedded default with one worker.  Only
rank 0 prints and writes the metrics and predictions files; each rank writes its own
model blocks.

An ``.npz`` data file cannot be entered in the middle: every rank reads all of it and
keeps its rows (:func:`dsmlr.io.read_dataset_shard`), so it must fit in one rank's memory.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from dsmlr.checkpoint import FAILURE_FILE
from dsmlr.cli import (
    DTYPES,
    ZERO_BASED,
    checkpoint_params,
    input_metadata,
    print_report,
    resume_note,
    training_summary,
)
from dsmlr.comm.mpi import MPIComm
from dsmlr.comm.watchdog import Watchdog
from dsmlr.distributed import ShardedModel, fit_sharded, load_sharded
from dsmlr.io.datasets import read_dataset_shard
from dsmlr.io.sharded import Shard
from dsmlr.progress import ReadingProgress, TrainingProgress

__all__ = ["evaluate_mpi", "predict_mpi", "train_mpi"]


def _say(comm: MPIComm, text: str) -> None:
    if comm.rank == 0:
        print(text, flush=True)


def train_mpi(args: argparse.Namespace) -> int:
    """``dsmlr train`` with one worker per MPI rank (see module docstring); if a rank
    dies, the watchdog names it (:mod:`dsmlr.comm.watchdog`)."""
    comm = MPIComm()
    record, note = None, None
    if args.checkpoint_dir:
        record = Path(args.checkpoint_dir) / FAILURE_FILE
        if comm.rank == 0:
            # Before the watchdog starts: the note shows (and removes) the record of how
            # the last run ended; any other is stale and would block the next record.
            note = resume_note(args)
            Path(args.checkpoint_dir).mkdir(parents=True, exist_ok=True)
            record.unlink(missing_ok=True)
        comm.barrier()
    with Watchdog(comm, record=record):
        return _train(comm, args, note)


def _train(comm: MPIComm, args: argparse.Namespace, note: str | None) -> int:
    if args.workers is not None and args.workers != comm.size:
        _say(comm, f"dsmlr: note: --workers ignored: one worker per MPI rank ({comm.size})")
    dtype = DTYPES[args.dtype]
    show = False if args.quiet or comm.rank else None  # rank 0's share stands for all
    with ReadingProgress(args.train, show=show) as progress:
        train = read_dataset_shard(
            args.train, comm, zero_based=ZERO_BASED[args.zero_based], dtype=dtype,
            progress=progress,
        )  # fmt: skip
    test = None
    if args.test:
        with ReadingProgress(args.test, show=show) as progress:
            test = read_dataset_shard(
                args.test, comm, zero_based=train.zero_based, n_features=train.n_features,
                dtype=dtype, allow_extra_features=True, progress=progress,
            )  # fmt: skip
    params = dict(
        lam=args.lam, fit_intercept=not args.no_intercept, max_epochs=args.epochs, tol=args.tol,
        engine=args.engine, optimizer=args.optimizer, eta=args.eta, batch_size=args.batch_size,
        dtype=args.dtype, random_state=args.seed, eval_every=args.eval_every,
        blocks_per_rank=args.blocks_per_rank, device=args.device,
        shuffle_rows=not args.no_shuffle_rows, **checkpoint_params(args),
    )  # fmt: skip
    metrics_file = args.metrics if comm.rank == 0 else None
    prefix = f"rank {comm.rank}: " if args.all_ranks else ""
    with (
        open(metrics_file, "w", encoding="utf-8") if metrics_file else nullcontext() as metrics,
        TrainingProgress(
            quiet=args.quiet, metrics=metrics, prefix=prefix,
            bar=None if comm.rank == 0 else False,
        ) as on_epoch,
    ):  # fmt: skip
        nnz = int(comm.allreduce_sum(np.array([train.X.nnz], dtype=np.int64))[0])
        if not args.quiet:
            _say(
                comm,
                f"training on {train.n_samples} rows, {train.n_features} features ({nnz} "
                f"non-zeros) with {comm.size} MPI rank(s)",
            )
            if note is not None:
                _say(comm, note)
        model = fit_sharded(
            train.X, train.y, comm=comm, n_features=train.n_features,
            X_val=None if test is None else test.X, y_val=None if test is None else test.y,
            callback=on_epoch, straggler=args.straggler, every_rank=args.all_ranks, **params,
        )  # fmt: skip
    _say(comm, "\n".join(training_summary(model.history_, model.converged_)))
    model.save(args.model, metadata=input_metadata(train.zero_based))
    _say(comm, f"model saved to {args.model} ({len(model.classes_)} classes in blocks)")
    return 0


def _model_and_data(args: argparse.Namespace) -> tuple[MPIComm, ShardedModel, Shard]:
    comm = MPIComm()
    model = load_sharded(args.model, comm)
    zero_based = ZERO_BASED[args.zero_based]
    if zero_based == "auto":
        zero_based = model.metadata.get("zero_based", "auto")
    with ReadingProgress(args.data, show=False if comm.rank else None) as progress:
        data = read_dataset_shard(
            args.data, comm, zero_based=zero_based, n_features=model.n_features_in_,
            dtype=model.dtype, allow_extra_features=True, progress=progress,
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
