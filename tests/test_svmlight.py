"""Tests for dsmlr.io.svmlight: both parsers, every error message, and round trips."""

from __future__ import annotations

import gzip
import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import dsmlr.io.svmlight as svm
from dsmlr.errors import DataError
from dsmlr.io import SvmlightData, read_svmlight, write_svmlight
from dsmlr.io.svmlight import _parse_python

READERS = [read_svmlight, _parse_python]


def put(tmp_path, content: bytes | str, name: str = "data.svm") -> str:
    path = tmp_path / name
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return str(path)


def dense(data: SvmlightData) -> list[list[float]]:
    return data.X.toarray().tolist()


def assert_same(a: SvmlightData, b: SvmlightData) -> None:
    assert a.X.shape == b.X.shape
    assert a.X.dtype == b.X.dtype
    assert a.zero_based == b.zero_based
    assert a.y.dtype == b.y.dtype
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.X.indptr, b.X.indptr)
    np.testing.assert_array_equal(a.X.indices, b.X.indices)
    np.testing.assert_array_equal(a.X.data, b.X.data)


# ---------------------------------------------------------------- valid input


@pytest.mark.parametrize("reader", READERS)
def test_comments_blank_lines_crlf_qid(tmp_path, reader):
    text = "# header\r\n\r\n1 qid:3 1:0.5 3:2 # note\r\n   \r\n-1 qid:3 2:1e-3\r\n# end"
    d = reader(put(tmp_path, text))
    assert dense(d) == [[0.5, 0.0, 2.0], [0.0, 1e-3, 0.0]]
    assert d.y.tolist() == [1, -1] and d.y.dtype == np.int64
    assert d.zero_based is False
    assert d.X.has_canonical_format and isinstance(d.X, sp.csr_matrix)


@pytest.mark.parametrize("reader", READERS)
def test_unsorted_indices_are_sorted(tmp_path, reader):
    d = reader(put(tmp_path, "1 5:5 1:1 3:3\n2 2:2\n"))
    assert d.X.has_sorted_indices
    assert dense(d) == [[1, 0, 3, 0, 5], [0, 2, 0, 0, 0]]


@pytest.mark.parametrize("reader", READERS)
def test_gzip_detected_by_content_not_name(tmp_path, reader):
    path = tmp_path / "plain_name.txt"
    path.write_bytes(gzip.compress(b"1 1:1\n0 2:2\n"))
    assert dense(reader(str(path))) == [[1, 0], [0, 2]]
    # And a plain file named .gz is still read as text.
    assert dense(reader(put(tmp_path, "1 1:1\n", "fake.gz"))) == [[1]]


@pytest.mark.parametrize("reader", READERS)
def test_labels_float_when_not_integral(tmp_path, reader):
    assert reader(put(tmp_path, "1.0 1:1\n-2 1:1\n")).y.dtype == np.int64
    d = reader(put(tmp_path, "0.5 1:1\n2 1:1\n"))
    assert d.y.dtype == np.float64 and d.y.tolist() == [0.5, 2.0]


def test_class_labels_refuse_a_label_that_is_not_a_whole_number_at_its_line(tmp_path):
    from dsmlr.io import load_dataset

    good = "".join(f"{i % 7 - 3}.0 {i % 5 + 1}:1\n" for i in range(5000))
    path = put(tmp_path, good + "9007199254740992 1:1\n")  # 2**53: still exact
    assert read_svmlight(path, class_labels=True).y[-1] == 2**53
    assert load_dataset(path).y.dtype == np.int64  # dsmlr's data sets: class labels
    for bad in ("2.5", "9007199254740994", "-1e300"):  # line 5002, past the fast path
        path = put(tmp_path, good + "1 1:1\n" + bad + " 2:1\n" + good)
        with pytest.raises(DataError, match=f"label '{bad}' is not a class") as info:
            load_dataset(path)
        assert info.value.line == 5002
        assert read_svmlight(path).y.dtype == np.float64  # off: any finite label


@pytest.mark.parametrize("reader", READERS)
def test_label_only_lines_are_empty_rows(tmp_path, reader):
    d = reader(put(tmp_path, "1\n2 2:1\n3 # nothing\n"))
    assert dense(d) == [[0, 0], [0, 1], [0, 0]]
    assert d.y.tolist() == [1, 2, 3]


@pytest.mark.parametrize("reader", READERS)
def test_no_features_at_all_gives_zero_columns(tmp_path, reader):
    # scikit-learn would give one column and call the file zero-based.
    d = reader(put(tmp_path, "1\n2\n"))
    assert d.X.shape == (2, 0) and d.zero_based is False


@pytest.mark.parametrize("reader", READERS)
def test_zero_based_auto_and_explicit(tmp_path, reader):
    one = put(tmp_path, "1 1:1 3:3\n", "one")
    zero = put(tmp_path, "1 0:1 3:3\n", "zero")
    assert reader(one).zero_based is False and dense(reader(one)) == [[1, 0, 3]]
    assert reader(zero).zero_based is True and dense(reader(zero)) == [[1, 0, 0, 3]]
    d = reader(one, zero_based=True)
    assert d.zero_based is True and dense(d) == [[0, 1, 0, 3]]
    assert reader(zero, zero_based=True).zero_based is True


@pytest.mark.parametrize("reader", READERS)
def test_n_features_pads_and_limits(tmp_path, reader):
    path = put(tmp_path, "1 1:1\n2 3:3\n")
    assert reader(path, n_features=5).X.shape == (2, 5)
    assert reader(path, n_features=3).X.shape == (2, 3)
    # Zero-based file: index n_features - 1 is the last legal one.
    assert reader(put(tmp_path, "1 0:1 2:2\n", "z"), n_features=3).X.shape == (1, 3)


@pytest.mark.parametrize("reader", READERS)
def test_allow_extra_features_drops_and_warns(tmp_path, reader):
    path = put(tmp_path, "1 1:1 4:4\n2 5:5\n3 2:2\n")
    with pytest.warns(UserWarning, match="dropped 2 value"):
        d = reader(path, n_features=3, allow_extra_features=True)
    assert dense(d) == [[1, 0, 0], [0, 0, 0], [0, 2, 0]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        reader(path, n_features=5, allow_extra_features=True)


@pytest.mark.parametrize("reader", READERS)
def test_dtype_float32(tmp_path, reader):
    d = reader(put(tmp_path, "1 1:0.1\n"), dtype=np.float32)
    assert d.X.dtype == np.float32 and d.X.data[0] == np.float32(0.1)


@pytest.mark.parametrize("reader", READERS)
def test_utf8_bom_and_bytes_in_comments(tmp_path, reader):
    d = reader(put(tmp_path, b"\xef\xbb\xbf1 1:1 # caf\xc3\xa9 \xff\n"))
    assert dense(d) == [[1.0]]


def test_path_like_and_result_path(tmp_path):
    path = tmp_path / "p.svm"
    path.write_text("1 1:1\n")
    assert read_svmlight(path).path == str(path)


def test_fast_path_used_for_sorted_files(tmp_path, monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("fell back to the Python parser")

    monkeypatch.setattr(svm, "_parse_lines", boom)
    assert dense(read_svmlight(put(tmp_path, "1 1:1 2:2\n"))) == [[1, 2]]
    # Underscores in comments do not leave the fast path.
    assert dense(read_svmlight(put(tmp_path, "# data_set\n1 1:1 2:2 # a_b\n"))) == [[1, 2]]
    with pytest.raises(AssertionError):
        read_svmlight(put(tmp_path, "1 2:1 1:2\n"))


def test_bad_options():
    with pytest.raises(ValueError, match="zero_based"):
        read_svmlight("x", zero_based="yes")
    with pytest.raises(ValueError, match="n_features"):
        read_svmlight("x", n_features=0)
    with pytest.raises(ValueError, match="dtype"):
        read_svmlight("x", dtype=np.int64)


def random_file(rng: np.random.Generator, zero_based: bool, unsorted: bool):
    """Text of a random valid file in varied formatting, and the matrix it holds."""
    n, d = int(rng.integers(1, 30)), int(rng.integers(1, 40))
    X = sp.random(n, d, density=0.3, format="csr", random_state=rng)
    X.data = rng.normal(size=X.nnz) * 10.0 ** rng.integers(-5, 6, X.nnz)
    y = rng.integers(-3, 4, n)
    off = 0 if zero_based else 1
    out = ["# generated"]
    for r in range(n):
        cols, vals = X.indices[X.indptr[r] : X.indptr[r + 1]], X.data[X.indptr[r] : X.indptr[r + 1]]
        order = rng.permutation(cols.size) if unsorted else np.arange(cols.size)
        toks = [
            f"{c + off}:{v!r}"
            for c, v in zip(cols[order].tolist(), vals[order].tolist(), strict=True)
        ]
        if rng.random() < 0.3:
            toks.insert(0, f"qid:{r}")
        line = (
            "\t ".join([str(y[r]), *toks]) if rng.random() < 0.2 else " ".join([str(y[r]), *toks])
        )
        if rng.random() < 0.2:
            line += " # comment 1:2"
        out.append(line)
        if rng.random() < 0.1:
            out.append("")
    eol = "\r\n" if rng.random() < 0.5 else "\n"
    return eol.join(out) + eol, X, y


@pytest.mark.parametrize("seed", range(12))
def test_fast_path_equals_python_path(tmp_path, seed):
    rng = np.random.default_rng(seed)
    zero_based, unsorted = bool(seed % 2), seed % 3 == 0
    text, X, y = random_file(rng, zero_based, unsorted)
    path = put(tmp_path, text)
    for kwargs in ({}, {"zero_based": zero_based, "n_features": X.shape[1]}):
        fast, slow = read_svmlight(path, **kwargs), _parse_python(path, **kwargs)
        assert_same(fast, slow)
    exact = read_svmlight(path, zero_based=zero_based, n_features=X.shape[1])
    assert (exact.X != X).nnz == 0
    np.testing.assert_array_equal(exact.y, y)


# ---------------------------------------------------------------- errors

ERRORS = [
    ("1 1:1\n-1 2:nan\n", 2, "non-finite value in token '2:nan'"),
    ("1 1:-inf\n", 1, "non-finite value in token '1:-inf'"),
    ("1 1:1\nnan 1:1\n", 2, "non-finite label 'nan'"),
    ("1 1:1\n3:4 5:6\n", 2, "missing label: line starts with feature '3:4'"),
    ("abc 1:2\n", 1, "non-numeric label 'abc'"),
    ("1,2 3:4\n", 1, "multi-label line (labels '1,2') is not supported"),
    ("1 1:2:3\n", 1, "malformed token '1:2:3'"),
    ("1 :5\n", 1, "malformed token ':5'"),
    ("1 2:1 abc\n", 1, "malformed token 'abc': expected index:value"),
    ("1 x:1\n", 1, "malformed token 'x:1': feature index is not an integer"),
    ("1 3:\n", 1, "missing value in token '3:'"),
    ("1 3:x\n", 1, "non-numeric value in token '3:x'"),
    ("1 2:1 -3:1\n", 1, "negative feature index in token '-3:1'"),
    ("# c\n\n1 7:1 3:2 7:4\n", 3, "duplicate feature index 7"),
    ("1 2:1 2:1\n", 1, "duplicate feature index 2"),
    ("1 1:1\n1 2:1 99999999999999999999:1\n", 2, "feature index 99999999999999999999 is"),
    (b"1 1:1\n\xff\xfe\x00\x01 1:1\n", 2, "line is not text"),
    (b"1 1:1\n2 1:\x00\x07\n", 2, "line is not text"),
    (bytes(range(256)) * 4, 1, "line is not text"),
    ("1 1:1\n2 1:1e400\n", 2, "value in token '1:1e400' overflows float64"),
    ("1e400 1:1\n", 1, "label '1e400' overflows float64"),
    ("1 1:1\n2 2147483648:1\n", 2, "LIBSVM indices stop at 2147483647"),
    ("1 1:1\r2 2:1\r", 1, "bare carriage returns"),
    ("1 1:1\n".encode("utf-16"), 1, "file is UTF-16 text"),
    # scikit-learn reads "1e-_1" as 0.1, Python "1_0" as 10; LIBSVM refuses both.
    ("1 1:1\n2 1:1e-_1\n", 2, "malformed token '1:1e-_1': '_' is not part"),
    ("1_0 1:1\n", 1, "malformed label '1_0'"),
]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("content", "line", "problem"), ERRORS)
def test_error_names_file_line_and_problem(tmp_path, reader, content, line, problem):
    path = put(tmp_path, content)
    with pytest.raises(DataError) as info:
        reader(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert problem in message
    assert "\n" not in message
    assert info.value.line == line and info.value.path == path


OPTION_ERRORS = [
    (
        "1 1:1\n2 60001:1\n",
        {"n_features": 60000},
        2,
        "feature index 60001 exceeds n_features=60000",
    ),
    ("1 0:1\n\n2 3:1\n", {"n_features": 3}, 3, "feature index 3 exceeds n_features=3"),
    ("1 3:1\n", {"n_features": 3, "zero_based": True}, 1, "zero-based indices must be below 3"),
    ("1 1:1\n2 0:1\n", {"zero_based": False}, 2, "feature index 0 in a one-based file"),
    ("1 1:1e39\n", {"dtype": np.float32}, 1, "value 1e+39 overflows float32"),
    ("1 1:1\n2 1:1e200 2:1e200\n", {"check_norms": True}, 2, "squared norm overflows float64"),
    ("1 1:3e19\n", {"check_norms": True, "dtype": np.float32}, 1, "overflows float32"),
]


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("content", "kwargs", "line", "problem"), OPTION_ERRORS)
def test_option_errors(tmp_path, reader, content, kwargs, line, problem):
    path = put(tmp_path, content)
    with pytest.raises(DataError, match=f"^{path}:{line}: ") as info:
        reader(path, **kwargs)
    assert problem in str(info.value)


@pytest.mark.parametrize("reader", READERS)
def test_largest_libsvm_index_and_huge_finite_values_are_read(tmp_path, reader):
    # 2**31 - 1 is LIBSVM's own limit; values whose squares overflow are still values.
    d = reader(put(tmp_path, "1 2147483647:1e200 1:1e200\n"))
    assert d.X.shape == (1, 2**31 - 1) and d.X.data.tolist() == [1e200, 1e200]


@pytest.mark.parametrize("reader", READERS)
def test_long_tokens_are_truncated(tmp_path, reader):
    with pytest.raises(DataError) as info:
        reader(put(tmp_path, "1 " + "9" * 200 + ":x\n"))
    assert "..." in str(info.value) and len(str(info.value)) < len(str(tmp_path)) + 120


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("content", ["", "\n\n", "# only a comment\n  # another\n"])
def test_no_data_lines(tmp_path, reader, content):
    path = put(tmp_path, content)
    with pytest.raises(DataError) as info:
        reader(path)
    assert str(info.value) == f"{path}: no data lines"


@pytest.mark.parametrize("reader", READERS)
def test_missing_file_and_directory(tmp_path, reader):
    missing = str(tmp_path / "nope.svm")
    with pytest.raises(DataError) as info:
        reader(missing)
    assert str(info.value) == f"{missing}: no such file"
    with pytest.raises(DataError, match="is a directory"):
        reader(str(tmp_path))


@pytest.mark.parametrize("reader", READERS)
def test_corrupt_gzip(tmp_path, reader):
    good = gzip.compress(b"1 1:1\n" * 1000)
    for content in (good[:-20], good[:10] + b"garbage" * 20):
        with pytest.raises(DataError, match="cannot read"):
            reader(put(tmp_path, content))


# ---------------------------------------------------------------- writing


def test_write_format(tmp_path):
    path = tmp_path / "out.svm"
    X = np.array([[0.0, 1.5, 0.0], [0.0, 0.0, 0.0], [0.1, 0.0, -2.0]])
    write_svmlight(path, X, np.array([1.0, 2.0, 0.25]))
    assert path.read_text() == "1 2:1.5\n2\n0.25 1:0.1 3:-2.0\n"
    write_svmlight(path, sp.csr_matrix(X), [3, 4, 5], zero_based=True)
    assert path.read_text() == "3 1:1.5\n4\n5 0:0.1 2:-2.0\n"
    assert not os.path.exists(str(path) + ".tmp")


def test_write_does_not_modify_input(tmp_path):
    X = sp.csr_matrix((np.array([1.0, 0.0, 2.0]), np.array([2, 1, 0]), np.array([0, 3])), (1, 3))
    write_svmlight(tmp_path / "o", X, [1])
    assert X.indices.tolist() == [2, 1, 0] and X.nnz == 3


@pytest.mark.parametrize(
    ("X", "y", "problem"),
    [
        (np.array([[np.nan]]), [1], "non-finite"),
        (np.array([[1.0]]), [np.inf], "non-finite"),
        (np.array([[1.0]]), [1, 2], "y must have shape"),
        (np.array([1.0]), [1], "2-dimensional"),
        (np.array([["a"]]), [1], "real numbers"),
        (np.array([[1.0]]), ["a"], "numbers"),
    ],
)
def test_write_errors(tmp_path, X, y, problem):
    path = tmp_path / "bad.svm"
    with pytest.raises(DataError, match=problem):
        write_svmlight(path, X, y)
    assert not path.exists() and not (tmp_path / "bad.svm.tmp").exists()


def test_write_into_missing_directory(tmp_path):
    with pytest.raises(DataError, match="cannot write"):
        write_svmlight(tmp_path / "no" / "such" / "file", np.eye(2), [0, 1])


finite = st.floats(allow_nan=False, allow_infinity=False, allow_subnormal=True)
values = st.one_of(
    finite, st.floats(-1e-300, 1e-300), st.sampled_from([5e-324, 1.7976931348623157e308, 1 / 3])
).filter(lambda v: v != 0)


@st.composite
def problems(draw):
    n, d = draw(st.integers(1, 8)), draw(st.integers(1, 10))
    cells = draw(st.dictionaries(st.tuples(st.integers(0, n - 1), st.integers(0, d - 1)), values))
    X = np.zeros((n, d))
    for (r, c), v in cells.items():
        X[r, c] = v
    y = np.array(draw(st.lists(st.integers(-(10**12), 10**12), min_size=n, max_size=n)))
    return sp.csr_matrix(X), y


@settings(max_examples=50, deadline=None)
@given(problem=problems(), zero_based=st.booleans())
def test_round_trip(tmp_path_factory, problem, zero_based):
    X, y = problem
    path = tmp_path_factory.mktemp("rt") / "rt.svm"
    write_svmlight(path, X, y, zero_based=zero_based)
    for reader in READERS:
        back = reader(path, zero_based=zero_based, n_features=X.shape[1])
        assert back.y.dtype == np.int64
        np.testing.assert_array_equal(back.y, y)
        np.testing.assert_array_equal(back.X.toarray(), X.toarray())
        assert back.X.has_canonical_format


@settings(max_examples=30, deadline=None)
@given(labels=st.lists(finite, min_size=1, max_size=6))
def test_float_labels_round_trip(tmp_path_factory, labels):
    path = tmp_path_factory.mktemp("rt") / "labels.svm"
    write_svmlight(path, sp.csr_matrix((len(labels), 1)), labels)
    np.testing.assert_array_equal(read_svmlight(path).y, np.array(labels))
