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
import statistics
import types
from pathlib import Path

from bench_split import PASSES, load_problem, rank_work, timed_run, write_report
from dsmlr.engines.sync_ring import blocks_per_worker
from dsmlr.kernels import numba_cpu

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
    source = Path(numba_cpu.__file__).read_text()
    if _IMPORT not in source or "cache=True" not in source:
        raise SystemExit("numba_cpu.py changed: update bench_prefetch.py's source patch")
    source = source.replace("cache=True", "cache=False")
    if distance is not None:
        source = source.replace(_IMPORT, _FIXED.format(int(distance)))
    elif not prefetch:
        source = source.replace(_IMPORT, _EMPTY)
    module = types.ModuleType(f"numba_cpu_{prefetch}_{distance}")
    module.__file__ = numba_cpu.__file__
    exec(compile(source, numba_cpu.__file__, "exec"), module.__dict__)
    return module


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
    variants = {True: kernels(True).NumbaKernel(), False: other}
    table: dict[str, dict[int, dict]] = {}
    for what in PASSES:
        table[what] = {}
        for p in args.ranks:
            # The same starting arrays (same seed) for both, reset before every run.
            works = {on: rank_work(X, y, k, p, what, kernel=kern) for on, kern in variants.items()}
            times: dict[bool, list[float]] = {True: [], False: []}
            for _reset, run in works.values():
                run()  # compile, warm the caches
            for r in range(args.repeats):
                for on in (True, False) if r % 2 == 0 else (False, True):
                    times[on].append(timed_run(*works[on]))
            with_, without = statistics.median(times[True]), statistics.median(times[False])
            table[what][p] = {"with": with_, "without": without, "ratio": with_ / without,
                              "classes_per_block": k // (p * blocks_per_worker(p)),
                              "with_runs": times[True], "without_runs": times[False]}  # fmt: skip
            print(what, p, round(with_ / without, 3), flush=True)
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
        f"| pass | P | classes per block | with (s) | {without} (s) | with / {without} |",
        "|---|---|---|---|---|---|",
    ]
    for what, per_p in table.items():
        for p, v in per_p.items():
            lines.append(f"| {what} | {p} | {v['classes_per_block']} | {v['with']:.3f} | "
                         f"{v['without']:.3f} | {v['ratio']:.2f} |")  # fmt: skip
    write_report(args.out, result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
