"""Small problems with known structure, and their scikit-learn reference optima."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize


def planted_sparse_problem(n_samples=1500, n_features=400, n_classes=9, density=0.03, seed=0):
    """Text-like rows (non-negative, L2-normalised) with labels drawn from a softmax."""
    rng = np.random.default_rng(seed)
    X = sp.random(n_samples, n_features, density=density, random_state=seed, format="csr")
    X = normalize(X).tocsr()
    W = rng.normal(scale=3.0, size=(n_classes, n_features))
    S = np.asarray(X @ W.T)
    P = np.exp(S - S.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    y = (P.cumsum(axis=1) > rng.random((n_samples, 1))).argmax(axis=1)
    return X, y


def sklearn_optimum(X, y, lam, fit_intercept):
    """scikit-learn's lbfgs optimum of the same objective: (coef, intercept)."""
    clf = LogisticRegression(
        C=1.0 / (lam * X.shape[0]), tol=1e-10, max_iter=20000, fit_intercept=fit_intercept
    ).fit(X, y)
    return clf


def sklearn_objective(X, y, lam, fit_intercept=True):
    """The objective at scikit-learn's optimum (with an intercept by default): the
    reference ``f*``."""
    from dsmlr.objective import add_intercept_column, plain_objective

    ref = sklearn_optimum(X, y, lam, fit_intercept)
    if not fit_intercept:
        return plain_objective(ref.coef_, X, y, lam, X.shape[1])
    W = np.hstack([ref.coef_, ref.intercept_[:, None]])
    return plain_objective(W, add_intercept_column(X), y, lam, X.shape[1])


def classifier_with_engine(**changes):
    """:class:`dsmlr.DSMLRClassifier` whose engine settings take ``changes``
    (:class:`dsmlr.engines.base.EngineConfig` fields, e.g. ``centre_shared=False``): to
    measure what a mechanism the estimator does not expose brings."""
    import dataclasses

    from dsmlr import DSMLRClassifier

    class Classifier(DSMLRClassifier):
        def _engine_config(self, *args, **kwargs):
            return dataclasses.replace(super()._engine_config(*args, **kwargs), **changes)

    return Classifier
