"""``dsmlr plan``: predicted memory, compute and communication per rank, before training.

Argument parsing and printing only; the model is :func:`dsmlr.plan.plan_training` (its
formulas are in :mod:`dsmlr.plan`).  Example::

    dsmlr plan --samples 211000000 --features 1350000 --classes 33000 \\
        --nnz-per-row 80 --ranks 16,32,64,128 --bandwidth 10Gb/s --dtype float32

prints one line per P: memory per rank by part, compute, bytes sent, communication and
epoch seconds (and the total for ``--epochs E``); ``--json`` prints the same as JSON.

Bandwidths are a number of bytes per second, or a number with a unit: ``B/s``,
``kB/s``, ``MB/s``, ``GB/s``, ``TB/s`` (powers of 1000), ``KiB/s`` ... ``TiB/s`` (powers
of 1024), bits as ``b/s``, ``kb/s``, ``Mb/s``, ``Gb/s``, ``Tb/s`` or ``bit/s``,
``Gbit/s``, ``Gbps`` (so ``10Gb/s`` is 1.25e9 bytes per second); ``inf`` for in-process
workers.  A value that does not parse is a usage error (exit 2).
"""

from __future__ import annotations

import argparse
import json
import math
import re

import numpy as np

from dsmlr import defaults
from dsmlr.calibration import calibrate
from dsmlr.cli.common import Command, nonnegative_float
from dsmlr.engines.optimizers import UPDATE_RULES
from dsmlr.plan import DEFAULT_LATENCY, TrainingPlan, plan_training

__all__ = ["COMMAND", "format_plans", "parse_bandwidth", "parse_ranks"]

#: Default network: 10 Gb/s Ethernet (1.25e9 bytes per second).
DEFAULT_BANDWIDTH = "10Gb/s"

#: Calibration problem limits (``--calibrate``): its block is at most this many classes,
#: and as many of the problem's features as this many bytes hold, so calibrating stays
#: seconds and a few GB whatever the problem planned, while the block still far exceeds
#: the CPU caches (a block that fits them runs its passes at twice a large model's rates:
#: measured at 1000 classes, 20K features against 270K).
CALIBRATE_MAX_CLASSES = 1000
CALIBRATE_BLOCK_BYTES = 512 * 2**20

_PREFIX = {"": 1, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}  # fmt: skip
_BANDWIDTH = re.compile(
    r"^\s*(?P<num>[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
    r"(?:(?P<prefix>Ki|Mi|Gi|Ti|k|K|M|G|T)?(?P<unit>B/s|b/s|bit/s|bps|Bps))?\s*$"
)


def parse_bandwidth(text: str) -> float:
    """Bytes per second from ``"1.25e9"``, ``"10GB/s"``, ``"10Gb/s"``, ``"100Gbps"``, ``"inf"``.

    Raises
    ------
    argparse.ArgumentTypeError
        Text that is not a positive bandwidth.
    """
    if text.strip().lower() in ("inf", "infinite"):
        return math.inf
    match = _BANDWIDTH.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(
            f"not a bandwidth: {text!r} (examples: 1.25e9, 10Gb/s, 10GB/s, 100Gbps, inf)"
        )
    value = float(match["num"])
    unit, prefix = match["unit"], match["prefix"] or ""
    bits = unit in ("b/s", "bit/s", "bps")
    value *= _PREFIX[prefix] / (8 if bits else 1)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"bandwidth must be > 0, got {text!r}")
    return value


def parse_ranks(text: str) -> list[int]:
    """``"16"`` or ``"1,2,4,8"``: positive integers, in the order given."""
    try:
        ranks = [int(part) for part in text.split(",")]
    except ValueError:
        ranks = []
    if not ranks or min(ranks) < 1:
        raise argparse.ArgumentTypeError(
            f"expected P or a list like 1,2,4,8 of positive integers, got {text!r}"
        )
    return ranks


def _positive_int(text: str) -> int:
    try:
        value = int(float(text)) if "e" in text.lower() else int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a valid int: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    """Add ``plan``'s arguments to ``p``."""
    for flag, meta, text in [("--samples", "N", "training rows (1e6 style accepted)"),
                             ("--features", "D", "features"),
                             ("--classes", "K", "classes")]:  # fmt: skip
        p.add_argument(flag, type=_positive_int, required=True, metavar=meta, help=text)
    nnz = p.add_mutually_exclusive_group(required=True)
    nnz.add_argument("--nnz-per-row", type=nonnegative_float, metavar="Z",
                     help="mean stored non-zeros a row")  # fmt: skip
    nnz.add_argument("--nnz", type=_positive_int, metavar="NNZ",
                     help="stored non-zeros of the whole training set")  # fmt: skip
    p.add_argument("--ranks", type=parse_ranks, default=[1], metavar="P[,P...]",
                   help="ranks, or a comma-separated list for one line each (1)")  # fmt: skip
    p.add_argument("--bandwidth", type=parse_bandwidth, default=DEFAULT_BANDWIDTH,
                   metavar="BW", help="bytes/s a rank sends, or 10Gb/s, 10GB/s, inf "
                   f"(in-process workers) ({DEFAULT_BANDWIDTH})")  # fmt: skip
    p.add_argument("--latency", type=nonnegative_float, default=DEFAULT_LATENCY,
                   metavar="S", help=f"seconds per message ({DEFAULT_LATENCY:g})")  # fmt: skip
    p.add_argument("--optimizer", choices=tuple(UPDATE_RULES), default=defaults.OPTIMIZER,
                   help="update rule (svrg)")  # fmt: skip
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32",
                   help="weights and data type (float32)")  # fmt: skip
    p.add_argument("--engine", choices=("async", "sync"), default="sync", help="engine (sync)")
    p.add_argument("--blocks-per-rank", type=_positive_int, metavar="B",
                   help="class blocks per rank (the engine's default)")  # fmt: skip
    p.add_argument("--eval-every", type=_positive_int, default=1, metavar="N",
                   help="exact objective every N epochs (1)")  # fmt: skip
    p.add_argument("--no-intercept", action="store_true", help="no per-class intercept")
    p.add_argument("--epochs", type=_positive_int, metavar="E",
                   help="also print the predicted time of E epochs")  # fmt: skip
    p.add_argument("--calibrate", action="store_true",
                   help="measure this machine's kernel rates first (seconds) instead of "
                   "using the development machine's")  # fmt: skip
    p.add_argument("--ranks-per-host", type=_positive_int, default=1, metavar="R",
                   help="with --calibrate: ranks sharing one host's cores (1)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print a JSON list, one object per P")


def _plans(args: argparse.Namespace) -> list[TrainingPlan]:
    nnz = args.nnz if args.nnz is not None else round(args.nnz_per_row * args.samples)
    common = {
        "n_samples": args.samples, "n_features": args.features, "n_classes": args.classes,
        "nnz": nnz, "bandwidth": args.bandwidth, "latency": args.latency,
        "optimizer": args.optimizer, "dtype": args.dtype, "engine": args.engine,
        "blocks_per_rank": args.blocks_per_rank, "eval_every": args.eval_every,
        "fit_intercept": not args.no_intercept,
    }  # fmt: skip
    plans = []
    rates: dict[int, object] = {}  # calibrated once per block width
    for p in args.ranks:
        throughput = None
        if args.calibrate:
            first = plan_training(**common, n_ranks=p)  # for B: the engine's block count
            width = max(2, min(CALIBRATE_MAX_CLASSES, -(-args.classes // first.n_blocks)))
            if width not in rates:
                rates[width] = calibrate(
                    n_features=min(
                        args.features,
                        CALIBRATE_BLOCK_BYTES // (width * np.dtype(args.dtype).itemsize),
                    ),
                    block_classes=width, nnz_per_row=max(1, round(nnz / args.samples)),
                    dtype=args.dtype, ranks_per_host=args.ranks_per_host,
                )  # fmt: skip
            throughput = rates[width]
        plans.append(plan_training(**common, n_ranks=p, throughput=throughput))
    return plans


def _size(n: float) -> str:
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def _duration(s: float) -> str:
    if s >= 3 * 86400:
        return f"{s / 86400:.3g} d"
    if s >= 3 * 3600:
        return f"{s / 3600:.3g} h"
    if s >= 300:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


def _rate(bandwidth: float) -> str:
    if math.isinf(bandwidth):
        return "in-process (by reference)"
    return f"{bandwidth / 1e9:.3g} GB/s ({bandwidth * 8 / 1e9:.3g} Gb/s)"


def format_plans(plans: list[TrainingPlan], epochs: int | None = None) -> str:
    """The readable table: a header, one line per P, and what the figures assume."""
    first = plans[0]
    header = [
        f"N={first.n_samples} D={first.n_features} K={first.n_classes} nnz={first.nnz} "
        f"{first.dtype} {first.optimizer} {first.engine} engine, eval every "
        f"{first.eval_every}; model {_size(first.model_bytes)}",
        f"network {_rate(first.bandwidth)}, latency {first.latency * 1e6:.3g} us; kernel "
        f"rates: {first.throughput.source or 'given'}",
        "per rank and epoch (from the 2nd); epoch = compute + comm (no overlap)",
        "",
    ]
    cols = ["P", "rows", "row state", "blocks", "memory", "compute", "sent", "comm", "epoch"]
    if epochs:
        cols.append(f"{epochs} epochs")
    table = [cols]
    for pl in plans:
        m = pl.memory
        row = [str(pl.n_ranks), _size(m.rows), _size(m.row_state), _size(m.blocks),
               _size(m.total), _duration(pl.compute_seconds), _size(pl.bytes_sent),
               _duration(pl.comm_seconds), _duration(pl.epoch_seconds)]  # fmt: skip
        if epochs:
            row.append(_duration(pl.total_seconds(epochs)))
        table.append(row)
    widths = [max(len(r[i]) for r in table) for i in range(len(cols))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths, strict=True)) for r in table]
    note = (f"memory = rows + row state + blocks + {_size(first.memory.base)} for Python and "
            "the libraries (dsmlr.memory.plan_memory)")  # fmt: skip
    return "\n".join([*header, *lines, "", note])


def run(args: argparse.Namespace) -> int:
    """Print the plan for every P in ``--ranks``; return the exit status (0)."""
    plans = _plans(args)
    if args.json:
        out = []
        for pl in plans:
            entry = pl.as_dict()
            if args.epochs:
                entry["epochs"] = args.epochs
                entry["total_seconds"] = pl.total_seconds(args.epochs)
            out.append(entry)
        print(json.dumps(out, indent=1))
    else:
        print(format_plans(plans, args.epochs))
    return 0


COMMAND = Command("predict memory, compute and communication per rank", configure, run)
