"""Removing the class mean of the weights after each epoch (dsmlr.engines.centering)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.datasets import make_classification

from dsmlr.comm import run_workers
from dsmlr.engines.base import EngineConfig
from dsmlr.engines.centering import ClassMean, centre_classes, shared_columns
from dsmlr.engines.ring import Block, Clock
from dsmlr.kernels import LocalRows, get_kernel
from dsmlr.objective import add_intercept_column, plain_objective
from problems import classifier_with_engine, sklearn_objective

KERNELS = ["reference", "numba"] + ["torch"] * bool(importlib.util.find_spec("torch"))


def _model(seed=0, n_features=7, n_classes=5):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n_classes, n_features + 1))  # K x (D + intercept)


@pytest.mark.parametrize("kernel_name", KERNELS)
@pytest.mark.parametrize("size", [1, 2, 3])
@pytest.mark.parametrize("columns", [[0, 1, 2, 3, 4, 5, 6], [1, 4, 5]])
def test_centring_lowers_only_the_penalty_and_keeps_the_probabilities(kernel_name, size, columns):
    """Blocks spread over ``size`` ranks: afterwards the ``columns`` sum to zero over
    the classes, the other features and the intercept are as they were, the loss is
    unchanged and the objective fell by exactly the reported drop."""
    columns = np.array(columns)
    W = _model()
    n_classes, d = W.shape[0], W.shape[1] - 1
    rng = np.random.default_rng(1)
    X = sp.random(30, d, density=0.5, random_state=2, format="csr")
    y = rng.integers(0, n_classes, 30)
    lam = 0.3
    cfg = EngineConfig(n_samples=30, n_features=d, n_classes=n_classes, lam=lam)
    kernel = get_kernel(kernel_name)
    bounds = np.linspace(0, n_classes, 2 * size + 1).astype(int)  # two blocks a rank

    def body(comm):
        blocks = []
        for q in (2 * comm.rank, 2 * comm.rank + 1):
            lo, hi = bounds[q], bounds[q + 1]
            block = kernel.from_host(W[lo:hi].T.copy())  # not a view of W
            blocks.append(Block(q, (lo, hi), block, None))
        mean = centre_classes(comm, kernel, blocks, columns, cfg, Clock())
        return mean, [kernel.to_host(blk.W).T.copy() for blk in blocks]

    results = run_workers(size, body)
    centred = np.vstack([w for _, parts in results for w in parts])
    mean = results[0][0]
    np.testing.assert_allclose(mean.mean, W[:, columns].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(centred[:, columns].sum(axis=0), 0.0, atol=1e-12)
    others = np.setdiff1d(np.arange(d + 1), columns)  # the intercept included
    np.testing.assert_array_equal(centred[:, others], W[:, others])
    Xa = add_intercept_column(X)
    before, after = (plain_objective(M, Xa, y, lam, d) for M in (W, centred))
    assert before - after == pytest.approx(mean.penalty_drop, rel=1e-10)
    assert mean.penalty_drop > 0.0
    np.testing.assert_allclose(
        (Xa @ centred.T) - logsumexp(Xa @ centred.T, axis=1, keepdims=True),
        (Xa @ W.T) - logsumexp(Xa @ W.T, axis=1, keepdims=True),
        atol=1e-12,
    )


def test_shifted_normalisers_are_those_of_the_centred_model():
    W = _model(seed=3)
    d = W.shape[1] - 1
    X = np.random.default_rng(4).normal(size=(20, d))
    rows = LocalRows(X, np.zeros(20, dtype=np.int64), True)
    cfg = EngineConfig(n_samples=20, n_features=d, n_classes=W.shape[0], lam=0.1)
    columns = np.array([0, 2, 3])
    mean = ClassMean(W[:, columns].sum(axis=0), columns, cfg)
    centred = W.copy()
    centred[:, columns] -= mean.mean
    Xa = add_intercept_column(X)

    def cached(M):
        partials = np.stack([logsumexp(Xa @ M[lo:hi].T, axis=1) for lo, hi in ((0, 2), (2, 5))])
        return partials.T.copy(), -logsumexp(partials.T, axis=1)

    partials, b = cached(W)
    mean.shift_normalisers(rows, partials, b)
    want_partials, want_b = cached(centred)
    np.testing.assert_allclose(partials, want_partials, atol=1e-12)
    np.testing.assert_allclose(b, want_b, atol=1e-12)


@pytest.mark.parametrize("size", [1, 2])
@pytest.mark.parametrize("sparse", [False, True])
def test_shared_columns_are_those_a_tenth_of_all_rows_have(size, sparse):
    rng = np.random.default_rng(6)
    X = (rng.random((40, 6)) < [0.05, 0.1, 0.5, 0.0, 1.0, 0.09]) * rng.normal(size=(40, 6))
    counts = np.count_nonzero(X, axis=0)
    want = np.flatnonzero(counts >= 4)
    assert 0 < len(want) < 6  # some in, some out
    cfg = EngineConfig(n_samples=40, n_features=6, n_classes=3)
    shards = np.array_split(np.arange(40), size)

    def body(comm):
        mine = X[shards[comm.rank]]
        rows = LocalRows(sp.csr_matrix(mine) if sparse else mine, np.zeros(len(mine), int), True)
        return shared_columns(comm, rows, cfg)

    for got in run_workers(size, body):
        np.testing.assert_array_equal(got, want)


def _dense_gaps(centring: bool, engine: str = "sync") -> float:
    """Gap to scikit-learn's optimum after 25 SVRG epochs, one worker moving two blocks
    in turn, on dense data (every column shared by every row).  The synchronous engine
    centres the model before scoring it, the asynchronous one after (and takes the
    penalty's drop off the objective it reports)."""
    X, y = make_classification(n_samples=1500, n_features=30, n_informative=12,
                               n_classes=6, n_clusters_per_class=1, random_state=0)  # fmt: skip
    lam = 1e-3
    clf = classifier_with_engine(centre_shared=centring)(
        lam=lam, dtype="float64", n_workers=1, blocks_per_rank=2, engine=engine,
        max_epochs=25, tol=-1.0, random_state=0,
    )  # fmt: skip
    clf.fit(X, y)
    best = sklearn_objective(X, y, lam)
    f = clf.objective(X, y)
    assert f == pytest.approx(clf.history_[-1]["objective"], rel=1e-12)
    return (f - best) / best


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_two_blocks_converge_on_dense_data(engine):
    """With the mean removed two blocks keep converging (measured 8.8e-7 after 25
    epochs, 1.1e-8 after 40; one block: 1.5e-9 and 1.1e-13); without it they stall (the
    test below: 5.7e-4 after 25 epochs, 4.5e-4 after 40), so this one can fail."""
    assert _dense_gaps(centring=True, engine=engine) < 1e-5


def test_without_centring_two_blocks_stall_on_dense_data():
    assert _dense_gaps(centring=False) > 1e-4


def test_torch_sums_a_block_a_slice_of_rows_at_a_time(monkeypatch):
    torch_kernel = pytest.importorskip("dsmlr.kernels.torch_kernel")
    monkeypatch.setattr(torch_kernel, "SUM_SLICE_VALUES", 10)  # 3 rows of 3 classes a slice
    kernel = get_kernel("torch")
    W = np.random.default_rng(5).normal(size=(8, 3)).astype(np.float32)
    got = kernel.class_sums(kernel.from_host(W), slice(0, 8))
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, W.astype(np.float64).sum(axis=1), rtol=1e-12)
