"""Public entry points only read what the caller hands them, and fitted attributes tell the
truth.

The property tests draw inputs of every kind a user passes (CSR, CSC and COO matrices
with sorted or unsorted indices and duplicates, int32 and int64 indices, scipy's matrix
and array classes, dense C- and F-ordered arrays and memory maps, float32 and float64,
read-only arrays; labels as integers, floats or strings, in arrays or lists), call each
entry point on them and check them bit for bit afterwards: values, index arrays, dtypes,
shapes, strides, flags, which arrays a matrix holds, and the flags scipy caches on it.
The other tests pin down the defects of the same kind found in the estimator, the
distributed model and the model files.
"""

from __future__ import annotations

import copy
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dsmlr import DSMLRClassifier, load_model
from dsmlr.comm.inprocess import run_workers
from dsmlr.distributed import fit_sharded
from dsmlr.io import export_npz, save_dataset, write_svmlight
from dsmlr.io.model_files import ModelData, read_model, write_model

N_ROWS, N_FEATURES, N_CLASSES = 36, 10, 3
NAMES = np.array(["ant", "bee", "cat"])
_COUNTER = itertools.count()


# -- inputs of every kind ------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """How to hand a matrix over: ``kind`` csr, csc, coo or dense; ``layout`` the order of
    the stored entries (sparse: sorted or unsorted, with or without duplicates) or the
    memory order (dense: C or F); ``container`` scipy's matrix or array class, or a plain
    array or a memory map."""

    kind: str
    layout: str
    dtype: str
    index_dtype: str
    read_only: bool
    container: str


_LAYOUTS = ["sorted", "unsorted", "sorted-duplicates", "unsorted-duplicates"]
_DTYPES = st.sampled_from(["float32", "float64"])
SPECS = st.one_of(
    st.builds(
        Spec, kind=st.sampled_from(["csr", "csc", "coo"]), layout=st.sampled_from(_LAYOUTS),
        dtype=_DTYPES, index_dtype=st.sampled_from(["int32", "int64"]), read_only=st.booleans(),
        container=st.sampled_from(["matrix", "array"]),
    ),
    st.builds(
        Spec, kind=st.just("dense"), layout=st.sampled_from(["C", "F"]), dtype=_DTYPES,
        index_dtype=st.just(""), read_only=st.booleans(),
        container=st.sampled_from(["ndarray", "memmap"]),
    ),
)  # fmt: skip
LABELS = st.sampled_from(["int64", "int32", "float", "str", "list-int", "list-str"])
WEIGHTS = st.sampled_from([None, "float64", "float32", "read-only"])


def values(seed: int, n_rows: int = N_ROWS) -> np.ndarray:
    """A sparse-looking float64 matrix of multiples of 1/8: exact in float32, and halving
    is exact, so duplicates that split a value sum back to it bit for bit."""
    rng = np.random.default_rng(seed)
    A = rng.integers(-8, 9, size=(n_rows, N_FEATURES)) / 8.0
    A[rng.random(A.shape) < 0.6] = 0.0
    empty = ~A.any(axis=1)
    A[empty, np.flatnonzero(empty) % N_FEATURES] = 1.0
    return A


def _freeze(*arrays: np.ndarray) -> None:
    for a in arrays:
        a.setflags(write=False)


def make_matrix(spec: Spec, A: np.ndarray, where: Path):
    """``A`` handed over as ``spec`` says."""
    dtype = np.dtype(spec.dtype)
    if spec.kind == "dense":
        dense = np.array(A, dtype=dtype, order=spec.layout)
        if spec.container == "memmap":
            path = where / f"x{next(_COUNTER)}.dat"
            out = np.memmap(path, dtype=dtype, mode="w+", shape=A.shape, order=spec.layout)
            out[:] = dense
            out.flush()
            del out
            mode = "r" if spec.read_only else "r+"
            return np.memmap(path, dtype=dtype, mode=mode, shape=A.shape, order=spec.layout)
        if spec.read_only:
            _freeze(dense)
        return dense
    row, col = np.nonzero(A)
    data = A[row, col].astype(dtype)
    if spec.layout.endswith("duplicates"):  # every other value split in two halves
        half = data[::2] / 2
        data[::2] = half
        row, col, data = (np.concatenate([a, a[::2]]) for a in (row, col, data))
        data[-len(half) :] = half
    major, minor = (col, row) if spec.kind == "csc" else (row, col)
    # Sorted: ascending minor index within each major one; unsorted: descending.
    order = np.lexsort((minor if spec.layout.startswith("sorted") else -minor, major))
    row, col, data = row[order], col[order], data[order]
    index = np.dtype(spec.index_dtype)
    if spec.kind == "coo":
        cls = sp.coo_matrix if spec.container == "matrix" else sp.coo_array
        M = cls((data, (row.astype(index), col.astype(index))), shape=A.shape)
        if spec.read_only:
            _freeze(M.data, M.row, M.col)
        return M
    n_major = A.shape[1] if spec.kind == "csc" else A.shape[0]
    indptr = np.concatenate([[0], np.cumsum(np.bincount(major[order], minlength=n_major))])
    cls = {
        ("csr", "matrix"): sp.csr_matrix, ("csr", "array"): sp.csr_array,
        ("csc", "matrix"): sp.csc_matrix, ("csc", "array"): sp.csc_array,
    }[spec.kind, spec.container]  # fmt: skip
    M = cls((data, (col if spec.kind == "csr" else row), indptr), shape=A.shape)
    # The constructor narrows int64 indices that fit int32; hand over what was asked for.
    M.indices, M.indptr = M.indices.astype(index), M.indptr.astype(index)
    for flag in ("_has_sorted_indices", "_has_canonical_format"):
        vars(M).pop(flag, None)  # nothing cached: calls find the matrix as a user's is
    if spec.read_only:
        _freeze(M.data, M.indices, M.indptr)
    return M


def make_labels(kind: str, seed: int, n_rows: int = N_ROWS):
    codes = np.random.default_rng(seed).permutation(np.arange(n_rows) % N_CLASSES)
    return {
        "int64": lambda: codes.astype(np.int64),
        "int32": lambda: codes.astype(np.int32),
        "float": lambda: codes * 2.0,  # integral: scikit-learn takes others as continuous
        "str": lambda: NAMES[codes],
        "list-int": lambda: [int(c) for c in codes],
        "list-str": lambda: [str(NAMES[c]) for c in codes],
    }[kind]()


def make_weights(kind: str | None, seed: int, n_rows: int = N_ROWS) -> np.ndarray | None:
    if kind is None:
        return None
    w = np.random.default_rng(seed).integers(1, 5, n_rows) / 2.0
    w = w.astype(np.float32 if kind == "float32" else np.float64)
    if kind == "read-only":
        _freeze(w)
    return w


# -- what a call could change -----------------------------------------------------------------


def state(value) -> tuple:
    """Everything about ``value`` a call could change, comparable with ``==``: an array's
    bytes, dtype, shape, strides and flags (and identity, so a matrix that came to hold
    other arrays shows); a sparse matrix's attributes, cached flags included."""
    if isinstance(value, np.ndarray):
        where = (value.filename, value.offset, value.mode) if isinstance(value, np.memmap) else ()
        flags = value.flags
        return (
            type(value), id(value), value.dtype.str, value.shape, value.strides,
            flags.writeable, flags.c_contiguous, flags.f_contiguous, flags.owndata,
            value.tobytes(order="A"), where,
        )  # fmt: skip
    if sp.issparse(value):
        return (type(value), tuple((k, state(v)) for k, v in sorted(vars(value).items())))
    if isinstance(value, (list, tuple)):
        return (type(value), id(value), tuple(state(v) for v in value))
    if isinstance(value, dict):
        return (dict, id(value), tuple((k, state(v)) for k, v in value.items()))
    return (type(value), value)


class Unchanged:
    """Snapshots of the caller's objects, checked after each call."""

    def __init__(self, **objects) -> None:
        self.objects = objects
        self.before = {name: state(obj) for name, obj in objects.items()}

    def check(self, after: str) -> None:
        for name, obj in self.objects.items():
            assert state(obj) == self.before[name], f"{after} changed the caller's {name}"


def expected_scores(clf: DSMLRClassifier, A: np.ndarray) -> np.ndarray:
    return A @ clf.coef_.T.astype(np.float64) + clf.intercept_


@pytest.fixture(scope="module")
def where(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("integrity")


@pytest.fixture(scope="module", autouse=True)
def compiled():
    """Compile the kernels once (sparse and dense), outside the timed examples."""
    A = values(0)
    y = make_labels("int64", 0)
    for X in (sp.csr_matrix(A), A):
        DSMLRClassifier(max_epochs=1, n_workers=1).fit(X, y).predict(X)


# -- the estimator ----------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    spec=SPECS, labels=LABELS, weights=WEIGHTS, n_workers=st.sampled_from([1, 2]),
    warm_start=st.booleans(), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_estimator_entry_points_leave_their_inputs_unchanged(
    where, spec, labels, weights, n_workers, warm_start, seed
):
    A = values(seed)
    X, y, w = make_matrix(spec, A, where), make_labels(labels, seed), make_weights(weights, seed)
    inputs = Unchanged(X=X, y=y, sample_weight=w)
    clf = DSMLRClassifier(max_epochs=2, n_workers=n_workers, warm_start=warm_start, random_state=0)
    clf.fit(X, y, sample_weight=w, X_val=X, y_val=y)
    inputs.check("fit")
    handed = Unchanged(coef=clf.coef_, intercept=clf.intercept_, classes=clf.classes_,
                       history=clf.history_)  # fmt: skip
    scores = clf.decision_function(X)
    inputs.check("decision_function")
    # What the model saw is the caller's matrix: duplicates summed, order immaterial.
    np.testing.assert_allclose(scores, expected_scores(clf, A), rtol=1e-5, atol=1e-5)
    for name, call in [
        ("predict", lambda: clf.predict(X)),
        ("predict_proba", lambda: clf.predict_proba(X)),
        ("predict_log_proba", lambda: clf.predict_log_proba(X)),
        ("predict_top_k", lambda: clf.predict_top_k(X, 2)),
        ("score", lambda: clf.score(X, y, sample_weight=w)),
        ("objective", lambda: clf.objective(X, y)),
    ]:
        call()
        inputs.check(name)
    handed.check("prediction")
    clf.fit(X, y, sample_weight=w)  # warm_start: starts from (reads) coef_ and intercept_
    inputs.check("a second fit")
    # The arrays the first fit handed out are the caller's now: a later fit replaces
    # them, it does not write into them.
    handed.check("a second fit")


# -- the distributed model --------------------------------------------------------------------


@settings(max_examples=15, deadline=None)
@given(
    spec=SPECS, labels=LABELS, weights=WEIGHTS, give_classes=st.booleans(),
    seed=st.integers(0, 2**16),
)  # fmt: skip
def test_fit_sharded_and_its_model_leave_their_inputs_unchanged(
    where, spec, labels, weights, give_classes, seed
):
    A, y_all = values(seed), make_labels(labels, seed)
    w_all = make_weights(weights, seed)
    halves = [slice(0, N_ROWS // 2), slice(N_ROWS // 2, N_ROWS)]
    parts = [
        (
            make_matrix(spec, A[h], where),
            y_all[h] if isinstance(y_all, np.ndarray) else list(y_all[h]),
            None if w_all is None else make_weights(weights, seed)[h],
        )
        for h in halves
    ]
    classes = np.unique(np.asarray(y_all)) if give_classes else None
    inputs = Unchanged(parts=parts, classes=classes)
    out = where / f"sharded{next(_COUNTER)}"
    metadata = {"source": "test"}
    saved = Unchanged(metadata=metadata)

    def train(comm):
        X, y, w = parts[comm.rank]
        model = fit_sharded(
            X, y, comm=comm, n_features=N_FEATURES, classes=classes, sample_weight=w,
            X_val=X, y_val=y, max_epochs=2, random_state=0,
        )  # fmt: skip
        model.predict(X)
        model.predict_top_k(X, 2)
        model.scores(X, k=2, y_local=y)
        report = model.evaluate(X, y)
        model.save(out, metadata=metadata)
        return model, report

    (_, report), _ = run_workers(2, train)
    inputs.check("fit_sharded and the ShardedModel methods")
    saved.check("ShardedModel.save")
    clf = load_model(out)
    assert report["accuracy"] == pytest.approx(clf.score(A, np.asarray(y_all)))


# -- scoring a model's blocks -----------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(spec=SPECS, seed=st.integers(0, 2**16))
def test_scoring_functions_leave_their_inputs_unchanged(where, spec, seed):
    from dsmlr.scoring import (
        dense_scores,
        model_blocks,
        model_scores,
        ring_scores,
        score_local_blocks,
    )

    A, rng = values(seed), np.random.default_rng(seed)
    X, y = make_matrix(spec, A, where), make_labels("int64", seed)
    coef = rng.normal(size=(N_CLASSES, N_FEATURES)).astype(spec.dtype)
    intercept = rng.normal(size=N_CLASSES).astype(spec.dtype)
    blocks = list(model_blocks(coef, intercept, fit_intercept=True, memory_bytes=64))
    inputs = Unchanged(X=X, y=y, coef=coef, intercept=intercept, blocks=blocks)
    model_scores(X, coef, intercept, fit_intercept=True, k=2, y=y)
    inputs.check("model_scores")
    scores = dense_scores(X, coef, intercept, fit_intercept=True)
    inputs.check("dense_scores")
    np.testing.assert_allclose(scores, A @ coef.T.astype(np.float64) + intercept, atol=1e-5)
    score_local_blocks(X, blocks, fit_intercept=True, k=2, y=y)
    inputs.check("score_local_blocks")
    run_workers(1, lambda comm: ring_scores(comm, X, blocks, n_classes=N_CLASSES,
                                            fit_intercept=True, y_local=y))  # fmt: skip
    inputs.check("ring_scores")


# -- files ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted():
    A = values(1)
    return DSMLRClassifier(max_epochs=2, n_workers=1).fit(A, make_labels("str", 1)), A


@settings(max_examples=30, deadline=None)
@given(spec=SPECS, labels=LABELS, seed=st.integers(0, 2**16))
def test_writers_leave_their_inputs_unchanged(where, spec, labels, seed):
    A = values(seed)
    X, y = make_matrix(spec, A, where), make_labels(labels, seed)
    inputs = Unchanged(X=X, y=y)
    save_dataset(where / "data.npz", X, y)
    inputs.check("save_dataset")
    if "str" not in labels:  # LIBSVM labels are numbers
        write_svmlight(where / "data.svm", X, y)
        inputs.check("write_svmlight")
    if spec.kind == "dense" and spec.container == "ndarray":  # weights as a user holds them
        W = X if spec.layout == "C" else np.asfortranarray(X)
        classes = np.asarray(y[:N_FEATURES]) if len(y) >= N_FEATURES else np.asarray(y)
        model = ModelData(W[: len(classes)], classes, False, {"lam": 1.0}, [{"epoch": 1}])
        weights = Unchanged(W=W, classes=classes)
        write_model(where / "model-data", model)
        weights.check("write_model")
        read_model(where / "model-data")


def test_saving_loading_and_exporting_leave_the_model_unchanged(fitted, tmp_path):
    clf, A = fitted
    metadata = {"zero_based": False, "notes": ["kept"]}
    model = Unchanged(
        coef=clf.coef_, intercept=clf.intercept_, classes=clf.classes_, history=clf.history_,
        params=clf.get_params(), metadata=metadata,
    )  # fmt: skip
    clf.save(tmp_path / "m", n_blocks=2, metadata=metadata)
    model.check("save")
    export_npz(clf, tmp_path / "m.npz")
    model.check("export_npz")
    loaded = load_model(tmp_path / "m")
    again = Unchanged(coef=loaded.coef_, classes=loaded.classes_, history=loaded.history_)
    loaded.predict(A)
    loaded.save(tmp_path / "m2")
    export_npz(tmp_path / "m2", tmp_path / "m2.npz")
    again.check("using and saving a loaded model")


# -- the defects found ------------------------------------------------------------------------


def _unsorted_product() -> tuple[sp.csr_matrix, np.ndarray]:
    """What ``sp.diags(d) @ X`` returns: float64 CSR whose indices are not sorted."""
    A = values(7, n_rows=60)
    X_raw = sp.csr_matrix(A)
    X = sp.diags(1 / np.sqrt(X_raw.multiply(X_raw).sum(axis=1)).A1) @ X_raw
    assert not sp.csr_matrix(X).has_sorted_indices  # checked on another object: no flag cached
    return X, make_labels("int64", 7, n_rows=60)


@pytest.mark.parametrize(
    "method",
    ["fit", "predict", "predict_proba", "predict_log_proba", "decision_function", "score"],
)
def test_a_matrix_with_unsorted_indices_stays_as_it_was(method):
    X, y = _unsorted_product()
    X0 = X.copy()
    clf = DSMLRClassifier(max_epochs=3, n_workers=1)
    clf.fit(X.copy(), y)
    if method == "fit":
        clf.fit(X, y)
    elif method == "score":
        clf.score(X, y)
    else:
        getattr(clf, method)(X)
    assert abs(X - X0).max() == 0
    np.testing.assert_array_equal(X.indices, X0.indices)
    np.testing.assert_array_equal(X.data, X0.data)


def test_a_read_only_matrix_with_unsorted_indices_trains():
    X, y = _unsorted_product()
    _freeze(X.data, X.indices, X.indptr)
    clf = DSMLRClassifier(max_epochs=2, n_workers=1, random_state=0).fit(X, y)
    writable = DSMLRClassifier(max_epochs=2, n_workers=1, random_state=0).fit(X.copy(), y)
    np.testing.assert_array_equal(clf.coef_, writable.coef_)


def test_arrays_are_copied_only_where_they_must_change():
    """CSR already in the training layout is read in place; a cast copies the values
    only; sorting copies the index arrays too.  Nothing is cached on the caller's matrix."""
    from dsmlr.kernels.base import training_layout

    def shared(M, X) -> list[bool]:
        return [np.shares_memory(getattr(M, a), getattr(X, a)) for a in ("data", "indices")]

    X = sp.csr_matrix(values(3), dtype=np.float32)
    assert shared(training_layout(X, np.float32), X) == [True, True]
    X64 = sp.csr_matrix(values(3))
    assert shared(training_layout(X64, np.float32), X64) == [False, True]
    unsorted, _ = _unsorted_product()
    assert shared(training_layout(unsorted, np.float64), unsorted) == [False, False]
    for M in (X, X64, unsorted):
        assert not {"_has_sorted_indices", "_has_canonical_format"} & set(vars(M))


def test_a_failed_warm_start_keeps_the_fitted_model():
    A, y = values(4), make_labels("int64", 4)
    clf = DSMLRClassifier(max_epochs=2, n_workers=1, warm_start=True).fit(A, y)
    fitted = {k: copy.deepcopy(v) for k, v in vars(clf).items() if k.endswith("_")}
    with pytest.raises(ValueError, match="same classes"):
        clf.fit(A, y + 1)  # other labels: refused
    with pytest.raises(ValueError, match="same features"):
        clf.fit(A[:, :-1], y)
    with pytest.raises(ValueError, match="not classes of y"):
        clf.set_params(class_weight={"nope": 2.0}).fit(A, y)
    assert sorted(k for k in vars(clf) if k.endswith("_")) == sorted(fitted)
    for name, value in fitted.items():
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(clf, name), value)
        else:
            assert getattr(clf, name) == value, name
    np.testing.assert_array_equal(clf.predict(A), clf.classes_[clf.decision_function(A).argmax(1)])


def test_a_first_fit_that_fails_leaves_nothing_fitted():
    A, y = values(4), make_labels("int64", 4)
    clf = DSMLRClassifier(class_weight={"nope": 2.0})
    with pytest.raises(ValueError, match="not classes of y"):
        clf.fit(A, y)
    assert not [k for k in vars(clf) if k.endswith("_")]


def test_a_callback_gets_its_own_record():
    A, y = values(5), make_labels("int64", 5)

    def vandal(entry: dict) -> None:
        entry["peak_rss"].append(-1)
        entry["objective"] = None

    clf = DSMLRClassifier(max_epochs=2, tol=-1, n_workers=1).fit(A, y, callback=vandal)
    assert all(-1 not in h["peak_rss"] and h["objective"] is not None for h in clf.history_)


def test_a_sharded_model_keeps_its_own_classes():
    A, y = values(6), make_labels("int64", 6)
    classes = np.arange(N_CLASSES)
    model = run_workers(1, lambda comm: fit_sharded(A, y, comm=comm, classes=classes,
                                                      max_epochs=1))[0]  # fmt: skip
    classes[:] = 99
    np.testing.assert_array_equal(model.classes_, np.arange(N_CLASSES))


def test_a_refitted_model_drops_what_it_loaded_about_its_input(fitted, tmp_path):
    clf, A = fitted
    clf.save(tmp_path / "m", metadata={"zero_based": True})
    loaded = load_model(tmp_path / "m")
    assert loaded.metadata_ == {"zero_based": True}
    loaded.fit(A, make_labels("str", 1))
    assert not hasattr(loaded, "metadata_")
    info = export_npz(loaded, tmp_path / "refit.npz")
    assert info["training"] == {}  # nothing known about this fit's input
    assert json.loads(str(np.load(tmp_path / "refit.npz")["metadata"]))["training"] == {}
