"""The software prefetch the compiled kernels use (dsmlr.kernels.prefetch).

A prefetch changes no value, so what can go wrong is compiling it (the LLVM intrinsic's
name depends on the LLVM version numba was built with) and the arithmetic of the address
for other dtypes, index types and row widths.  The kernels' results with it are checked
against the reference kernel in tests/test_kernels.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from dsmlr.kernels.prefetch import FAR, FAR_ROW_BYTES, NEAR, prefetch_distance, prefetch_row


@njit(cache=False)
def _prefetch_every_row_then_sum(A, rows):
    total = 0.0
    for i in rows:
        prefetch_row(A, i)
    for i in rows:
        for k in range(A.shape[1]):
            total += A[i, k]
    return total


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("index_type", [np.int32, np.int64])
@pytest.mark.parametrize("width", [0, 1, 15, 250, 1000])
def test_prefetching_rows_compiles_and_leaves_values_alone(dtype, index_type, width):
    rng = np.random.default_rng(width)
    A = rng.standard_normal((40, width)).astype(dtype)
    before = A.copy()
    # The last row included: lines past the array's end may be asked for (a hint that
    # never faults).
    rows = np.array([0, 7, 39, 39, 3], dtype=index_type)
    total = _prefetch_every_row_then_sum(A, rows)
    np.testing.assert_array_equal(A, before)
    assert total == pytest.approx(float(A[rows].sum(dtype=np.float64)), rel=1e-5, abs=1e-5)


def test_short_rows_are_asked_for_farther_ahead():
    # Called from Python and from compiled code alike (the kernels call it compiled).
    assert prefetch_distance(FAR_ROW_BYTES) == FAR > NEAR == prefetch_distance(FAR_ROW_BYTES + 1)
    assert njit(lambda n: prefetch_distance(n))(4) == FAR
