"""Synthetic extreme-multiclass problems with a planted softmax model.

The features look like bag-of-words text: feature popularity is Zipf-like, values are
tf-idf-like and rows are L2-normalised.  Labels are *sampled* from the planted model
``P(y = k | x) ∝ prior_k · exp(W_true[k] · x)``, so the data are not separable and
multinomial logistic regression has a finite optimum near ``W_true`` (with intercepts
``log prior``).

Everything is vectorised and processed in blocks of rows, so no ``N x K`` or ``N x D``
dense array is ever built.  Because ``W_true`` and ``x`` are non-negative, a row's
scores are zero for every class that shares no feature with it; the softmax is
sampled exactly from the sparse score matrix by splitting the distribution into the
prior (the mass every class has at score 0) plus the extra mass of the scored classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["GeneratedProblem", "generate_train_test", "make_extreme_multiclass"]

_CHUNK_ROWS = 16384
# Highly skewed feature distributions need many draws per distinct feature; past this
# many draws per requested feature a row just gets fewer distinct features.
_MAX_DRAWS_PER_FEATURE = 8
# The class prior is tuned on this many leading rows; more rows, less noise, more time.
_CALIBRATION_ROWS = 32768
# Copies of each feature in W_true: each feature is informative for this many classes.
_CLASSES_PER_FEATURE = 2


@dataclass(frozen=True, eq=False)
class GeneratedProblem:
    """A generated data set and the model that labelled it.

    Attributes
    ----------
    X : scipy.sparse.csr_matrix of shape (n_samples, n_features)
        Non-negative float64 features, canonical CSR.
    y : ndarray of shape (n_samples,)
        int64 labels in ``[0, n_classes)``.
    W_true : scipy.sparse.csr_matrix of shape (n_classes, n_features)
        The planted non-negative weights (float64), with about ``2 * D`` non-zeros:
        sparse, so that generating a problem whose model outgrows memory needs none.
    class_prior : ndarray of shape (n_classes,)
        Labels follow ``softmax(W_true @ x + log(class_prior))``.  It is tuned so that
        the expected class frequencies follow the Zipf law of ``class_power``.
    """

    X: sp.csr_matrix
    y: np.ndarray
    W_true: sp.csr_matrix
    class_prior: np.ndarray


def make_extreme_multiclass(
    n_samples: int,
    n_features: int,
    n_classes: int,
    *,
    nnz_per_row: int = 50,
    feature_power: float = 1.0,
    class_power: float = 1.0,
    signal: float = 4.0,
    normalize: bool = True,
    random_state: int | None = None,
) -> GeneratedProblem:
    """Generate a text-like multiclass problem with a planted softmax model.

    Parameters
    ----------
    n_samples, n_features, n_classes : int
        Shape of the problem (``n_classes >= 2``).
    nnz_per_row : int, default 50
        Mean number of distinct features per row.  Row sizes vary like a Poisson
        count, clipped to ``[1, n_features]``.
    feature_power : float, default 1.0
        Zipf exponent of feature popularity (0 is uniform).  Popular features get
        random ids, not the lowest ones.
    class_power : float, default 1.0
        Zipf exponent of the class frequencies (0 is uniform); class ids are shuffled.
    signal : float, default 4.0
        Roughly the logit one informative feature of typical weight adds to its
        classes; 0 gives labels drawn from the prior alone.
    normalize : bool, default True
        L2-normalise rows.  Without it values are larger, so labels are less noisy.
    random_state : int, optional
        Seed; equal seeds give identical problems.

    Returns
    -------
    GeneratedProblem
    """
    n, d, k = int(n_samples), int(n_features), int(n_classes)
    if n < 1 or d < 1 or k < 2:
        raise ValueError("need n_samples >= 1, n_features >= 1 and n_classes >= 2")
    if nnz_per_row < 1:
        raise ValueError(f"nnz_per_row must be >= 1, got {nnz_per_row}")
    if not all(math.isfinite(v) and v >= 0 for v in (feature_power, class_power, signal)):
        raise ValueError("feature_power, class_power and signal must be finite and >= 0")
    rng = np.random.default_rng(random_state)

    feature_of_rank = rng.permutation(d)
    p_rank = _powerlaw_probabilities(d, feature_power)
    target = np.empty(k)
    target[rng.permutation(k)] = _powerlaw_probabilities(k, class_power)

    max_target = min(d, nnz_per_row + 10 * math.sqrt(nnz_per_row) + 10)
    draw_grid, distinct_grid = _distinct_curve(p_rank, _MAX_DRAWS_PER_FEATURE * max_target)
    # Document frequency of each feature in a typical row gives an idf-like weight.
    typical_draws = np.interp(nnz_per_row, distinct_grid, draw_grid)
    doc_freq = -np.expm1(typical_draws * np.log1p(-np.minimum(p_rank, 1 - 1e-16)))
    idf = np.empty(d)
    idf[feature_of_rank] = 1.0 + np.log(1.0 / np.maximum(doc_freq, 1e-300))

    if normalize:
        typical_value = 1.0 / math.sqrt(nnz_per_row)
    else:
        typical_value = math.log(2.0) * float(p_rank @ idf[feature_of_rank])
    W_true, Wt = _planted_weights(rng, feature_of_rank, k, signal / typical_value)

    starts = range(0, n, _CHUNK_ROWS)
    blocks = []
    for start in starts:
        sizes = np.clip(rng.poisson(nnz_per_row, min(_CHUNK_ROWS, n - start)), 1, d)
        draws = np.maximum(sizes, np.rint(np.interp(sizes, distinct_grid, draw_grid)))
        draws = np.minimum(draws, _MAX_DRAWS_PER_FEATURE * sizes).astype(np.int64)
        blocks.append(_rows(rng, draws, feature_of_rank, feature_power, idf, normalize))
    X = sp.vstack(blocks, format="csr") if len(blocks) > 1 else blocks[0]
    del blocks
    X.sort_indices()
    # Tuned on the data's own leading rows, so small problems match the target closely.
    prior = _calibrate_prior((X[:_CALIBRATION_ROWS] @ Wt).tocsr(), target)
    prior_cdf = np.cumsum(prior)
    y = np.concatenate(
        [
            _sample_labels(rng, (X[s : s + _CHUNK_ROWS] @ Wt).tocsr(), prior, prior_cdf)
            for s in starts
        ]
    )
    return GeneratedProblem(X=X, y=y, W_true=W_true, class_prior=prior)


def generate_train_test(
    n_samples: int,
    n_features: int,
    n_classes: int,
    *,
    test_size: float | int = 0.2,
    **kwargs: object,
) -> tuple[GeneratedProblem, GeneratedProblem]:
    """Generate one problem and split its rows into train and test parts.

    Rows are independent draws, so the last ``test_size`` rows form the test set.
    Both parts share ``W_true`` and ``class_prior``.  ``test_size`` is a fraction in
    ``(0, 1)`` or a number of rows; other keywords go to
    :func:`make_extreme_multiclass`.
    """
    if isinstance(test_size, float) and 0 < test_size < 1:
        n_test = round(n_samples * test_size)
    else:
        n_test = int(test_size)
    if not 1 <= n_test < n_samples:
        raise ValueError(f"test_size={test_size} leaves no train or no test rows")
    full = make_extreme_multiclass(n_samples, n_features, n_classes, **kwargs)
    cut = n_samples - n_test

    def part(rows: slice) -> GeneratedProblem:
        return GeneratedProblem(full.X[rows], full.y[rows], full.W_true, full.class_prior)

    return part(slice(0, cut)), part(slice(cut, n_samples))


def _powerlaw_probabilities(n: int, power: float) -> np.ndarray:
    """P(rank r) ∝ ∫_{r+1}^{r+2} t^-power dt: Zipf-like, with a closed-form sampler."""
    log_edges = np.log(np.arange(1, n + 2, dtype=np.float64))
    a = 1.0 - power
    cdf = log_edges / log_edges[-1] if abs(a) < 1e-12 else np.expm1(a * log_edges)
    cdf = cdf / cdf[-1]
    return np.diff(cdf)


def _powerlaw_ranks(rng: np.random.Generator, size: int, n: int, power: float) -> np.ndarray:
    """Sample ranks by inverting the CDF of :func:`_powerlaw_probabilities` (O(1) each)."""
    u = rng.random(size)
    a = 1.0 - power
    log_n1 = math.log(n + 1.0)
    log_t = u * log_n1 if abs(a) < 1e-12 else np.log1p(u * math.expm1(a * log_n1)) / a
    return np.minimum(np.exp(log_t).astype(np.int64) - 1, n - 1)


def _distinct_curve(p: np.ndarray, max_draws: float) -> tuple[np.ndarray, np.ndarray]:
    """Expected number of distinct features, sum(1 - (1 - p)^T), on a grid of draws T."""
    grid = np.unique(np.geomspace(1, max(max_draws, 2), 64).round().astype(np.int64))
    # Features this rare contribute T*p to the sum up to a relative error of 1e-4.
    head = p > 1e-4 / grid[-1]
    log_q = np.log1p(-np.minimum(p[head], 1 - 1e-16))
    tail = float(p[~head].sum())
    expected = np.array([-np.expm1(t * log_q).sum() + t * tail for t in grid])
    keep = np.concatenate(([True], np.diff(expected) > 0))  # np.interp needs increasing x
    return grid[keep].astype(np.float64), expected[keep]


def _planted_weights(
    rng: np.random.Generator, feature_of_rank: np.ndarray, k: int, scale: float
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Give every class the same share of popular, mid and rare features.

    Features in popularity order are cut into blocks of ``k`` slots and each block is
    dealt to the classes by a random permutation, so no class is favoured just by
    owning the frequent words.
    """
    d = feature_of_rank.size
    copies = max(_CLASSES_PER_FEATURE, -(-k // d))
    feats = np.repeat(feature_of_rank, copies)
    n_blocks = -(-feats.size // k)
    classes = rng.permuted(np.tile(np.arange(k), (n_blocks, 1)), axis=1).ravel()[: feats.size]
    weights = scale * rng.exponential(size=feats.size)
    Wt = sp.csr_matrix((weights, (feats, classes)), shape=(d, k))  # sums duplicate pairs
    Wt.sum_duplicates()
    Wt.eliminate_zeros()  # signal = 0 plants none
    return Wt.T.tocsr(), Wt


def _rows(
    rng: np.random.Generator,
    draws: np.ndarray,
    feature_of_rank: np.ndarray,
    power: float,
    idf: np.ndarray,
    normalize: bool,
) -> sp.csr_matrix:
    """Rows of word draws; repeated draws of a feature become its term count."""
    m, d = draws.size, feature_of_rank.size
    token_rows = np.repeat(np.arange(m, dtype=np.int64), draws)
    token_feats = feature_of_rank[_powerlaw_ranks(rng, token_rows.size, d, power)]
    keys, counts = np.unique(token_rows * d + token_feats, return_counts=True)
    # keys are sorted row-major, so row boundaries come from a search, not a division.
    row_starts = np.arange(m + 1, dtype=np.int64) * d
    indptr = np.searchsorted(keys, row_starts)
    rows = np.repeat(np.arange(m), np.diff(indptr))
    cols = keys - row_starts[rows]
    values = np.log1p(counts) * idf[cols]
    if normalize:
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=m))
        values /= norms[rows]
    return sp.csr_matrix((values, cols, indptr), shape=(m, d))


class _Scores:
    """The prior-independent parts of softmax(s + log prior) for sparse scores ``S >= 0``.

    ``Z = sum_k prior_k e^{s_k} = 1 + sum_{k: s_k > 0} prior_k (e^{s_k} - 1)``, so with
    probability ``1/Z`` a label comes from the prior and otherwise from the scored
    classes with probabilities ``prior_k (e^{s_k} - 1) / Z``.  Everything is scaled by
    ``e^-top`` (``top >= 0`` is the row's largest score) to avoid overflow.
    """

    def __init__(self, S: sp.csr_matrix):
        self.S, m = S, S.shape[0]
        lengths = np.diff(S.indptr)
        self.rows = np.repeat(np.arange(m), lengths)
        top = np.zeros(m)
        scored = lengths > 0
        if scored.any():
            top[scored] = np.maximum.reduceat(S.data, S.indptr[:-1][scored])
        self.base = np.exp(-top)
        self.excess = np.maximum(np.exp(S.data - top[self.rows]) - self.base[self.rows], 0.0)

    def split(self, prior: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row P(label from prior), and per entry of ``S.data`` P(that class, scored)."""
        mass = prior[self.S.indices] * self.excess
        total = self.base + np.bincount(self.rows, mass, self.base.size)
        return self.base / total, mass / total[self.rows]


def _calibrate_prior(S: sp.csr_matrix, target: np.ndarray, iters: int = 30) -> np.ndarray:
    """The intercept prior whose expected class frequencies on the rows of ``S`` are ``target``.

    Without this the classes that own high weights on frequent features would be far
    more common than their prior says, and ``class_power`` would lose its meaning.
    Each class's log prior takes a Newton step using its own elasticity
    ``d log freq_k / d log prior_k = 1 - sum_r P_rk^2 / sum_r P_rk``; plain fixed-point
    scaling converges very slowly for classes whose scores dominate their rows.
    """
    k, log_target, scores = target.size, np.log(target), _Scores(S)
    log_prior = log_target.copy()
    for _ in range(iters):
        prior = np.exp(log_prior - log_prior.max())
        prior /= prior.sum()
        base, mass = scores.split(prior)
        prior_part = base[scores.rows] * prior[S.indices]
        p_sum = prior * base.sum() + np.bincount(S.indices, mass, k)
        p_sq = prior**2 * (base**2).sum() + np.bincount(
            S.indices, mass * (2 * prior_part + mass), k
        )
        gap = log_target - np.log(np.maximum(p_sum / S.shape[0], 1e-300))
        if np.abs(gap).max() < 1e-2:  # far below the sampling noise of the rows used
            break
        log_prior += np.clip(gap / np.clip(1.0 - p_sq / p_sum, 1e-3, 1.0), -5.0, 5.0)
    return prior


def _sample_labels(
    rng: np.random.Generator, S: sp.csr_matrix, prior: np.ndarray, prior_cdf: np.ndarray
) -> np.ndarray:
    """Draw y ~ softmax(s + log prior) for each row of the sparse scores ``S`` exactly."""
    m = S.shape[0]
    base, mass = _Scores(S).split(prior)
    u = rng.random(m)
    from_prior = u < base
    y = np.empty(m, dtype=np.int64)
    y[from_prior] = np.minimum(
        np.searchsorted(prior_cdf, rng.random(int(from_prior.sum())) * prior_cdf[-1], "right"),
        prior_cdf.size - 1,
    )
    picked = np.flatnonzero(~from_prior)
    if picked.size:
        # Rows sum to 1, so the running sum resolves every row equally well.
        cum = np.cumsum(mass)
        first, last = S.indptr[picked], S.indptr[picked + 1] - 1
        offset = np.where(first > 0, cum[np.maximum(first - 1, 0)], 0.0)
        pos = np.searchsorted(cum, offset + (u[picked] - base[picked]), side="right")
        y[picked] = S.indices[np.clip(pos, first, last)]
    return y
