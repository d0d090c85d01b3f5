"""Block-wise scoring equals the dense N x K computation; the ring version equals it too."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp

from dsmlr.comm import run_workers
from dsmlr.partition import class_blocks
from dsmlr.scoring import ring_scores, score_blocks, summarise


def make(n=40, d=15, n_classes=11, sparse=True, seed=0):
    rng = np.random.default_rng(seed)
    X = (
        sp.random(n, d, density=0.3, random_state=seed, format="csr")
        if sparse
        else rng.normal(size=(n, d))
    )
    W = rng.normal(size=(n_classes, d + 1))
    W[3] = W[5]  # tied classes: the lower index must win
    y = rng.integers(-1, n_classes, n)
    return X, W, y


def dense_reference(X, W, y, k):
    S = np.asarray(X @ W[:, :-1].T) + W[:, -1]
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]
    lse = logsumexp(S, axis=1)
    true = np.where(y >= 0, S[np.arange(len(y)), np.maximum(y, 0)], -np.inf)
    return order, np.take_along_axis(S, order, 1), lse, true


def split(W, bounds):
    return [((lo, hi), np.ascontiguousarray(W[lo:hi].T)) for lo, hi in bounds]


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("k", [1, 3, 11])
def test_blocks_equal_the_dense_scores(sparse, k):
    X, W, y = make(sparse=sparse)
    bounds = [(0, 4), (4, 4), (4, 9), (9, 11)]  # uneven, one empty
    got = score_blocks(X, split(W, bounds), fit_intercept=True, k=k, y=y, memory_bytes=64)
    order, top, lse, true = dense_reference(X, W, y, k)
    np.testing.assert_array_equal(got.top_classes, order)
    np.testing.assert_allclose(got.top_scores, top, rtol=1e-12)
    np.testing.assert_allclose(got.log_norm, lse, rtol=1e-12)
    np.testing.assert_allclose(got.true_score, true, rtol=1e-12)
    np.testing.assert_allclose(got.top_proba.sum(axis=1) <= 1 + 1e-12, True)


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_ring_scores_equal_local_scores(size):
    X, W, y = make(n=50, n_classes=13)
    bounds = class_blocks(13, 5)
    expected = score_blocks(X, split(W, bounds), fit_intercept=True, k=3, y=y)
    owner = [q % max(size - 1, 1) for q in range(5)]  # the last rank holds no block

    def body(comm):
        lo, hi = comm.rank * 50 // comm.size, (comm.rank + 1) * 50 // comm.size
        mine = [b for q, b in enumerate(split(W, bounds)) if owner[q] == comm.rank]
        out = ring_scores(
            comm, X[lo:hi], mine, n_classes=13, fit_intercept=True, k=3, y_local=y[lo:hi]
        )
        return out, [c for c, _ in mine]

    results = run_workers(size, body)
    np.testing.assert_array_equal(
        np.vstack([r.top_classes for r, _ in results]), expected.top_classes
    )
    np.testing.assert_allclose(np.concatenate([r.log_norm for r, _ in results]), expected.log_norm)
    loss, correct, top, known = summarise(expected, y, 3)
    assert known == np.sum(y >= 0)
    assert correct == np.sum(expected.top_classes[:, 0] == y)
    assert top == np.sum(np.any(expected.top_classes == y[:, None], axis=1))
    assert loss == pytest.approx(np.sum((expected.log_norm - expected.true_score)[y >= 0]))
