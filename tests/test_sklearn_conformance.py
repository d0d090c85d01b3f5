"""scikit-learn conformance: the estimator checks, meta-estimators, sample and class
weights against scikit-learn's own optimum, and warm starts."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import MaxAbsScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

from dsmlr import DSMLRClassifier

#: Checks that cannot pass, and why.
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": (
        "weights equal repetitions exactly in the objective, but the stochastic optimiser "
        "stops within its tolerance, not within the check's 1e-7 of the probabilities; "
        "test_integer_weights_equal_repeated_rows checks the objectives instead"
    ),
    "check_sample_weight_equivalence_on_sparse_data": (
        "as for dense data: see test_integer_weights_equal_repeated_rows"
    ),
}


def _checked_estimator() -> DSMLRClassifier:
    # One worker: the checks' data sets have a handful of classes, and a well
    # conditioned problem (lam = 1e-2) converges tightly in few epochs.
    return DSMLRClassifier(lam=1e-2, max_epochs=200, n_workers=1, random_state=0)


@parametrize_with_checks(
    [_checked_estimator()], expected_failed_checks=lambda est: EXPECTED_FAILURES
)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _problem(seed: int = 0, n: int = 240, d: int = 12, k: int = 4):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    y = rng.integers(0, k, n)
    X[np.arange(n), y] += 1.5  # learnable, but not separable
    return X, y


@pytest.mark.parametrize("n_workers", [1, 2])
@pytest.mark.parametrize("sparse", [False, True])
def test_sample_weight_reaches_sklearn_weighted_optimum(n_workers, sparse):
    X, y = _problem()
    sw = np.random.default_rng(1).uniform(0.0, 3.0, len(y))
    lam = 1e-2
    # Ours: lam/2 ||W||^2 + (1/S) sum s_i loss_i, S = sum s_i; scikit-learn's C-form.
    ref = LogisticRegression(C=1 / (lam * sw.sum()), tol=1e-12, max_iter=10_000)
    ref.fit(X, y, sample_weight=sw)
    Xin = sp.csr_matrix(X) if sparse else X
    clf = DSMLRClassifier(
        lam, max_epochs=400, tol=1e-12, dtype="float64", n_workers=n_workers, random_state=0
    )
    clf.fit(Xin, y, sample_weight=sw)
    np.testing.assert_allclose(clf.coef_, ref.coef_, atol=5e-5)
    np.testing.assert_allclose(clf.intercept_, ref.intercept_, atol=5e-5)


def test_integer_weights_equal_repeated_rows():
    X, y = _problem(2, n=150)
    sw = np.random.default_rng(3).integers(0, 4, len(y))
    lam = 1e-2
    weighted = DSMLRClassifier(
        lam, max_epochs=400, tol=1e-12, dtype="float64", n_workers=1, random_state=0
    )
    weighted.fit(X, y, sample_weight=sw)
    repeated = DSMLRClassifier(
        lam, max_epochs=400, tol=1e-12, dtype="float64", n_workers=1, random_state=0
    )
    repeated.fit(np.repeat(X, sw, axis=0), np.repeat(y, sw))
    # The same objective function: each model scores alike on the repeated data, and
    # both sit at its minimum.
    on_repeated = [
        m.objective(np.repeat(X, sw, axis=0), np.repeat(y, sw)) for m in (weighted, repeated)
    ]
    np.testing.assert_allclose(on_repeated[0], on_repeated[1], rtol=1e-10)
    np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=2e-5)


def test_zero_weight_rows_are_ignored():
    X, y = _problem(4)
    sw = np.ones(len(y))
    sw[::3] = 0.0
    lam = 1e-2
    a = DSMLRClassifier(
        lam, max_epochs=400, tol=1e-12, dtype="float64", n_workers=1, random_state=0
    )
    a.fit(X, y, sample_weight=sw)
    b = DSMLRClassifier(
        lam, max_epochs=400, tol=1e-12, dtype="float64", n_workers=1, random_state=0
    )
    b.fit(X[sw > 0], y[sw > 0])
    np.testing.assert_allclose(a.coef_, b.coef_, atol=2e-5)


@pytest.mark.parametrize("class_weight", [{0: 3.0, 1: 0.5, 2: 1.0, 3: 2.0}, "balanced"])
def test_class_weight_matches_sklearn(class_weight):
    X, y = _problem(5)
    y = np.where(np.arange(len(y)) % 5 == 0, 3, y)  # unbalanced classes
    lam = 1e-2
    clf = DSMLRClassifier(
        lam,
        max_epochs=400,
        tol=1e-12,
        dtype="float64",
        n_workers=1,
        random_state=0,
        class_weight=class_weight,
    ).fit(X, y)
    from sklearn.utils.class_weight import compute_sample_weight

    total = compute_sample_weight(class_weight, y).sum()
    ref = LogisticRegression(
        C=1 / (lam * total), class_weight=class_weight, tol=1e-12, max_iter=10_000
    ).fit(X, y)
    np.testing.assert_allclose(clf.coef_, ref.coef_, atol=5e-5)


def test_class_weight_times_sample_weight():
    X, y = _problem(6)
    sw = np.random.default_rng(7).uniform(0.5, 2.0, len(y))
    cw = {0: 2.0, 1: 1.0, 2: 1.0, 3: 0.5}
    both = DSMLRClassifier(1e-2, max_epochs=400, tol=1e-12, dtype="float64", n_workers=1,
                           random_state=0, class_weight=cw).fit(X, y, sample_weight=sw)  # fmt: skip
    merged = sw * np.array([cw[c] for c in y])
    alone = DSMLRClassifier(
        1e-2, max_epochs=400, tol=1e-12, dtype="float64", n_workers=1, random_state=0
    )
    alone.fit(X, y, sample_weight=merged)
    np.testing.assert_allclose(both.coef_, alone.coef_, atol=1e-12)


@pytest.mark.parametrize(
    ("sw", "message"),
    [(-np.ones(240), "(?i)negative"), (np.zeros(240), "non-zero"), (np.ones(7), "7")],
)
def test_bad_sample_weight_is_refused(sw, message):
    X, y = _problem()
    with pytest.raises(ValueError, match=message):
        DSMLRClassifier(max_epochs=2, n_workers=1).fit(X, y, sample_weight=sw)


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_warm_start_continues_from_the_previous_model(engine):
    X, y = _problem(8, n=400)
    params = {"max_epochs": 3, "n_workers": 2, "random_state": 0, "engine": engine, "tol": 0.0}
    clf = DSMLRClassifier(1e-3, warm_start=True, **params).fit(X, y)
    first, first_coef = clf.history_[-1]["objective"], clf.coef_.copy()
    clf.fit(X, y)
    cold = DSMLRClassifier(1e-3, **params).fit(X, y)
    # A warm refit starts where the first fit ended and improves on it; a cold one
    # starts over and ends where the first fit did.
    assert clf.history_[0]["objective"] <= first * (1 + 1e-9)
    assert clf.history_[-1]["objective"] < first
    # The sync engine repeats itself bit for bit; the async engine's tokens go where
    # the ranks' timing sends them, which moves its third epoch's objective by up to a
    # few percent on this small problem.
    rtol = 1e-12 if engine == "sync" else 0.1
    np.testing.assert_allclose(cold.history_[-1]["objective"], first, rtol=rtol)
    # The fitted attributes are the refit's final model ...
    assert clf.objective(X, y) == pytest.approx(clf.history_[-1]["objective"], rel=1e-7)
    if engine == "sync":
        # ... and here nearer scikit-learn's optimum than the first fit's.  Not asserted
        # for the async engine: three epochs lower its objective every time but do not
        # always bring every coefficient nearer (16 runs: the largest distance 0.60-0.99
        # of the first fit's, and 1.03 in one CI run).
        ref = LogisticRegression(C=1 / (1e-3 * len(y)), tol=1e-12, max_iter=10_000).fit(X, y)
        gap_first = np.abs(first_coef - ref.coef_).max()
        assert np.abs(clf.coef_ - ref.coef_).max() < gap_first


def test_warm_start_refuses_other_classes():
    X, y = _problem(9)
    clf = DSMLRClassifier(max_epochs=2, n_workers=1, warm_start=True).fit(X, y)
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(X, np.where(y == 3, 7, y))


def test_pipeline_grid_search_and_clone():
    X, y = _problem(10)
    pipe = make_pipeline(
        MaxAbsScaler(), DSMLRClassifier(max_epochs=20, n_workers=1, random_state=0)
    )
    search = GridSearchCV(pipe, {"dsmlrclassifier__lam": [1e-3, 1e-1]}, cv=3)
    search.fit(sp.csr_matrix(X), y)
    assert search.best_params_["dsmlrclassifier__lam"] in (1e-3, 1e-1)
    assert search.score(X, y) > 0.5
    copy = clone(search.best_estimator_)
    assert copy.get_params()["dsmlrclassifier__lam"] == search.best_params_["dsmlrclassifier__lam"]
    assert not hasattr(copy[-1], "coef_")


def test_binary_decision_function_follows_sklearn():
    X, y = _problem(11, k=2)
    clf = DSMLRClassifier(1e-2, max_epochs=50, n_workers=1, random_state=0).fit(X, y)
    scores = clf.decision_function(X)
    assert scores.shape == (len(y),)
    np.testing.assert_array_equal(clf.classes_[(scores > 0).astype(int)], clf.predict(X))
