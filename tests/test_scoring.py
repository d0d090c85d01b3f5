"""Block-wise streaming scoring equals the dense N x K computation, locally and round a ring.

Most data here are small integers (weights in quarters), so every score is exact in
float32 and float64 whatever the summation order: the block-wise results can be
compared with the dense reference *exactly*, and ties are frequent, which exercises the
rule that among equal scores the lower class index ranks first.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp

from dsmlr import scoring
from dsmlr.comm import run_workers
from dsmlr.estimator import DSMLRClassifier
from dsmlr.kernels.fold_topk import fold_block
from dsmlr.scoring import (
    BlockScores,
    model_blocks,
    ring_scores,
    score_local_blocks,
    summarise,
)

K = 11
UNEVEN = [(0, 4), (4, 4), (4, 9), (9, 10), (10, 11)]  # uneven, one empty block


def quantised(n=40, d=15, n_classes=K, *, sparse=True, dtype=np.float64, seed=0):
    """Integer rows, quarter-valued weights (D_fit, K layout as (K, D_fit)), labels with -1."""
    rng = np.random.default_rng(seed)
    dense = rng.integers(-2, 3, size=(n, d)) * (rng.random((n, d)) < 0.4)
    X = sp.csr_matrix(dense.astype(dtype)) if sparse else np.ascontiguousarray(dense, dtype)
    W = (rng.integers(-3, 4, size=(n_classes, d + 1)) / 4).astype(dtype)
    W[3] = W[5]  # identical classes in different blocks: 3 must always rank before 5
    W[7] = W[2]
    y = rng.integers(-1, n_classes, n)
    return X, W, y


def full_scores(X, W, fit_intercept=True):
    """The dense N x K scores, float64."""
    d = X.shape[1]
    S = np.asarray(X @ W[:, :d].T, dtype=np.float64)
    return S + W[:, d] if fit_intercept else S


def reference(X, W, y, k, fit_intercept=True):
    """Dense N x K scores, then the obvious top-k / logsumexp / true score."""
    S = full_scores(X, W, fit_intercept)
    order = np.argsort(-S, axis=1, kind="stable")[:, :k]  # stable: lower index on ties
    true = np.where(y >= 0, S[np.arange(len(y)), np.maximum(y, 0)], -np.inf)
    return order, np.take_along_axis(S, order, 1), logsumexp(S, axis=1), true


def split(W, bounds, fit_intercept=True):
    """Feature-major blocks ``(D_fit, k1 - k0)`` of a (K, D + 1) weight matrix."""
    Wf = W if fit_intercept else W[:, :-1]
    return [((lo, hi), np.ascontiguousarray(Wf[lo:hi].T)) for lo, hi in bounds]


def assert_scores_equal(got: BlockScores, expected, exact=True):
    order, top, lse, true = expected
    np.testing.assert_array_equal(got.top_classes, order)
    if exact:
        np.testing.assert_array_equal(got.top_scores, top)
    else:
        np.testing.assert_allclose(got.top_scores, top, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got.log_norm, lse, rtol=1e-12)
    if true is not None and exact:
        np.testing.assert_array_equal(got.true_score, true)
    elif true is not None:
        np.testing.assert_allclose(got.true_score, true, rtol=1e-12, atol=1e-12)


# -- score_local_blocks ----------------------------------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("k", [1, 3, K])
def test_blocks_equal_the_dense_reference(sparse, dtype, fit_intercept, k):
    X, W, y = quantised(sparse=sparse, dtype=dtype)
    blocks = split(W, UNEVEN, fit_intercept)
    got = score_local_blocks(
        X, blocks, fit_intercept=fit_intercept, k=k, y=y, memory_bytes=64
    )  # 64 bytes: at most two rows per chunk, so many chunks
    assert got.top_classes.dtype == np.int64 and got.top_scores.dtype == np.float64
    assert_scores_equal(got, reference(X, W, y, k, fit_intercept))
    S = full_scores(X, W, fit_intercept)
    np.testing.assert_array_equal(got.top_classes[:, 0], np.argmax(S, axis=1))
    top = -np.sort(-S, axis=1)[:, :k]
    np.testing.assert_allclose(got.top_proba, np.exp(top - logsumexp(S, axis=1)[:, None]))


@pytest.mark.parametrize("sparse", [True, False])
def test_continuous_data_and_any_block_order(sparse):
    rng = np.random.default_rng(3)
    X = sp.random(30, 12, density=0.3, random_state=3, format="csr") if sparse else (
        rng.normal(size=(30, 12)))  # fmt: skip
    W = rng.normal(size=(K, 13)) * 3
    y = rng.integers(0, K, 30)
    blocks = split(W, UNEVEN)[::-1]  # classes arrive high first
    got = score_local_blocks(X, blocks, fit_intercept=True, k=4, y=y, memory_bytes=100)
    assert_scores_equal(got, reference(X, W, y, 4), exact=False)


@pytest.mark.parametrize("k", [1, 3])
def test_repeated_calls_stream_more_blocks_into_the_state(k):
    X, W, y = quantised()
    blocks = split(W, UNEVEN)
    # High classes first: ties with lower classes arriving later must still go to those.
    state = score_local_blocks(X, blocks[3:], fit_intercept=True, k=k, y=y)
    if k == 3:  # fewer classes than k so far (2 < 3) leave a placeholder slot
        np.testing.assert_array_equal(state.top_classes[:, 2], -1)
        assert np.all(state.top_scores[:, 2] == -np.inf)
    for block in blocks[:3][::-1]:
        same = score_local_blocks(X, [block], fit_intercept=True, k=99, y=y, state=state)
        assert same is state  # updated in place; k comes from the state
    assert_scores_equal(state, reference(X, W, y, k))


@pytest.mark.parametrize("k", [2, 5, 40])
def test_ties_at_the_cut_go_to_the_lower_classes(k):
    # One feature equal to 1, so each row's scores are its weights: tie-heavy rows of 300
    # classes, where a plain argpartition would keep an arbitrary subset of the ties.
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(25, 300)).astype(float)
    X = np.ones((25, 1))
    blocks = [((0, 300), np.ascontiguousarray(scores[i : i + 1])) for i in range(25)]
    for i, block in enumerate(blocks):
        got = score_local_blocks(X[:1], [block], fit_intercept=False, k=k)
        expected = np.argsort(-scores[i], kind="stable")[:k]
        np.testing.assert_array_equal(got.top_classes[0], expected)


def test_chunks_respect_the_memory_budget(monkeypatch):
    X, W, y = quantised(n=37)
    seen = []
    product = scoring._block_product

    def spy(Xc, Wb, *args):
        seen.append((Xc.shape[0], Wb.shape[1]))
        return product(Xc, Wb, *args)

    monkeypatch.setattr(scoring, "_block_product", spy)
    budget = 3 * 5 * 8  # three rows of the widest block (5 classes)
    got = score_local_blocks(X, split(W, UNEVEN), fit_intercept=True, k=2, memory_bytes=budget)
    assert max(rows for rows, _ in seen) == 3
    assert all(rows * width * 8 <= budget for rows, width in seen)
    assert sum(rows for rows, width in seen if width == 5) == 37
    np.testing.assert_array_equal(got.top_classes, reference(X, W, y, 2)[0])
    seen.clear()
    score_local_blocks(X, split(W, UNEVEN), fit_intercept=True, memory_bytes=1)
    assert {rows for rows, _ in seen} == {1}  # at least one row per chunk


def test_edge_cases():
    X, W, y = quantised(n=5)
    empty = score_local_blocks(X[:0], split(W, UNEVEN), fit_intercept=True, k=2, y=y[:0])
    assert empty.top_classes.shape == (0, 2) and empty.true_score.shape == (0,)
    none = score_local_blocks(X, [], fit_intercept=True, k=2)
    assert np.all(none.top_classes == -1) and np.all(none.log_norm == -np.inf)
    assert none.true_score is None
    ranked = score_local_blocks(X, split(W, UNEVEN), fit_intercept=True, k=2, normalise=False)
    np.testing.assert_array_equal(ranked.top_classes, reference(X, W, y, 2)[0])
    assert np.all(np.isnan(ranked.log_norm))  # skipped, and visibly so
    with pytest.raises(ValueError, match="feature-major"):
        score_local_blocks(X, [((0, K), W)], fit_intercept=True)  # class-major: rejected
    with pytest.raises(ValueError, match="rows"):
        score_local_blocks(X[:3], split(W, UNEVEN), fit_intercept=True, state=none)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
def test_nan_scores_rank_last_and_poison_the_normaliser():
    X = np.array([[1.0, 0.0]])
    W = np.array([[np.nan, 0.0], [0.0, 0.0], [-1.0, 0.0]])  # (K, D), no intercept
    got = score_local_blocks(X, [((0, 3), np.ascontiguousarray(W.T))], fit_intercept=False, k=3)
    np.testing.assert_array_equal(got.top_classes, [[1, 2, 0]])
    assert np.isnan(got.log_norm[0])


# -- the compiled fold the training engines use for held-out rows -------------------------


def _fold_all(X, blocks, fit_intercept, k, y):
    state = BlockScores.empty(X.shape[0], k, with_truth=y is not None)
    for (k0, _), Wb in blocks:
        fold_block(X, Wb, k0, fit_intercept, y, state.top_classes, state.top_scores,
                   state.log_norm, state.true_score)  # fmt: skip
    return state


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("k", [1, 3, K])
def test_compiled_fold_equals_the_dense_reference(sparse, dtype, fit_intercept, k):
    X, W, y = quantised(sparse=sparse, dtype=dtype)
    blocks = split(W, UNEVEN, fit_intercept)[::-1]  # high classes first: ties still go low
    got = _fold_all(X, blocks, fit_intercept, k, y)
    assert_scores_equal(got, reference(X, W, y, k, fit_intercept))


@pytest.mark.parametrize("sparse", [True, False])
def test_compiled_fold_equals_score_local_blocks_on_continuous_data(sparse):
    rng = np.random.default_rng(8)
    X = sp.random(50, 12, density=0.3, random_state=8, format="csr") if sparse else (
        rng.normal(size=(50, 12)))  # fmt: skip
    W = rng.normal(size=(K, 13)) * 3
    y = rng.integers(-1, K, 50)
    blocks = split(W, UNEVEN)
    got = _fold_all(X, blocks, True, 5, y)
    expected = score_local_blocks(X, blocks, fit_intercept=True, k=5, y=y)
    np.testing.assert_array_equal(got.top_classes, expected.top_classes)
    for name in ("top_scores", "log_norm", "true_score"):
        np.testing.assert_allclose(getattr(got, name), getattr(expected, name), rtol=1e-12)
    assert summarise(got, y, 5) == pytest.approx(summarise(expected, y, 5), rel=1e-12)


@pytest.mark.parametrize("k", [2, 5, 40])
def test_compiled_fold_ties_at_the_cut_go_to_the_lower_classes(k):
    rng = np.random.default_rng(k)
    scores = rng.integers(0, 4, size=(10, 300)).astype(float)
    for row in scores:
        state = BlockScores.empty(1, k)
        # Two blocks, the higher classes first.
        for k0, k1 in [(150, 300), (0, 150)]:
            fold_block(np.ones((1, 1)), np.ascontiguousarray(row[None, k0:k1]), k0, False,
                       None, state.top_classes, state.top_scores, state.log_norm)  # fmt: skip
        np.testing.assert_array_equal(state.top_classes[0], np.argsort(-row, kind="stable")[:k])


def test_compiled_fold_nan_scores_rank_last_and_poison_the_normaliser():
    X = np.array([[1.0, 0.0], [0.0, 1.0]])
    W = np.array([[np.nan, 0.0], [0.0, 2.0], [-1.0, 0.0]])  # (K, D), no intercept
    got = _fold_all(X, [((0, 3), np.ascontiguousarray(W.T))], False, 3, None)
    np.testing.assert_array_equal(got.top_classes, [[1, 2, 0], [1, 0, 2]])
    assert np.isnan(got.log_norm[0])
    assert got.log_norm[1] == pytest.approx(logsumexp([0.0, 2.0, 0.0]))
    assert got.true_score is None


# -- ring_scores -----------------------------------------------------------------------


class SpyComm:
    """Wraps a rank's communicator: records what is shifted; optionally receives in place.

    ``in_place`` mimics MPI's ``ring_shift``, which writes the incoming data into the
    buffers it was given when the shapes match: the caller's own arrays get overwritten
    in transit, so ring_scores must restore them.
    """

    def __init__(self, comm, in_place: bool):
        self._comm, self._in_place = comm, in_place
        self.rank, self.size = comm.rank, comm.size
        self.messages: list[list[np.ndarray]] = []  # every list sent and every one received

    def ring_shift(self, buffers):
        sent = [b.copy() for b in buffers] if self._in_place else buffers
        got = self._comm.ring_shift(sent)
        self.messages += [list(buffers), list(got)]
        if not self._in_place:
            return got
        out = []
        for mine, theirs in zip(buffers, got, strict=False):
            if mine.shape == theirs.shape and mine.flags.writeable:
                np.copyto(mine, theirs)
                out.append(mine)
            else:
                out.append(theirs)
        return out + list(got[len(buffers) :])


BOUNDS = [(0, 1), (1, 3), (3, 3), (3, 6), (6, 9), (9, 11), (11, 13)]  # K = 13


def owners(size: int) -> list[int]:
    """Rank 0 holds three blocks; from P = 3 on the last rank holds none."""
    if size == 1:
        return [0] * len(BOUNDS)
    others = list(range(1, max(size - 1, 2)))
    return [0, 0, 0] + [others[q % len(others)] for q in range(len(BOUNDS) - 3)]


@pytest.mark.parametrize("size", [1, 2, 3, 4])
@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("k", [1, 3])
def test_ring_scores_equal_local_scores(size, in_place, k):
    n = 50
    X, W, y = quantised(n=n, n_classes=13, seed=1)
    expected = score_local_blocks(X, split(W, BOUNDS), fit_intercept=True, k=k, y=y)
    owner = owners(size)
    cuts = [*[0, 0, 20, 33, n][:size], n] if size > 1 else [0, n]  # rank 0: no rows (P>1)

    def body(comm):
        spy = SpyComm(comm, in_place)
        lo, hi = cuts[comm.rank], cuts[comm.rank + 1]
        mine = [b for q, b in enumerate(split(W, BOUNDS)) if owner[q] == comm.rank]
        before = [(c, W_.copy(), W_) for c, W_ in mine]
        out = ring_scores(
            spy, X[lo:hi], mine, n_classes=13, fit_intercept=True, k=k, y_local=y[lo:hi],
            memory_bytes=200,
        )  # fmt: skip
        for (c, copy, obj), (c2, now) in zip(before, mine, strict=True):
            assert c == c2 and now is obj  # the caller's list and arrays, contents intact
            np.testing.assert_array_equal(now, copy)
        return out, spy.messages

    results = run_workers(size, body)
    got = BlockScores(
        *(np.concatenate([getattr(r, f) for r, _ in results]) for f in
          ("top_classes", "top_scores", "log_norm", "true_score"))
    )  # fmt: skip
    np.testing.assert_array_equal(got.top_classes, expected.top_classes)
    np.testing.assert_array_equal(got.top_scores, expected.top_scores)
    np.testing.assert_array_equal(got.true_score, expected.true_score)
    np.testing.assert_allclose(got.log_norm, expected.log_norm, rtol=1e-14)

    widest = max(hi - lo for lo, hi in BOUNDS)
    for _, messages in results:
        assert len(messages) == (2 * size if size > 1 else 0)  # P shifts, none for P = 1
        for ranges, *blocks in messages:
            # One small int64 array of class ranges, then exactly those blocks.
            assert ranges.dtype == np.int64 and ranges.shape == (len(blocks), 2)
            for (lo, hi), B in zip(ranges, blocks, strict=True):
                assert B.shape == (16, hi - lo) and hi - lo <= widest
            # No rank ever sends or receives the whole model.
            assert sum(B.shape[1] for B in blocks) < 13


# -- summarise -------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 3])
def test_summarise_matches_numpy(k):
    X, W, y = quantised(n=60, seed=2)
    s = score_local_blocks(X, split(W, UNEVEN), fit_intercept=True, k=3, y=y)
    S = np.asarray(X @ W[:, :-1].T) + W[:, -1]
    known = y >= 0
    loss = logsumexp(S[known], axis=1) - S[known, y[known]]
    order = np.argsort(-S, axis=1, kind="stable")
    loss_sum, correct, top_correct, n_known = summarise(s, y, k)
    assert loss_sum == pytest.approx(loss.sum(), rel=1e-12)
    assert correct == np.sum(known & (np.argmax(S, axis=1) == y))
    assert top_correct == np.sum(known & np.any(order[:, :k] == y[:, None], axis=1))
    assert n_known == known.sum()
    with pytest.raises(ValueError, match="true_score"):
        summarise(score_local_blocks(X, split(W, UNEVEN), fit_intercept=True), y, 1)


# -- the estimator, through the block-wise path ----------------------------------------


@pytest.mark.parametrize("sparse", [True, False])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("fit_intercept", [True, False])
def test_estimator_predictions_stream_over_blocks(monkeypatch, sparse, dtype, fit_intercept):
    X, W, y = quantised(n=45, sparse=sparse, dtype=np.dtype(dtype))
    clf = DSMLRClassifier(lam=0.01, fit_intercept=fit_intercept, dtype=dtype)
    clf.classes_ = np.arange(K) * 10
    clf.n_features_in_ = X.shape[1]
    clf.coef_ = np.ascontiguousarray(W[:, :-1])
    clf.intercept_ = W[:, -1].copy() if fit_intercept else np.zeros(K, W.dtype)
    S = np.asarray(X @ clf.coef_.T) + clf.intercept_  # the old dense implementation
    labels = np.where(y >= 0, clf.classes_[np.maximum(y, 0)], -5)

    widths, chunks = [], []
    blocks, product = scoring.model_blocks, scoring._block_product

    def block_spy(*args, **kwargs):
        for c, Wb in blocks(*args, **kwargs):
            widths.append(Wb.shape[1])
            yield c, Wb

    def product_spy(Xc, Wb, *args):
        chunks.append(Xc.shape[0] * Wb.shape[1])
        return product(Xc, Wb, *args)

    monkeypatch.setattr(scoring, "model_blocks", block_spy)
    monkeypatch.setattr(scoring, "_block_product", product_spy)
    # A budget of 4 classes' weights: several blocks, and chunks of a few rows.
    monkeypatch.setattr(scoring, "MEMORY_BYTES", 4 * (X.shape[1] + 1) * W.itemsize)

    lse = logsumexp(S, axis=1, keepdims=True)
    np.testing.assert_array_equal(clf.decision_function(X), S)
    assert clf.decision_function(X).dtype == S.dtype
    np.testing.assert_array_equal(clf.predict_log_proba(X), S - lse)
    np.testing.assert_array_equal(clf.predict_proba(X), np.exp(S - lse))
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[np.argmax(S, axis=1)])
    top, proba = clf.predict_top_k(X, 4)
    order = np.argsort(-S, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(top, clf.classes_[order])
    rtol = 1e-6 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(proba, np.exp(np.take_along_axis(S, order, 1) - lse), rtol=rtol)
    known = y >= 0
    S64 = S.astype(np.float64)
    loss = np.mean(logsumexp(S64[known], axis=1) - S64[known, y[known]])
    penalty = 0.005 * np.sum(np.square(clf.coef_, dtype=np.float64))
    assert clf.objective(X, labels) == pytest.approx(loss + penalty, rel=rtol)

    assert max(widths) <= 4 and len(widths) >= 3 * 6  # >= 3 blocks per call, 6 calls
    assert max(chunks) * 8 <= scoring.MEMORY_BYTES


def test_model_blocks_are_feature_major_views_of_the_weights():
    _, W, _ = quantised()
    coef, intercept = np.ascontiguousarray(W[:, :-1]), W[:, -1].copy()
    got = list(model_blocks(coef, intercept, fit_intercept=True, memory_bytes=16 * 8 * 3))
    assert [c for c, _ in got] == [(0, 3), (3, 6), (6, 9), (9, 11)]
    np.testing.assert_array_equal(np.hstack([B for _, B in got]), W.T)
    assert all(B.flags.c_contiguous for _, B in got)
