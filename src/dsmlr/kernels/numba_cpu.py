"""Fast CPU kernel: numba-compiled loops over CSR or dense rows.

Compiled lazily on first use (one specialisation per dtype and index type, cached on
disk) and with ``nogil=True``, so the in-process engine's worker threads run them in
parallel.  Scratch memory is per mini-batch (``batch_size x K_q`` scores and a compact
gradient over the columns the mini-batch touches, in the block's dtype, so float32 blocks
compute in float32); nothing of size N x K or K x D is allocated.  Penalty decays of
untouched columns are applied lazily (see :class:`dsmlr.kernels.base.UpdateConfig`),
from a table of the decay after ``i`` idle steps computed once per pass.  One
exponential per score serves both a row's partial normaliser and its probabilities; it is
:func:`~dsmlr.kernels.fast_exp.fast_exp`, in the scores' type, so that the loops computing
them vectorise (the C library's ``exp`` keeps them scalar at about 5 ns an element).

Sparse rows stepped one at a time (the CPU default) take dedicated sweeps
(:func:`_update_csr_single`, :func:`_svrg_csr_single`) that read a touched column twice
per step instead of four times: they catch up its pending decay while scoring it and
leave the step's own decay to the next catch-up.  Their loops stay in the block's type:
a float64 scalar in a float32 loop would make LLVM widen every element to float64, which
makes these sweeps about twice as slow.

The sparse loops ask for the block row of a non-zero ahead while they work on the
current one (:mod:`dsmlr.kernels.prefetch`): a narrow block's rows are too short for the
hardware prefetcher.  The update sweeps ask two non-zeros ahead, the scoring and
gradient passes as far as :func:`~dsmlr.kernels.prefetch.prefetch_distance` says
(``benchmarks/results/prefetch*.md`` has what the hints save).
"""

from __future__ import annotations

import math
from dataclasses import astuple

import numpy as np
from numba import njit

from dsmlr.kernels.anchor_table import AnchorTable
from dsmlr.kernels.base import HostBlocks, LocalRows, Snapshot, UpdateConfig
from dsmlr.kernels.fast_exp import fast_exp, sum_float64
from dsmlr.kernels.prefetch import NEAR, prefetch_distance, prefetch_row

__all__ = ["NumbaKernel"]

#: The table arguments of the SVRG sweeps when the anchor is held as weights.
_NO_TABLE = {
    np.dtype(t).char: (np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, t), False)
    for t in (np.float32, np.float64)
}

# Compiled once per argument types and cached on disk; without the GIL, so that worker
# threads run in parallel.  numpy's error model: a division by zero gives inf or nan
# instead of raising, which spares every loop a check and lets LLVM vectorise it (the
# kernels' divisors are batch sizes, step sizes and positive sums).
_jit = njit(nogil=True, cache=True, error_model="numpy")
_inline = njit(nogil=True, cache=True, inline="always", error_model="numpy")


@_inline
def _max_score(v, n):
    """The largest of ``v[:n]`` in their own type (NaN skipped; -inf if none)."""
    top = v.dtype.type(-np.inf)
    for k in range(n):
        if v[k] > top:
            top = v[k]
    return top


@_inline
def _logsumexp_row(v, n):
    """``log sum exp v[:n]`` of a few values (a row's block partials)."""
    top = _max_score(v, n)
    if top == -np.inf:
        return float(top)
    total = 0.0
    for k in range(n):
        total += fast_exp(v[k] - top)
    return top + math.log(total)


@_inline
def _init_scores(s, W, intercept_row, fit_intercept):
    """Start a row's scores at the intercept (the implicit feature 1), or at zero."""
    for k in range(s.shape[0]):
        s[k] = W[intercept_row, k] if fit_intercept else 0.0


@_jit
def _merge_row_stats(s, r, y, k0, partials, q, true_score, best_score, best_class):
    """Fold row r's block scores into its statistics; s is overwritten."""
    n_block = s.shape[0]
    local = y[r] - k0
    if 0 <= local < n_block:
        true_score[r] = s[local]
    for k in range(n_block):
        # Ties go to the lower class index, so the merge is independent of visit order.
        if s[k] > best_score[r] or (s[k] == best_score[r] and k + k0 < best_class[r]):
            best_score[r] = s[k]
            best_class[r] = k + k0
    partials[r, q] = _exp_shifted(s)[1]


@_jit
def _score_csr(indptr, indices, data, y, fit_intercept, W, k0, partials, q, ts, bs, bc):
    n_cols, n_block = W.shape
    s = np.empty(n_block, dtype=W.dtype)
    ahead = prefetch_distance(n_block * W.itemsize)
    for r in range(len(indptr) - 1):
        _init_scores(s, W, n_cols - 1, fit_intercept)
        for p in range(indptr[r], indptr[r + 1]):
            if p + ahead < len(indices):
                prefetch_row(W, indices[p + ahead])
            j = indices[p]
            x = data[p]
            for k in range(n_block):
                s[k] += x * W[j, k]
        _merge_row_stats(s, r, y, k0, partials, q, ts, bs, bc)


@_jit
def _score_dense(X, y, fit_intercept, W, k0, partials, q, ts, bs, bc):
    n_rows, n_feat = X.shape
    n_block = W.shape[1]
    s = np.empty(n_block, dtype=W.dtype)
    for r in range(n_rows):
        _init_scores(s, W, n_feat, fit_intercept)
        for j in range(n_feat):
            x = X[r, j]
            if x != 0.0:
                for k in range(n_block):
                    s[k] += x * W[j, k]
        _merge_row_stats(s, r, y, k0, partials, q, ts, bs, bc)


@_inline
def _exp_shifted(s):
    """Replace the scores s by ``exp(s - max s)``; return ``(max s, log sum exp s)``.

    One exponential per score serves both the block's partial normaliser and the
    probabilities ``exp(s + b) = exp(s - max s) exp(max s + b)``.
    """
    n = s.shape[0]
    top = _max_score(s, n)
    if top == -np.inf:
        for k in range(n):
            s[k] = 0.0
        return float(top), float(top)
    # The exponentials in one loop and their sum in another: a sum in index order
    # would keep the first loop scalar too.
    for k in range(n):
        s[k] = fast_exp(s[k] - top)
    return float(top), top + math.log(sum_float64(s))


@_inline
def _probabilities(s, r, partials, q, b, scale):
    """Turn row r's scores s into ``scale exp(s + b_r)`` in place, b_r refreshed first.

    The block's partial for row r is stored from s, then ``b_r = -log sum`` of the row's
    partials.
    """
    top, lse = _exp_shifted(s)
    partials[r, q] = lse
    b[r] = -_logsumexp_row(partials[r], partials.shape[1])
    # In the scores' own type: float64 scalars would turn float32 loops into float64 ones.
    factor = s.dtype.type(scale * math.exp(top + b[r]))
    for k in range(s.shape[0]):
        s[k] *= factor


@_jit
def _residuals(S, rows, y, w, k0, partials, q, b):
    """Refresh b from the partials, then turn scores into residuals s (p - y) / m in place."""
    m = len(rows)
    n_block = S.shape[1]
    for bi in range(m):
        r = rows[bi]
        _probabilities(S[bi], r, partials, q, b, w[r] / m)
        local = y[r] - k0
        if 0 <= local < n_block:
            S[bi, local] -= w[r] / m


@_inline
def _step_size(acc_j, eta, adaptive, delta):
    return eta / math.sqrt(acc_j + delta) if adaptive else eta


@_jit
def _decay_table(n, eta, lam):
    """``(1 - eta lam)_+ ** i`` for ``i = 0..n``: the penalty decay of ``i`` idle steps.

    Tabulated once per pass (plain steps share one step size), so a catch-up is a
    lookup and not a power per touched column and step.
    """
    base = max(0.0, 1.0 - eta * lam)
    out = np.empty(n + 1, dtype=np.float64)
    for i in range(n + 1):
        out[i] = base**i
    return out


@_inline
def _catch_up(W, j, n_steps, acc_j, eta, lam, adaptive, delta, decay):
    if n_steps > 0:
        if adaptive:
            factor = max(0.0, 1.0 - _step_size(acc_j, eta, adaptive, delta) * lam) ** n_steps
        else:
            factor = decay[n_steps]
        # w - (1 - factor) w, not factor w: a float32 factor this close to 1 (1 - 5e-7 for
        # a typical step and penalty) is off by up to 6% of its distance from 1, which
        # would bias the penalty; float32 holds 1 - factor to 7 digits.  (A float64 factor
        # would keep the precision but turn the loop into a float64 one.)
        shrink = W.dtype.type(1.0 - factor)
        for k in range(W.shape[1]):
            W[j, k] -= shrink * W[j, k]


@_inline
def _apply_step(W, g, j, acc, eta, lam, n_pen, adaptive, delta):
    n_block = W.shape[1]
    if j < n_pen:
        lam_t = W.dtype.type(lam)
        for k in range(n_block):
            g[k] += lam_t * W[j, k]
    if adaptive:
        sq = 0.0
        for k in range(n_block):
            sq += g[k] * g[k]
        acc[j] += sq / n_block
    step = W.dtype.type(_step_size(acc[j], eta, adaptive, delta))
    for k in range(n_block):
        W[j, k] -= step * g[k]


@_jit
def _update_csr(
    indptr, indices, data, y, w, fit_intercept, W, k0, acc, partials, q, b, order,
    batch_size, max_touched, eta, lam, n_pen, adaptive, delta, eta_u,
):  # fmt: skip
    n_cols, n_block = W.shape
    S = np.empty((batch_size, n_block), dtype=W.dtype)
    G = np.empty((max_touched, n_block), dtype=W.dtype)
    touched = np.empty(max_touched, dtype=np.int64)
    slot = np.full(n_cols, -1, dtype=np.int64)
    last = np.full(n_cols, -1, dtype=np.int64)
    lazy = lam > 0.0
    n_batches = (len(order) + batch_size - 1) // batch_size
    decay = _decay_table(n_batches if lazy and not adaptive else 0, eta, lam)
    for t in range(n_batches):
        rows = order[t * batch_size : min((t + 1) * batch_size, len(order))]
        # Gather the touched columns and bring their pending decays up to date.
        n_t = 0
        for r in rows:
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[p]
                if slot[j] < 0:
                    slot[j] = n_t
                    touched[n_t] = j
                    n_t += 1
                    if lazy and j < n_pen:
                        _catch_up(W, j, t - 1 - last[j], acc[j], eta, lam, adaptive, delta, decay)
        if fit_intercept:
            slot[n_cols - 1] = n_t
            touched[n_t] = n_cols - 1
            n_t += 1
        for bi in range(len(rows)):
            r = rows[bi]
            _init_scores(S[bi], W, n_cols - 1, fit_intercept)
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[p]
                x = data[p]
                for k in range(n_block):
                    S[bi, k] += x * W[j, k]
        _residuals(S[: len(rows)], rows, y, w, k0, partials, q, b)
        G[:n_t, :] = 0.0
        for bi in range(len(rows)):
            r = rows[bi]
            for p in range(indptr[r], indptr[r + 1]):
                sj = slot[indices[p]]
                x = data[p]
                for k in range(n_block):
                    G[sj, k] += x * S[bi, k]
            if fit_intercept:
                for k in range(n_block):
                    G[n_t - 1, k] += S[bi, k]
        for s in range(n_t):
            j = touched[s]
            _apply_step(W, G[s], j, acc, eta if j < n_pen else eta_u, lam, n_pen, adaptive,
                        delta)  # fmt: skip
            last[j] = t
            slot[j] = -1
    if lazy:
        for j in range(n_pen):
            _catch_up(W, j, n_batches - 1 - last[j], acc[j], eta, lam, adaptive, delta, decay)


@_inline
def _next_row_head(indptr, order, t, ahead):
    """Storage range of the next step's first ``ahead`` non-zeros (empty after the last
    step): the one-row sweeps ask for their block rows (see
    :mod:`dsmlr.kernels.prefetch`), which load while this step's probabilities and
    update run."""
    if t + 1 >= len(order):
        return 0, 0
    r = order[t + 1]
    return indptr[r], min(indptr[r] + ahead, indptr[r + 1])


@_inline
def _prefetch_anchored(W, W0, mu, j):
    """Ask for column j's rows of the weights, anchor weights and anchor gradient."""
    prefetch_row(W, j)
    prefetch_row(W0, j)
    prefetch_row(mu, j)


@_inline
def _deferred_step(indptr, indices, data, r, W, g, deferred):
    """Row r's step ``w_j -= (eta / c) x_rj g`` on its columns; decays are left pending."""
    for p in range(indptr[r], indptr[r + 1]):
        step = g.dtype.type(deferred * data[p])
        j = indices[p]
        for k in range(W.shape[1]):
            W[j, k] -= step * g[k]


@_jit
def _update_csr_single(
    indptr, indices, data, y, w, fit_intercept, W, k0, partials, q, b, order, eta, lam, n_pen,
    eta_u,
):  # fmt: skip
    """Plain steps on one row at a time (the CPU default), in one sweep per touched column.

    Equal to :func:`_update_csr` with ``batch_size=1`` and no AdaGrad, but a row's
    columns need no gather, the pending decay of a column is applied in the sweep that
    scores it, and the step's own decay ``w <- c w - eta g`` (``c = 1 - eta lam``) is
    left to the next catch-up: the step subtracts ``(eta / c) g`` and counts as idle, so
    a touched column is read twice per step instead of four times.  Needs ``c > 0``.
    """
    n_cols, n_block = W.shape
    s = np.empty(n_block, dtype=W.dtype)
    last = np.full(n_cols, -1, dtype=np.int64)
    n_steps = len(order)
    decay = _decay_table(n_steps, eta, lam)
    deferred = eta / decay[1]
    icpt = n_cols - 1
    ahead = NEAR  # see prefetch_distance: a farther one makes no measurable difference here
    for t in range(n_steps):
        r = order[t]
        _init_scores(s, W, icpt, fit_intercept)
        for p in range(indptr[r], indptr[r + 1]):
            if p + ahead < indptr[r + 1]:
                prefetch_row(W, indices[p + ahead])
            j = indices[p]
            x = data[p]
            idle = t - 1 - last[j]
            last[j] = t - 1
            if idle > 0:
                shrink = s.dtype.type(1.0 - decay[idle])  # see _catch_up
                for k in range(n_block):
                    v = W[j, k] - shrink * W[j, k]
                    W[j, k] = v
                    s[k] += x * v
            else:
                for k in range(n_block):
                    s[k] += x * W[j, k]
        head, end = _next_row_head(indptr, order, t, ahead)
        for p in range(head, end):
            prefetch_row(W, indices[p])
        _probabilities(s, r, partials, q, b, w[r])
        local = y[r] - k0
        if 0 <= local < n_block:
            s[local] -= w[r]
        _deferred_step(indptr, indices, data, r, W, s, deferred)
        if fit_intercept:
            step = s.dtype.type(eta_u)
            for k in range(n_block):
                W[icpt, k] -= step * s[k]
    for j in range(n_pen):
        _catch_up(W, j, n_steps - 1 - last[j], 0.0, eta, lam, False, 0.0, decay)


@_jit
def _update_dense(
    X, y, w, fit_intercept, W, k0, acc, partials, q, b, order, batch_size, eta, lam, n_pen,
    adaptive, delta, eta_u,
):  # fmt: skip
    n_feat = X.shape[1]
    n_block = W.shape[1]
    S = np.empty((batch_size, n_block), dtype=W.dtype)
    g = np.empty(n_block, dtype=W.dtype)
    n_batches = (len(order) + batch_size - 1) // batch_size
    for t in range(n_batches):
        rows = order[t * batch_size : min((t + 1) * batch_size, len(order))]
        for bi in range(len(rows)):
            r = rows[bi]
            _init_scores(S[bi], W, n_feat, fit_intercept)
            for j in range(n_feat):
                x = X[r, j]
                if x != 0.0:
                    for k in range(n_block):
                        S[bi, k] += x * W[j, k]
        _residuals(S[: len(rows)], rows, y, w, k0, partials, q, b)
        # Every column is touched by a dense mini-batch, so no decay is ever pending.
        for j in range(n_feat + fit_intercept):
            g[:] = 0.0
            for bi in range(len(rows)):
                x = 1.0 if j == n_feat else X[rows[bi], j]
                if x != 0.0:
                    for k in range(n_block):
                        g[k] += x * S[bi, k]
            _apply_step(W, g, j, acc, eta if j < n_pen else eta_u, lam, n_pen, adaptive, delta)


@_jit
def _svrg_residuals(S, S0, rows, w, b, b0, partials, q, table):
    """Refresh b from the partials, then ``s (p(W) - p(W~)) / m`` in S (labels cancel).

    S0 holds the anchor's scores, or with ``table`` its kept probabilities."""
    m = len(rows)
    n_block = S.shape[1]
    for bi in range(m):
        r = rows[bi]
        _probabilities(S[bi], r, partials, q, b, w[r] / m)
        w_r, b0_r = S.dtype.type(w[r] / m), S.dtype.type(b0[r])
        if table:
            for k in range(n_block):
                S[bi, k] -= w_r * S0[bi, k]
        else:
            for k in range(n_block):
                S[bi, k] -= w_r * fast_exp(S0[bi, k] + b0_r)


@_inline
def _table_row(s0, r, tptr, tcls, tp):
    """Row r's kept anchor probabilities, dense in s0 (0 where none is kept)."""
    s0[:] = 0.0
    for e in range(tptr[r], tptr[r + 1]):
        s0[tcls[e]] = tp[e]


@_jit
def _svrg_tables(n, eta, lam):
    """``c**i`` and ``(1 - c**i) / (1 - c)`` for ``c = 1 - eta lam`` and ``i = 0..n``.

    ``i`` idle SVRG steps ``w <- c w - eta mu`` give ``c**i w - eta mu (1 - c**i)/(1 - c)``;
    tabulated once per pass instead of three transcendentals per touched column.
    """
    power = np.ones(n + 1, dtype=np.float64)
    geometric = np.zeros(n + 1, dtype=np.float64)
    a = eta * lam
    if a <= 0.0:  # a can underflow to 0 with a tiny step: no decay then
        return power, geometric
    if a < 1.0:
        log_c = math.log1p(-a)
        for i in range(1, n + 1):
            power[i] = math.exp(i * log_c)
            geometric[i] = -math.expm1(i * log_c) / a
    else:
        for i in range(1, n + 1):
            power[i] = (1.0 - a) ** i
            geometric[i] = (1.0 - power[i]) / a
    return power, geometric


@_inline
def _svrg_idle(W, n_steps, eta, decays, power, geometric):
    """``(shrink, drift)`` of ``n_steps`` idle steps ``w <- c w - eta mu``, in the weights'
    type: they make ``w - shrink w - drift mu``, with ``shrink = 1 - c**n`` and ``drift =
    eta (1 - c**n) / (1 - c)`` (``0`` and ``n eta`` where nothing ``decays``); see
    :func:`_catch_up` for why not ``c**n w``."""
    if decays:
        return W.dtype.type(1.0 - power[n_steps]), W.dtype.type(eta * geometric[n_steps])
    return W.dtype.type(0.0), W.dtype.type(n_steps * eta)


@_inline
def _svrg_catch_up(W, mu, j, n_steps, eta, lam, penalized, power, geometric):
    """Apply ``n_steps`` of ``w <- (1 - eta lam) w - eta mu`` in closed form."""
    if n_steps <= 0:
        return
    shrink, drift = _svrg_idle(W, n_steps, eta, penalized and eta * lam > 0.0, power, geometric)
    for k in range(W.shape[1]):
        W[j, k] -= shrink * W[j, k] + drift * mu[j, k]


@_inline
def _svrg_step(W, g, mu, j, eta, lam, penalized):
    # In the weights' own type: float64 scalars would turn float32 loops into float64 ones.
    eta_t, lam_t = W.dtype.type(eta), W.dtype.type(lam)
    for k in range(W.shape[1]):
        total = g[k] + mu[j, k]
        if penalized:
            total += lam_t * W[j, k]
        W[j, k] -= eta_t * total


@_jit
def _row_scores_csr(indptr, indices, data, r, W, fit_intercept, s):
    n_cols = W.shape[0]
    ahead = prefetch_distance(W.shape[1] * W.itemsize)
    _init_scores(s, W, n_cols - 1, fit_intercept)
    for p in range(indptr[r], indptr[r + 1]):
        if p + ahead < len(indices):
            prefetch_row(W, indices[p + ahead])
        j = indices[p]
        x = data[p]
        for k in range(W.shape[1]):
            s[k] += x * W[j, k]


@_jit
def _row_scores_dense(X, r, W, fit_intercept, s):
    n_feat = X.shape[1]
    _init_scores(s, W, n_feat, fit_intercept)
    for j in range(n_feat):
        x = X[r, j]
        if x != 0.0:
            for k in range(W.shape[1]):
                s[k] += x * W[j, k]


@_jit
def _svrg_csr(
    indptr, indices, data, w, fit_intercept, W, W0, mu, b0, partials, q, b, order,
    batch_size, max_touched, eta, lam, n_pen, eta_u, tptr, tcls, tp, table,
):  # fmt: skip
    n_cols, n_block = W.shape
    S = np.empty((batch_size, n_block), dtype=W.dtype)
    S0 = np.empty((batch_size, n_block), dtype=W.dtype)
    G = np.empty((max_touched, n_block), dtype=W.dtype)
    touched = np.empty(max_touched, dtype=np.int64)
    slot = np.full(n_cols, -1, dtype=np.int64)
    last = np.full(n_cols, -1, dtype=np.int64)
    n_batches = (len(order) + batch_size - 1) // batch_size
    power, geometric = _svrg_tables(n_batches, eta, lam)
    for t in range(n_batches):
        rows = order[t * batch_size : min((t + 1) * batch_size, len(order))]
        n_t = 0
        for r in rows:
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[p]
                if slot[j] < 0:
                    slot[j] = n_t
                    touched[n_t] = j
                    n_t += 1
                    _svrg_catch_up(W, mu, j, t - 1 - last[j], eta, lam, j < n_pen, power, geometric)
        if fit_intercept:
            j = n_cols - 1
            slot[j] = n_t
            touched[n_t] = j
            n_t += 1
            _svrg_catch_up(W, mu, j, t - 1 - last[j], eta, lam, j < n_pen, power, geometric)
        for bi in range(len(rows)):
            _row_scores_csr(indptr, indices, data, rows[bi], W, fit_intercept, S[bi])
            if table:
                _table_row(S0[bi], rows[bi], tptr, tcls, tp)
            else:
                _row_scores_csr(indptr, indices, data, rows[bi], W0, fit_intercept, S0[bi])
        _svrg_residuals(S[: len(rows)], S0, rows, w, b, b0, partials, q, table)
        G[:n_t, :] = 0.0
        for bi in range(len(rows)):
            r = rows[bi]
            for p in range(indptr[r], indptr[r + 1]):
                sj = slot[indices[p]]
                x = data[p]
                for k in range(n_block):
                    G[sj, k] += x * S[bi, k]
            if fit_intercept:
                for k in range(n_block):
                    G[n_t - 1, k] += S[bi, k]
        for s in range(n_t):
            j = touched[s]
            _svrg_step(W, G[s], mu, j, eta if j < n_pen else eta_u, lam, j < n_pen)
            last[j] = t
            slot[j] = -1
    for j in range(n_cols):
        _svrg_catch_up(W, mu, j, n_batches - 1 - last[j], eta, lam, j < n_pen, power, geometric)


@_jit
def _svrg_csr_single(
    indptr, indices, data, w, fit_intercept, W, W0, mu, b0, partials, q, b, order, eta, lam,
    n_pen, eta_u, tptr, tcls, tp, table,
):  # fmt: skip
    """SVRG steps on one row at a time (the CPU default), in one sweep per touched column.

    Equal to :func:`_svrg_csr` with ``batch_size=1``; as in :func:`_update_csr_single`
    the pending steps ``w <- c w - eta mu`` are caught up in the sweep that scores a
    column (against ``W`` and the anchor ``W~`` together), and a step's own decay and
    anchor-gradient term are left to the next catch-up: the step subtracts
    ``(eta / c) g`` and counts as idle, so ``mu`` is read once per step, not twice.
    Needs ``c = 1 - eta lam > 0``.  With ``table`` the anchor's probabilities come from
    the table (``tptr``, ``tcls``, ``tp``) and ``W0`` is not read.
    """
    n_cols, n_block = W.shape
    s = np.empty(n_block, dtype=W.dtype)
    s0 = np.empty(n_block, dtype=W.dtype)
    last = np.full(n_cols, -1, dtype=np.int64)
    n_steps = len(order)
    power, geometric = _svrg_tables(n_steps, eta, lam)
    penalized = eta * lam > 0.0
    deferred = eta / (1.0 - eta * lam)
    icpt = n_cols - 1
    ahead = NEAR  # see prefetch_distance: a farther one makes no measurable difference here
    for t in range(n_steps):
        r = order[t]
        _init_scores(s, W, icpt, fit_intercept)
        _init_scores(s0, W0, icpt, fit_intercept)
        for p in range(indptr[r], indptr[r + 1]):
            if p + ahead < indptr[r + 1]:
                _prefetch_anchored(W, W0, mu, indices[p + ahead])
            j = indices[p]
            x = data[p]
            idle = t - 1 - last[j]
            last[j] = t - 1
            if idle > 0:
                shrink, drift = _svrg_idle(W, idle, eta, penalized, power, geometric)
                if table:
                    for k in range(n_block):
                        v = W[j, k] - shrink * W[j, k] - drift * mu[j, k]
                        W[j, k] = v
                        s[k] += x * v
                else:
                    for k in range(n_block):
                        v = W[j, k] - shrink * W[j, k] - drift * mu[j, k]
                        W[j, k] = v
                        s[k] += x * v
                        s0[k] += x * W0[j, k]
            elif table:
                for k in range(n_block):
                    s[k] += x * W[j, k]
            else:
                for k in range(n_block):
                    s[k] += x * W[j, k]
                    s0[k] += x * W0[j, k]
        head, end = _next_row_head(indptr, order, t, ahead)
        for p in range(head, end):
            _prefetch_anchored(W, W0, mu, indices[p])
        _probabilities(s, r, partials, q, b, w[r])
        w_r, b0_r = s.dtype.type(w[r]), s.dtype.type(b0[r])
        if table:
            for e in range(tptr[r], tptr[r + 1]):
                s[tcls[e]] -= w_r * tp[e]
        else:
            for k in range(n_block):
                s[k] -= w_r * fast_exp(s0[k] + b0_r)
        _deferred_step(indptr, indices, data, r, W, s, deferred)
        if fit_intercept:
            step_u = s.dtype.type(eta_u)
            for k in range(n_block):
                W[icpt, k] -= step_u * (s[k] + mu[icpt, k])
    for j in range(n_pen):
        _svrg_catch_up(W, mu, j, n_steps - 1 - last[j], eta, lam, True, power, geometric)


@_jit
def _svrg_dense(
    X, w, fit_intercept, W, W0, mu, b0, partials, q, b, order, batch_size, eta, lam, n_pen, eta_u,
    tptr, tcls, tp, table,
):  # fmt: skip
    n_feat = X.shape[1]
    n_block = W.shape[1]
    S = np.empty((batch_size, n_block), dtype=W.dtype)
    S0 = np.empty((batch_size, n_block), dtype=W.dtype)
    g = np.empty(n_block, dtype=W.dtype)
    n_batches = (len(order) + batch_size - 1) // batch_size
    for t in range(n_batches):
        rows = order[t * batch_size : min((t + 1) * batch_size, len(order))]
        for bi in range(len(rows)):
            _row_scores_dense(X, rows[bi], W, fit_intercept, S[bi])
            if table:
                _table_row(S0[bi], rows[bi], tptr, tcls, tp)
            else:
                _row_scores_dense(X, rows[bi], W0, fit_intercept, S0[bi])
        _svrg_residuals(S[: len(rows)], S0, rows, w, b, b0, partials, q, table)
        for j in range(n_feat + fit_intercept):
            g[:] = 0.0
            for bi in range(len(rows)):
                x = 1.0 if j == n_feat else X[rows[bi], j]
                if x != 0.0:
                    for k in range(n_block):
                        g[k] += x * S[bi, k]
            _svrg_step(W, g, mu, j, eta if j < n_pen else eta_u, lam, j < n_pen)


@_inline
def _table_start(n_rows, keep, W):
    """Row starts and entry arrays of a gradient pass's table (all but empty without one:
    ``keep <= 0``)."""
    rows, size = (n_rows + 1, 4 * n_rows) if keep > 0.0 else (1, 0)
    return np.zeros(rows, dtype=np.int64), np.empty(size, np.int32), np.empty(size, W.dtype)


@_jit
def _table_room(tcls, tp, used, need):
    """The table's entry arrays, grown (doubled) if ``need`` more entries do not fit."""
    if used + need <= len(tcls):
        return tcls, tp
    size = max(2 * len(tcls), used + need)
    grown_c = np.empty(size, dtype=tcls.dtype)
    grown_p = np.empty(size, dtype=tp.dtype)
    grown_c[:used] = tcls[:used]
    grown_p[:used] = tp[:used]
    return grown_c, grown_p


@_inline
def _anchor_row(s, r, b_r, sw, keep, tptr, tcls, tp, used):
    """Scores s to ``sw p`` with ``p = exp(s + b_r)``; with ``keep > 0`` only ``p >= keep``
    count (the others become 0) and go to the table.  Returns the table's entries used."""
    n = s.shape[0]
    if keep > 0.0:
        # Exponentials, the scan and the masked scaling in separate loops: the first and
        # the last vectorise, and the scan's branch is rarely taken.
        for k in range(n):
            s[k] = fast_exp(s[k] + b_r)
        floor = s.dtype.type(keep)
        for k in range(n):
            if s[k] >= floor:
                tcls[used] = k
                tp[used] = s[k]
                used += 1
        for k in range(n):
            s[k] = sw * s[k] if s[k] >= floor else s.dtype.type(0.0)
        tptr[r + 1] = used
    else:
        for k in range(n):
            s[k] = sw * fast_exp(s[k] + b_r)
    return used


@_inline
def _add_intercept(out, j, icpt, fit_intercept):
    """Add the intercept column's sum: kept in float64 over the rows, since every row adds
    to it, however ``out`` (the gradient, in the weights' dtype) rounds."""
    if fit_intercept:
        for k in range(out.shape[1]):
            out[j, k] += icpt[k]


@_jit
def _grad_csr(indptr, indices, data, y, w, fit_intercept, W, k0, b, scale, out, keep):
    n_cols, n_block = W.shape
    n_rows = len(indptr) - 1
    s = np.empty(n_block, dtype=W.dtype)
    icpt = np.zeros(n_block, dtype=np.float64)
    ahead = prefetch_distance(n_block * out.itemsize)
    tptr, tcls, tp = _table_start(n_rows, keep, W)
    used = 0
    for r in range(n_rows):
        _row_scores_csr(indptr, indices, data, r, W, fit_intercept, s)
        sw, b_r = s.dtype.type(scale * w[r]), s.dtype.type(b[r])
        if keep > 0.0:
            tcls, tp = _table_room(tcls, tp, used, n_block)
        used = _anchor_row(s, r, b_r, sw, keep, tptr, tcls, tp, used)
        local = y[r] - k0
        if 0 <= local < n_block:
            s[local] -= sw
        for p in range(indptr[r], indptr[r + 1]):
            if p + ahead < indptr[r + 1]:
                prefetch_row(out, indices[p + ahead])
            j = indices[p]
            x = data[p]
            for k in range(n_block):
                out[j, k] += x * s[k]
        if fit_intercept:
            for k in range(n_block):
                icpt[k] += s[k]
    _add_intercept(out, n_cols - 1, icpt, fit_intercept)
    return tptr, tcls[:used].copy(), tp[:used].copy()


@_jit
def _grad_dense(X, y, w, fit_intercept, W, k0, b, scale, out, keep):
    n_rows, n_feat = X.shape
    n_block = W.shape[1]
    s = np.empty(n_block, dtype=W.dtype)
    icpt = np.zeros(n_block, dtype=np.float64)
    tptr, tcls, tp = _table_start(n_rows, keep, W)
    used = 0
    for r in range(n_rows):
        _row_scores_dense(X, r, W, fit_intercept, s)
        sw, b_r = s.dtype.type(scale * w[r]), s.dtype.type(b[r])
        if keep > 0.0:
            tcls, tp = _table_room(tcls, tp, used, n_block)
        used = _anchor_row(s, r, b_r, sw, keep, tptr, tcls, tp, used)
        local = y[r] - k0
        if 0 <= local < n_block:
            s[local] -= sw
        for j in range(n_feat):
            x = X[r, j]
            if x != 0.0:
                for k in range(n_block):
                    out[j, k] += x * s[k]
        if fit_intercept:
            for k in range(n_block):
                icpt[k] += s[k]
    _add_intercept(out, n_feat, icpt, fit_intercept)
    return tptr, tcls[:used].copy(), tp[:used].copy()


class NumbaKernel(HostBlocks):
    """numba implementation of the kernel passes (CSR and dense, float32 and float64)."""

    name = "numba"

    def score_pass(self, rows: LocalRows, W_block, k0, partials, q, true_score, best_score,
                   best_class):  # fmt: skip
        if W_block.shape[1] == 0:
            partials[:, q] = -np.inf
            return
        args = (W_block, k0, partials, q, true_score, best_score, best_class)
        if rows.is_sparse:
            X = rows.X
            _score_csr(X.indptr, X.indices, X.data, rows.y, rows.fit_intercept, *args)
        else:
            _score_dense(rows.X, rows.y, rows.fit_intercept, *args)

    def gradient_pass(self, rows: LocalRows, W_block, k0, b, scale, out, keep=None):
        if W_block.shape[1] == 0 or rows.n_rows == 0:
            return AnchorTable.empty(rows.n_rows, W_block.dtype) if keep is not None else None
        tail = (W_block, k0, b, float(scale), out, float(keep or 0.0))
        if rows.is_sparse:
            X = rows.X
            table = _grad_csr(X.indptr, X.indices, X.data, rows.y, rows.weight,
                              rows.fit_intercept, *tail)  # fmt: skip
        else:
            table = _grad_dense(rows.X, rows.y, rows.weight, rows.fit_intercept, *tail)
        return AnchorTable(*table) if keep is not None else None

    def update_pass(self, rows: LocalRows, W_block, k0, acc, partials, q, b, order,
                    config: UpdateConfig, snapshot: Snapshot | None = None):  # fmt: skip
        if W_block.shape[1] == 0:
            partials[:, q] = -np.inf
            return
        if len(order) == 0:
            return
        m = int(config.batch_size)
        eta, lam, n_pen = float(config.eta), float(config.lam), int(config.n_penalized)
        eta_u = eta * float(config.unpenalized_scale)
        order = np.ascontiguousarray(order, dtype=np.int64)
        X = rows.X

        def max_touched() -> int:
            """Scratch rows of a sparse mini-batch: its columns, plus the intercept."""
            return min(W_block.shape[0], int(np.diff(X.indptr).max(initial=0)) * m + 1)

        # One row per step, the CPU default, has its own sweep (no gather, deferred decay);
        # the deferral divides by c = 1 - eta lam, so absurdly long steps take the general one.
        single = rows.is_sparse and m == 1 and eta * lam < 0.5
        if snapshot is not None:
            # With a table the sweeps get the block itself for the anchor weights, which they
            # then do not read; without one, an empty table they do not read.
            t = snapshot.table
            W0 = snapshot.W_block if snapshot.W_block is not None else W_block
            table = _NO_TABLE[W_block.dtype.char] if t is None else (*astuple(t), True)
            anchor = (W0, snapshot.mean_grad, snapshot.b, partials, q, b, order)
            if single:
                _svrg_csr_single(X.indptr, X.indices, X.data, rows.weight, rows.fit_intercept,
                                 W_block, *anchor, eta, lam, n_pen, eta_u, *table)  # fmt: skip
            elif rows.is_sparse:
                _svrg_csr(X.indptr, X.indices, X.data, rows.weight, rows.fit_intercept, W_block,
                          *anchor, m, max_touched(), eta, lam, n_pen, eta_u, *table)  # fmt: skip
            else:
                _svrg_dense(X, rows.weight, rows.fit_intercept, W_block, *anchor, m, eta, lam,
                            n_pen, eta_u, *table)  # fmt: skip
            return
        tail = (eta, lam, n_pen, bool(config.adaptive), float(config.delta), eta_u)
        if single and not config.adaptive:
            _update_csr_single(X.indptr, X.indices, X.data, rows.y, rows.weight,
                               rows.fit_intercept, W_block, k0, partials, q, b, order, eta, lam,
                               n_pen, eta_u)  # fmt: skip
        elif rows.is_sparse:
            _update_csr(
                X.indptr, X.indices, X.data, rows.y, rows.weight, rows.fit_intercept, W_block,
                k0, acc, partials, q, b, order, m, max_touched(), *tail,
            )  # fmt: skip
        else:
            _update_dense(
                X, rows.y, rows.weight, rows.fit_intercept, W_block, k0, acc, partials, q, b,
                order, m, *tail,
            )  # fmt: skip
