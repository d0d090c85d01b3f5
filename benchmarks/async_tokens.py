"""Tokens a rank for the asynchronous engine: time to 0.1% of the optimum at P = 2.

For each Debian set, ``--blocks`` tokens a rank (and the synchronous engine beside them),
in process and under ``mpiexec -n 2``, with every rank as fast and with rank 1 slowed 2x
(``--straggler 1:2``): the median over ``--repeats`` of the seconds (and the epoch) at
which the exact objective first comes within 0.1% of the cached optimum
(``benchmarks/optimum.py``).  The runs take turns, so that a slow spell of the machine
spreads over all of them.  Writes ``results/async_tokens.{json,md}``.

    python benchmarks/async_tokens.py --repeats 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from environment import describe, summary
from parallel_convergence import HERE, _run_child, _run_mpi, reached

TARGET = 1e-3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--problems", nargs="+", default=["debian-source", "debian-files"])
    parser.add_argument("--blocks", nargs="+", type=int, default=[2, 4])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(HERE / "results" / "async_tokens"))
    args = parser.parse_args(argv)

    from optimum import cached_optimum
    from problems import get_problem

    engines = [("sync", None)] + [("async", b) for b in args.blocks]
    modes = [("in process", None), ("mpi", None), ("mpi", "1:2")]
    result = {"environment": describe(), "command": " ".join(
        ["python benchmarks/async_tokens.py", *sys.argv[1:]]), "rows": []}  # fmt: skip
    for name in args.problems:
        problem = get_problem(name)
        f_star = cached_optimum(problem)["objective"]
        problem.load(verbose=True)
        # Compile (or load) the kernels before timing anything.
        warm = {"problem": name, "engine": "sync", "epochs": 1, "workers": 2, "seed": 0,
                "optimum": f_star, "stop_gap": 0.0}  # fmt: skip
        _run_child(warm, None)
        times: dict = {}
        for _ in range(args.repeats):
            for mode, slow in modes:
                for engine, blocks in engines:
                    spec = {"problem": name, "engine": engine, "epochs": args.epochs,
                            "workers": 2, "seed": 0, "optimum": f_star, "stop_gap": TARGET,
                            "blocks_per_rank": blocks}  # fmt: skip
                    if mode == "mpi":
                        run = _run_mpi(problem, spec, 2, slow)
                    else:
                        run = _run_child(spec, None)
                    hit = reached(run["records"], f_star, TARGET) or (None, None)
                    times.setdefault((mode, slow, engine, blocks), []).append(hit)
                    print(name, mode, slow, engine, blocks, hit, flush=True)
        for (mode, slow, engine, blocks), hits in times.items():
            seconds = [s for _, s in hits]
            result["rows"].append({
                "problem": name, "mode": mode, "straggler": slow, "engine": engine,
                "blocks_per_rank": blocks, "epochs": [e for e, _ in hits], "seconds": seconds,
                "median": statistics.median(seconds) if None not in seconds else None,
            })  # fmt: skip
    report(result, Path(args.out))


def report(result: dict, out: Path) -> None:
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    lines = [
        "# Tokens a rank (`benchmarks/async_tokens.py`)", "", summary(result["environment"]),
        "", f"Command: `{result['command']}`", "",
        "P = 2. Seconds to within 0.1% of the optimum (median over the repeats) and the "
        "epoch each repeat got there; 'vs sync': against the synchronous engine's median "
        "in the same setting.", "",
        "| data | run | rank 1 slowed | engine | tokens a rank | s to 0.1% | epochs | vs sync |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    sync = {(r["problem"], r["mode"], r["straggler"]): r["median"]
            for r in result["rows"] if r["engine"] == "sync"}  # fmt: skip
    for r in result["rows"]:
        base = sync[(r["problem"], r["mode"], r["straggler"])]
        ratio = f"{r['median'] / base:.2f}" if r["median"] and base else "-"
        median = f"{r['median']:.2f}" if r["median"] else "-"
        lines.append(
            f"| {r['problem']} | {r['mode']} | {'2x' if r['straggler'] else '-'} | "
            f"{r['engine']} | {r['blocks_per_rank'] or 1} | {median} | "
            f"{', '.join(str(e) for e in r['epochs'])} | {ratio} |"
        )
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
