"""The torch (GPU) backend trains exactly like the CPU kernels.

The engines keep class blocks where the kernel puts them; with the torch kernel on its
CPU device every path (ring shifts, SVRG anchors, AdaGrad state, scoring, checkpoints,
the asynchronous tokens) runs on tensors, so these tests cover the GPU code path
without a GPU.  Where PyTorch sees a CUDA GPU, the same runs on it are checked too.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from dsmlr import DSMLRClassifier
from dsmlr.objective import plain_objective
from problems import sklearn_optimum

torch = pytest.importorskip("torch")

HAS_CUDA = torch.cuda.is_available()


def _data(sparse: bool, n=240, d=30, k=9, seed=0):
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.2, random_state=seed, format="csr", dtype=np.float64)
    X.data = rng.normal(size=X.nnz)
    y = rng.integers(0, k, size=n)
    return (X if sparse else X.toarray()), y


def reference_optimum(X, y, lam) -> float:
    """The objective at scikit-learn's lbfgs optimum (intercept fitted)."""
    clf = sklearn_optimum(X, y, lam, True)
    W = np.hstack([clf.coef_, clf.intercept_[:, None]])
    Xa = sp.hstack([sp.csr_matrix(X), np.ones((X.shape[0], 1))], format="csr")
    return float(plain_objective(W, Xa, y, lam, n_penalized=X.shape[1]))


def _fit(X, y, **params):
    # float64: the two kernels agree to rounding, which float32 steps would amplify.
    base = dict(lam=1e-3, max_epochs=4, tol=0.0, random_state=0, batch_size=4, dtype="float64")
    return DSMLRClassifier(**{**base, **params}).fit(X, y)


@pytest.mark.parametrize("sparse", [True, False], ids=["sparse", "dense"])
@pytest.mark.parametrize("engine", ["sync", "async"])
@pytest.mark.parametrize("optimizer", ["svrg", "adagrad", "sgd"])
def test_torch_kernel_trains_like_numba(sparse, engine, optimizer):
    X, y = _data(sparse)
    # With two async workers tokens go where the ranks' timing sends them, so two runs
    # of one kernel differ (by up to 8% after 4 AdaGrad epochs here); one async worker
    # visits its tokens in a fixed order, which makes the kernels' steps comparable.
    # The async engine's two-worker runs with the torch kernel are checked against the
    # optimum below.
    n_workers = 2 if engine == "sync" else 1
    runs = [
        _fit(X, y, kernel=k, engine=engine, optimizer=optimizer, n_workers=n_workers)
        for k in ("numba", "torch")
    ]
    objectives = [[h["objective"] for h in r.history_] for r in runs]
    np.testing.assert_allclose(objectives[1], objectives[0], rtol=1e-8)
    np.testing.assert_allclose(runs[1].coef_, runs[0].coef_, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("engine", ["sync", "async"])
def test_torch_kernel_reaches_the_optimum(engine):
    X, y = _data(True, n=300, k=5, seed=3)
    lam = 1e-2
    clf = DSMLRClassifier(lam, kernel="torch", engine=engine, n_workers=2, max_epochs=200,
                          tol=1e-9, dtype="float64", random_state=0).fit(X, y)  # fmt: skip
    f_opt = reference_optimum(X, y, lam)
    assert clf.history_[-1]["objective"] <= f_opt * (1 + 1e-4)


def test_float32_blocks_stay_float32_on_the_device():
    X, y = _data(True)
    clf = _fit(X, y, kernel="torch", dtype="float32", n_workers=2)
    assert clf.coef_.dtype == np.float32
    ref = _fit(X, y, kernel="numba", dtype="float32", n_workers=2)
    np.testing.assert_allclose(
        clf.history_[-1]["objective"], ref.history_[-1]["objective"], rtol=1e-5
    )


def test_checkpoint_and_resume_with_device_blocks(tmp_path):
    X, y = _data(True)
    whole = _fit(X, y, kernel="torch", n_workers=2, max_epochs=4)
    _fit(X, y, kernel="torch", n_workers=2, max_epochs=2, checkpoint_dir=tmp_path)
    resumed = _fit(X, y, kernel="torch", n_workers=2, max_epochs=4, checkpoint_dir=tmp_path,
                   resume=True)  # fmt: skip
    np.testing.assert_array_equal(resumed.coef_, whole.coef_)


def test_device_and_kernel_must_agree():
    X, y = _data(True)
    with pytest.raises(ValueError, match="runs on the CPU only"):
        _fit(X, y, kernel="numba", device="cuda:0")
    with pytest.raises(ValueError, match="device must be"):
        _fit(X, y, device="gpu")


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown where there is no GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    X, y = _data(True)
    with pytest.raises(ValueError, match="sees no CUDA GPU"):
        _fit(X, y, device="cuda")


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("optimizer", ["svrg", "adagrad", "sgd"])
def test_cuda_trains_like_numba(optimizer):
    X, y = _data(True)
    gpu = _fit(X, y, device="cuda", optimizer=optimizer, n_workers=2)
    cpu = _fit(X, y, kernel="numba", optimizer=optimizer, n_workers=2)
    np.testing.assert_allclose(
        [h["objective"] for h in gpu.history_], [h["objective"] for h in cpu.history_],
        rtol=1e-7,
    )  # fmt: skip


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_defaults_use_mini_batches_and_reach_the_optimum():
    X, y = _data(True, n=2000, d=200, k=20, seed=5)
    lam = 1e-3
    clf = DSMLRClassifier(lam, device="cuda", max_epochs=300, tol=1e-9, random_state=0)
    clf.fit(X, y)
    assert clf._settings().resolved_batch_size() == 256
    assert clf.history_[-1]["objective"] <= reference_optimum(X, y, lam) * (1 + 1e-3)


def test_without_torch_the_torch_kernel_is_a_clear_error(monkeypatch):
    import sys

    from dsmlr.kernels import get_kernel

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    monkeypatch.delitem(sys.modules, "dsmlr.kernels.torch_kernel", raising=False)
    with pytest.raises(ValueError, match=r"pip install 'dsmlr\[gpu\]'"):
        get_kernel("torch")
