"""Spark MLlib: ``spark-lbfgs``, ``LogisticRegression(family="multinomial")`` in local mode.

Skipped, with the reason, when ``pyspark`` cannot be imported or no ``java`` is on the
PATH (pyspark is not a dependency of this project and is never installed for you).

Settings: ``regParam=lam``, ``elasticNetParam=0``, ``standardization=False`` (so the
penalty is ``lam/2 ||W||^2`` on the raw features, the suite's objective), ``tol=1e-10``,
master ``local[2]``.  Spark reports objective values per iteration but no times, so the
trace is made of fresh fits with ``maxIter`` = 1, 2, 4, ... as for scikit-learn: each
point's time is one whole ``fit`` on a cached DataFrame (built before the clock), and
the objective and accuracy are computed afterwards in numpy from the fitted
coefficients.  The ladder stops at ``stop_at``, at convergence (fewer iterations than
``maxIter``) or when the next fit would end past the time limit.

"""

from __future__ import annotations

import shutil
import time

import scipy.sparse as sp

from .common import RunResult, Skipped, TracePoint, accuracy, objective, peak_rss_mb

__all__ = ["METHODS", "run"]

METHODS = ("spark-lbfgs",)
_MASTER = "local[2]"


def run(
    method: str,
    data,
    *,
    lam: float,
    fit_intercept: bool,
    time_limit: float,
    stop_at: float | None,
    seed: int,
    driver_memory: str = "8g",
) -> RunResult:
    """Trace Spark's multinomial logistic regression by fresh fits of growing ``maxIter``.

    Parameters
    ----------
    method : {"spark-lbfgs"}
    data : problems.Data
    lam, fit_intercept : the problem's objective.
    time_limit : float
        Cap on the summed wall time of all the fits.
    stop_at : float or None
        Stop at the first fit whose objective is at most this.
    seed : int
        Unused (Spark's L-BFGS is deterministic); kept for the common signature.
    driver_memory : str
        The driver's heap (``spark.driver.memory``); in local mode it does all the work.
    """
    if shutil.which("java") is None:
        raise Skipped("spark-lbfgs: no `java` on the PATH")
    try:
        from pyspark.ml.classification import LogisticRegression
        from pyspark.ml.linalg import Vectors
        from pyspark.sql import SparkSession
    except ImportError:
        raise Skipped("spark-lbfgs: pyspark is not installed (pip install pyspark)") from None

    spark = (
        SparkSession.builder.master(_MASTER)
        .appName("dsmlr-benchmark")
        .config("spark.driver.memory", driver_memory)
        .config("spark.ui.enabled", "false")
        .getOrCreate()
    )
    try:
        X = data.X_train
        d = X.shape[1]
        if sp.issparse(X):
            X = sp.csr_matrix(X)
            rows = [
                (
                    float(data.y_train[i]),
                    Vectors.sparse(d, X.indices[s:e].tolist(), X.data[s:e].tolist()),
                )
                for i, (s, e) in enumerate(zip(X.indptr[:-1], X.indptr[1:], strict=True))
            ]
        else:
            rows = [
                (float(yi), Vectors.dense(xi.tolist()))
                for xi, yi in zip(X, data.y_train, strict=True)
            ]
        df = spark.createDataFrame(rows, ["label", "features"]).cache()
        df.count()  # materialise the cache before any clock starts

        trace: list[TracePoint] = []
        spent = 0.0
        stopped = "time limit"
        m = 1
        while not trace or spent + trace[-1].time / max(trace[-1].epochs, 1) * m <= time_limit:
            lr = LogisticRegression(
                family="multinomial",
                regParam=lam,
                elasticNetParam=0.0,
                standardization=False,
                fitIntercept=fit_intercept,
                maxIter=m,
                tol=1e-10,
            )
            t0 = time.perf_counter()
            model = lr.fit(df)
            elapsed = time.perf_counter() - t0
            spent += elapsed
            W = model.coefficientMatrix.toArray()
            b = model.interceptVector.toArray() if fit_intercept else None
            n_iter = model.summary.totalIterations
            f = objective(W, b, data.X_train, data.y_train, lam)
            acc = accuracy(W, b, data.X_test, data.y_test)
            trace.append(TracePoint(elapsed, f, acc, float(n_iter)))
            if stop_at is not None and f <= stop_at:
                stopped = "target"
                break
            if n_iter < m:
                stopped = "converged"
                break
            m *= 2
        settings = {
            "master": _MASTER,
            "regParam": lam,
            "elasticNetParam": 0.0,
            "standardization": False,
            "tol": 1e-10,
        }
        result = RunResult(method, trace, stopped, peak_rss_mb(), settings)
        result.notes.append(
            "fresh fits with maxIter doubling; peak RSS is the Python driver's only "
            "(the JVM is a separate process)"
        )
        return result
    finally:
        spark.stop()
