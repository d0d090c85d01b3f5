"""The kernels' software prefetch, measured: one rank's passes with and without it.

Times the kernel passes one rank makes in an epoch (``bench_split.py``: B visits of
``N / P`` rows by ``K / B`` classes, one thread, no MPI) with dsmlr's numba kernels and
with a copy of them compiled in the same process whose prefetch hint does nothing (the
module's source with ``prefetch_row`` replaced by an empty function; both copies
compiled without numba's disk cache, so they cannot load each other's code).  The two
run alternately, in alternating order, on the same arrays, so that the machine's drifts
in speed fall on both alike: separate processes differed by more than the effect.

With ``--against N`` the other copy asks for rows N non-zeros ahead whatever their
length, instead of not at all: a measure of the distance rule
(:func:`dsmlr.kernels.prefetch.prefetch_distance`).

Run: ``python benchmarks/bench_prefetch.py [--repeats 7] [--classes 1000] [--against N]``;
writes ``benchmarks/results/prefetch.{json,md}`` (``prefetch_distance.{json,md}`` with
``--against``).
"""

from __future__ import annotations

import argparse
import platform
import types
from pathlib import Path

from bench_split import ab_passes, ab_table, load_problem, patched_kernels, write_report

HERE = Path(__file__).resolve().parent
_IMPORT = "from dsmlr.kernels.prefetch import NEAR, prefetch_distance, prefetch_row\n"
_EMPTY = (
    "from dsmlr.kernels.prefetch import NEAR, prefetch_distance\n\n\n"
    "@njit(inline='always')\ndef prefetch_row(A, i):\n    pass\n"
)
_FIXED = (
    "from dsmlr.kernels.prefetch import NEAR, prefetch_row\n\n\n"
    "@njit(inline='always')\ndef prefetch_distance(row_bytes):\n    return {}\n"
)


def kernels(prefetch: bool, distance: int | None = None) -> types.ModuleType:
    """A fresh copy of :mod:`dsmlr.kernels.numba_cpu`: as shipped, without the hints, or
    (``distance``) with them at a fixed distance."""
    new = _IMPORT if prefetch else _EMPTY if distance is None else _FIXED.format(int(distance))
    return patched_kernels(_IMPORT, new, f"numba_cpu_{prefetch}_{distance}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--against", type=int, default=None, metavar="N",
                        help="compare with hints N non-zeros ahead at every row length, "
                             "not with no hints")  # fmt: skip
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    name = "prefetch" if args.against is None else "prefetch_distance"
    args.out = args.out or str(HERE / "results" / name)
    X, y, k = load_problem(25_000, 20_000, args.classes)
    other = kernels(False, args.against).NumbaKernel()
    variants = {"with": kernels(True).NumbaKernel(), "without": other}
    table = ab_passes(X, y, k, args.ranks, args.repeats, variants)
    result = {"machine": platform.platform(), "problem": [*X.shape, k], "repeats": args.repeats,
              "passes": table}  # fmt: skip
    without = "without" if args.against is None else f"{args.against} ahead"
    result["against"] = args.against
    lines = [
        "# Software prefetch in the kernels (`benchmarks/bench_prefetch.py`)",
        "",
        f"One rank's kernel passes of an epoch ({X.shape[0]} rows, {X.shape[1]} features, "
        f"{k} classes, float32, one thread) with the prefetch hints as shipped and "
        + ("without them" if args.against is None else f"always {args.against} non-zeros ahead")
        + f", the two compiled in one process and run alternately; medians of {args.repeats}.",
        "",
        *ab_table(table, ("with", "without"), ("with", without, f"with / {without}")),
    ]
    write_report(args.out, result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
