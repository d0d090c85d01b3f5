"""Awkward but valid data trains to the reference optimum with finite weights, or stops
with a clear diagnostic: badly scaled features, duplicated rows, a class with a single
example, classes missing from a worker's rows, more classes than a worker has rows."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dsmlr import DSMLRClassifier
from dsmlr.comm.inprocess import run_workers
from dsmlr.distributed import fit_sharded
from dsmlr.errors import DataError, NumericalError
from problems import planted_sparse_problem, sklearn_optimum

LAM = 1e-2


def _gap_to_optimum(clf: DSMLRClassifier, X, y) -> float:
    """Relative objective gap to scikit-learn's lbfgs optimum of the same problem."""
    ref = sklearn_optimum(X, y, LAM, True)
    ref_clf = DSMLRClassifier(LAM)
    ref_clf.classes_, ref_clf.n_features_in_ = ref.classes_, X.shape[1]
    ref_clf.coef_, ref_clf.intercept_ = ref.coef_, ref.intercept_
    best = ref_clf.objective(X, y)
    return (clf.objective(X, y) - best) / best


def _fit(X, y, **kw) -> DSMLRClassifier:
    params = {"max_epochs": 300, "tol": 1e-10, "random_state": 0, "n_workers": 2, **kw}
    clf = DSMLRClassifier(LAM, **params).fit(X, y)
    assert np.all(np.isfinite(clf.coef_)) and np.all(np.isfinite(clf.intercept_))
    assert all(np.isfinite(h["objective"]) for h in clf.history_)
    return clf


def test_badly_scaled_features_up_to_a_million():
    X, y = planted_sparse_problem(n_samples=400, n_features=30, n_classes=5, density=0.3, seed=1)
    scale = np.logspace(-3, 6, X.shape[1])  # columns from 1e-3 to 1e6
    X = sp.csr_matrix(X @ sp.diags(scale))
    clf = _fit(X, y, max_epochs=60)
    # The step is sized by the rows' norms, so nothing overflows.  With curvatures nine
    # orders apart neither this nor scikit-learn's lbfgs converges in reasonable time,
    # so the bar is a model better than none: below the zero model's log K, and more
    # accurate than always answering the most frequent class.  (Scale such features,
    # e.g. with scikit-learn's MaxAbsScaler, to converge fast.)
    objectives = [h["objective"] for h in clf.history_]
    assert objectives[-1] < np.log(5) and objectives[-1] <= min(objectives) * (1 + 1e-9)
    assert clf.score(X, y) > np.bincount(y).max() / len(y)


def test_duplicated_rows_give_the_same_model():
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=6, seed=2)
    once = _fit(X, y)
    twice = _fit(sp.vstack([X, X]).tocsr(), np.concatenate([y, y]))
    # The mean loss over duplicated rows is the same function: the same optimum.
    np.testing.assert_allclose(twice.coef_, once.coef_, atol=2e-4)


def test_a_class_with_one_example():
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=5, seed=3)
    y = y.copy()
    y[7] = 9  # a class seen once
    clf = _fit(X, y)
    assert 9 in clf.classes_
    assert _gap_to_optimum(clf, X, y) < 1e-4


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_classes_absent_from_a_workers_rows(engine):
    X, y = planted_sparse_problem(n_samples=400, n_features=40, n_classes=8, seed=4)
    order = np.argsort(y, kind="stable")  # worker 0 gets the low classes, worker 1 the high
    X, y = X[order], y[order]
    clf = _fit(X, y, engine=engine)
    assert _gap_to_optimum(clf, X, y) < 1e-4


def test_more_classes_than_rows_on_a_worker():
    X, y = planted_sparse_problem(n_samples=90, n_features=40, n_classes=40, seed=5)
    assert len(np.unique(y)) > 90 / 4
    clf = _fit(X, y, n_workers=4)
    assert _gap_to_optimum(clf, X, y) < 1e-4


@pytest.mark.parametrize("optimizer", ["svrg", "sgd"])
def test_values_whose_squares_overflow_are_refused_clearly(optimizer):
    X, y = planted_sparse_problem(n_samples=200, n_features=30, n_classes=4, seed=6)
    X = sp.csr_matrix(X * 1e160)
    with pytest.raises(NumericalError, match=r"feature values too large.*rescale"):
        DSMLRClassifier(optimizer=optimizer, max_epochs=2, n_workers=1, dtype="float64").fit(X, y)


@pytest.mark.parametrize("sparse", [True, False], ids=["csr", "dense"])
def test_values_beyond_float32_are_refused_in_the_default_dtype(sparse):
    """float64 data holding a value float32 cannot hold: named, with the way out, instead
    of training on an infinity; fit, predict and the sharded entry point alike."""
    X, y = planted_sparse_problem(n_samples=60, n_features=10, n_classes=3, seed=6)
    X = X.toarray()
    X[5, 2] = -1e100
    X = sp.csr_matrix(X) if sparse else X
    message = r"X holds a value of magnitude 1e\+100, beyond float32.*dtype='float64'"
    with pytest.raises(DataError, match=message):
        DSMLRClassifier(max_epochs=1).fit(X, y)
    with pytest.raises(DataError, match=message):
        run_workers(1, lambda comm: fit_sharded(X, y, comm=comm, max_epochs=1))
    clf = DSMLRClassifier(max_epochs=1, n_workers=1).fit(X / 1e90, y)
    with pytest.raises(DataError, match=message):
        clf.predict(X)
    assert DSMLRClassifier(max_epochs=1, dtype="float64").fit(X, y).coef_.dtype == np.float64


def test_huge_but_finite_values_train_to_finite_weights():
    X, y = planted_sparse_problem(n_samples=200, n_features=30, n_classes=4, seed=6)
    clf = _fit(sp.csr_matrix(X * 1e150), y, max_epochs=5, dtype="float64")
    assert clf.history_[-1]["objective"] <= np.log(4) + 1e-9
