"""The kernels' vectorisable exponential against the exact one."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numba import njit

from dsmlr.kernels.fast_exp import fast_exp, sum_float64


@njit
def _exp_all(x, out):
    for k in range(x.shape[0]):
        out[k] = fast_exp(x[k])


def _compiled(x: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    _exp_all(x, out)
    return out


def _ulps(got: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Error of ``got`` in units in the last place of exp(x) in x's type."""
    exact = np.exp(x.astype(np.longdouble))
    spacing = np.spacing(exact.astype(x.dtype)).astype(np.longdouble)
    return np.abs(got.astype(np.longdouble) - exact) / spacing


@pytest.mark.parametrize(
    ("dtype", "lo", "hi", "max_ulps"),
    [(np.float32, -87.3, 88.72, 1.0), (np.float64, -708.3, 709.78, 2.0)],
)
def test_accurate_over_the_normal_range(dtype, lo, hi, max_ulps):
    if np.finfo(np.longdouble).eps >= np.finfo(np.float64).eps and dtype is np.float64:
        pytest.skip("no extended precision here to check float64 against")
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(lo, hi, 400_001), rng.uniform(-1, 1, 100_000), rng.uniform(lo, hi, 100_000),
    ]).astype(dtype)  # fmt: skip
    got = _compiled(x)
    assert got.dtype == dtype
    assert float(np.max(_ulps(got, x))) <= max_ulps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_special_values_and_the_ends_of_the_range(dtype):
    info = np.finfo(dtype)
    x = np.array([-np.inf, np.inf, np.nan, 0.0, -0.0, -1e4, 1e4, -1e-30], dtype=dtype)
    got = _compiled(x)
    np.testing.assert_array_equal(got[[0, 1, 3, 4, 5, 6, 7]], [0, np.inf, 1, 1, 0, np.inf, 1])
    assert np.isnan(got[2])
    # Past the smallest normal result: 0 (no subnormals); past the largest: inf.
    tiny = np.log(info.tiny)
    below = np.array([tiny * 1.001, tiny * 1.05], dtype=dtype)
    assert np.all(_compiled(below) == 0)
    top = np.log(info.max)
    assert np.all(np.isinf(_compiled(np.array([top * 1.0001], dtype=dtype))))
    just_under = np.array([top * 0.9999], dtype=dtype)
    assert np.isfinite(_compiled(just_under)[0])
    assert float(_ulps(_compiled(just_under), just_under)[0]) <= 2.0


def test_python_fallback_is_math_exp():
    assert fast_exp(1.5) == math.exp(1.5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sum_float64_sums_in_float64(dtype):
    v = np.random.default_rng(1).uniform(0, 1, 1001).astype(dtype)
    v[0] = 1e8  # float32 accumulation would lose the small terms entirely
    exact = math.fsum(v.astype(np.float64))
    assert sum_float64(v) == pytest.approx(exact, rel=1e-14)
    assert sum_float64(v[:0]) == 0.0
