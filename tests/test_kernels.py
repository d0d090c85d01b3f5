"""Every fast kernel equals the reference kernel; the reference equals the mathematics."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import scipy.sparse as sp

from dsmlr.kernels import LocalRows, UpdateConfig, get_kernel
from dsmlr.kernels.base import Snapshot
from dsmlr.objective import add_intercept_column, closed_form_b, ds_gradient

N, D, K = 120, 25, 7
BLOCK = (2, 6)  # classes 2..5: a block in the middle, so k0 offsets matter

try:
    import torch  # noqa: F401

    #: Fast kernels checked against the reference (torch on its CPU device).
    FAST = ["numba", "torch"]
except ImportError:  # the "gpu" extra is optional
    FAST = ["numba"]


#: Where the torch kernel runs in these tests: its CPU device unless a GPU is asked for
#: (``DSMLR_TEST_DEVICE=cuda`` checks the GPU path against the same reference).
TORCH_DEVICE = os.environ.get("DSMLR_TEST_DEVICE", "cpu")


def _kernel(name: str):
    return get_kernel(name, TORCH_DEVICE) if name == "torch" else get_kernel(name)


def _on_device(kernel, *arrays):
    """Copies of host arrays where ``kernel`` keeps blocks (host kernels: the arrays)."""
    return [kernel.from_host(np.array(a)) if a is not None else None for a in arrays]


def _rows(
    sparse: bool, fit_intercept: bool, dtype, seed: int = 0, weighted: bool = False
) -> LocalRows:
    rng = np.random.default_rng(seed)
    X = sp.random(N, D, density=0.15, random_state=seed, format="csr", dtype=np.float64)
    X.data = rng.normal(size=X.nnz)
    X = X.astype(dtype)
    y = rng.integers(0, K, size=N).astype(np.int64)
    data = X if sparse else np.ascontiguousarray(X.toarray())
    weight = rng.uniform(0.0, 3.0, size=N) if weighted else None
    return LocalRows(data, y, fit_intercept, weight)


def _tolerance(dtype):
    if dtype == np.float64 and TORCH_DEVICE != "cpu":
        return {"rtol": 1e-8, "atol": 1e-10}  # a GPU sums in another order
    return {"rtol": 1e-10, "atol": 1e-12} if dtype == np.float64 else {"rtol": 2e-4, "atol": 2e-5}


def _initial_state(rows: LocalRows, dtype, seed=3):
    rng = np.random.default_rng(seed)
    n_cols = D + rows.fit_intercept
    W = (0.3 * rng.normal(size=(n_cols, BLOCK[1] - BLOCK[0]))).astype(dtype)
    partials = np.log(np.array([2.0, 4.0, 1.0]))[None, :] + 0.1 * rng.normal(size=(N, 3))
    b = -np.log(np.exp(partials).sum(axis=1))
    return W, np.zeros(n_cols), partials, b


CASES = [
    (sparse, fi, dtype)
    for sparse in (True, False)
    for fi in (False, True)
    for dtype in (np.float64, np.float32)
]


def _run_update(kernel_name, rows, dtype, config, svrg: bool):
    kernel = _kernel(kernel_name)
    W, acc, partials, b = _initial_state(rows, dtype)
    snapshot = None
    if svrg:
        W0 = W.copy()
        b0 = b.copy()
        # In the weights' dtype, as the engines keep it (Epoch.end_gradient).
        mu = np.random.default_rng(5).normal(scale=0.01, size=W.shape).astype(dtype)
        W0, mu = _on_device(kernel, W0, mu)
        snapshot = Snapshot(W0, mu, b0)
    W, acc = _on_device(kernel, W, acc)
    order = np.random.default_rng(7).permutation(N)
    for _ in range(3):
        kernel.update_pass(rows, W, BLOCK[0], acc, partials, 1, b, order, config, snapshot)
    return kernel.to_host(W), kernel.to_host(acc), partials, b


@pytest.mark.parametrize(("sparse", "fit_intercept", "dtype"), CASES)
@pytest.mark.parametrize(
    ("method", "batch_size"),
    [("adagrad", 1), ("adagrad", 8), ("sgd", 1), ("sgd", 5), ("svrg", 1), ("svrg", 4)],
)
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("fast_kernel", FAST)
def test_update_pass_matches_reference(
    sparse, fit_intercept, dtype, method, batch_size, weighted, fast_kernel
):
    rows = _rows(sparse, fit_intercept, dtype, weighted=weighted)
    # Mini-batches step the intercept column less (as the engines do).
    config = UpdateConfig(
        eta=0.3, lam=0.05, n_penalized=D, batch_size=batch_size, adaptive=method == "adagrad",
        unpenalized_scale=1.0 if batch_size == 1 else 0.4,
    )  # fmt: skip
    ref = _run_update("reference", rows, dtype, config, svrg=method == "svrg")
    fast = _run_update(fast_kernel, rows, dtype, config, svrg=method == "svrg")
    for a, c in zip(ref, fast, strict=True):
        np.testing.assert_allclose(c, a, **_tolerance(dtype))
    W_start = _initial_state(rows, dtype)[0]
    assert not np.allclose(fast[0], W_start), "the update pass did not move the weights"


@pytest.mark.parametrize(("sparse", "fit_intercept", "dtype"), CASES)
@pytest.mark.parametrize("fast_kernel", FAST)
def test_score_pass_matches_reference(sparse, fit_intercept, dtype, fast_kernel):
    rows = _rows(sparse, fit_intercept, dtype, seed=1)
    out = []
    for name in ("reference", fast_kernel):
        kernel = _kernel(name)
        W, _, partials, _ = _initial_state(rows, dtype)
        stats = (np.zeros(N), np.full(N, -np.inf), np.full(N, -1, dtype=np.int64))
        kernel.score_pass(rows, *_on_device(kernel, W), BLOCK[0], partials, 1, *stats)
        out.append((partials, *stats))
    for a, c in zip(*out, strict=True):
        np.testing.assert_allclose(c, a, **_tolerance(dtype))


@pytest.mark.parametrize("kernel_name", ["reference", *FAST])
@pytest.mark.parametrize(("sparse", "fit_intercept"), [(True, False), (False, True)])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_gradient_pass_equals_mathematical_gradient(kernel_name, sparse, fit_intercept, weighted):
    rows = _rows(sparse, fit_intercept, np.float64, seed=2, weighted=weighted)
    rng = np.random.default_rng(4)
    n_cols = D + fit_intercept
    W_full = 0.2 * rng.normal(size=(K, n_cols))
    X = rows.X.toarray() if sparse else rows.X
    Xa = add_intercept_column(X) if fit_intercept else X
    b = closed_form_b(W_full, Xa) + 0.05 * rng.normal(size=N)
    # The weighted gradient is the gradient over rows with the weighted loss terms:
    # sum_i s_i g_i, i.e. ds_gradient's per-row terms scaled by s_i (its 1/N kept).
    gW = sum(
        rows.weight[i] * ds_gradient(W_full, b[i : i + 1], Xa[i : i + 1], rows.y[i : i + 1], 0.0)[0]
        for i in range(N)
    )
    kernel = _kernel(kernel_name)
    out, W_block = _on_device(
        kernel, np.zeros((n_cols, BLOCK[1] - BLOCK[0])), W_full[BLOCK[0] : BLOCK[1]].T
    )
    kernel.gradient_pass(rows, W_block, BLOCK[0], b, 1.0, out)
    np.testing.assert_allclose(
        kernel.to_host(out), gW[BLOCK[0] : BLOCK[1]].T, rtol=1e-10, atol=1e-14
    )


def test_update_refreshes_b_to_closed_form_with_one_block():
    """With a single block holding every class, b after a step is the exact -log Z."""
    rows = _rows(True, True, np.float64)
    W = np.zeros((D + 1, K))
    partials = np.full((N, 1), np.log(K))
    b = np.full(N, -np.log(K))
    config = UpdateConfig(eta=0.5, lam=0.0, n_penalized=D, batch_size=N, adaptive=False)
    W_before = W.copy()
    get_kernel("numba").update_pass(
        rows, W, 0, np.zeros(D + 1), partials, 0, b, np.arange(N), config
    )
    Xa = add_intercept_column(rows.X.toarray())
    np.testing.assert_allclose(b, closed_form_b(W_before.T, Xa), rtol=1e-12)


@pytest.mark.parametrize("kernel_name", ["reference", *FAST])
def test_empty_block_contributes_nothing(kernel_name):
    rows = _rows(True, False, np.float64)
    partials = np.zeros((N, 2))
    kernel = _kernel(kernel_name)
    (W,) = _on_device(kernel, np.zeros((D, 0)))
    kernel.score_pass(rows, W, 3, partials, 1, np.zeros(N), np.full(N, -np.inf), np.full(N, -1))
    assert np.all(partials[:, 1] == -np.inf)


@pytest.mark.parametrize("kernel_name", ["reference", *FAST])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_squared_norm_is_the_float64_sum_of_squares(kernel_name, dtype):
    # The scoring stage's penalty: every kernel sums in float64, whatever the block's
    # type, and in any order only up to the last bits.
    W = np.random.default_rng(1).normal(size=(301, 67)).astype(dtype)
    kernel = _kernel(kernel_name)
    for part in (W, W[:100], W[:, 5:40], W[0], W[:0]):
        expected = float(np.sum(part.astype(np.float64) ** 2))
        (on_device,) = _on_device(kernel, part)
        assert kernel.squared_norm(on_device) == pytest.approx(expected, rel=1e-13, abs=0.0)


def test_unknown_kernel_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown kernel 'gpu9'"):
        get_kernel("gpu9")


@pytest.mark.parametrize("method", ["sgd", "svrg"])
def test_one_row_steps_longer_than_the_penalty_allows_match_reference(method):
    """eta * lam > 1: one-row steps take the general loop, not the sweep that divides by
    ``1 - eta lam`` (which would be wrong here)."""
    rows = _rows(True, True, np.float64)
    config = UpdateConfig(eta=2.0, lam=0.6, n_penalized=D, batch_size=1, adaptive=False)
    ref = _run_update("reference", rows, np.float64, config, svrg=method == "svrg")
    fast = _run_update("numba", rows, np.float64, config, svrg=method == "svrg")
    assert np.all(np.isfinite(ref[0]))
    for a, c in zip(ref, fast, strict=True):
        np.testing.assert_allclose(c, a, **_tolerance(np.float64))


@pytest.mark.parametrize("fit_intercept", [False, True])
@pytest.mark.parametrize("method", ["sgd", "svrg"])
def test_passes_that_leave_columns_behind_end_where_one_pass_does(method, fit_intercept):
    """A block's update stage is one pass on each rank: numba leaves the untouched columns
    behind between them (``lag``) and brings them up to date in the ``final`` one, which
    must give the weights, partials and b of one pass over all the rows."""
    rows = _rows(True, fit_intercept, np.float64)
    config = UpdateConfig(eta=0.4, lam=0.05, n_penalized=D, batch_size=1, adaptive=False)
    kernel = get_kernel("numba")
    order = np.random.default_rng(7).permutation(N)
    parts = np.array_split(order, 3)

    def run(split: bool, settle_every_pass: bool = False):
        W, acc, partials, b = _initial_state(rows, np.float64)
        snapshot = None
        if method == "svrg":
            mu = np.random.default_rng(5).normal(scale=0.01, size=W.shape)
            snapshot = Snapshot(W.copy(), mu, b.copy())
        if not split:
            kernel.update_pass(rows, W, BLOCK[0], acc, partials, 1, b, order, config, snapshot)
            return W, partials, b, None
        lag = np.full(W.shape[0], -1, dtype=np.int64)
        for i, part in enumerate(parts):
            final = i == len(parts) - 1
            kernel.update_pass(rows, W, BLOCK[0], acc, partials, 1, b, part, config,
                               snapshot, lag, final)  # fmt: skip
            if not final:
                assert np.any(lag[:D] < -1), "nothing left behind: the test shows nothing"
                assert np.all(lag[D:] == -1), "the intercept is never left behind"
            if settle_every_pass:  # what the relaxation does with its columns
                kernel.settle(W, lag, np.arange(D), config, snapshot)
                assert np.all(lag == -1)
        return W, partials, b, lag

    whole = run(False)
    for settle in (False, True):
        got = run(True, settle)
        for a, c in zip(whole[:3], got[:3], strict=True):
            np.testing.assert_allclose(c, a, rtol=1e-12, atol=1e-14)
        assert np.all(got[3] == -1), "a final pass leaves nothing behind"


def test_a_final_pass_over_no_rows_still_brings_every_column_up_to_date():
    rows = _rows(True, False, np.float64)
    config = UpdateConfig(eta=0.4, lam=0.05, n_penalized=D, batch_size=1, adaptive=False)
    kernel = get_kernel("numba")
    W, acc, partials, b = _initial_state(rows, np.float64)
    lag = np.full(W.shape[0], -1, dtype=np.int64)
    order = np.random.default_rng(7).permutation(N)
    kernel.update_pass(rows, W, 0, acc, partials, 1, b, order, config, None, lag, False)
    behind, pending = W.copy(), -1 - lag
    assert pending.max() > 0
    kernel.update_pass(rows, W, 0, acc, partials, 1, b, order[:0], config, None, lag, True)
    assert np.all(lag == -1)
    expected = behind * (1.0 - config.eta * config.lam) ** pending[:, None]
    np.testing.assert_allclose(W, expected, rtol=1e-12)


@pytest.mark.parametrize("method", ["sgd", "svrg"])
def test_a_column_far_behind_costs_its_pass_no_table_as_long_as_its_lag(method):
    """A column can be an epoch's rows of steps behind when a pass starts: a billion here.
    The pass owes it c**L (and SVRG's drift) as one factor a column, so it neither
    tabulates a billion steps (8 GB) nor loses the decay: a final pass over no rows
    settles every column exactly as the closed form says."""
    rows = _rows(True, False, np.float64)
    config = UpdateConfig(eta=0.4, lam=1e-10, n_penalized=D, batch_size=1, adaptive=False)
    kernel = get_kernel("numba")
    W, acc, partials, b = _initial_state(rows, np.float64)
    snapshot, mu = None, np.zeros_like(W)
    if method == "svrg":
        mu = np.random.default_rng(5).normal(scale=0.01, size=W.shape)
        snapshot = Snapshot(W.copy(), mu, b.copy())
    far = 10**9
    lag = np.full(W.shape[0], -1 - far, dtype=np.int64)
    before = W.copy()
    kernel.update_pass(rows, W, 0, acc, partials, 1, b, np.arange(0), config, snapshot, lag, True)
    assert np.all(lag == -1)
    a = config.eta * config.lam
    c_far = (1.0 - a) ** far  # about exp(-0.04): the decay is there, and not all of it
    assert 0.9 < c_far < 0.99
    drift = 0.0
    if method == "svrg":  # 1 - a in float64 is off by 3e-6 of a: SVRG works from log1p(-a)
        c_far = math.exp(far * math.log1p(-a))
        drift = config.eta * -math.expm1(far * math.log1p(-a)) / a
    np.testing.assert_allclose(W, c_far * before - drift * mu, rtol=1e-9)
