"""Conventional formats: ``.npz`` data sets, CSV predictions and the plain ``.npz`` export."""

from __future__ import annotations

import csv
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import dsmlr
from dsmlr import cli
from dsmlr.cli import main
from dsmlr.errors import DataError
from dsmlr.io import export_npz, load_dataset, read_svmlight, save_dataset, write_svmlight

TRAIN_FLAGS = ["--epochs", "3", "--tol", "-1", "--workers", "1", "--seed", "0", "--quiet"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """One small problem as LIBSVM and as ``.npz`` (sparse train, dense test)."""
    work = tmp_path_factory.mktemp("formats")
    problem = dsmlr.make_extreme_multiclass(
        300, 40, 6, nnz_per_row=8, signal=6.0, random_state=1
    )  # fmt: skip
    X, y = problem.X, problem.y
    write_svmlight(work / "train.svm", X[:240], y[:240])
    write_svmlight(work / "test.svm", X[240:], y[240:])
    # Read back, so that the .npz files hold exactly the rows (and width) LIBSVM gives.
    train, test = read_svmlight(work / "train.svm"), read_svmlight(work / "test.svm")
    save_dataset(work / "train.npz", train.X, train.y)
    test_X = test.X.toarray()
    if test_X.shape[1] < train.X.shape[1]:  # pad as evaluate would
        test_X = np.hstack(
            [test_X, np.zeros((test_X.shape[0], train.X.shape[1] - test_X.shape[1]))]
        )
    save_dataset(work / "test.npz", test_X, test.y, compressed=False)
    return work


@pytest.fixture(scope="module")
def models(data):
    """The same training run on the LIBSVM and the ``.npz`` file."""
    for name in ("svm", "npz"):
        argv = ["train", str(data / f"train.{name}"), "--model", str(data / f"model-{name}")]
        assert main([*argv, *TRAIN_FLAGS]) == 0
    return data


def one_line_error(capsys, *fragments: str) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("dsmlr: error: ") and "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


# ---------------------------------------------------------------- save/load round trips


@settings(max_examples=30, deadline=None)
@given(
    st.integers(1, 6).flatmap(
        lambda n: st.tuples(
            st.lists(
                st.lists(st.one_of(st.just(0.0), st.floats(-1e6, 1e6, allow_subnormal=False)),
                         min_size=3, max_size=3),
                min_size=n, max_size=n,
            ),
            st.lists(st.sampled_from(["a", "b,c", 'q"uote', "7"]), min_size=n, max_size=n),
            st.lists(st.integers(-3, 3), min_size=n, max_size=n),
        )
    ),
    st.booleans(),
    st.booleans(),
)  # fmt: skip
def test_save_load_round_trip(case, sparse, string_labels):
    rows, text_labels, int_labels = case
    dense = np.array(rows, dtype=np.float64)
    y = np.array(text_labels) if string_labels else np.array(int_labels, dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "d.npz")
        save_dataset(path, sp.csr_matrix(dense) if sparse else dense, y)
        back = load_dataset(path)
        assert back.format == "npz" and back.zero_based is None
        assert isinstance(back.X, sp.csr_matrix) and back.X.has_canonical_format
        assert back.X.shape == dense.shape and back.X.dtype == np.float64
        np.testing.assert_array_equal(back.X.toarray(), dense)
        assert back.y.dtype == y.dtype and back.y.tolist() == y.tolist()
        # Plain numpy (and scipy) read it too, without pickle.
        with np.load(path, allow_pickle=False) as raw:
            assert raw["y"].tolist() == y.tolist()
        if sparse:
            np.testing.assert_array_equal(sp.load_npz(path).toarray(), dense)


@pytest.mark.parametrize("layout", ["csr", "csc", "coo"])
def test_scipy_save_npz_files_with_labels_added(tmp_path, layout):
    X = sp.random(7, 5, density=0.4, format=layout, random_state=0, dtype=np.float64)
    sp.save_npz(tmp_path / "x.npz", X)
    with np.load(tmp_path / "x.npz", allow_pickle=False) as parts:
        arrays = dict(parts)
    y = np.arange(7) % 3
    np.savez(tmp_path / "xy.npz", **arrays, y=y)
    back = load_dataset(tmp_path / "xy.npz", dtype=np.float32)
    assert back.X.dtype == np.float32
    np.testing.assert_allclose(back.X.toarray(), X.toarray().astype(np.float32))
    assert back.y.tolist() == y.tolist()


def test_width_options_and_libsvm_dispatch(tmp_path):
    save_dataset(tmp_path / "d.npz", np.array([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]]), [1.0, 2.0])
    narrow = load_dataset(tmp_path / "d.npz", n_features=5)
    assert narrow.X.shape == (2, 5) and narrow.y.dtype == np.int64  # integral floats
    with pytest.raises(DataError, match="more than n_features=2"):
        load_dataset(tmp_path / "d.npz", n_features=2)
    with pytest.warns(UserWarning, match="dropped 1 value"):
        assert load_dataset(tmp_path / "d.npz", n_features=2, allow_extra_features=True).X.nnz == 2
    # Other names are LIBSVM, compressed ones included; zero_based None means "auto".
    (tmp_path / "d.svm.gz").write_bytes(gzip.compress(b"1 1:0.5\n2 3:1\n"))
    text = load_dataset(tmp_path / "d.svm.gz", zero_based=None)
    assert text.format == "libsvm" and text.zero_based is False and text.X.shape == (2, 3)


# ---------------------------------------------------------------- the command line


def test_train_on_npz_gives_the_libsvm_model(models):
    a, b = (dsmlr.load_model(models / f"model-{name}") for name in ("svm", "npz"))
    assert a.coef_.tobytes() == b.coef_.tobytes()
    assert a.intercept_.tobytes() == b.intercept_.tobytes()
    assert a.classes_.tolist() == b.classes_.tolist()
    # A .npz file has no LIBSVM index base to remember; later LIBSVM files use "auto".
    assert a.metadata_ == {"zero_based": False} and b.metadata_ == {}


def test_evaluate_and_predict_on_npz_match_libsvm(models, capsys):
    model = str(models / "model-npz")
    reports = []
    for name in ("svm", "npz"):
        assert main(["evaluate", "--model", model, str(models / f"test.{name}"), "--json"]) == 0
        reports.append(json.loads(capsys.readouterr().out))
    assert reports[0] == reports[1]
    tables = []
    for name in ("svm", "npz"):
        out = models / f"pred-{name}.tsv"
        argv = ["predict", "--model", model, str(models / f"test.{name}"), "--top-k", "2"]
        assert main([*argv, "--out", str(out)]) == 0
        tables.append(out.read_text())
    assert tables[0] == tables[1]
    capsys.readouterr()


def test_npz_wider_than_the_model_warns_and_drops(models, capsys):
    model = dsmlr.load_model(models / "model-npz")
    wide = np.zeros((2, model.n_features_in_ + 3))
    wide[0, -1] = 1.0
    save_dataset(models / "wide.npz", wide, np.array([0, 1]))
    out = models / "wide.tsv"
    argv = ["predict", "--model", str(models / "model-npz"), str(models / "wide.npz")]
    assert main([*argv, "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning" in err and "wide.npz" in err and "3 feature(s)" in err
    assert len(out.read_text().splitlines()) == 3


def test_predict_csv_equals_tsv(models, capsys):
    model, data = str(models / "model-svm"), str(models / "test.svm")
    for ext in ("tsv", "csv"):
        argv = ["predict", "--model", model, data, "--top-k", "3", "--out"]
        assert main([*argv, str(models / f"p.{ext}")]) == 0
    tsv = [line.split("\t") for line in (models / "p.tsv").read_text().splitlines()]
    with open(models / "p.csv", newline="", encoding="utf-8") as fh:
        assert list(csv.reader(fh)) == tsv
    assert tsv[0][:3] == ["row", "label_1", "prob_1"]
    capsys.readouterr()


@pytest.fixture(scope="module")
def string_model(data):
    """A model whose labels hold a comma, a quote and a tab."""
    work = data / "strings"
    work.mkdir()
    X = read_svmlight(data / "train.svm").X
    names = np.array(["a,b", 'say "hi"', "tab\there", "plain"])
    y = names[read_svmlight(data / "train.svm").y % 4]
    save_dataset(work / "train.npz", X, y)
    argv = ["train", str(work / "train.npz"), "--model", str(work / "model"), *TRAIN_FLAGS]
    assert main(argv) == 0
    return work, X, y


def test_labels_with_separators_are_quoted(string_model, capsys):
    work, X, y = string_model
    model = dsmlr.load_model(work / "model")
    for ext, delimiter in (("csv", ","), ("tsv", "\t")):
        out = work / f"p.{ext}"
        argv = ["predict", "--model", str(work / "model"), str(work / "train.npz")]
        assert main([*argv, "--top-k", "4", "--out", str(out)]) == 0
        text = out.read_text()
        with open(out, newline="", encoding="utf-8") as fh:
            rows = list(csv.reader(fh, delimiter=delimiter))
        assert len(rows) == X.shape[0] + 1 and all(len(r) == 9 for r in rows)
        assert [r[1] for r in rows[1:]] == model.predict(X).tolist()
        assert {r[j] for r in rows[1:] for j in (1, 3, 5, 7)} == set(y.tolist())
        assert '"say ""hi"""' in text
    assert '"a,b"' in (work / "p.csv").read_text()
    assert '"tab\there"' in (work / "p.tsv").read_text()
    capsys.readouterr()


def _npz_errors(tmp: Path) -> dict[str, tuple[Path, str]]:
    """Broken files, each with a fragment its error message must contain."""
    good = {"X": np.eye(3), "y": np.arange(3)}
    cases: dict[str, tuple[Path, str]] = {}

    def make(name: str, fragment: str, **arrays) -> None:
        np.savez(tmp / f"{name}.npz", **arrays)
        cases[name] = (tmp / f"{name}.npz", fragment)

    make("no-y", "no array 'y'", X=good["X"])
    make("short-y", "y has 2 labels but X has 3 rows", X=good["X"], y=np.arange(2))
    make("nan", "X row 1 (from 0) holds a non-finite value (nan)",
         X=np.array([[1.0, 0.0], [np.nan, 1.0]]), y=np.arange(2))  # fmt: skip
    make("one-d", "X must be 2-dimensional", X=np.ones(3), y=np.arange(3))
    make("object-y", "holds Python objects", X=good["X"], y=np.array([1, "a", None], dtype=object))
    make("no-x", "no features", y=np.arange(3))
    make("both", "both a dense 'X' and sparse parts", **good, format=np.array(b"csr"))
    make("y-2d", "y must be 1-dimensional", X=good["X"], y=np.zeros((3, 1)))
    sparse = sp.csr_matrix(np.eye(3))
    make("bad-index", "inconsistent csr matrix", format=np.array(b"csr"),
         shape=np.array([3, 2]), data=sparse.data, indices=sparse.indices,
         indptr=sparse.indptr, y=np.arange(3))  # fmt: skip
    make("inf-sparse", "X row 0 (from 0) holds a non-finite value (inf)",
         format=np.array(b"csr"), shape=np.array([1, 2]), data=np.array([np.inf]),
         indices=np.array([1]), indptr=np.array([0, 1]), y=np.arange(1))  # fmt: skip
    make("bsr", "sparse format 'bsr' is not supported", format=np.array(b"bsr"),
         shape=np.array([1, 1]), data=np.ones(1), y=np.arange(1))  # fmt: skip
    save_dataset(tmp / "whole.npz", np.eye(40), np.arange(40) % 2)
    blob = (tmp / "whole.npz").read_bytes()
    (tmp / "truncated.npz").write_bytes(blob[: len(blob) // 2])
    cases["truncated"] = (tmp / "truncated.npz", "corrupt or truncated")
    np.savez(tmp / "plain.npz", X=np.eye(40), y=np.arange(40) % 2)  # stored, not deflated
    damaged = bytearray((tmp / "plain.npz").read_bytes())
    with zipfile.ZipFile(tmp / "plain.npz") as zf:
        info = zf.getinfo("X.npy")
    damaged[info.header_offset + 200] ^= 0xFF  # inside X's data: a checksum mismatch
    (tmp / "damaged.npz").write_bytes(bytes(damaged))
    cases["damaged"] = (tmp / "damaged.npz", "cannot read array 'X'")
    np.save(tmp / "array.npy", np.eye(2))
    shutil.copy(tmp / "array.npy", tmp / "array.npz")
    cases["npy"] = (tmp / "array.npz", "a single .npy array")
    (tmp / "text.npz").write_text("1 1:1\n")
    cases["text"] = (tmp / "text.npz", "not an .npz archive")
    cases["missing"] = (tmp / "missing.npz", "no such file")
    return cases


ERROR_CASES = [
    "no-y", "short-y", "nan", "one-d", "object-y", "no-x", "both", "y-2d", "bad-index",
    "inf-sparse", "bsr", "truncated", "damaged", "npy", "text", "missing",
]  # fmt: skip


@pytest.fixture(scope="module")
def broken(tmp_path_factory):
    return _npz_errors(tmp_path_factory.mktemp("broken"))


@pytest.mark.parametrize("case", ERROR_CASES)
def test_npz_errors_are_one_line_naming_the_file(broken, case, capsys, tmp_path):
    path, fragment = broken[case]
    assert main(["train", str(path), "--model", str(tmp_path / "m"), "--quiet"]) == 1
    one_line_error(capsys, f"{path}: ", fragment)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_npz_errors_in_evaluate_and_predict(models, broken, command, capsys):
    path, fragment = broken["short-y"]
    argv = [command, "--model", str(models / "model-npz"), str(path)]
    if command == "predict":
        argv += ["--out", str(models / "never.tsv")]
    assert main(argv) == 1
    one_line_error(capsys, str(path), fragment)
    assert not (models / "never.tsv").exists()


def test_save_dataset_refuses_what_it_cannot_store(tmp_path):
    with pytest.raises(DataError, match="non-finite"):
        save_dataset(tmp_path / "d.npz", np.array([[np.inf]]), [1])
    with pytest.raises(DataError, match=r"y must have shape \(1,\)"):
        save_dataset(tmp_path / "d.npz", np.ones((1, 2)), [1, 2])
    with pytest.raises(DataError, match="y must hold"):
        save_dataset(tmp_path / "d.npz", np.ones((1, 2)), np.array([object()]))
    assert not list(tmp_path.iterdir())  # nothing half-written


# ---------------------------------------------------------------- export


def test_export_predicts_with_plain_numpy(models, capsys):
    out = models / "exported.npz"
    assert main(["export", "--model", str(models / "model-svm"), "--out", str(out)]) == 0
    assert f"wrote {out}: 6 classes x" in capsys.readouterr().out
    model = dsmlr.load_model(models / "model-svm")
    X = read_svmlight(models / "test.svm", n_features=model.n_features_in_).X
    with np.load(out, allow_pickle=False) as m:
        assert sorted(m.files) == ["classes", "coef", "intercept", "metadata"]
        scores = X @ m["coef"].T + m["intercept"]
        labels = m["classes"][scores.argmax(1)]
        info = json.loads(str(m["metadata"]))
    assert labels.tolist() == model.predict(X).tolist()
    assert info["format"] == "dsmlr-export" and info["n_features"] == model.n_features_in_
    assert info["training"] == {"zero_based": False} and info["params"]["lam"] == model.lam
    # The Python function, on the estimator, writes the same arrays.
    export_npz(model, models / "from-python.npz")
    with np.load(out) as a, np.load(models / "from-python.npz") as b:
        for key in ("coef", "intercept", "classes"):
            assert a[key].tobytes() == b[key].tobytes()


def test_export_of_string_labels_needs_no_pickle(string_model, capsys):
    work, X, _ = string_model
    assert main(["export", "--model", str(work / "model"), "--out", str(work / "m.npz")]) == 0
    with np.load(work / "m.npz", allow_pickle=False) as m:
        assert m["classes"].dtype.kind == "U"
        labels = m["classes"][(X @ m["coef"].T + m["intercept"]).argmax(1)]
    assert labels.tolist() == dsmlr.load_model(work / "model").predict(X).tolist()
    capsys.readouterr()


def test_export_errors(tmp_path, capsys, monkeypatch):
    assert (
        main(["export", "--model", str(tmp_path / "nope"), "--out", str(tmp_path / "m.npz")]) == 1
    )
    one_line_error(capsys, "nope", "no such model directory")
    data = tmp_path / "data.svm"
    data.write_text("1 1:1\n")
    assert main(["export", "--model", str(data), "--out", str(tmp_path / "m.npz")]) == 1
    one_line_error(capsys, "data.svm", "a file, not a model directory")
    monkeypatch.setenv("PMI_SIZE", "2")  # as an MPI launcher would
    args = cli.build_parser().parse_args(["export", "--model", "m", "--out", "m.npz"])
    with pytest.raises(DataError, match="without mpiexec") as info:
        args.run(args)
    assert getattr(info.value, "all_ranks", False)  # printed once, every rank exits 1


# ---------------------------------------------------------------- under mpiexec

MPIEXEC = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or shutil.which("mpiexec")


def _mpi_dsmlr(n: int | None, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "dsmlr", *args]
    if n is not None:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install '.[mpi]')")
def test_npz_under_mpiexec_matches_in_process_workers(models):
    pytest.importorskip("mpi4py")
    # Each rank keeps the rows row_shards gives it, as in-process workers do, so the
    # synchronous engine on 2 ranks trains exactly the model of 2 workers.
    common = ["train", "train.npz", "--test", "test.npz", "--epochs", "2", "--seed", "4",
              "--quiet", "--workers", "2"]  # fmt: skip
    run = _mpi_dsmlr(2, [*common, "--model", "mpi-npz"], models)
    assert run.returncode == 0, run.stderr
    assert _mpi_dsmlr(None, [*common, "--model", "emb-npz"], models).returncode == 0
    a, b = (dsmlr.load_model(models / m) for m in ("mpi-npz", "emb-npz"))
    assert a.coef_.tobytes() == b.coef_.tobytes() and a.metadata_ == {}
    run = _mpi_dsmlr(2, ["predict", "--model", "mpi-npz", "test.npz", "--out", "p2.csv"], models)
    assert run.returncode == 0, run.stderr
    with open(models / "p2.csv", newline="") as fh:
        assert [r[1] for r in list(csv.reader(fh))[1:]] == list(map(str, b.predict(
            load_dataset(models / "test.npz").X)))  # fmt: skip
    blob = (models / "train.npz").read_bytes()
    (models / "cut.npz").write_bytes(blob[: len(blob) // 3])
    run = _mpi_dsmlr(2, ["train", "cut.npz", "--model", "never"], models)
    assert run.returncode == 1 and "Traceback" not in run.stderr
    assert run.stderr.strip().splitlines() == [
        "dsmlr: error: cut.npz: cannot read .npz archive (corrupt or truncated?): "
        "File is not a zip file"
    ]
