"""An exponential the compiled kernels' loops can vectorise.

Every pass computes one exponential per row and class (the softmax), and SVRG steps two.
numba turns ``math.exp`` into a call to the C library's scalar ``exp`` (numba uses
vectorised SVML routines only with Intel's runtime and an llvmlite built for them, which
the PyPI wheels are not), so a loop containing one is never vectorised and each
exponential costs about 5 ns: at 1000 classes about a quarter of an SGD epoch.
:func:`fast_exp` is written in arithmetic LLVM vectorises: ``exp(x) = 2**n exp(r)`` with
``n = round(x / ln 2)`` and ``|r| <= ln(2) / 2`` (``n ln 2`` subtracted in two parts, so
that ``r`` keeps its precision), ``exp(r)`` by a polynomial (float32) or a rational
function (float64) with the coefficients of Moshier's Cephes library, and ``2**n`` put
together from its bits.  A row's softmax over its scores (maximum, exponentials, sum
with :func:`sum_float64`) then costs about 1 ns a class instead of 5
(``benchmarks/results/exp.md`` times the kernel passes with it and with the C library's).

Accuracy: within 1 ulp of the exact value in float32 and 2 ulp in float64 over the
normal range (``tests/test_fast_exp.py``).
Results below the smallest normal number (``x < -87.3`` in float32, ``-708.4`` in
float64) are 0 rather than subnormal; ``-inf`` gives 0, ``inf`` and values past the top of
the range give ``inf``, NaN gives NaN, as ``math.exp`` does.

A float32 argument is computed in float32 and a float64 one in float64: the kernels keep
a float32 block's loops in float32 (see :mod:`dsmlr.kernels.numba_cpu`).
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["fast_exp", "squared_sum_float64", "sum_float64"]


@intrinsic
def _bits_as_float(typingctx, bits):
    """Reinterpret an int32 as float32, or an int64 as float64 (no conversion)."""
    if bits == types.int32:
        sig, llvm_type = types.float32(types.int32), ir.FloatType()
    elif bits == types.int64:
        sig, llvm_type = types.float64(types.int64), ir.DoubleType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llvm_type)

    return sig, codegen


# float32: exp(r) ~ 1 + r + r^2 (p0 r^5 + ... + p5), |r| <= ln(2)/2 (Cephes expf).
_F32 = np.float32
_LOG2E_32 = _F32(1.44269504088896341)
_LN2_HI_32, _LN2_LO_32 = _F32(0.693359375), _F32(-2.12194440e-4)
_P32 = tuple(
    _F32(c)
    for c in (
        1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
        1.6666665459e-1, 5.0000001201e-1,
    )
)  # fmt: skip
# Below: 2**-126 and smaller flush to 0; above: past the largest float32.
_LO_32, _HI_32 = _F32(-87.33654475), _F32(88.72283906)


@njit
def _exp32(x):
    v = x if x > _LO_32 else _LO_32  # NaN takes the bound here, and is restored below
    v = v if v < _HI_32 else _HI_32
    f = np.floor(v * _LOG2E_32 + _F32(0.5))
    r = v - f * _LN2_HI_32 - f * _LN2_LO_32
    # n = 128 (x above 88.03) has no float32 exponent: 2**127, times 2 at the end.
    top = f > _F32(127.0)
    f = _F32(127.0) if top else f
    p = _P32[0] * r + _P32[1]
    p = p * r + _P32[2]
    p = p * r + _P32[3]
    p = p * r + _P32[4]
    p = p * r + _P32[5]
    e = (p * r * r + r + _F32(1.0)) * _bits_as_float(np.int32((np.int32(f) + 127) << 23))
    if top:
        e *= _F32(2.0)
    if x < _LO_32:
        e = _F32(0.0)
    if x >= _HI_32:
        e = _F32(np.inf)
    if x != x:
        e = x
    return e


# float64: exp(r) = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)) (Cephes exp).
_LOG2E_64 = 1.4426950408889634
_LN2_HI_64, _LN2_LO_64 = 6.93145751953125e-1, 1.42860682030941723212e-6
_P64 = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_Q64 = (
    3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
    2.00000000000000000009e0,
)  # fmt: skip
_LO_64, _HI_64 = -708.39641853226410622, 709.78271289338399673


@njit
def _exp64(x):
    v = x if x > _LO_64 else _LO_64
    v = v if v < _HI_64 else _HI_64
    f = np.floor(v * _LOG2E_64 + 0.5)
    r = v - f * _LN2_HI_64 - f * _LN2_LO_64
    top = f > 1023.0  # as in _exp32: 2**1024 is 2**1023 times 2
    f = 1023.0 if top else f
    rr = r * r
    px = r * ((_P64[0] * rr + _P64[1]) * rr + _P64[2])
    q = ((_Q64[0] * rr + _Q64[1]) * rr + _Q64[2]) * rr + _Q64[3]
    e = (1.0 + 2.0 * (px / (q - px))) * _bits_as_float((np.int64(f) + 1023) << 52)
    if top:
        e *= 2.0
    if x < _LO_64:
        e = 0.0
    if x >= _HI_64:
        e = np.inf
    if x != x:
        e = x
    return e


def fast_exp(x: float) -> float:
    """``exp(x)`` in the type of ``x`` (float32 or float64), vectorisable in compiled loops.

    Called from Python it is ``math.exp``; the compiled version is selected by numba.
    """
    return math.exp(x)


@overload(fast_exp)
def _fast_exp_compiled(x):
    if x == types.float32:
        return lambda x: _exp32(x)
    if x == types.float64:
        return lambda x: _exp64(x)
    return None


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def sum_float64(v) -> float:
    """Sum of a 1-D array in float64, in whatever order lets LLVM vectorise it.

    A plain ``total += v[k]`` loop must add in index order, which keeps it scalar; the
    order of a row's few hundred terms changes the sum only in its last bits, and it is
    the same order on every run and rank.
    """
    total = 0.0
    for k in range(v.shape[0]):
        total += v[k]
    return total


@njit(nogil=True, cache=True, fastmath={"reassoc"})
def squared_sum_float64(W) -> float:
    """``||W||^2`` of a 2-D array, squares and sums in float64, vectorised as
    :func:`sum_float64` is.

    2-7x faster than ``np.einsum("ij,ij->", W, W, dtype=np.float64)`` on a float32 block
    (which widens it through a buffer): 3-12 ms against 21-27 ms for 41K x 604 over three
    runs, a scoring stage's penalty of one block (``benchmarks/results/block_sweeps.md``).
    """
    total = 0.0
    for i in range(W.shape[0]):
        row = 0.0
        for k in range(W.shape[1]):
            v = np.float64(W[i, k])
            row += v * v
        total += row
    return total
