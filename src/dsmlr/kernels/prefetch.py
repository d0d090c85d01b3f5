"""Software prefetch for the compiled kernels: start loading a block's row early.

A sparse row's steps read one row of the class block per non-zero, at a random feature.
With narrow blocks (the K / B classes a rank holds when the model is split over many
ranks) such a row is a few cache lines, too short for the hardware prefetcher to get
going, so each non-zero waits for memory.  The sweeps ask for the row of a non-zero a
few ahead while they work on the current one: the scoring and gradient passes
:func:`prefetch_distance` ahead, more for short rows (less work per non-zero to hide the
wait behind), the one-row update sweeps :data:`NEAR` ahead.

A prefetch is a hint: it never faults and never changes a result, so asking for lines
past the end of an array is harmless.  ``benchmarks/results/prefetch.md`` has what the
hints save.
"""

from __future__ import annotations

from llvmlite import binding as _llvm
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

__all__ = ["FAR", "FAR_ROW_BYTES", "MAX_LINES", "NEAR", "prefetch_distance", "prefetch_row"]

#: Non-zeros ahead a scoring or gradient pass asks for short rows, and the distance for
#: long ones and for the update sweeps.
FAR, NEAR = 8, 2

#: Rows (the bytes a pass reads or writes per non-zero in the array it prefetches) up to
#: this long count as short: 13 cache lines.
FAR_ROW_BYTES = 832

#: Cache lines asked for per row (1 KB; a longer row's rest is the hardware's job).
MAX_LINES = 16

_LINE_BYTES = 64

# The intrinsic is overloaded on the pointer type: ``p0`` with opaque pointers (LLVM 15
# and later), ``p0i8`` before; LLVM also upgrades a mismatched name when it parses.
_NAME = "llvm.prefetch.p0" if _llvm.llvm_version_info[0] >= 15 else "llvm.prefetch.p0i8"


@intrinsic
def _prefetch_line(typingctx, array, row, line):
    """Prefetch cache line ``line`` of row ``row`` of a C-contiguous 2-D array (for
    writing, kept in all cache levels)."""
    sig = types.void(array, row, line)

    def codegen(context, builder, signature, args):
        array_type, row_type, line_type = signature.args
        arr = context.make_array(array_type)(context, builder, args[0])
        i = context.cast(builder, args[1], row_type, types.intp)
        first = cgutils.get_item_pointer(
            context, builder, array_type, arr, [i, context.get_constant(types.intp, 0)]
        )
        byte_ptr = ir.IntType(8).as_pointer()
        offset = builder.mul(
            context.cast(builder, args[2], line_type, types.intp),
            context.get_constant(types.intp, _LINE_BYTES),
        )
        address = builder.gep(builder.bitcast(first, byte_ptr), [offset])
        i32 = ir.IntType(32)
        fn_type = ir.FunctionType(ir.VoidType(), [byte_ptr, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fn_type, _NAME)
        # rw = 1 (the sweeps write the rows they read), locality = 3, data cache = 1.
        builder.call(fn, [address, i32(1), i32(3), i32(1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True, inline="always")
def prefetch_row(A, i):
    """Ask for the first lines (at most :data:`MAX_LINES`) of row ``i`` of ``A``."""
    n_lines = (A.shape[1] * A.itemsize + _LINE_BYTES - 1) // _LINE_BYTES
    for line in range(min(n_lines, MAX_LINES)):
        _prefetch_line(A, i, line)


@njit(inline="always", cache=True)
def prefetch_distance(row_bytes):
    """How many non-zeros ahead a scoring or gradient pass asks for rows of ``row_bytes``.

    Short rows hold little work per non-zero to hide a memory wait behind, so those
    passes ask :data:`FAR` ahead for rows of at most :data:`FAR_ROW_BYTES`; longer rows
    keep :data:`NEAR`, since asking further ahead pushes out the rows in use
    (``benchmarks/results/prefetch_distance*.md``).  The update sweeps keep
    :data:`NEAR` at every width: further ahead makes no difference there.
    """
    return FAR if row_bytes <= FAR_ROW_BYTES else NEAR
