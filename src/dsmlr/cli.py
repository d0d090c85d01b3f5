"""Command-line interface: ``dsmlr train | evaluate | predict | generate | export | plot | info``.

Argument parsing, file handling and printing only; every computation is a call into the
library.  Subcommands live in the :data:`COMMANDS` registry (name -> :class:`Command`).

Exit status: 0 success, 1 a problem with the data or files (one ``dsmlr: error: ...``
line on stderr, no traceback), 2 bad usage (from argparse), 130 interrupted.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import sys
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from dsmlr import __version__
from dsmlr.cli_plan import configure_plan, run_plan
from dsmlr.comm.mpi import launched_by_mpi
from dsmlr.datagen import make_extreme_multiclass
from dsmlr.engines import ENGINES, OPTIMIZERS
from dsmlr.errors import DataError, NumericalError, on_all_ranks
from dsmlr.info import configure_info, run_info
from dsmlr.io import export_npz, load_dataset, write_svmlight
from dsmlr.io.model_files import epochs_run
from dsmlr.objective import squared_norm
from dsmlr.plotting import configure_plot, run_plot
from dsmlr.progress import ReadingProgress, TrainingProgress

if TYPE_CHECKING:
    pass

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

ZERO_BASED = {"auto": "auto", "yes": True, "no": False}
DTYPES = {"float64": np.float64, "float32": np.float32}


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
    value = positive_float(text)
    if value >= 1.0:
        raise argparse.ArgumentTypeError(f"must be < 1, got {text}")
    return value


def device_name(text: str) -> str:
    if re.fullmatch(r"cpu|cuda(:\d+)?", text) is None:
        raise argparse.ArgumentTypeError(f"expected cpu, cuda or cuda:N, got {text!r}")
    return text


def straggler(text: str) -> tuple[int, float]:
    rank, sep, factor = text.partition(":")
    try:
        value = (int(rank), float(factor))
    except ValueError:
        value = None
    if not sep or value is None or value[0] < 0 or not value[1] >= 1.0:
        raise argparse.ArgumentTypeError(f"expected RANK:FACTOR with FACTOR >= 1, got {text!r}")
    return value


# -- shared helpers ----------------------------------------------------------------------


def _warn(message: str) -> None:
    print(f"dsmlr: warning: {message}", file=sys.stderr)


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


def _read_aligned(path: str, n_features: int, zero_based, dtype, show: bool | None = None):
    """Read ``path`` (LIBSVM, or ``.npz`` by its name) with exactly ``n_features`` columns:
    missing ones are zero, extra ones (features the model never saw) are dropped with a
    warning.  ``zero_based`` None (a model trained on ``.npz``) means ``"auto"``.  ``show``
    a bar while it is read (default: on a terminal)."""
    with ReadingProgress(path, show=show) as progress:
        data = load_dataset(path, zero_based=zero_based, dtype=dtype, progress=progress)
    X = data.X
    if X.shape[1] > n_features:
        dropped = int(np.count_nonzero(X.indices >= n_features))
        _warn(
            f"{path}: {X.shape[1] - n_features} feature(s) beyond the model's {n_features} "
            f"dropped ({dropped} non-zero value(s))"
        )
        X = X[:, :n_features].tocsr()
    elif X.shape[1] < n_features:
        X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], n_features))
    return X, data.y


def _atomic_write_text(path: str, write: Callable) -> None:
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


def input_metadata(zero_based: bool | None) -> dict:
    """What a model remembers of its training file: a LIBSVM file's index base, so that
    evaluate/predict read later files alike.  An ``.npz`` file has none (its columns are
    just numbered), so later LIBSVM files are read with ``"auto"``."""
    return {} if zero_based is None else {"zero_based": bool(zero_based)}


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _add_zero_based(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--zero-based", choices=sorted(ZERO_BASED), default="auto",
        help="LIBSVM feature indices start at 0 (yes), 1 (no) or auto (the default: detect "
        "from the training file; evaluate/predict use the base the model was trained with); "
        "ignored for .npz files",
    )  # fmt: skip


# -- train -------------------------------------------------------------------------------


def _configure_train(p: argparse.ArgumentParser) -> None:
    p.add_argument("train", metavar="TRAIN", help="training data: LIBSVM/svmlight text "
                   "(also .gz/.bz2/.xz), or X and y in a .npz file")  # fmt: skip
    p.add_argument("--test", metavar="TEST", help="held-out data (same formats), scored "
                   "after every epoch")  # fmt: skip
    p.add_argument("--lam", type=nonnegative_float, default=1e-4, help="L2 strength (1e-4)")
    p.add_argument("--epochs", type=positive_int, default=100, metavar="E", help="max epochs (100)")
    p.add_argument("--tol", type=float, default=1e-5, help="stop at this relative gain (1e-5)")
    p.add_argument(
        "--workers",
        type=positive_int,
        metavar="P",
        help="workers (auto: one per core, at most one per 100 classes)",
    )
    p.add_argument("--engine", choices=sorted(ENGINES), default="sync", help="engine (sync)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="svrg", help="update rule (svrg)")
    p.add_argument("--eta", type=positive_float, default=2.0, help="step size scale (2.0)")
    p.add_argument("--batch-size", type=positive_int, metavar="M",
                   help="rows a stochastic step (1 on the CPU, 256 on a GPU)")  # fmt: skip
    p.add_argument("--device", type=device_name, default="cpu",
                   help="cpu, or cuda / cuda:N: train on GPUs (PyTorch, the gpu extra; "
                   "under mpiexec one GPU per rank) (cpu)")  # fmt: skip
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                   help="data and weights type (float32)")  # fmt: skip
    p.add_argument("--blocks-per-rank", type=positive_int, metavar="B",
                   help="class blocks per worker (sync 1; async 4); from 2 under MPI "
                        "each block travels while the next is visited")  # fmt: skip
    p.add_argument("--eval-every", type=positive_int, default=1, metavar="N",
                   help="exact objective every N epochs (1; SVRG also anchors once every "
                        "N); stopping is checked then")  # fmt: skip
    p.add_argument("--no-intercept", action="store_true", help="fit no per-class intercept")
    p.add_argument("--no-shuffle-rows", action="store_true",
                   help="train each worker on a contiguous range of the rows (no copy) "
                        "instead of a random sample; only for rows in random order")  # fmt: skip
    p.add_argument("--seed", type=int, metavar="S",
                   help="seed of the rows' assignment to workers, the ring orders and the "
                        "row shuffles (random)")  # fmt: skip
    _add_zero_based(p)
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
    p.add_argument("--checkpoint-every", type=positive_int, default=1, metavar="N",
                   help="epochs between checkpoints (1)")  # fmt: skip
    p.add_argument("--resume", action="store_true",
                   help="continue from the newest checkpoint in --checkpoint-dir")  # fmt: skip
    p.add_argument(
        "--straggler", type=straggler, metavar="RANK:FACTOR",
        help="testing aid under mpiexec: make RANK compute FACTOR times slower",
    )  # fmt: skip


def _run_train(args: argparse.Namespace) -> int:
    if launched_by_mpi():
        from dsmlr.cli_mpi import train_mpi

        return train_mpi(args)
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
        X_test, y_test = _read_aligned(args.test, X.shape[1], train.zero_based, dtype, show)
    from dsmlr.estimator import DSMLRClassifier  # scikit-learn: only when training

    model = DSMLRClassifier(
        args.lam, fit_intercept=not args.no_intercept, max_epochs=args.epochs, tol=args.tol,
        n_workers=args.workers, engine=args.engine, optimizer=args.optimizer, eta=args.eta,
        batch_size=args.batch_size, dtype=args.dtype, random_state=args.seed,
        eval_every=args.eval_every, blocks_per_rank=args.blocks_per_rank, device=args.device,
        shuffle_rows=not args.no_shuffle_rows, **checkpoint_params(args),
    )  # fmt: skip
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


# -- evaluate ----------------------------------------------------------------------------


def _configure_model_input(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", required=True, help="model directory")
    p.add_argument("data", metavar="DATA", help="data: LIBSVM/svmlight, or a .npz file")
    _add_zero_based(p)


def _load_model_and_data(args: argparse.Namespace):
    from dsmlr.estimator import load_model  # scikit-learn: only when needed

    model = load_model(args.model)
    dtype = DTYPES.get(str(model.coef_.dtype), np.float64)
    zero_based = ZERO_BASED[args.zero_based]
    if zero_based == "auto":
        # Detecting per file would shift every index of a 0-based file that lacks feature 0.
        zero_based = model.metadata_.get("zero_based", "auto")
    X, y = _read_aligned(args.data, model.n_features_in_, zero_based, dtype)
    return model, X, y


def _configure_evaluate(p: argparse.ArgumentParser) -> None:
    _configure_model_input(p)
    p.add_argument("--top-k", type=positive_int, default=5, metavar="K", help="top-k accuracy (5)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _run_evaluate(args: argparse.Namespace) -> int:
    if launched_by_mpi():
        from dsmlr.cli_mpi import evaluate_mpi

        return evaluate_mpi(args)
    model, X, y = _load_model_and_data(args)
    from dsmlr.scoring import encode_labels, evaluation_report, model_scores, summarise

    # One pass over the classes gives accuracy, top-k accuracy and the objective.
    k = max(1, min(args.top_k, len(model.classes_)))
    y_idx = encode_labels(y, model.classes_)
    scores = model_scores(X, model.coef_, model.intercept_, fit_intercept=model.fit_intercept,
                          k=k, y=y_idx)  # fmt: skip
    penalty = 0.5 * model.lam * squared_norm(model.coef_)
    report = evaluation_report(X.shape[0], summarise(scores, y_idx, k), penalty, args.top_k)
    print_report(report, args.json)
    return 0


def print_report(report: dict, as_json: bool) -> None:
    """``evaluate``'s output: one JSON object, or one aligned line per figure."""
    if as_json:
        print(json.dumps({k: _finite_or_none(v) for k, v in report.items()}))
    else:
        for name, value in report.items():
            print(f"{name:<16} {value:.6g}" if isinstance(value, float) else f"{name:<16} {value}")


# -- predict -----------------------------------------------------------------------------


def _configure_predict(p: argparse.ArgumentParser) -> None:
    _configure_model_input(p)
    p.add_argument("--top-k", type=positive_int, default=1, metavar="K", help="labels a row (1)")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="output table: comma-separated if FILE ends in .csv, else TSV")  # fmt: skip


def _write_predictions(path: str, labels: np.ndarray, proba: np.ndarray) -> None:
    """The predictions table: a header, then one row per data row (atomically).

    Comma-separated when ``path`` ends in ``.csv``, else tab-separated.  Both go through
    the csv module, so a field holding the separator, a quote or a line break (string
    labels from ``.npz`` files may) is quoted; other fields are written bare.
    """
    k = labels.shape[1]
    header = ["row", "label", "prob"] if k == 1 else ["row"]
    if k > 1:
        header += [f"{name}_{j}" for j in range(1, k + 1) for name in ("label", "prob")]
    delimiter = "," if path.lower().endswith(".csv") else "\t"
    rows = enumerate(zip(labels.tolist(), proba.tolist(), strict=True))

    def write(fh) -> None:
        out = csv.writer(fh, delimiter=delimiter, lineterminator="\n")
        out.writerow(header)
        for i, (row_labels, row_proba) in rows:
            pairs = zip(row_labels, row_proba, strict=True)
            out.writerow([str(i)] + [v for a, p in pairs for v in (str(a), f"{p:.6g}")])

    _atomic_write_text(path, write)


def _run_predict(args: argparse.Namespace) -> int:
    if launched_by_mpi():
        from dsmlr.cli_mpi import predict_mpi

        return predict_mpi(args, _write_predictions)
    model, X, _ = _load_model_and_data(args)
    labels, proba = model.predict_top_k(X, args.top_k)
    _write_predictions(args.out, labels, proba)
    print(f"wrote {args.out}: {X.shape[0]} rows, top {labels.shape[1]} label(s) each")
    return 0


# -- generate ----------------------------------------------------------------------------


def _configure_generate(p: argparse.ArgumentParser) -> None:
    p.add_argument("prefix", metavar="OUT_PREFIX", help="writes PREFIX.train.svm, .test.svm")
    for flag, meta, text in [("--samples", "N", "rows"), ("--features", "D", "features"),
                             ("--classes", "K", "classes")]:  # fmt: skip
        p.add_argument(flag, type=positive_int, required=True, metavar=meta, help=text)
    p.add_argument("--nnz-per-row", type=positive_int, default=50, metavar="Z",
                   help="mean non-zeros a row (50)")  # fmt: skip
    p.add_argument("--test-fraction", type=fraction, default=0.2, metavar="F",
                   help="share of rows held out (0.2)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0)")
    for flag, default, text in [
        ("--feature-power", 1.0, "Zipf exponent of feature frequencies"),
        ("--class-power", 1.0, "Zipf exponent of class frequencies"),
        ("--signal", 4.0, "logit one informative feature adds: higher is easier"),
    ]:
        p.add_argument(flag, type=nonnegative_float, default=default, metavar="X",
                       help=f"{text} ({default})")  # fmt: skip


def _run_generate(args: argparse.Namespace) -> int:
    problem = make_extreme_multiclass(
        args.samples, args.features, args.classes, nnz_per_row=args.nnz_per_row,
        feature_power=args.feature_power, class_power=args.class_power, signal=args.signal,
        random_state=args.seed,
    )  # fmt: skip
    X, y = problem.X, problem.y
    order = np.random.default_rng(args.seed).permutation(X.shape[0])
    n_test = round(args.test_fraction * X.shape[0])
    splits = {"train": np.sort(order[n_test:]), "test": np.sort(order[:n_test])}
    for name, rows in splits.items():
        path = f"{args.prefix}.{name}.svm"
        X_part = X[rows]
        write_svmlight(path, X_part, y[rows])
        print(
            f"wrote {path}: {len(rows)} rows, {X.shape[1]} features, "
            f"{len(np.unique(y[rows]))} classes, {X_part.nnz} non-zeros"
        )
    return 0


# -- export ------------------------------------------------------------------------------


def _configure_export(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", metavar="DIR", required=True, help="model directory")
    p.add_argument("--out", metavar="FILE", required=True,
                   help="output .npz: coef, intercept, classes, metadata (JSON)")  # fmt: skip


def _run_export(args: argparse.Namespace) -> int:
    if launched_by_mpi():
        # One process reads the model directory; nothing here gains from more ranks.
        raise on_all_ranks(DataError("export runs in one process: start it without mpiexec"))
    info = export_npz(args.model, args.out)
    print(f"wrote {args.out}: {info['n_classes']} classes x {info['n_features']} features "
          "(arrays coef, intercept, classes, metadata)")  # fmt: skip
    return 0


# -- dispatch ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    """One subcommand: its help line, how to add its arguments, and what it runs."""

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: The subcommands, by name, in the order ``dsmlr --help`` lists them.
COMMANDS: dict[str, Command] = {
    "train": Command("train a model on LIBSVM or .npz data", _configure_train, _run_train),
    "evaluate": Command("score a saved model on data", _configure_evaluate, _run_evaluate),
    "predict": Command("write top-k predictions as TSV/CSV", _configure_predict, _run_predict),
    "generate": Command("write a synthetic data set", _configure_generate, _run_generate),
    "export": Command("write a model as one plain .npz", _configure_export, _run_export),
    "plot": Command("draw training curves from --metrics files", configure_plot, run_plot),
    "info": Command("print versions, MPI, GPUs and CPU cores", configure_info, run_info),
    "plan": Command("predict memory, compute and communication per rank", configure_plan, run_plan),
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
