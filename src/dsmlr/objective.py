r"""The DS-MLR objective, stated once.

Notation (scikit-learn names in brackets): N examples [n_samples] ``x_i`` in R^D
[n_features], labels ``y_i`` in {0..K-1} [n_classes], weights ``W`` (K, D), one row
``w_k`` per class, L2 strength ``lam``.

Plain objective (scikit-learn's ``LogisticRegression`` with ``C = 1/(lam*N)``)::

    L(W) = lam/2 ||W||_F^2 + (1/N) sum_i [ log sum_k exp(w_k . x_i) - w_{y_i} . x_i ]

Doubly-separable objective, one auxiliary scalar ``b_i`` per example, from
``log(g) <= exp(b) g - b - 1`` (equality iff ``b = -log g``)::

    L(W, b) = lam/2 ||W||_F^2
              + (1/N) sum_i sum_k [ exp(w_k . x_i + b_i) - [y_i = k] w_k . x_i - (b_i + 1)/K ]

``min_b L(W, b) = L(W)`` at ``b_i = -log sum_k exp(w_k . x_i)`` (:func:`closed_form_b`),
where ``exp(w_k . x_i + b_i)`` is the softmax probability ``p_ik``.  Every term touches
one class vector ``w_k`` and one example's ``b_i``: rows and classes can be partitioned
independently.  Gradient of the data part for class ``k``::

    grad_{w_k} L(W, b) = (1/N) sum_i (exp(w_k . x_i + b_i) - [y_i = k]) x_i + lam w_k

Layout contract
---------------
* The full model ``W`` is ``(K, D_fit)`` with ``D_fit = D + fit_intercept``: the optional
  per-class intercept is the last column, multiplies an implicit feature that is 1 for
  every row, and is **not** penalised (as in scikit-learn).  Only the first
  ``n_penalized = D`` columns enter ``||W||^2``.
* A class block ``K_q = [k0, k1)`` is stored *feature-major*: ``W_block`` has shape
  ``(D_fit, k1 - k0)``, C-contiguous, i.e. ``W[k0:k1].T``.  It is one contiguous buffer
  (what travels between workers), and the weights of all the block's classes for one
  feature are adjacent, which is what a sparse row ``x_i`` touches.
* ``b`` has one entry per row and never leaves the worker that owns the row.

The functions here are dense, obvious and O(N K): they are the mathematics for tests
and for the reference kernel, not for large problems.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

__all__ = [
    "add_intercept_column",
    "closed_form_b",
    "ds_gradient",
    "ds_objective",
    "l2_penalty",
    "plain_gradient",
    "plain_objective",
    "softmax_proba",
    "squared_norm",
]


def add_intercept_column(X):
    """Return ``X`` with a trailing column of ones (the implicit intercept feature)."""
    ones = np.ones((X.shape[0], 1), dtype=X.dtype)
    if sp.issparse(X):
        return sp.hstack([X, sp.csr_matrix(ones)], format="csr")
    return np.hstack([np.asarray(X), ones])


def _scores(W: np.ndarray, X) -> np.ndarray:
    """Scores ``X @ W.T`` as a dense (N, K) array."""
    S = X @ W.T
    return np.asarray(S, dtype=np.result_type(W.dtype, np.float64))


def l2_penalty(lam: float, sq_norm: float) -> float:
    """The objective's penalty ``lam / 2 * ||W||^2`` from ``sq_norm = ||W||^2`` (of the
    penalised columns: the intercept is not)."""
    return 0.5 * lam * sq_norm


def _penalty(W: np.ndarray, lam: float, n_penalized: int | None) -> float:
    Wp = W if n_penalized is None else W[:, :n_penalized]
    return l2_penalty(lam, float(np.sum(Wp.astype(np.float64) ** 2)))


def closed_form_b(W: np.ndarray, X) -> np.ndarray:
    """Optimal auxiliary variables ``b_i = -log sum_k exp(w_k . x_i)``."""
    return -logsumexp(_scores(W, X), axis=1)


def softmax_proba(W: np.ndarray, X) -> np.ndarray:
    """Softmax probabilities ``p_ik`` (N, K)."""
    S = _scores(W, X)
    return np.exp(S - logsumexp(S, axis=1, keepdims=True))


def plain_objective(
    W: np.ndarray, X, y: np.ndarray, lam: float, n_penalized: int | None = None
) -> float:
    """``L(W)``: mean multinomial log-loss plus ``lam/2 ||W_penalized||^2``."""
    S = _scores(W, X)
    n = S.shape[0]
    data = np.mean(logsumexp(S, axis=1) - S[np.arange(n), y])
    return float(data) + _penalty(W, lam, n_penalized)


def ds_objective(
    W: np.ndarray, b: np.ndarray, X, y: np.ndarray, lam: float, n_penalized: int | None = None
) -> float:
    """``L(W, b)``: the doubly-separable upper bound, equal to ``L(W)`` at the closed-form b."""
    S = _scores(W, X)
    n = S.shape[0]
    data = np.exp(S + b[:, None]).sum(axis=1) - S[np.arange(n), y] - b - 1.0
    return float(np.mean(data)) + _penalty(W, lam, n_penalized)


def _penalty_grad(W: np.ndarray, lam: float, n_penalized: int | None) -> np.ndarray:
    G = lam * W.astype(np.float64)
    if n_penalized is not None:
        G[:, n_penalized:] = 0.0
    return G


def plain_gradient(
    W: np.ndarray, X, y: np.ndarray, lam: float, n_penalized: int | None = None
) -> np.ndarray:
    """Gradient of :func:`plain_objective` with respect to ``W`` (K, D_fit)."""
    n = X.shape[0]
    R = softmax_proba(W, X)
    R[np.arange(n), y] -= 1.0
    return np.asarray(X.T @ R).T / n + _penalty_grad(W, lam, n_penalized)


def ds_gradient(
    W: np.ndarray, b: np.ndarray, X, y: np.ndarray, lam: float, n_penalized: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of :func:`ds_objective` with respect to ``W`` and ``b``."""
    n = X.shape[0]
    E = np.exp(_scores(W, X) + b[:, None])
    gb = (E.sum(axis=1) - 1.0) / n
    E[np.arange(n), y] -= 1.0
    gW = np.asarray(X.T @ E).T / n + _penalty_grad(W, lam, n_penalized)
    return gW, gb


def squared_norm(W: np.ndarray) -> float:
    """``||W||^2`` accumulated in float64 without a float64 copy of ``W``.

    ``np.square(W, dtype=float64)`` would allocate twice the size of a float32 block,
    which at scale is more than the block itself.
    """
    W = np.asarray(W)
    if W.ndim == 1:
        W = W[None, :]
    return float(np.einsum("ij,ij->", W, W, dtype=np.float64))
