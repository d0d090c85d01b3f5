"""The mathematics: the bound, its closed-form minimiser, and gradients."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dsmlr.objective import (
    add_intercept_column,
    closed_form_b,
    ds_gradient,
    ds_objective,
    plain_gradient,
    plain_objective,
    softmax_proba,
)


def _problem(sparse: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(30, 6)) * (rng.random((30, 6)) < 0.5)
    y = rng.integers(0, 4, size=30)
    W = rng.normal(size=(4, 6))
    return (sp.csr_matrix(X) if sparse else X), y, W


@pytest.mark.parametrize("sparse", [False, True])
def test_bound_is_tight_at_closed_form_b(sparse):
    X, y, W = _problem(sparse)
    b = closed_form_b(W, X)
    assert ds_objective(W, b, X, y, 0.1) == pytest.approx(plain_objective(W, X, y, 0.1), rel=1e-12)


@pytest.mark.parametrize("shift", [-1.0, -0.1, 0.3, 2.0])
def test_bound_is_an_upper_bound_elsewhere(shift):
    X, y, W = _problem(False)
    b = closed_form_b(W, X) + shift
    assert ds_objective(W, b, X, y, 0.1) > plain_objective(W, X, y, 0.1)


def test_closed_form_b_gives_softmax_probabilities():
    X, y, W = _problem(False)
    b = closed_form_b(W, X)
    np.testing.assert_allclose(np.exp(X @ W.T + b[:, None]), softmax_proba(W, X), rtol=1e-12)
    # And it minimises L(W, b) over b: the b-gradient vanishes there.
    _, gb = ds_gradient(W, b, X, y, 0.1)
    np.testing.assert_allclose(gb, 0.0, atol=1e-14)


def _finite_difference(f, W, eps=1e-6):
    G = np.zeros_like(W)
    for idx in np.ndindex(*W.shape):
        Wp, Wm = W.copy(), W.copy()
        Wp[idx] += eps
        Wm[idx] -= eps
        G[idx] = (f(Wp) - f(Wm)) / (2 * eps)
    return G


@pytest.mark.parametrize("n_penalized", [None, 5])
def test_plain_gradient_matches_finite_differences(n_penalized):
    X, y, W = _problem(True)
    G = plain_gradient(W, X, y, 0.3, n_penalized)
    fd = _finite_difference(lambda V: plain_objective(V, X, y, 0.3, n_penalized), W)
    np.testing.assert_allclose(G, fd, rtol=1e-6, atol=1e-8)


def test_ds_gradient_matches_finite_differences():
    X, y, W = _problem(False, seed=1)
    b = closed_form_b(W, X) + 0.2
    gW, gb = ds_gradient(W, b, X, y, 0.3)
    np.testing.assert_allclose(
        gW, _finite_difference(lambda V: ds_objective(V, b, X, y, 0.3), W), rtol=1e-6, atol=1e-8
    )
    fd_b = _finite_difference(lambda c: ds_objective(W, c, X, y, 0.3), b)
    np.testing.assert_allclose(gb, fd_b, rtol=1e-6, atol=1e-8)


def test_gradients_agree_at_closed_form_b():
    X, y, W = _problem(True, seed=2)
    gW, _ = ds_gradient(W, closed_form_b(W, X), X, y, 0.05)
    np.testing.assert_allclose(gW, plain_gradient(W, X, y, 0.05), rtol=1e-10, atol=1e-14)


def test_intercept_column_is_unpenalised():
    X, y, W = _problem(False)
    Xa = add_intercept_column(X)
    Wa = np.hstack([W, np.full((4, 1), 5.0)])
    # The huge intercept would add 0.5*lam*4*25 if it were penalised.
    base = plain_objective(Wa, Xa, y, 0.0)
    assert plain_objective(Wa, Xa, y, 0.1, n_penalized=6) == pytest.approx(
        base + 0.05 * np.sum(W**2), rel=1e-12
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_squared_norm_accumulates_in_float64(dtype):
    from dsmlr.objective import squared_norm

    W = np.random.default_rng(0).normal(size=(37, 11)).astype(dtype)
    expected = float(np.sum(W.astype(np.float64) ** 2))
    assert squared_norm(W) == pytest.approx(expected, rel=1e-12)
    assert squared_norm(W[0]) == pytest.approx(float(np.sum(W[0].astype(np.float64) ** 2)))
