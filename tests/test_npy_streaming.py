"""Block files are written and read a chunk at a time, with no second copy of a block."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest

from dsmlr.errors import DataError
from dsmlr.io.model_files import read_npy, write_npy

SHAPE = (300, 20000)  # 24 MB of float32
CHUNK = 2**20  # 13 rows a chunk: the last one is partial


@pytest.fixture(scope="module")
def feature_major() -> np.ndarray:
    """A block in the engines' layout (D x K_b); its transpose is what a file holds."""
    rng = np.random.default_rng(0)
    return rng.standard_normal(SHAPE[::-1], dtype=np.float32)


def _traced_peak(fn) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = fn()
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_round_trip_of_a_transposed_view_without_a_second_copy(tmp_path, feature_major):
    rows = feature_major.T  # strided: np.save would make it contiguous first
    path = tmp_path / "block.npy"
    digest, peak = _traced_peak(lambda: write_npy(path, rows, chunk_bytes=CHUNK))
    assert peak < 0.1 * rows.nbytes
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest()
    np.testing.assert_array_equal(np.load(path), rows)  # a standard C-order .npy file
    assert not np.load(path, mmap_mode="r").flags.f_contiguous

    back, peak = _traced_peak(lambda: read_npy(path, digest, SHAPE, np.float32, chunk_bytes=CHUNK))
    np.testing.assert_array_equal(back, rows)
    assert peak < 1.1 * rows.nbytes
    back, peak = _traced_peak(
        lambda: read_npy(path, digest, SHAPE, np.float32, transposed=True, chunk_bytes=CHUNK)
    )
    assert back.flags.c_contiguous and back.shape == SHAPE[::-1]
    np.testing.assert_array_equal(back, feature_major)
    assert peak < 1.1 * rows.nbytes


def test_reads_files_numpy_wrote_and_one_dimensional_arrays(tmp_path):
    a = np.arange(10.0)
    np.save(tmp_path / "a.npy", a)
    digest = hashlib.sha256((tmp_path / "a.npy").read_bytes()).hexdigest()
    np.testing.assert_array_equal(read_npy(tmp_path / "a.npy", digest, (10,), np.float64), a)
    assert write_npy(tmp_path / "b.npy", a) == digest


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-7], "truncated or altered"),
        (lambda b: b[:40], "truncated or altered"),
        (lambda b: b + b"x", "truncated or altered"),
        (lambda b: b[:200] + bytes([b[200] ^ 1]) + b[201:], "truncated or altered"),
    ],
)
def test_damage_is_a_checksum_error_naming_the_file(tmp_path, damage, message):
    path = tmp_path / "block.npy"
    digest = write_npy(path, np.ones((20, 30), dtype=np.float32))
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(DataError, match=rf"block.npy: block file is {message}"):
        read_npy(path, digest, (20, 30), np.float32, what="block file")


def test_shape_mismatch_and_pickles_are_refused(tmp_path):
    path = tmp_path / "block.npy"
    digest = write_npy(path, np.ones((20, 30)))
    with pytest.raises(DataError, match=r"not a plain numeric array .*expected \(30, 20\)"):
        read_npy(path, digest, (30, 20), np.float64)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    digest = hashlib.sha256((tmp_path / "obj.npy").read_bytes()).hexdigest()
    with pytest.raises(DataError, match="not a plain numeric array"):
        read_npy(tmp_path / "obj.npy", digest, (1,), np.float64)
    with pytest.raises(DataError, match="missing or unreadable"):
        read_npy(tmp_path / "none.npy", digest, (1,), np.float64)
