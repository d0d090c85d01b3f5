"""SVRG's compiled loops for :class:`dsmlr.kernels.numba_cpu.NumbaKernel`: the
variance-reduced update sweeps (anchor as weights or as the rows' probability tables)
and the anchor gradient's pass, which also keeps those tables.  They build on the
shared loops of :mod:`dsmlr.kernels.numba_loops`.
"""

from __future__ import annotations

import math

import numpy as np

from dsmlr.kernels.fast_exp import fast_exp
from dsmlr.kernels.numba_loops import (
    _batch_gradient,
    _deferred_step,
    _gather_columns,
    _init_scores,
    _inline,
    _jit,
    _next_row_head,
    _prefetch_anchored,
    _probabilities,
    _row_scores_csr,
    _row_scores_dense,
)
from dsmlr.kernels.prefetch import NEAR, prefetch_distance, prefetch_row


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
    log_c = math.log1p(-a) if a < 1.0 else 0.0
    for i in range(1, n + 1):
        power[i], geometric[i] = _power_geometric(i, a, log_c)
    return power, geometric


@_inline
def _power_geometric(i, a, log_c):
    """``c**i`` and ``(1 - c**i) / (1 - c)`` for ``c = 1 - a``, ``a > 0`` (``log_c =
    log1p(-a)`` where ``a < 1``)."""
    if a < 1.0:
        return math.exp(i * log_c), -math.expm1(i * log_c) / a
    p = (1.0 - a) ** i
    return p, (1.0 - p) / a


@_jit
def _svrg_before(last, n_pen, eta, lam):
    """``c**L`` and ``(1 - c**L) / (1 - c)`` for each penalised column ``L`` idle steps
    behind at a pass's start (``last[j] = -1 - L``; 1 and 0 where none, or where nothing
    decays): as :func:`~dsmlr.kernels.numba_loops._decay_before` for plain steps, they
    let the pass's tables reach only its own steps, since ``L + m`` idle steps give
    ``c**(L+m) = c**L c**m`` and ``(1 - c**(L+m)) / (1 - c) = geometric[L] + c**L
    geometric[m]``: 16 bytes a column instead of 16 a row of the epoch."""
    power = np.ones(n_pen, dtype=np.float64)
    geometric = np.zeros(n_pen, dtype=np.float64)
    a = eta * lam
    if a <= 0.0:
        return power, geometric
    log_c = math.log1p(-a) if a < 1.0 else 0.0
    for j in range(n_pen):
        if last[j] < -1:
            power[j], geometric[j] = _power_geometric(-1 - last[j], a, log_c)
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
def _svrg_idle_since(W, idle, t, j, eta, decays, power, geometric, before_p, before_g):
    """:func:`_svrg_idle` at step ``t`` of a pass: idle steps beyond ``t`` came before the
    pass (see :func:`_svrg_before`)."""
    if not decays:
        return W.dtype.type(0.0), W.dtype.type(idle * eta)
    if idle > t:
        c_l = before_p[j]
        return (W.dtype.type(1.0 - c_l * power[t]),
                W.dtype.type(eta * (before_g[j] + c_l * geometric[t])))  # fmt: skip
    return W.dtype.type(1.0 - power[idle]), W.dtype.type(eta * geometric[idle])


@_inline
def _svrg_catch_up(W, mu, j, n_steps, eta, lam, penalized, power, geometric):
    """Apply ``n_steps`` of ``w <- (1 - eta lam) w - eta mu`` in closed form."""
    if n_steps <= 0:
        return
    decays = penalized and eta * lam > 0.0
    shrink, drift = _svrg_idle(W, n_steps, eta, decays, power, geometric)
    for k in range(W.shape[1]):
        W[j, k] -= shrink * W[j, k] + drift * mu[j, k]


@_jit
def _svrg_settle(W, mu, last, cols, eta, lam, n_pen):
    """Bring the penalised columns among ``cols`` up to date as of the next pass's first
    step: the idle steps ``last`` says they are behind (see :func:`_svrg_csr_single`)."""
    a = eta * lam
    log_c = math.log1p(-a) if 0.0 < a < 1.0 else 0.0
    for j in cols:
        if j < n_pen:
            idle = -1 - last[j]
            if idle > 0:
                shrink, drift = W.dtype.type(0.0), W.dtype.type(idle * eta)
                if a > 0.0:
                    c_l, g_l = _power_geometric(idle, a, log_c)
                    shrink, drift = W.dtype.type(1.0 - c_l), W.dtype.type(eta * g_l)
                for k in range(W.shape[1]):
                    W[j, k] -= shrink * W[j, k] + drift * mu[j, k]
            last[j] = -1


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
        n_t = _gather_columns(indptr, indices, rows, slot, touched, fit_intercept)
        for s in range(n_t):
            j = touched[s]
            _svrg_catch_up(W, mu, j, t - 1 - last[j], eta, lam, j < n_pen, power, geometric)
        for bi in range(len(rows)):
            _row_scores_csr(indptr, indices, data, rows[bi], W, fit_intercept, S[bi])
            if table:
                _table_row(S0[bi], rows[bi], tptr, tcls, tp)
            else:
                _row_scores_csr(indptr, indices, data, rows[bi], W0, fit_intercept, S0[bi])
        _svrg_residuals(S[: len(rows)], S0, rows, w, b, b0, partials, q, table)
        _batch_gradient(indptr, indices, data, rows, slot, S, G, n_t, fit_intercept)
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
    n_pen, eta_u, tptr, tcls, tp, table, last, final,
):  # fmt: skip
    """SVRG steps on one row at a time (the CPU default), in one sweep per touched column.

    Equal to :func:`_svrg_csr` with ``batch_size=1``; as in :func:`_update_csr_single`
    the pending steps ``w <- c w - eta mu`` are caught up in the sweep that scores a
    column (against ``W`` and the anchor ``W~`` together), and a step's own decay and
    anchor-gradient term are left to the next catch-up: the step subtracts
    ``(eta / c) g`` and counts as idle, so ``mu`` is read once per step, not twice.
    Needs ``c = 1 - eta lam > 0``.  With ``table`` the anchor's probabilities come from
    the table (``tptr``, ``tcls``, ``tp``) and ``W0`` is not read.

    ``last[j]``: the step after which column ``j``'s idle steps began, counted from this
    pass's first (``-1``: up to date at its start; ``-1 - n``: ``n`` idle steps behind).
    A ``final`` pass brings every column up to date at its end; any other leaves the
    untouched ones behind and counts ``last`` from the next pass's first step, so that a
    block's update stage, one pass on each rank, sweeps the whole block once and not in
    every visit (with the same ``mu`` and step throughout, idle steps compose exactly).
    """
    n_cols, n_block = W.shape
    s = np.empty(n_block, dtype=W.dtype)
    s0 = np.empty(n_block, dtype=W.dtype)
    n_steps = len(order)
    power, geometric = _svrg_tables(n_steps, eta, lam)
    before_p, before_g = _svrg_before(last, n_pen, eta, lam)
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
                shrink, drift = _svrg_idle_since(W, idle, t, j, eta, penalized, power, geometric,
                                                 before_p, before_g)  # fmt: skip
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
        if final:
            idle = n_steps - 1 - last[j]
            if idle > 0:
                shrink, drift = _svrg_idle_since(W, idle, n_steps, j, eta, penalized, power,
                                                 geometric, before_p, before_g)  # fmt: skip
                for k in range(n_block):
                    W[j, k] -= shrink * W[j, k] + drift * mu[j, k]
            last[j] = -1
        else:
            last[j] -= n_steps


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
