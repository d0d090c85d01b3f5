"""Step sizes that need no tuning to the data's scale.

:func:`sum_sq_norms` gives the rows' typical curvature (``eta`` is divided by its mean),
:func:`batch_gain` how much longer a mini-batch's mean-gradient step can be, and
:func:`step_config` an epoch's :class:`~dsmlr.kernels.UpdateConfig` for the optimiser.
"""

from __future__ import annotations

import numpy as np

from dsmlr.comm.base import Communicator
from dsmlr.engines.base import EngineConfig
from dsmlr.engines.optimizers import update_rule
from dsmlr.kernels import LocalRows, UpdateConfig

__all__ = ["batch_gain", "step_config", "sum_sq_norms"]


def sum_sq_norms(rows: LocalRows) -> float:
    """Sum over local rows of ``s_i ||x_i||^2`` (``||x_i||^2`` plus 1 for the intercept).

    Divided by N this is the typical curvature of one row's weighted loss (softmax
    probabilities are at most 1), so ``eta / mean`` is a step that needs no tuning to
    the data's scale.
    """
    if rows.n_rows == 0:
        return 0.0
    # Summed in float64 whatever the data's type: float32 squares overflow at 1e19.
    X = rows.X
    if rows.weighted:
        if rows.is_sparse:
            sq_rows = np.asarray(X.multiply(X).sum(axis=1, dtype=np.float64)).ravel()
        else:
            sq_rows = np.einsum("ij,ij->i", X, X, dtype=np.float64)
        return float(rows.weight @ (sq_rows + float(rows.fit_intercept)))
    values = X.data if rows.is_sparse else X.ravel()
    sq = float(np.einsum("i,i->", values, values, dtype=np.float64))
    return sq + rows.n_rows * float(rows.fit_intercept)


#: Mini-batches sampled per rank to measure how much a batch's rows overlap.
GAIN_SAMPLES = 8

#: Sparse data at most this dense takes the full gain ``m`` (see :func:`batch_gain`).
SPARSE_DENSITY = 0.1


def _batch_overlap(rows: LocalRows, m: int, seed: int) -> np.ndarray:
    """``[sum ||sum_b x_i||^2, sum sum_b ||x_i||^2]`` over a few sampled mini-batches.

    Their ratio is 1 when a batch's rows touch disjoint features and ``m`` when the rows
    are identical; see :func:`batch_gain`.
    """
    n = rows.n_rows
    if n == 0:
        return np.zeros(2)
    order = np.random.default_rng(seed).permutation(n)
    total = np.zeros(2)
    for t in range(min(GAIN_SAMPLES, -(-n // m))):
        Xb = rows.X[np.sort(order[t * m : (t + 1) * m])]
        summed = np.asarray(Xb.sum(axis=0), dtype=np.float64).ravel()
        sq = Xb.multiply(Xb).sum() if rows.is_sparse else np.einsum("ij,ij->", Xb, Xb)
        total += [summed @ summed, float(sq)]
    return total


def batch_gain(comm: Communicator, rows: LocalRows, cfg: EngineConfig) -> float:
    """How many times longer a step on the mean gradient of a mini-batch can be.

    The kernels step on the mean of a mini-batch's ``m`` row gradients.  Where the rows
    touch mostly different features (sparse data: text, one-hot) each row's part of the
    mean is ``m`` times smaller than its own one-row step, so the step is ``m`` times
    longer, and a batch moves each row's features about as far as a one-row step would:
    an epoch of batches makes about the progress of an epoch of one-row steps.  Denser data
    (more than :data:`SPARSE_DENSITY` of the entries) gets the cautious gain
    ``m / overlap``, the overlap being ``||sum x_i||^2 / sum ||x_i||^2`` over sampled
    batches (a Rayleigh quotient of the batch's Gram matrix: ``m`` for identical rows).
    The intercept, which every row shares, keeps one row's step
    (:attr:`UpdateConfig.unpenalized_scale`): its overlap is ``m`` whatever the data, so
    scaled by the gain its step would be ``m`` times too long and diverge.  All ranks agree
    on the result (one allreduce).
    """
    m = cfg.batch_size
    if m <= 1:
        return 1.0
    nnz = float(rows.X.nnz if rows.is_sparse else np.count_nonzero(rows.X))
    local = [
        *_batch_overlap(rows, m, cfg.seed + 7919 * comm.rank),
        nnz,
        rows.n_rows * cfg.n_features,
    ]
    num, den, nnz, cells = comm.allreduce_sum(np.array(local, dtype=np.float64))
    if cells > 0 and nnz / cells <= SPARSE_DENSITY:
        return float(m)
    if den <= 0.0:
        return 1.0
    return float(np.clip(m / max(num / den, 1.0), 1.0, m))


def step_config(
    cfg: EngineConfig, epoch: int, curvature: float, backoff: float, gain: float = 1.0
) -> UpdateConfig:
    rule = update_rule(cfg.optimizer)
    if rule.adaptive:
        gain = 1.0  # AdaGrad scales its own steps, for batches too.
    eta = rule.step(cfg.eta, curvature, epoch) * backoff * gain
    return UpdateConfig(
        eta=float(eta), lam=cfg.lam, n_penalized=cfg.n_features, batch_size=cfg.batch_size,
        adaptive=rule.adaptive, unpenalized_scale=1.0 / gain,
    )  # fmt: skip
