"""Each rank reads its byte range: the shards, concatenated, are the whole file."""

from __future__ import annotations

import bz2
import gzip
import itertools
import lzma
import threading
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

import dsmlr.io.sharded as sharded
import dsmlr.io.svmlight as svm
from dsmlr.comm import run_workers
from dsmlr.errors import DataError
from dsmlr.io import (
    byte_ranges,
    global_classes,
    read_svmlight,
    read_svmlight_shard,
    write_svmlight,
)

RANKS = [1, 2, 3, 4, 5, 6]


def shards(path, n, **options):
    return run_workers(n, lambda comm: read_svmlight_shard(path, comm, **options))


def outcomes(path, n, **options):
    """Per rank: its Shard, or the DataError it raised (every rank must finish)."""

    def body(comm):
        try:
            return read_svmlight_shard(path, comm, **options)
        except DataError as exc:
            return exc

    return run_workers(n, body)


def assert_same_as_whole(path, n, **options):
    whole = read_svmlight(path, **options)
    parts = shards(path, n, **options)
    offset = 0
    for p in parts:
        assert isinstance(p.X, sp.csr_matrix) and p.X.has_canonical_format
        assert p.X.dtype == whole.X.dtype and p.y.dtype == whole.y.dtype
        assert p.row_offset == offset
        rows = whole.X[offset : offset + p.X.shape[0]]
        assert p.X.shape == rows.shape
        np.testing.assert_array_equal(p.X.indptr, rows.indptr)
        np.testing.assert_array_equal(p.X.indices, rows.indices)
        np.testing.assert_array_equal(p.X.data, rows.data)
        np.testing.assert_array_equal(p.y, whole.y[offset : offset + p.X.shape[0]])
        assert (p.zero_based, p.n_features, p.n_samples, p.path) == (
            whole.zero_based,
            whole.X.shape[1],
            whole.X.shape[0],
            whole.path,
        )
        offset += p.X.shape[0]
    assert offset == whole.X.shape[0]
    X = sp.vstack([p.X for p in parts], format="csr")
    assert (X != whole.X).nnz == 0
    return parts


def assert_same_error_as_whole(path, n, **options):
    with pytest.raises(DataError) as info:
        read_svmlight(path, **options)
    results = outcomes(path, n, **options)
    assert all(isinstance(r, DataError) for r in results), results
    assert {str(r) for r in results} == {str(info.value)}
    assert all(getattr(r, "all_ranks", False) for r in results)
    return info.value


def put(tmp_path, content: bytes, name="d.svm"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


# ---------------------------------------------------------------- byte ranges


def test_byte_ranges_cover_everything_near_equally():
    for n_bytes in (0, 1, 7, 100, 10**12 + 3):
        for n in (1, 2, 3, 8):
            ranges = byte_ranges(n_bytes, n)
            assert len(ranges) == n
            assert ranges[0][0] == 0 and ranges[-1][1] == n_bytes
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))
            sizes = [b - a for a, b in ranges]
            assert max(sizes) - min(sizes) <= 1
    with pytest.raises(ValueError):
        byte_ranges(10, 0)
    with pytest.raises(ValueError):
        byte_ranges(-1, 2)


# ---------------------------------------------------------------- same as the whole file


EDGE = (
    b"\xef\xbb\xbf1 3:1 1:2\r\n"  # BOM, CRLF, unsorted indices
    b"# a comment line\n\n   \n"
    b"2 qid:7 2:0.5 10:1e-3 # trailing comment\r\n"
    b"1 " + b" ".join(b"%d:1" % i for i in range(1, 300)) + b"\n"  # longer than a range
    b"3\n"  # no features at all
    b"# another comment\n"
    b"-1 qid:2 7:2 5:-1.5 6:3\n"
    b"2 5:-1.5"  # no final newline
)


@pytest.mark.parametrize("n", RANKS)
def test_edge_cases_split_anywhere(tmp_path, n):
    assert_same_as_whole(put(tmp_path, EDGE), n)
    assert_same_as_whole(put(tmp_path, EDGE), n, dtype=np.float32, n_features=400)


@pytest.mark.parametrize("n", RANKS)
def test_one_long_line_and_label_only_files(tmp_path, n):
    long_line = b"1 " + b" ".join(b"%d:%d" % (i, i) for i in range(1, 500)) + b"\n"
    parts = assert_same_as_whole(put(tmp_path, long_line), n)
    assert [p.X.shape[0] for p in parts] == [1] + [0] * (n - 1)
    assert_same_as_whole(put(tmp_path, b"1\n2\n\n3\r\n", "labels.svm"), n)


@pytest.mark.parametrize("n", RANKS)
def test_generated_file(tmp_path, n):
    rng = np.random.default_rng(n)
    X = sp.random(150, 40, density=0.15, random_state=n, format="csr")
    X.data = rng.normal(size=X.nnz) * 10.0 ** rng.integers(-5, 5, X.nnz)
    y = rng.integers(-3, 7, 150)
    path = tmp_path / "g.svm"
    write_svmlight(path, X, y)
    assert_same_as_whole(str(path), n)
    assert_same_as_whole(str(path), n, dtype=np.float32)
    write_svmlight(path, X, y, zero_based=True)
    assert_same_as_whole(str(path), n, zero_based=True)


@pytest.mark.parametrize("n", RANKS)
@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, lzma.compress])
def test_compressed_files(tmp_path, n, compress):
    plain = tmp_path / "c.svm"
    X = sp.random(60, 12, density=0.3, random_state=0, format="csr")
    write_svmlight(plain, X, np.arange(60) % 4)
    path = put(tmp_path, compress(plain.read_bytes() + EDGE[3:]), "c.data")
    assert_same_as_whole(path, n)


@pytest.mark.parametrize("n", [2, 5])
def test_the_fast_path_reads_sorted_shards(tmp_path, monkeypatch, n):
    def boom(*args, **kwargs):
        raise AssertionError("fell back to the Python parser")

    path = put(tmp_path, b"".join(b"%d %d:1 %d:2\n" % (i % 3, i % 5 + 1, 9) for i in range(40)))
    monkeypatch.setattr(svm, "_parse_lines", boom)
    parts = shards(path, n)
    assert sum(p.X.shape[0] for p in parts) == 40


def test_fewer_lines_than_ranks_leaves_some_shards_empty(tmp_path):
    path = put(tmp_path, b"1 1:1\n2 2:1.5\n")
    parts = assert_same_as_whole(path, 6)
    assert sum(p.X.shape[0] == 0 for p in parts) == 4
    for p in parts:
        assert p.X.shape[1] == p.n_features == 2 and p.n_samples == 2
        assert p.y.dtype == np.int64 and p.X.dtype == np.float64
    # A shard of only comments and blank lines is empty too, not an error.
    path = put(tmp_path, b"1 1:1\n" + b"# comment\n" * 20 + b"\n" * 20 + b"2 2:1\n", "c.svm")
    parts = assert_same_as_whole(path, 4)
    assert [p.X.shape[0] for p in parts] == [1, 0, 0, 1]


def test_zero_based_auto_decided_by_the_one_rank_that_sees_index_0(tmp_path):
    path = put(tmp_path, b"1 1:1 2:2\n" * 30 + b"2 0:3\n")
    parts = assert_same_as_whole(path, 3)
    assert [p.zero_based for p in parts] == [True] * 3
    assert parts[0].X.shape[1] == 3 and parts[0].X[0].toarray().tolist() == [[0, 1, 2]]
    # Without the index 0 line every rank decides one-based.
    parts = assert_same_as_whole(put(tmp_path, b"1 1:1 2:2\n" * 30, "one.svm"), 3)
    assert [p.zero_based for p in parts] == [False] * 3


def test_label_type_is_agreed(tmp_path):
    # Only the last rank sees a fractional label; every rank, even an empty one, gets float64.
    path = put(tmp_path, b"1 1:1\n" * 30 + b"1.5 2:2\n")
    for n in (3, 40):
        parts = assert_same_as_whole(path, n)
        assert {p.y.dtype for p in parts} == {np.dtype(np.float64)}


def test_n_features_pads_and_extra_features_are_dropped_once(tmp_path):
    path = put(tmp_path, b"1 1:1\n" * 20 + b"2 9:1 3:1\n" + b"1 2:1\n" * 20)
    parts = assert_same_as_whole(path, 3, n_features=12)
    assert {p.X.shape[1] for p in parts} == {12}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        parts = shards(path, 3, n_features=5, allow_extra_features=True)
    messages = [str(w.message) for w in caught]
    assert messages == [f"{path}: dropped 1 value(s) with feature index beyond n_features=5"]
    with pytest.warns(UserWarning, match="dropped 1 value"):
        assert_same_as_whole(path, 3, n_features=5, allow_extra_features=True)
    assert sum(p.X.nnz for p in parts) == 41


def test_extra_feature_that_would_overflow_is_dropped_not_an_error(tmp_path):
    path = put(tmp_path, b"1 1:1\n" * 10 + b"2 9:1e39\n" + b"1 2:1\n" * 10)
    with pytest.warns(UserWarning, match="dropped 1 value"):
        parts = assert_same_as_whole(
            path, 3, n_features=5, allow_extra_features=True, dtype=np.float32
        )
    assert sum(p.X.nnz for p in parts) == 20


# ---------------------------------------------------------------- errors


def test_every_rank_raises_the_same_error_with_the_absolute_line(tmp_path):
    lines = [b"%d %d:1" % (i % 3, i % 7 + 1) for i in range(60)]
    lines[36] = b"1 4:abc"
    path = put(tmp_path, b"\n".join(lines) + b"\n")
    results = outcomes(path, 4)
    assert all(isinstance(r, DataError) for r in results)
    assert {str(r) for r in results} == {f"{path}:37: non-numeric value in token '4:abc'"}
    assert {(r.path, r.line) for r in results} == {(path, 37)}


BAD_LINES = [
    b"1 4:abc",
    b"x 1:1",
    b"1 1:1 1:2",
    b"1 1:nan",
    b"inf 1:1",
    b"1 1:1e39",  # overflows float32 only
    b"\xef\xbb\xbf1 1:1",  # a byte-order mark is only allowed on line 1
    b"1 2:1 -3:1",
    b"1 a:1",
    b"1,2 1:1",
]


@pytest.mark.parametrize("bad", BAD_LINES)
@pytest.mark.parametrize("at", [0, 13, 39])
def test_errors_match_the_whole_file_reader(tmp_path, bad, at):
    lines = [b"%d %d:1.5 %d:2" % (i % 4, i % 5 + 1, i % 5 + 3) for i in range(40)]
    lines[at] = bad
    lines.insert(20, b"# comment")
    path = put(tmp_path, b"\r\n".join(lines) + b"\r\n")
    gz = put(tmp_path, gzip.compress(b"\r\n".join(lines) + b"\r\n"), "d.gz")
    if at == 0 and bad.startswith(b"\xef\xbb\xbf"):  # fine on line 1
        assert_same_as_whole(path, 5)
        return
    for n in RANKS:
        assert_same_error_as_whole(path, n, dtype=np.float32)
    assert_same_error_as_whole(gz, 4, dtype=np.float32)


@pytest.mark.parametrize("n", RANKS)
def test_option_errors_match_the_whole_file_reader(tmp_path, n):
    body = b"".join(b"%d %d:1\n" % (i % 3, i % 2 + 1) for i in range(30))
    cases = [
        (body + b"2 60001:1\n", {"n_features": 60000}, 31),
        (b"1 0:1\n" + body + b"2 5:1\n", {"n_features": 5}, 32),  # zero-based: 5 is beyond
        (body + b"1 3:1\n" + body, {"n_features": 3, "zero_based": True}, 31),
        (body + b"2 0:1\n", {"zero_based": False}, 31),
        (body + b"1 1:1e39\n", {"dtype": np.float32}, 31),
    ]
    for content, options, line in cases:
        path = put(tmp_path, content)
        error = assert_same_error_as_whole(path, n, **options)
        assert error.line == line


def test_index_n_features_is_fine_one_based_but_not_zero_based(tmp_path):
    # The rank holding "4:1" cannot know the base alone: index 0 is on another rank.
    body = b"1 1:1\n" * 20 + b"2 4:1\n" + b"1 2:1\n" * 20
    assert_same_as_whole(put(tmp_path, body), 3, n_features=4)
    path = put(tmp_path, body + b"3 0:1\n", "z.svm")
    error = assert_same_error_as_whole(path, 3, n_features=4)
    assert error.line == 21 and "feature index 4 exceeds n_features=4" in str(error)


def test_the_lowest_failing_rank_wins(tmp_path):
    lines = [b"1 1:1"] * 60
    lines[10], lines[50] = b"1 1:x", b"2 2:y"
    path = put(tmp_path, b"\n".join(lines) + b"\n")
    results = outcomes(path, 4)
    assert {str(r) for r in results} == {f"{path}:11: non-numeric value in token '1:x'"}


def test_missing_file_directory_and_no_data(tmp_path):
    missing = str(tmp_path / "missing.svm")
    results = outcomes(missing, 3)
    assert {str(r) for r in results} == {f"{missing}: no such file"}
    results = outcomes(str(tmp_path), 3)
    assert all(isinstance(r, DataError) and "is a directory" in str(r) for r in results)
    for content in (b"", b"# nothing\n\n  \n" * 10):
        path = put(tmp_path, content, "e.svm")
        results = outcomes(path, 3)
        assert {str(r) for r in results} == {f"{path}: no data lines"}


def test_corrupt_gzip_fails_on_every_rank(tmp_path):
    good = gzip.compress(b"1 1:1\n" * 1000)
    for content in (good[:-20], good[:10] + b"garbage" * 20):
        results = outcomes(put(tmp_path, content), 3)
        assert all(isinstance(r, DataError) for r in results)
        assert len({str(r) for r in results}) == 1 and "cannot read" in str(results[0])


def test_bad_options_raise_before_any_communication(tmp_path):
    class NoComm:
        rank, size = 0, 2

    with pytest.raises(ValueError, match="zero_based"):
        read_svmlight_shard(str(tmp_path), NoComm(), zero_based="yes")
    with pytest.raises(ValueError, match="dtype"):
        read_svmlight_shard(str(tmp_path), NoComm(), dtype=np.int32)


def test_a_crash_on_one_rank_leaves_no_rank_waiting(tmp_path, monkeypatch):
    path = put(tmp_path, b"1 1:1\n" * 50)
    real = sharded._my_bytes

    def flaky(p, rank, size):
        if rank == 2:
            raise MemoryError("out of memory on rank 2")
        return real(p, rank, size)

    monkeypatch.setattr(sharded, "_my_bytes", flaky)

    def body(comm):
        try:
            read_svmlight_shard(path, comm)
        except BaseException as exc:
            return type(exc), str(exc)
        return None

    results = run_workers(4, body)
    assert results[2] == (MemoryError, "out of memory on rank 2")
    for r in (0, 1, 3):
        assert results[r][0] is RuntimeError and "rank 2 failed" in results[r][1]


class CountingComm:
    """Wraps a communicator and counts its collective calls."""

    def __init__(self, comm, counts):
        self._comm, self._counts = comm, counts
        self.rank, self.size = comm.rank, comm.size

    def allgather(self, value):
        with self._counts["lock"]:
            self._counts["allgather"] += 1
        return self._comm.allgather(value)

    def __getattr__(self, name):
        raise AssertionError(f"unexpected call {name}")


@pytest.mark.parametrize("content", [b"1 1:1\n" * 30, b"1 1:1\n" * 20 + b"1 1:z\n"])
def test_exactly_one_allgather_per_rank(tmp_path, content):
    path = put(tmp_path, content)
    counts = {"allgather": 0, "lock": threading.Lock()}

    def body(comm):
        try:
            read_svmlight_shard(path, CountingComm(comm, counts))
        except DataError:
            pass

    run_workers(4, body)
    assert counts["allgather"] == 4


def test_global_classes(tmp_path):
    path = put(tmp_path, b"5 1:1\n" * 10 + b"-1 1:1\n" * 10 + b"3 1:1\n" * 10)

    def body(comm):
        return global_classes(read_svmlight_shard(path, comm).y, comm)

    for n in (1, 3, 40):
        for classes in run_workers(n, body):
            assert classes.tolist() == [-1, 3, 5] and classes.dtype == np.int64


# ---------------------------------------------------------------- any file, any split


@settings(max_examples=60, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, -1, 7, 0.5, 1e-3]),
            st.dictionaries(st.integers(0, 40), st.floats(-1e3, 1e3, allow_nan=False), max_size=12),
            st.sampled_from([b"", b" # note", b"\n# comment line", b"\n", b"\r"]),
            st.booleans(),  # unsorted
        ),
        min_size=1,
        max_size=25,
    ),
    n=st.integers(1, 5),
)
def test_any_file_split_any_way_equals_the_whole(tmp_path_factory, rows, n):
    lines = []
    for label, feats, tail, unsorted in rows:
        items = sorted(feats.items(), reverse=unsorted)
        lines.append(b"%r" % label + b"".join(b" %d:%r" % (i, v) for i, v in items) + tail + b"\n")
    path = tmp_path_factory.mktemp("h") / "p.svm"
    path.write_bytes(b"".join(lines))
    assert_same_as_whole(str(path), n)
