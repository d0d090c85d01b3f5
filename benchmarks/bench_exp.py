"""The kernels' vectorisable exponential, measured: one rank's passes with it and with
the C library's.

Times the kernel passes one rank makes in an epoch (``bench_split.py``: B visits of
``N / P`` rows by ``K / B`` classes, one thread, no MPI) with dsmlr's numba kernels as
shipped (:func:`dsmlr.kernels.fast_exp.fast_exp`) and with a copy of them whose
``fast_exp`` is ``math.exp`` (numba calls the C library's ``expf`` for float32 arguments,
``exp`` for float64 ones, one element at a time) and whose ``sum_float64`` adds in index
order.  Both copies are compiled in this process and run alternately on the same arrays
(``bench_split.ab_passes``).  The kernels before ``fast_exp`` called the float64 ``exp``
in most loops, which is slower than ``expf``: ``bench_mpi.py --only scaling --baseline``
measures the change against that code.

Run: ``python benchmarks/bench_exp.py [--repeats 7] [--classes 1000] [--ranks 1 2 4 8]``;
writes ``benchmarks/results/exp.{json,md}``.
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

from bench_split import ab_passes, ab_table, load_problem, patched_kernels, write_report

HERE = Path(__file__).resolve().parent
_IMPORT = "from dsmlr.kernels.fast_exp import fast_exp, sum_float64\n"
_LIBM = (
    "\n\n@njit(inline='always')\ndef fast_exp(x):\n    return math.exp(x)\n\n\n"
    "@njit(inline='always')\ndef sum_float64(v):\n    total = 0.0\n"
    "    for k in range(v.shape[0]):\n        total += v[k]\n    return total\n"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", nargs="+", type=int, default=[1, 2, 4, 8])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--out", default=str(HERE / "results" / "exp"))
    args = parser.parse_args()
    X, y, k = load_problem(25_000, 20_000, args.classes)
    variants = {
        "fast_exp": patched_kernels(_IMPORT, _IMPORT, "numba_cpu_fast_exp").NumbaKernel(),
        "libm_exp": patched_kernels(_IMPORT, _LIBM, "numba_cpu_libm_exp").NumbaKernel(),
    }
    table = ab_passes(X, y, k, args.ranks, args.repeats, variants)
    result = {"machine": platform.platform(), "problem": [*X.shape, k], "repeats": args.repeats,
              "passes": table}  # fmt: skip
    lines = [
        "# The kernels' exponential (`benchmarks/bench_exp.py`)",
        "",
        f"One rank's kernel passes of an epoch ({X.shape[0]} rows, {X.shape[1]} features, "
        f"{k} classes, float32, one thread) with `fast_exp` as shipped and with the C "
        "library's exponential one element at a time (`math.exp`, for float32 arguments "
        "`expf`; the kernels before `fast_exp` called the float64 `exp` in most loops, "
        "slower still: see mpi.md), the two compiled in one process and run alternately; "
        f"medians of {args.repeats}.",
        "",
        *ab_table(table, ("fast_exp", "libm_exp"), ("fast_exp", "C library exp", "ratio")),
    ]
    write_report(args.out, result, lines)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
