"""One figure per problem of a ``suite.py`` run: relative gap to the optimum against time.

Every method's every run is a line (repeats share their method's colour), as the DS-MLR
paper draws its comparisons: ``(f - f*) / f*`` on a log axis against training seconds on
a log axis, where ``f*`` is the problem's reference optimum recorded in the results.
Points at or below the optimum are drawn at the axis floor (1e-7).

Run: ``python benchmarks/suite_figures.py benchmarks/results/real-all.json`` writes
``benchmarks/results/figures/<json stem>-<problem>.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
FLOOR = 1e-7


def draw(results: dict, out_dir: Path, stem: str) -> list[Path]:
    """Write one PNG per problem of ``results`` (a suite JSON); return their paths."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, prob in results["problems"].items():
        f_opt = prob.get("reference")
        if f_opt is None or not prob.get("runs"):
            continue
        fig = Figure(figsize=(6.4, 4.4), layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for i, (method, runs) in enumerate(sorted(prob["runs"].items())):
            colour = f"C{i % 10}"
            for r, run in enumerate(runs):
                trace = run.get("trace") or []
                t = [p["time"] for p in trace if p["time"] > 0]
                gap = [
                    max((p["objective"] - f_opt) / abs(f_opt), FLOOR)
                    for p in trace
                    if p["time"] > 0
                ]
                if t:
                    ax.plot(t, gap, color=colour, marker=".", lw=1.2, alpha=0.9 if r == 0 else 0.4,
                            label=method if r == 0 else None)  # fmt: skip
        for target in (1e-2, 1e-3):
            ax.axhline(target, color="0.6", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("training seconds")
        ax.set_ylabel("relative gap to the optimum  (f - f*) / f*")
        ax.set_title(f"{name}: {prob['n_train']} rows, {prob['n_features']} features, "
                     f"{prob['n_classes']} classes", fontsize=10)  # fmt: skip
        ax.legend(fontsize=8)
        path = out_dir / f"{stem}-{name}.png"
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="a suite.py results JSON")
    ap.add_argument("--out-dir", default=str(HERE / "results" / "figures"))
    args = ap.parse_args(argv)
    src = Path(args.results)
    for path in draw(json.loads(src.read_text()), Path(args.out_dir), src.stem):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
