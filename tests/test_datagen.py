"""Tests for dsmlr.datagen: shapes, determinism, skew, and the planted label model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dsmlr.datagen import (
    GeneratedProblem,
    _powerlaw_probabilities,
    _powerlaw_ranks,
    _sample_labels,
    generate_train_test,
    make_extreme_multiclass,
)


@pytest.fixture(scope="module")
def problem() -> GeneratedProblem:
    return make_extreme_multiclass(20000, 3000, 50, random_state=0)


def posterior(g: GeneratedProblem) -> np.ndarray:
    scores = (g.X @ g.W_true.T).toarray() + np.log(g.class_prior)
    p = np.exp(scores - scores.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def test_shapes_and_types(problem):
    X, y, W = problem.X, problem.y, problem.W_true
    assert isinstance(X, sp.csr_matrix) and X.shape == (20000, 3000) and X.dtype == np.float64
    assert X.has_canonical_format
    assert y.shape == (20000,) and y.dtype == np.int64 and 0 <= y.min() and y.max() < 50
    assert W.shape == (50, 3000) and W.dtype == np.float64 and (W.data >= 0).all()
    assert problem.class_prior.shape == (50,)
    assert np.isclose(problem.class_prior.sum(), 1.0)
    assert (X.data > 0).all()


def test_deterministic_for_a_seed():
    a = make_extreme_multiclass(500, 200, 10, random_state=7)
    b = make_extreme_multiclass(500, 200, 10, random_state=7)
    c = make_extreme_multiclass(500, 200, 10, random_state=8)
    assert (a.X != b.X).nnz == 0
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.W_true.toarray(), b.W_true.toarray())
    assert (a.X != c.X).nnz > 0


def test_row_sizes_near_target(problem):
    nnz = np.diff(problem.X.indptr)
    assert nnz.min() >= 1
    assert abs(nnz.mean() - 50) < 5
    assert nnz.std() > 3  # rows vary in length like a Poisson count


def test_row_sizes_capped_by_n_features():
    g = make_extreme_multiclass(300, 10, 3, nnz_per_row=50, random_state=0)
    nnz = np.diff(g.X.indptr)
    assert nnz.min() >= 1 and nnz.max() <= 10


def test_rows_normalised(problem):
    norms = np.sqrt(np.asarray(problem.X.multiply(problem.X).sum(axis=1)).ravel())
    np.testing.assert_allclose(norms, 1.0, rtol=1e-12)
    raw = make_extreme_multiclass(200, 500, 5, normalize=False, random_state=0).X
    raw_norms = np.sqrt(np.asarray(raw.multiply(raw).sum(axis=1)).ravel())
    assert raw_norms.min() > 1.5 and (raw.data > 0).all()


def test_feature_popularity_is_skewed_and_shuffled(problem):
    df = np.bincount(problem.X.indices, minlength=problem.X.shape[1])
    assert df.max() > 20 * np.median(df)
    # Popular features get random ids, not the lowest ones.
    top = np.argsort(df)[-20:]
    assert top.max() > 1000


def test_class_frequencies_follow_power_law(problem):
    counts = np.bincount(problem.y, minlength=50)
    assert (counts > 0).all()
    assert counts.max() > 8 * np.median(counts)
    flat = make_extreme_multiclass(20000, 3000, 50, class_power=0.0, random_state=0)
    flat_counts = np.bincount(flat.y, minlength=50)
    assert flat_counts.max() < 2 * np.median(flat_counts)


def test_every_class_appears_in_a_large_sample():
    g = make_extreme_multiclass(20000, 2000, 200, random_state=1)
    assert np.unique(g.y).size == 200


def test_labels_sampled_not_argmax(problem):
    p = posterior(problem)
    not_argmax = np.mean(p.argmax(axis=1) != problem.y)
    assert 0.01 < not_argmax < 0.5
    # The model is informative: the true class is far more likely than chance.
    assert p[np.arange(p.shape[0]), problem.y].mean() > 0.5


def test_labels_match_planted_model_on_average(problem):
    freq = np.bincount(problem.y, minlength=50) / problem.y.size
    expected = posterior(problem).mean(axis=0)
    se = np.sqrt(expected * (1 - expected) / problem.y.size)
    assert np.all(np.abs(freq - expected) < 5 * se + 1e-4)


def test_sampler_is_exact_for_fixed_scores():
    rng = np.random.default_rng(3)
    prior = np.array([0.5, 0.3, 0.15, 0.05])
    dense_scores = np.array([[0.0, 2.0, 0.0, 5.0], [0.0, 0.0, 0.0, 0.0], [800.0, 0.0, 799.0, 0.0]])
    reps = 20000
    S = sp.csr_matrix(np.tile(dense_scores, (reps, 1)))
    y = _sample_labels(rng, S, prior, np.cumsum(prior)).reshape(reps, 3)
    logits = dense_scores + np.log(prior)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    for row in range(3):
        freq = np.bincount(y[:, row], minlength=4) / reps
        assert np.all(np.abs(freq - p[row]) < 5 * np.sqrt(p[row] * (1 - p[row]) / reps) + 1e-9)


@pytest.mark.parametrize("power", [0.0, 0.5, 1.0, 2.0])
def test_powerlaw_sampler_matches_probabilities(power):
    n = 30
    p = _powerlaw_probabilities(n, power)
    assert np.isclose(p.sum(), 1.0) and (np.diff(p) <= 1e-15).all()
    ranks = _powerlaw_ranks(np.random.default_rng(0), 200000, n, power)
    assert ranks.min() >= 0 and ranks.max() < n
    freq = np.bincount(ranks, minlength=n) / ranks.size
    assert np.abs(freq - p).max() < 0.005


def test_signal_zero_gives_prior_labels():
    g = make_extreme_multiclass(5000, 500, 5, signal=0.0, random_state=0)
    assert g.W_true.nnz == 0
    np.testing.assert_allclose(posterior(g)[0], g.class_prior)


def test_more_classes_than_features():
    g = make_extreme_multiclass(2000, 20, 60, nnz_per_row=5, random_state=0)
    assert (np.asarray(g.W_true.sum(axis=1)) > 0).all()  # every class owns at least one feature


def test_generate_train_test_split():
    train, test = generate_train_test(1000, 300, 7, test_size=0.25, random_state=0)
    assert train.X.shape == (750, 300) and test.X.shape == (250, 300)
    assert train.y.shape == (750,) and test.y.shape == (250,)
    assert train.W_true is test.W_true
    _, small = generate_train_test(100, 30, 3, test_size=10, random_state=0)
    assert small.X.shape[0] == 10
    with pytest.raises(ValueError):
        generate_train_test(10, 5, 3, test_size=10)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_samples": 0},
        {"n_features": 0},
        {"n_classes": 1},
        {"nnz_per_row": 0},
        {"feature_power": -1.0},
        {"class_power": float("nan")},
        {"signal": float("inf")},
    ],
)
def test_bad_parameters(kwargs):
    args = {"n_samples": 10, "n_features": 5, "n_classes": 3, **kwargs}
    with pytest.raises(ValueError):
        make_extreme_multiclass(**args)


def test_large_problem_smoke():
    # Exercises many row blocks at a realistic shape; deliberately not timed.
    g = make_extreme_multiclass(60000, 20000, 1000, random_state=0)
    assert g.X.shape == (60000, 20000) and g.X.has_canonical_format
    assert abs(g.X.nnz / 60000 - 50) < 3
    assert np.unique(g.y).size > 900
