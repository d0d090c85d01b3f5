"""``dsmlr train``: read a training file, fit, save the model directory.

Embedded (the default) the whole file is read by one process and trained with
``--workers`` in-process workers.  Under ``mpiexec`` (:func:`dsmlr.comm.launched_by_mpi`)
each rank reads its byte range of the file and is one worker; only rank 0 prints and
writes the metrics file, each rank writes its own model blocks, and a watchdog names a
rank that dies (:mod:`dsmlr.comm.watchdog`).  ``mpiexec -n 1`` gives the same model as
the embedded default with one worker.  An ``.npz`` file cannot be entered in the
middle: under ``mpiexec`` every rank reads all of it and keeps its rows.
"""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

import numpy as np

from dsmlr import defaults
from dsmlr.cli.common import (
    DTYPES,
    ZERO_BASED,
    Command,
    add_zero_based,
    device_name,
    nonnegative_float,
    positive_float,
    positive_int,
    read_aligned,
    straggler,
)
from dsmlr.comm.launcher import launched_by_mpi
from dsmlr.engines import ENGINES, OPTIMIZERS
from dsmlr.errors import DataError
from dsmlr.io import load_dataset
from dsmlr.io.model_files import epochs_run
from dsmlr.progress import ReadingProgress, TrainingProgress

__all__ = ["COMMAND", "checkpoint_params", "input_metadata", "resume_note", "training_summary"]


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``train``'s arguments to ``p``."""
    p.add_argument("train", metavar="TRAIN", help="training data: LIBSVM/svmlight text "
                   "(also .gz/.bz2/.xz), or X and y in a .npz file")  # fmt: skip
    p.add_argument("--test", metavar="TEST", help="held-out data (same formats), scored "
                   "after every epoch")  # fmt: skip
    p.add_argument("--lam", type=nonnegative_float, default=defaults.LAM, help="L2 strength (1e-4)")
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=defaults.MAX_EPOCHS,
        metavar="E",
        help="max epochs (100)",
    )
    p.add_argument(
        "--tol", type=float, default=defaults.TOL, help="stop at this relative gain (1e-5)"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="P",
        help="workers (auto: one per core, at most one per 100 classes)",
    )
    p.add_argument("--engine", choices=sorted(ENGINES), default=defaults.ENGINE,
                   help="engine (sync)")  # fmt: skip
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults.OPTIMIZER,
                   help="update rule (svrg)")  # fmt: skip
    p.add_argument("--eta", type=positive_float, default=defaults.ETA, help="step size scale (2.0)")
    p.add_argument("--batch-size", type=positive_int, metavar="M",
                   help="rows a stochastic step (1 on the CPU, 256 on a GPU)")  # fmt: skip
    p.add_argument("--device", type=device_name, default="cpu",
                   help="cpu, or cuda / cuda:N: train on GPUs (PyTorch, the gpu extra; "
                   "under mpiexec one GPU per rank) (cpu)")  # fmt: skip
    p.add_argument("--dtype", choices=sorted(DTYPES), default=defaults.DTYPE,
                   help="data and weights type (float32)")  # fmt: skip
    p.add_argument("--blocks-per-rank", type=positive_int, metavar="B",
                   help="class blocks per worker (sync 1; async 2); from 2 under MPI "
                        "each block travels while the next is visited")  # fmt: skip
    p.add_argument("--eval-every", type=positive_int, default=defaults.EVAL_EVERY, metavar="N",
                   help="exact objective every N epochs (1; SVRG also anchors once every "
                        "N); stopping is checked then")  # fmt: skip
    p.add_argument("--no-intercept", action="store_true", help="fit no per-class intercept")
    p.add_argument("--no-shuffle-rows", action="store_true",
                   help="train each worker on a contiguous range of the rows (no copy) "
                        "instead of a random sample; only for rows in random order")  # fmt: skip
    p.add_argument("--seed", type=int, metavar="S",
                   help="seed of the rows' assignment to workers, the ring orders and the "
                        "row shuffles (random)")  # fmt: skip
    add_zero_based(p)
    p.add_argument("--model", metavar="DIR", default="dsmlr-model", help="output (dsmlr-model)")
    p.add_argument("--metrics", metavar="FILE",
                   help="write each epoch with an exact objective (see --eval-every) as a "
                        "JSON line")  # fmt: skip
    p.add_argument("--quiet", action="store_true",
                   help="no progress bar and no per-epoch lines")  # fmt: skip
    p.add_argument("--all-ranks", action="store_true",
                   help="under mpiexec: every rank prints its epoch lines (its own compute "
                   "and communication seconds), not only rank 0")  # fmt: skip
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="save a checkpoint here every --checkpoint-every epochs and at the "
                   "end (the newest two are kept)")  # fmt: skip
    p.add_argument("--checkpoint-every", type=positive_int,
                   default=defaults.CHECKPOINT_EVERY, metavar="N",
                   help="epochs between checkpoints (1)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir")  # fmt: skip
    p.add_argument(
        "--straggler", type=straggler, metavar="RANK:FACTOR",
        help="testing aid under mpiexec: make RANK compute FACTOR times slower",
    )  # fmt: skip


# -- helpers -----------------------------------------------------------------------------


def estimator_params(args: argparse.Namespace) -> dict:
    """The estimator's parameters from ``train``'s options (both paths; checked)."""
    return dict(
        lam=args.lam, fit_intercept=not args.no_intercept, max_epochs=args.epochs, tol=args.tol,
        engine=args.engine, optimizer=args.optimizer, eta=args.eta, batch_size=args.batch_size,
        dtype=args.dtype, random_state=args.seed, eval_every=args.eval_every,
        blocks_per_rank=args.blocks_per_rank, device=args.device,
        shuffle_rows=not args.no_shuffle_rows, **checkpoint_params(args),
    )  # fmt: skip


def checkpoint_params(args: argparse.Namespace) -> dict:
    """The estimator's checkpoint parameters from ``train``'s options (checked)."""
    if args.resume and not args.checkpoint_dir:
        raise DataError("--resume needs --checkpoint-dir (where the checkpoints are)")
    where = Path(args.checkpoint_dir or ".")
    if where.exists() and not where.is_dir():
        raise DataError("exists and is not a directory (--checkpoint-dir)", str(where))
    return {"checkpoint_dir": args.checkpoint_dir, "checkpoint_every": args.checkpoint_every,
            "resume": args.resume}  # fmt: skip


def resume_note(args: argparse.Namespace) -> str | None:
    """The line saying where training continues from, or None.  A failure record left
    by the MPI watchdog is shown once, then removed (call this on one process only)."""
    if not args.resume:
        return None
    from dsmlr.checkpoint import FAILURE_FILE, latest_checkpoint

    found = latest_checkpoint(args.checkpoint_dir)
    if found is None:
        return f"no checkpoint in {args.checkpoint_dir} yet: training from the start"
    note = f"resuming from {found}"
    failure = Path(args.checkpoint_dir) / FAILURE_FILE
    if failure.is_file():  # the watchdog's record of how the last run ended
        note += f" (the run before stopped: {failure.read_text().strip()})"
        failure.unlink()
    return note


def training_summary(history: list[dict], converged: bool | None) -> list[str]:
    """``train``'s closing lines: why it stopped, and the last epoch's figures."""
    last = history[-1]
    stop = "converged" if converged else "reached the epoch limit"
    lines = [
        # Epochs run: with --eval-every N only every N-th epoch (and the last) has a record.
        f"{stop} after {epochs_run(history)} epoch(s) in {last['time']:.2f}s",
        f"train objective {last['objective']:.6g}  train accuracy {last['train_accuracy']:.4f}",
    ]
    if "test_accuracy" in last:
        lines.append(
            f"test accuracy {last['test_accuracy']:.4f}  test top-5 accuracy "
            f"{last['test_top5_accuracy']:.4f}"
        )
    return lines


def input_metadata(zero_based: bool | None) -> dict:
    """What a model remembers of its training file: a LIBSVM file's index base, so that
    evaluate/predict read later files alike.  An ``.npz`` file has none (its columns are
    just numbered), so later LIBSVM files are read with ``"auto"``."""
    return {} if zero_based is None else {"zero_based": bool(zero_based)}


# -- embedded ----------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    """Run ``dsmlr train`` (under ``mpiexec``: :func:`run_mpi`)."""
    if launched_by_mpi():
        return run_mpi(args)
    if Path(args.model).exists() and not Path(args.model).is_dir():  # fail before training
        raise DataError("exists and is not a directory (--model)", args.model)
    dtype = DTYPES[args.dtype]
    show = False if args.quiet else None
    with ReadingProgress(args.train, show=show) as progress:
        train = load_dataset(
            args.train, zero_based=ZERO_BASED[args.zero_based], dtype=dtype, progress=progress
        )
    X, y = train.X, train.y
    X_test = y_test = None
    if args.test:
        X_test, y_test = read_aligned(args.test, X.shape[1], train.zero_based, dtype, show)
    from dsmlr.estimator import DSMLRClassifier  # scikit-learn: only when training

    model = DSMLRClassifier(n_workers=args.workers, **estimator_params(args))
    with (
        open(args.metrics, "w", encoding="utf-8") if args.metrics else nullcontext() as metrics,
        TrainingProgress(quiet=args.quiet, metrics=metrics) as on_epoch,
    ):
        if not args.quiet:
            print(
                f"training on {X.shape[0]} rows, {X.shape[1]} features, "
                f"{len(np.unique(y))} classes ({X.nnz} non-zeros)",
                flush=True,
            )
            if (note := resume_note(args)) is not None:
                print(note, flush=True)
        model.fit(X, y, X_val=X_test, y_val=y_test, callback=on_epoch)
    print("\n".join(training_summary(model.history_, model.converged_)))
    # The index base travels with the model, so evaluate/predict read later files alike.
    model.save(args.model, metadata=input_metadata(train.zero_based))
    print(f"model saved to {args.model}")
    return 0


# -- under mpiexec -----------------------------------------------------------------------


def run_mpi(args: argparse.Namespace) -> int:
    """``dsmlr train`` with one worker per MPI rank (see module docstring)."""
    from dsmlr.checkpoint import FAILURE_FILE
    from dsmlr.comm.mpi import MPIComm
    from dsmlr.comm.watchdog import Watchdog

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
        return _train_mpi(comm, args, note)


def _train_mpi(comm, args: argparse.Namespace, note: str | None) -> int:
    from dsmlr.distributed import fit_sharded
    from dsmlr.io.datasets import read_dataset_shard

    def say(text: str) -> None:
        if comm.rank == 0:
            print(text, flush=True)

    if args.workers is not None and args.workers != comm.size:
        say(f"dsmlr: note: --workers ignored: one worker per MPI rank ({comm.size})")
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
    params = estimator_params(args)
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
            say(
                f"training on {train.n_samples} rows, {train.n_features} features ({nnz} "
                f"non-zeros) with {comm.size} MPI rank(s)"
            )
            if note is not None:
                say(note)
        model = fit_sharded(
            train.X, train.y, comm=comm, n_features=train.n_features,
            X_val=None if test is None else test.X, y_val=None if test is None else test.y,
            callback=on_epoch, straggler=args.straggler, every_rank=args.all_ranks, **params,
        )  # fmt: skip
    say("\n".join(training_summary(model.history_, model.converged_)))
    model.save(args.model, metadata=input_metadata(train.zero_based))
    say(f"model saved to {args.model} ({len(model.classes_)} classes in blocks)")
    return 0


COMMAND = Command("train a model on LIBSVM or .npz data", configure, run)
