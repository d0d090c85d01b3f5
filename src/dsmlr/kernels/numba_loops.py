"""The compiled loops of :class:`dsmlr.kernels.numba_cpu.NumbaKernel` that every update
rule shares: a row's scores, the block statistics of a scoring pass, probabilities,
lazy penalty decays, and the plain and AdaGrad update sweeps (SVRG's are in
:mod:`dsmlr.kernels.numba_svrg`).  See :mod:`dsmlr.kernels.numba_cpu` for how they work
and why.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from dsmlr.kernels.fast_exp import fast_exp, sum_float64
from dsmlr.kernels.prefetch import NEAR, prefetch_distance, prefetch_row

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
    n_block = W.shape[1]
    s = np.empty(n_block, dtype=W.dtype)
    ahead = prefetch_distance(n_block * W.itemsize)
    for r in range(len(indptr) - 1):
        _csr_row_scores(indptr, indices, data, r, W, fit_intercept, s, ahead)
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


@_jit
def _decay_before(last, n_pen, eta, lam):
    """The decay each penalised column owes for the idle steps it was behind at a pass's
    start (``last[j] = -1 - L``: ``(1 - eta lam)_+ ** L``; 1 where none).

    A column can be up to an epoch's rows of steps behind (see
    :func:`~dsmlr.kernels.numba_svrg._svrg_csr_single`); with these, the pass's table
    reaches only its own steps: ``i = L + m`` idle steps decay by ``before[j] *
    decay[m]``, so a pass needs 8 bytes a column, not a row of the epoch.
    """
    base = max(0.0, 1.0 - eta * lam)
    out = np.ones(n_pen, dtype=np.float64)
    for j in range(n_pen):
        if last[j] < -1:
            out[j] = base ** (-1 - last[j])
    return out


@_inline
def _decay_since(decay, before, j, idle, t):
    """The decay of ``idle`` idle steps for column j at step ``t`` of a pass: those beyond
    ``t`` came before the pass (see :func:`_decay_before`)."""
    if idle > t:
        return before[j] * decay[t]
    return decay[idle]


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


@_inline
def _gather_columns(indptr, indices, rows, slot, touched, fit_intercept):
    """The columns a sparse mini-batch touches, each once, into ``touched[:n_t]``, and
    each one's position there into ``slot`` (the intercept's, the last column, is the
    last); returns ``n_t``.  ``slot`` is ``-1`` for every column on entry."""
    n_t = 0
    for r in rows:
        for p in range(indptr[r], indptr[r + 1]):
            j = indices[p]
            if slot[j] < 0:
                slot[j] = n_t
                touched[n_t] = j
                n_t += 1
    if fit_intercept:
        j = len(slot) - 1
        slot[j] = n_t
        touched[n_t] = j
        n_t += 1
    return n_t


@_inline
def _batch_gradient(indptr, indices, data, rows, slot, S, G, n_t, fit_intercept):
    """A sparse mini-batch's gradient over the columns it touches, into ``G[:n_t]``:
    each row's residuals ``S[bi]`` times its values, in its columns' slots (the
    intercept's is the last)."""
    n_block = G.shape[1]
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
        n_t = _gather_columns(indptr, indices, rows, slot, touched, fit_intercept)
        if lazy:
            for s in range(n_t):
                j = touched[s]
                if j < n_pen:
                    _catch_up(W, j, t - 1 - last[j], acc[j], eta, lam, adaptive, delta, decay)
        for bi in range(len(rows)):
            r = rows[bi]
            _init_scores(S[bi], W, n_cols - 1, fit_intercept)
            for p in range(indptr[r], indptr[r + 1]):
                j = indices[p]
                x = data[p]
                for k in range(n_block):
                    S[bi, k] += x * W[j, k]
        _residuals(S[: len(rows)], rows, y, w, k0, partials, q, b)
        _batch_gradient(indptr, indices, data, rows, slot, S, G, n_t, fit_intercept)
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
    eta_u, last, final,
):  # fmt: skip
    """Plain steps on one row at a time (the CPU default), in one sweep per touched column.

    Equal to :func:`_update_csr` with ``batch_size=1`` and no AdaGrad, but a row's
    columns need no gather, the pending decay of a column is applied in the sweep that
    scores it, and the step's own decay ``w <- c w - eta g`` (``c = 1 - eta lam``) is
    left to the next catch-up: the step subtracts ``(eta / c) g`` and counts as idle, so
    a touched column is read twice per step instead of four times.  Needs ``c > 0``.
    ``last`` and ``final`` as for :func:`~dsmlr.kernels.numba_svrg._svrg_csr_single`.
    """
    n_cols, n_block = W.shape
    s = np.empty(n_block, dtype=W.dtype)
    n_steps = len(order)
    decay = _decay_table(max(n_steps, 1), eta, lam)
    before = _decay_before(last, n_pen, eta, lam)
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
                shrink = s.dtype.type(1.0 - _decay_since(decay, before, j, idle, t))  # _catch_up
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
        if final:
            idle = n_steps - 1 - last[j]
            if idle > 0:
                shrink = W.dtype.type(1.0 - _decay_since(decay, before, j, idle, n_steps))
                for k in range(n_block):
                    W[j, k] -= shrink * W[j, k]
            last[j] = -1
        else:
            last[j] -= n_steps


@_jit
def _plain_settle(W, last, cols, eta, lam, n_pen):
    """:func:`~dsmlr.kernels.numba_svrg._svrg_settle` for plain steps (decay alone)."""
    base = max(0.0, 1.0 - eta * lam)
    for j in cols:
        if j < n_pen:
            if last[j] < -1:
                shrink = W.dtype.type(1.0 - base ** (-1 - last[j]))  # see _catch_up
                for k in range(W.shape[1]):
                    W[j, k] -= shrink * W[j, k]
            last[j] = -1


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


@_inline
def _csr_row_scores(indptr, indices, data, r, W, fit_intercept, s, ahead):
    """Row ``r``'s scores against block ``W`` into ``s``, asking for the block row of
    the non-zero ``ahead`` ones on while it works on the current one."""
    _init_scores(s, W, W.shape[0] - 1, fit_intercept)
    for p in range(indptr[r], indptr[r + 1]):
        if p + ahead < len(indices):
            prefetch_row(W, indices[p + ahead])
        j = indices[p]
        x = data[p]
        for k in range(W.shape[1]):
            s[k] += x * W[j, k]


@_jit
def _row_scores_csr(indptr, indices, data, r, W, fit_intercept, s):
    ahead = prefetch_distance(W.shape[1] * W.itemsize)
    _csr_row_scores(indptr, indices, data, r, W, fit_intercept, s, ahead)


@_jit
def _row_scores_dense(X, r, W, fit_intercept, s):
    n_feat = X.shape[1]
    _init_scores(s, W, n_feat, fit_intercept)
    for j in range(n_feat):
        x = X[r, j]
        if x != 0.0:
            for k in range(W.shape[1]):
                s[k] += x * W[j, k]
