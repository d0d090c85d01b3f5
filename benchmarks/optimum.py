"""The optimum objective of each benchmark problem, computed once and cached.

A long, tight scikit-learn lbfgs run (``tol=1e-10``, ``max_iter`` 20000 by default)
minimises the suite's objective (``C = 1/(lam*N)``, see ``problems.py``).  The result
goes to ``cache/optimum-<problem key>.json`` with the iterations, the wall time, whether
lbfgs stopped on its own, and the gradient norm at the solution, which bounds the
remaining gap: the objective is ``lam``-strongly convex in the penalised weights, so
``f - f* <= ||grad f||^2 / (2 lam)`` when there is no intercept.

Run: ``python benchmarks/optimum.py small medium [--max-iter 20000] [--force]``.
``--solver dsmlr`` instead runs dsmlr in float64 until the objective stops moving, for
problems whose model is too large for scipy's L-BFGS-B (see
:func:`compute_optimum_dsmlr`); its gradient norm certifies it the same way.  On
the 2-core development machine the medium problem takes a long time (each lbfgs
iteration is many seconds; it needs hundreds): ``--time-cap`` bounds it, and the record
then says it did not converge.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from problems import CACHE_DIR, PROBLEMS, Problem

__all__ = ["cached_optimum", "compute_optimum", "gradient_norm", "optimum_path"]

_CHUNK = 4096


def optimum_path(problem: Problem, cache_dir: Path | str | None = None) -> Path:
    """Where the problem's optimum is cached (keyed by name, shape, lam, intercept, seed)."""
    return Path(cache_dir or CACHE_DIR) / f"optimum-{problem.key()}.json"


def cached_optimum(problem: Problem, cache_dir: Path | str | None = None) -> dict | None:
    """The cached optimum record, or None when it has not been computed."""
    path = optimum_path(problem, cache_dir)
    return json.loads(path.read_text()) if path.exists() else None


def gradient_norm(W: np.ndarray, b: np.ndarray | None, X, y: np.ndarray, lam: float) -> float:
    """Euclidean norm of the objective's gradient in ``(W, b)`` (float64, row blocks)."""
    n = X.shape[0]
    G = lam * W.astype(np.float64)
    gb = np.zeros(W.shape[0]) if b is not None else None
    for i in range(0, n, _CHUNK):
        Xc = X[i : i + _CHUNK]
        S = Xc @ W.T
        S = np.asarray(S.toarray() if sp.issparse(S) else S, dtype=np.float64)
        if b is not None:
            S += b
        P = np.exp(S - logsumexp(S, axis=1, keepdims=True))
        P[np.arange(P.shape[0]), y[i : i + _CHUNK]] -= 1.0
        G += np.asarray(Xc.T @ P).T / n
        if gb is not None:
            gb += P.sum(axis=0) / n
    total = float(np.sum(G**2)) + (0.0 if gb is None else float(np.sum(gb**2)))
    return float(np.sqrt(total))


def compute_optimum(
    problem: Problem,
    cache_dir: Path | str | None = None,
    max_iter: int = 20_000,
    verbose: bool = True,
    chunk: int = 50,
    time_cap: float | None = None,
    start_epochs: int = 0,
) -> dict:
    """Minimise the problem's objective with a tight lbfgs and cache the record.

    lbfgs runs in chunks of ``chunk`` iterations, each warm-started from the last
    (scikit-learn has no callback, and scipy's L-BFGS-B no longer prints progress):
    after each chunk a line gives the iterations, the objective and the time, and the
    run stops early once ``time_cap`` seconds have passed (then ``converged`` is false
    and the gradient norm says how far from the optimum it may be).  A restart drops
    lbfgs's curvature memory, which costs a few iterations per chunk.

    With ``start_epochs`` > 0, lbfgs starts from ``start_epochs`` epochs of dsmlr's
    default estimator instead of zero: on problems where lbfgs needs hours from zero
    (medium: about 70 s per iteration on 2 cores) it then only has to polish.  The
    optimum is still lbfgs's, at its own tolerance, and its gradient norm (and, without
    an intercept, the gap bound) certify it whatever the start.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from adapters.common import objective

    data = problem.load(cache_dir, verbose=verbose)
    n = data.X_train.shape[0]
    b = None
    if verbose:
        print(
            f"optimum of {problem.name!r}: lbfgs tol=1e-10 max_iter={max_iter} on "
            f"{data.X_train.shape} x {data.n_classes} classes, progress every {chunk} "
            "iterations",
            flush=True,
        )
    clf = LogisticRegression(
        C=1.0 / (problem.lam * n),
        solver="lbfgs",
        tol=1e-10,
        max_iter=chunk,
        fit_intercept=problem.fit_intercept,
        warm_start=True,
    )
    t0 = time.perf_counter()
    if start_epochs > 0:
        from dsmlr import DSMLRClassifier

        start = DSMLRClassifier(
            problem.lam, fit_intercept=problem.fit_intercept, max_epochs=start_epochs,
            tol=1e-12, random_state=0, verbose=int(verbose),
        ).fit(data.X_train, data.y_train)  # fmt: skip
        clf.classes_ = start.classes_
        clf.coef_ = start.coef_.astype(np.float64)
        clf.intercept_ = start.intercept_.astype(np.float64)
    total_iter, converged = 0, False
    while total_iter < max_iter:
        clf.set_params(max_iter=min(chunk, max_iter - total_iter))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(data.X_train, data.y_train)
        n_iter = int(np.max(clf.n_iter_))
        total_iter += n_iter
        converged = n_iter < clf.max_iter
        elapsed = time.perf_counter() - t0
        if verbose:
            b = clf.intercept_ if problem.fit_intercept else None
            f = objective(clf.coef_, b, data.X_train, data.y_train, problem.lam)
            print(f"  {total_iter} iterations, objective {f:.10g}, {elapsed:.0f} s", flush=True)
        if converged or (time_cap is not None and elapsed >= time_cap):
            break
    solver = f"sklearn lbfgs tol=1e-10, warm-started every {chunk} iterations" + (
        f", from {start_epochs} dsmlr epochs" if start_epochs else ""
    )
    seconds = time.perf_counter() - t0
    run = {"n_iter": total_iter, "max_iter": max_iter, "time_cap": time_cap,
           "converged": converged, "seconds": seconds, "solver": solver}  # fmt: skip
    return _save(problem, clf, data, run, cache_dir, verbose)


def _save(problem: Problem, clf, data, run: dict, cache_dir, verbose: bool) -> dict:
    """Certify a solver's result (objective, gradient norm, gap bound) and cache it."""
    from adapters.common import objective

    b = clf.intercept_ if problem.fit_intercept else None
    f = objective(clf.coef_, b, data.X_train, data.y_train, problem.lam)
    g = gradient_norm(clf.coef_, b, data.X_train, data.y_train, problem.lam)
    record = {
        "problem": problem.name,
        "key": problem.key(),
        "shape": problem.shape,
        "lam": problem.lam,
        "fit_intercept": problem.fit_intercept,
        "objective": f,
        "gradient_norm": g,
        # Strong convexity in W bounds the gap; an unpenalised intercept voids the bound.
        "gap_bound": None if problem.fit_intercept else g * g / (2.0 * problem.lam),
        **run,
    }
    path = optimum_path(problem, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    if verbose:
        print(json.dumps(record), flush=True)
    return record


def compute_optimum_dsmlr(
    problem: Problem, cache_dir: Path | str | None = None, epochs: int = 80, verbose: bool = True
) -> dict:
    """The optimum by dsmlr itself: one worker, float64, until the objective stops moving.

    For problems too large for scikit-learn's lbfgs: scipy's L-BFGS-B works in a buffer
    of about ``25 n`` doubles for ``n`` coefficients, and on debian-source (99M
    coefficients) it crashed with a segmentation fault.  The gradient norm at the
    result (and, without an intercept, the gap bound ``||g||^2 / (2 lam)``) certifies
    it as it certifies lbfgs's.
    """
    from dsmlr import DSMLRClassifier

    data = problem.load(cache_dir, verbose=verbose)
    t0 = time.perf_counter()
    clf = DSMLRClassifier(
        problem.lam, fit_intercept=problem.fit_intercept, max_epochs=epochs, tol=1e-15,
        n_iter_no_change=3, n_workers=1, dtype="float64", random_state=0,
        verbose=int(verbose),
    ).fit(data.X_train, data.y_train)  # fmt: skip
    run = {"n_iter": clf.n_iter_, "max_iter": epochs, "time_cap": None,
           "converged": bool(clf.converged_), "seconds": time.perf_counter() - t0,
           "solver": f"dsmlr float64, one worker, {clf.n_iter_} epochs (SVRG)"}  # fmt: skip
    return _save(problem, clf, data, run, cache_dir, verbose)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("problems", nargs="+", choices=sorted(PROBLEMS))
    parser.add_argument("--max-iter", type=int, default=20_000)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--chunk", type=int, default=50, help="iterations between reports")
    parser.add_argument("--time-cap", type=float, default=None, help="stop after this many s")
    parser.add_argument("--force", action="store_true", help="recompute a cached optimum")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument(
        "--start-epochs", type=int, default=0, help="start lbfgs from dsmlr epochs (0: zero)"
    )
    parser.add_argument(
        "--solver", choices=["lbfgs", "dsmlr"], default="lbfgs",
        help="dsmlr: float64 epochs until the objective stops moving (for problems too "
        "large for lbfgs, such as debian-source)",
    )  # fmt: skip
    args = parser.parse_args()
    for name in args.problems:
        problem = PROBLEMS[name]
        record = None if args.force else cached_optimum(problem, args.cache_dir)
        if record is None and args.solver == "dsmlr":
            record = compute_optimum_dsmlr(problem, args.cache_dir, verbose=not args.quiet)
        if record is None:
            record = compute_optimum(
                problem, args.cache_dir, args.max_iter, not args.quiet, args.chunk,
                args.time_cap, args.start_epochs,
            )  # fmt: skip
        print(f"{name}: optimum {record['objective']:.10g} ({record['n_iter']} iterations)")


if __name__ == "__main__":
    main()
