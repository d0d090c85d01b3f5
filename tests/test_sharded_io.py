"""Each rank reads its byte range: the shards, concatenated, are the whole file."""

from __future__ import annotations

import gzip
import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from dsmlr.comm import run_workers
from dsmlr.errors import DataError
from dsmlr.io import byte_ranges, read_svmlight, read_svmlight_shard, write_svmlight


def shards(path, n, **options):
    return run_workers(n, lambda comm: read_svmlight_shard(path, comm, **options))


def assert_same_as_whole(path, n, **options):
    whole = read_svmlight(path, **options)
    parts = shards(path, n, **options)
    X = sp.vstack([p.X for p in parts]).tocsr()
    y = np.concatenate([p.y for p in parts])
    assert X.shape == whole.X.shape and X.dtype == whole.X.dtype
    assert (X != whole.X).nnz == 0
    assert y.dtype == whole.y.dtype and np.array_equal(y, whole.y)
    offsets = np.cumsum([0] + [p.X.shape[0] for p in parts])[:-1]
    assert [p.row_offset for p in parts] == list(offsets)
    assert {(p.zero_based, p.n_features, p.n_samples) for p in parts} == {
        (whole.zero_based, whole.X.shape[1], whole.X.shape[0])
    }


def put(tmp_path, content: bytes, name="d.svm"):
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


EDGE = (
    b"\xef\xbb\xbf1 3:1 1:2\r\n"  # BOM, CRLF, unsorted indices
    b"# a comment line\n\n"
    b"2 qid:7 2:0.5 10:1e-3 # trailing comment\n"
    b"1 " + b" ".join(b"%d:1" % i for i in range(1, 300)) + b"\n"  # longer than a range
    b"3\n"  # no features at all
    b"2 5:-1.5\n"
)


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6])
def test_edge_cases_split_anywhere(tmp_path, n):
    assert_same_as_whole(put(tmp_path, EDGE), n)


@pytest.mark.parametrize("n", [1, 3, 4])
def test_generated_file_and_its_gzip(tmp_path, n):
    rng = np.random.default_rng(0)
    X = sp.random(200, 50, density=0.1, random_state=1, format="csr")
    y = rng.integers(0, 7, 200)
    path = tmp_path / "g.svm"
    write_svmlight(path, X, y)
    assert_same_as_whole(str(path), n)
    gz = tmp_path / "g.svm.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert_same_as_whole(str(gz), n, dtype=np.float32)


def test_fewer_lines_than_ranks_leaves_some_shards_empty(tmp_path):
    path = put(tmp_path, b"1 1:1\n2 2:1\n")
    parts = shards(path, 5)
    assert sum(p.X.shape[0] for p in parts) == 2
    assert all(p.n_features == 2 for p in parts)
    assert_same_as_whole(path, 5)


def test_every_rank_raises_the_same_error_with_the_absolute_line(tmp_path):
    lines = [b"%d %d:1" % (i % 3, i % 7 + 1) for i in range(60)]
    lines[36] = b"1 4:abc"
    path = put(tmp_path, b"\n".join(lines) + b"\n")
    errors = []

    def body(comm):
        try:
            read_svmlight_shard(path, comm)
        except DataError as exc:
            errors.append(str(exc))
            return "raised"
        return "returned"

    assert run_workers(4, body) == ["raised"] * 4
    assert len(set(errors)) == 1 and f"{path}:37:" in errors[0]


def test_index_base_and_label_type_are_agreed(tmp_path):
    # Only the last rank sees index 0 and a fractional label.
    path = put(tmp_path, b"1 1:1\n" * 30 + b"1.5 0:2\n")
    parts = shards(path, 3)
    assert all(p.zero_based and p.y.dtype == np.float64 for p in parts)
    assert_same_as_whole(path, 3)


def test_out_of_range_index_and_missing_file(tmp_path):
    path = put(tmp_path, b"1 1:1\n" * 20 + b"2 9:1\n")
    with pytest.raises(DataError, match=r":21: feature index 9 exceeds n_features=5"):
        shards(path, 3, n_features=5)
    with pytest.warns(UserWarning, match="dropped 1 value"):
        parts = shards(path, 3, n_features=5, allow_extra_features=True)
    assert sum(p.X.nnz for p in parts) == 20
    with pytest.raises(DataError, match="no such file"):
        shards(str(tmp_path / "missing.svm"), 2)
    with pytest.raises(DataError, match="no data lines"):
        shards(put(tmp_path, b"# nothing\n\n", "e.svm"), 2)


def test_byte_ranges_cover_everything():
    for n_bytes in (0, 1, 7, 100):
        for n in (1, 2, 3, 8):
            ranges = byte_ranges(n_bytes, n)
            assert ranges[0][0] == 0 and ranges[-1][1] == n_bytes
            assert all(a[1] == b[0] for a, b in itertools.pairwise(ranges))


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 5),
            st.dictionaries(st.integers(1, 40), st.floats(-1e3, 1e3, allow_nan=False), max_size=8),
        ),
        min_size=1,
        max_size=25,
    ),
    n=st.integers(1, 5),
)
def test_any_file_split_any_way_equals_the_whole(tmp_path_factory, rows, n):
    text = b"".join(
        b"%d" % label
        + b"".join(b" %d:%r" % (i, v) for i, v in sorted(feats.items()) if v != 0)
        + b"\n"
        for label, feats in rows
    )
    path = tmp_path_factory.mktemp("h") / "p.svm"
    path.write_bytes(text)
    assert_same_as_whole(str(path), n)
