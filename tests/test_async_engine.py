"""The asynchronous engine (in-process workers): the optimum and token routing."""

from __future__ import annotations

import numpy as np
import pytest

from dsmlr.engines.async_tokens import choose_destination
from dsmlr.estimator import DSMLRClassifier
from dsmlr.objective import add_intercept_column, plain_objective
from problems import planted_sparse_problem, sklearn_optimum

LAM = 1e-3


@pytest.fixture(scope="module")
def problem():
    X, y = planted_sparse_problem(n_samples=1000, n_features=200, n_classes=16, seed=4)
    ref = sklearn_optimum(X, y, LAM, True)
    W = np.hstack([ref.coef_, ref.intercept_[:, None]])
    return X, y, plain_objective(W, add_intercept_column(X), y, LAM, X.shape[1])


@pytest.mark.parametrize("n_workers", [1, 2, 3, 4])
@pytest.mark.parametrize("optimizer", ["svrg", "adagrad"])
def test_async_reaches_the_optimum(problem, n_workers, optimizer):
    X, y, best = problem
    # float64: the lower bound (not below the optimum by more than 1e-9) is finer than a
    # float32 model's scores can resolve.
    clf = DSMLRClassifier(
        LAM, engine="async", n_workers=n_workers, optimizer=optimizer, max_epochs=60, tol=1e-9,
        random_state=0, dtype="float64",
    ).fit(X, y)  # fmt: skip
    gap = (clf.history_[-1]["objective"] - best) / best
    # SVRG converges; AdaGrad's steps do not shrink, so it stalls a little above.
    assert -1e-9 < gap < (1e-5 if optimizer == "svrg" else 2e-3)


def test_tokens_avoid_a_rank_with_a_long_queue():
    visits = np.zeros(4, dtype=np.int64)
    # Unvisited ranks come first, nearest to the left breaking ties ...
    assert choose_destination(2, visits, np.zeros(4), 4) == 1
    visits[1] = 1
    assert choose_destination(2, visits, np.zeros(4), 4) == 0
    # ... unless their queue is longer by more than a visit's worth of tokens.
    assert choose_destination(2, visits, np.array([9.0, 0, 0, 0]), 4) == 3
    assert choose_destination(2, visits, np.array([9.0, 0, 0, 9.0]), 4) == 1
    assert choose_destination(0, np.zeros(1, dtype=np.int64), np.zeros(1), 4) == 0


def test_tokens_stay_wide_enough_by_default():
    from dsmlr.engines import EngineConfig
    from dsmlr.engines.async_tokens import MIN_TOKEN_CLASSES, blocks_per_group

    def per_rank(k, p, chosen=None):
        cfg = EngineConfig(n_samples=100, n_features=10, n_classes=k, blocks_per_rank=chosen)
        return blocks_per_group(cfg, p)

    assert per_rank(4 * 2 * MIN_TOKEN_CLASSES, 2) == 4  # 4 tokens a rank of 50 classes
    assert per_rank(4 * 2 * MIN_TOKEN_CLASSES - 1, 2) == 2
    assert per_rank(200, 8) == 2  # narrower still, but two keep a rank busy
    assert per_rank(200, 2, chosen=4) == 4  # the user's choice stands
    assert per_rank(3, 2) == 1  # never more blocks than classes
