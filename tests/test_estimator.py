"""The estimator's contract: labels, attributes, prediction, persistence, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.base import clone

from dsmlr import DSMLRClassifier, load_model
from dsmlr.errors import DataError, NumericalError
from problems import planted_sparse_problem


@pytest.fixture(scope="module")
def fitted():
    X, y = planted_sparse_problem(n_samples=600, n_features=120, n_classes=5, seed=3)
    labels = np.array(["ant", "bee", "cat", "dog", "eel"])[y]
    clf = DSMLRClassifier(lam=1e-3, max_epochs=15, n_workers=2, random_state=0).fit(X, labels)
    return clf, X, labels


def test_attributes_and_history(fitted):
    clf, X, labels = fitted
    assert list(clf.classes_) == ["ant", "bee", "cat", "dog", "eel"]
    assert clf.coef_.shape == (5, 120) and clf.intercept_.shape == (5,)
    assert clf.n_iter_ == len(clf.history_) <= 15
    for key in ("epoch", "time", "objective", "train_accuracy"):
        assert key in clf.history_[0]
    assert clf.history_[-1]["objective"] < clf.history_[0]["objective"]
    assert clf.history_[-1]["train_accuracy"] == pytest.approx(clf.score(X, labels))


def test_predictions_are_consistent(fitted):
    clf, X, _ = fitted
    proba = clf.predict_proba(X)
    assert proba.dtype == clf.coef_.dtype == np.float32  # the default precision
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=4 * np.finfo(np.float32).eps)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    top, top_p = clf.predict_top_k(X, 3)
    np.testing.assert_array_equal(top[:, 0], clf.predict(X))
    assert np.all(np.diff(top_p, axis=1) <= 0)
    # The top-k path normalises in float64, predict_proba in the model's float32.
    np.testing.assert_allclose(top_p[:, 0], proba.max(axis=1), rtol=1e-6)


@pytest.mark.parametrize(
    ("dtype", "rtol", "atol"), [("float64", 1e-10, 1e-12), ("float32", 0, 1e-4)]
)
def test_dense_csr_and_csc_inputs_give_the_same_model(dtype, rtol, atol):
    # The CSR and dense kernels sum in different orders: equal to rounding in float64;
    # in float32 three epochs of steps carry the rounding to about 1e-5.
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=4, seed=5)
    models = [
        DSMLRClassifier(max_epochs=3, n_workers=1, dtype=dtype, random_state=1).fit(data, y)
        for data in (X, X.tocsc(), X.toarray())
    ]
    for other in models[1:]:
        assert other.coef_.dtype == dtype
        np.testing.assert_allclose(other.coef_, models[0].coef_, rtol=rtol, atol=atol)


def test_fit_does_not_mutate_input():
    X, y = planted_sparse_problem(n_samples=200, n_features=30, n_classes=3, seed=6)
    before = X.copy()
    DSMLRClassifier(max_epochs=2).fit(X, y)
    assert (X != before).nnz == 0


def test_validation_set_is_scored_each_epoch():
    X, y = planted_sparse_problem(n_samples=400, n_features=50, n_classes=4, seed=8)
    clf = DSMLRClassifier(max_epochs=4, tol=-1, n_workers=2, random_state=0)
    clf.fit(X[:300], y[:300], X_val=X[300:], y_val=y[300:])
    last = clf.history_[-1]
    assert last["test_accuracy"] == pytest.approx(clf.score(X[300:], y[300:]))
    # The recorded figure sums the float32 model's scores block by block, the recomputed
    # one in one pass: equal up to float32 rounding.
    assert last["test_objective"] == pytest.approx(clf.objective(X[300:], y[300:]), rel=1e-6)


def test_save_and_load_round_trip(fitted, tmp_path):
    clf, X, _ = fitted
    clf.save(tmp_path / "model", n_blocks=3)
    assert len(list((tmp_path / "model").glob("block_*.npy"))) == 3
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.coef_, clf.coef_)
    np.testing.assert_array_equal(loaded.intercept_, clf.intercept_)
    np.testing.assert_array_equal(loaded.predict(X), clf.predict(X))
    assert loaded.get_params() == clf.get_params()
    assert loaded.history_ == json.loads(json.dumps(clf.history_))


def test_corrupted_model_files_are_named(fitted, tmp_path):
    clf, _, _ = fitted
    clf.save(tmp_path / "m")
    block = tmp_path / "m" / "block_00000.npy"
    block.write_bytes(block.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"block_00000\.npy.*truncated or altered"):
        load_model(tmp_path / "m")
    (tmp_path / "m" / "manifest.json").write_text("{not json")
    with pytest.raises(DataError, match=r"manifest\.json.*corrupted"):
        load_model(tmp_path / "m")
    with pytest.raises(DataError, match="no such model directory"):
        load_model(tmp_path / "missing")


def test_model_files_never_unpickle(fitted, tmp_path):
    """A block replaced by a pickled object array must be refused, not executed."""
    clf, _, _ = fitted
    clf.save(tmp_path / "m")
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    evil = tmp_path / "m" / "block_00000.npy"
    np.save(evil, np.array([object()], dtype=object), allow_pickle=True)
    import hashlib

    manifest["blocks"][0]["sha256"] = hashlib.sha256(evil.read_bytes()).hexdigest()
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises((DataError, ValueError)):
        load_model(tmp_path / "m")


def test_single_class_is_refused():
    with pytest.raises(ValueError, match="at least 2 classes") as info:
        DSMLRClassifier().fit(np.eye(3), [1, 1, 1])
    assert str(info.value).endswith("only one class: 1")  # the label, not np.int64(1)


def test_bad_parameters_are_refused():
    X, y = np.eye(4), [0, 1, 0, 1]
    with pytest.raises(ValueError, match="optimizer"):
        DSMLRClassifier(optimizer="newton").fit(X, y)
    with pytest.raises(ValueError, match="lam"):
        DSMLRClassifier(lam=-1.0).fit(X, y)


def test_clone_keeps_parameters():
    clf = DSMLRClassifier(lam=0.5, n_workers=3, dtype="float32")
    assert clone(clf).get_params() == clf.get_params()


def test_more_workers_than_rows_still_trains():
    X = sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    clf = DSMLRClassifier(n_workers=8, max_epochs=3).fit(X, [0, 1, 2])
    assert clf.coef_.shape == (3, 2)


def test_manifest_must_cover_every_class(fitted, tmp_path):
    clf, _, _ = fitted
    clf.save(tmp_path / "m", n_blocks=2)
    manifest_path = tmp_path / "m" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["blocks"] = manifest["blocks"][:1]
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"manifest\.json: blocks cover classes 0\.\.2 of 5"):
        load_model(tmp_path / "m")


def test_metadata_round_trips(fitted, tmp_path):
    clf, _, _ = fitted
    clf.save(tmp_path / "m", metadata={"zero_based": True, "source": "x.svm"})
    assert load_model(tmp_path / "m").metadata_ == {"zero_based": True, "source": "x.svm"}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_bytes_sent_per_epoch_match_the_documented_volume(dtype):
    """Per rank and epoch: the model once per ring of P shifts; each ring makes P - 1
    shifts, and an anchored epoch one more of the weights (see
    :func:`dsmlr.partition.ring_legs`)."""
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=6, seed=9)
    clf = DSMLRClassifier(max_epochs=2, tol=-1, n_workers=3, dtype=dtype).fit(X, y)
    model = 6 * 41 * np.dtype(dtype).itemsize  # K x (D + intercept)
    lag = 41 * 8  # a block's lag, which its update shifts carry (int64, one a column)
    first, second = (h["bytes_sent"] for h in clf.history_)
    assert first == 2 * model * 2 / 3 + 2 * lag  # plain update ring + scoring ring
    # The gradient ring (weights, gradient sums), the update ring (weights, anchor
    # weights and gradient), all in the weights' dtype, and the scoring ring make two
    # shifts each, then the weights one more.
    assert second == 2 * model * 2 / 3 + 3 * model * 2 / 3 + 2 * lag + model * 2 / 3 + model / 3


def test_non_finite_training_is_a_clear_error():
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(50, 3)), rng.integers(0, 3, 50)
    with pytest.raises(NumericalError, match=r"objective became nan at epoch 1.*lower --eta"):
        DSMLRClassifier(max_epochs=3, optimizer="sgd", eta=1e308, n_workers=2).fit(X, y)


@pytest.mark.parametrize(("n_classes", "expected"), [(3, 1), (99, 1), (250, 2)])
def test_default_workers_follow_cores_and_classes(monkeypatch, n_classes, expected):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    assert DSMLRClassifier()._resolved_workers(10_000, n_classes) == expected
    assert DSMLRClassifier(n_workers=3)._resolved_workers(10_000, n_classes) == 3
    assert DSMLRClassifier(n_workers=3)._resolved_workers(2, n_classes) == 2


def test_plain_epochs_without_scoring_move_the_model_exactly_once():
    """With the exact objective every 4th epoch, an SGD epoch sends the model once, the
    one that scores 2/3 of it twice (update and scoring ring, P - 1 = 2 shifts each); a
    block's update shifts carry its lag too (3 of them in each epoch that does not score,
    2 in the one that does)."""
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=6, seed=9)
    clf = DSMLRClassifier(max_epochs=8, tol=-1, n_workers=3, optimizer="sgd", eval_every=4).fit(
        X, y
    )
    model_bytes, lag = 6 * 41 * clf.coef_.itemsize, 41 * 8
    assert [h["epoch"] for h in clf.history_] == [4, 8]
    expected = (3 + 2 * 2 / 3) * model_bytes + (3 * 3 + 2) * lag
    assert [h["bytes_sent"] for h in clf.history_] == [expected] * 2


def test_n_iter_counts_the_epochs_run_not_the_records(tmp_path):
    """With eval_every > 1 only scoring epochs leave a record (SVRG's first, every third,
    the last); n_iter_, a saved model's and the export's epoch count are the epochs run."""
    from dsmlr.io import export_npz

    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=6, seed=9)
    clf = DSMLRClassifier(max_epochs=7, eval_every=3, tol=-1, n_workers=2, random_state=0)
    clf.fit(X, y)
    assert [h["epoch"] for h in clf.history_] == [1, 3, 6, 7]
    assert clf.n_iter_ == 7
    clf.save(tmp_path / "m")
    assert load_model(tmp_path / "m").n_iter_ == 7
    assert export_npz(clf, tmp_path / "a.npz")["epochs"] == 7
    assert export_npz(tmp_path / "m", tmp_path / "b.npz")["epochs"] == 7


def test_n_iter_when_training_stops_early_between_records():
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=6, seed=9)
    clf = DSMLRClassifier(max_epochs=60, eval_every=3, tol=0.5, n_iter_no_change=1,
                          optimizer="sgd", n_workers=1, random_state=0).fit(X, y)  # fmt: skip
    assert clf.converged_
    assert [h["epoch"] for h in clf.history_] == [3, 6]
    assert clf.n_iter_ == 6


def test_n_iter_of_a_resumed_fit_counts_the_whole_run(tmp_path):
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=6, seed=9)
    kw = {"eval_every": 3, "tol": -1, "n_workers": 1, "random_state": 0,
          "checkpoint_dir": str(tmp_path)}  # fmt: skip
    DSMLRClassifier(max_epochs=6, **kw).fit(X, y)
    resumed = DSMLRClassifier(max_epochs=8, resume=True, **kw).fit(X, y)
    assert [h["epoch"] for h in resumed.history_] == [1, 3, 6, 8]
    assert resumed.n_iter_ == 8
    finished = DSMLRClassifier(max_epochs=8, resume=True, **kw).fit(X, y)  # nothing left
    assert finished.n_iter_ == 8


def test_a_sharded_model_counts_the_epochs_run():
    from dsmlr.comm.inprocess import run_workers
    from dsmlr.distributed import fit_sharded

    X, y = planted_sparse_problem(n_samples=200, n_features=30, n_classes=4, seed=2)
    parts = [(X[:100], y[:100]), (X[100:], y[100:])]
    models = run_workers(2, lambda comm: fit_sharded(
        *parts[comm.rank], comm=comm, max_epochs=5, eval_every=2, tol=-1, random_state=0,
    ))  # fmt: skip
    assert [h["epoch"] for h in models[0].history_] == [1, 2, 4, 5]
    assert models[0].n_iter_ == models[1].n_iter_ == 5
