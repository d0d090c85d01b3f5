"""Reading a data file reports its progress in bytes, and the CLI draws it as a bar."""

from __future__ import annotations

import gzip
import io

import numpy as np
import scipy.sparse as sp

from dsmlr.comm import run_workers
from dsmlr.io import load_dataset, read_dataset_shard, read_svmlight, write_svmlight
from dsmlr.io.sharded import byte_ranges
from dsmlr.progress import ReadingProgress


def _file(tmp_path, rows: int = 3000):
    rng = np.random.default_rng(0)
    X = sp.random(rows, 400, density=0.05, format="csr", random_state=0)
    path = tmp_path / "data.svm"
    write_svmlight(str(path), X, rng.integers(0, 7, rows))
    return path


class Calls:
    def __init__(self):
        self.seen: list[tuple[int, int | None]] = []

    def __call__(self, done, total):
        self.seen.append((done, total))


def test_a_plain_file_reports_every_byte_against_its_size(tmp_path):
    path = _file(tmp_path)
    calls = Calls()
    data = read_svmlight(path, progress=calls)
    size = path.stat().st_size
    assert size > 2**20  # several reads of the parser's 1 MiB chunks
    done = [d for d, _ in calls.seen]
    assert len(done) >= 2 and done == sorted(done) and done[-1] == size
    assert {t for _, t in calls.seen} == {size}
    assert data.X.shape[0] == 3000
    # The progress hook changes nothing read.
    np.testing.assert_array_equal(read_svmlight(path).X.toarray(), data.X.toarray())


def test_a_compressed_file_reports_bytes_without_a_total(tmp_path):
    path = _file(tmp_path, rows=500)
    packed = tmp_path / "data.svm.gz"
    packed.write_bytes(gzip.compress(path.read_bytes()))
    calls = Calls()
    load_dataset(packed, progress=calls)
    assert calls.seen[-1] == (path.stat().st_size, None)


def test_each_rank_reports_its_own_share(tmp_path):
    path = _file(tmp_path)
    size = path.stat().st_size
    seen: dict[int, Calls] = {}

    def body(comm):
        seen[comm.rank] = Calls()
        return read_dataset_shard(path, comm, progress=seen[comm.rank])

    shards = run_workers(3, body)
    assert sum(s.X.shape[0] for s in shards) == 3000
    finals = [seen[r].seen[-1] for r in range(3)]
    # A rank parses its whole lines: about its byte range, give or take a line.
    for (a, b), (done, total) in zip(byte_ranges(size, 3), finals, strict=True):
        assert done == total and abs(total - (b - a)) < 200
    assert sum(done for done, _ in finals) == size


def test_the_bar_is_drawn_only_when_asked(tmp_path):
    stream = io.StringIO()
    with ReadingProgress(str(tmp_path / "big.svm"), show=True, stream=stream) as bar:
        bar(2**20, 2**22)
        bar(2**22, 2**22)
    assert "reading big.svm" in stream.getvalue()
    quiet = io.StringIO()
    with ReadingProgress("big.svm", stream=quiet) as bar:  # not a terminal: no bar
        bar(1, 2)
    assert quiet.getvalue() == ""
