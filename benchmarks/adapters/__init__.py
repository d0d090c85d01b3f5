"""One adapter per library; :func:`run_method` dispatches a method name to its adapter.

Every adapter's ``run(method, data, *, lam, fit_intercept, time_limit, stop_at, seed)``
returns a :class:`~adapters.common.RunResult` whose trace lists models the method had
and when: training seconds (the trace's own evaluation off the clock, or one fresh fit
per point where the library has no callback), the exact training objective, the test
accuracy and the epochs or iterations done.  A method that cannot run here raises
:class:`~adapters.common.Skipped` with the reason.
"""

from __future__ import annotations

from importlib import import_module

from .common import RunResult, Skipped

__all__ = ["METHODS", "RunResult", "Skipped", "is_peer", "run_method"]

_MODULES = {
    "dsmlr": "dsmlr_adapter",
    "sklearn": "sklearn_adapter",
    "torch": "torch_adapter",
    "spark": "spark_adapter",
    "cyanure": "cyanure_adapter",
}

#: Every method name, in table order.
METHODS: tuple[str, ...] = (
    "dsmlr-sync",
    "dsmlr-async",
    "dsmlr-gpu",
    "dsmlr-sgd",
    "dsmlr-adagrad",
    "dsmlr-f64",
    "dsmlr-eval3",
    "sklearn-saga",
    "sklearn-lbfgs",
    "cyanure",
    "torch-lbfgs",
    "torch-adam",
    "torch-lbfgs-cuda",
    "torch-adam-cuda",
    "spark-lbfgs",
)


def is_peer(method: str) -> bool:
    """True for the other libraries' methods (the ones dsmlr's ratios are against)."""
    return not method.startswith("dsmlr")


def run_method(method: str, data, **kwargs) -> RunResult:
    """Run ``method`` through its library's adapter (imported only when used)."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    library = method.split("-", 1)[0]
    module = import_module(f".{_MODULES[library]}", __name__)
    if library not in ("sklearn", "cyanure"):
        kwargs.pop("targets", None)  # only the fresh-fit ladders bisect to targets
    return module.run(method, data, **kwargs)
