"""Reading one rank's part of a LIBSVM file: each rank parses only its byte range.

The file is cut into P near-equal byte ranges; a line belongs to the rank whose range
holds its first byte (bytes track non-zeros closely, so shards are balanced by
non-zeros).  Each rank parses its lines with the same parsers as
:func:`~dsmlr.io.read_svmlight`, keeping raw indices, then the ranks agree with two small
``allgather`` calls on what depends on the whole file: the index base (``"auto"`` is
zero-based if index 0 occurs on any rank), the number of features, the label type and
every rank's row offset.  Concatenating the ranks' shards in rank order gives exactly
what :func:`read_svmlight` gives for the whole file.

Errors never leave a rank waiting: a rank that fails still takes part in both
exchanges, and then every rank raises the same :class:`DataError` (the lowest failing
rank's), with the line number counted from the start of the file.

Compressed files cannot be entered in the middle: every rank decompresses the whole
file and keeps its range of the decompressed bytes.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from dsmlr.errors import DataError
from dsmlr.io.svmlight import _check_options, _open, _Options, _parse_fast, _parse_lines

__all__ = ["Shard", "byte_ranges", "read_svmlight_shard"]


@dataclass(frozen=True, eq=False)
class Shard:
    """One rank's rows of an svmlight file.

    Attributes
    ----------
    X : scipy.sparse.csr_matrix of shape (n_local, n_features)
    y : ndarray of shape (n_local,)
        Labels; ``int64`` when every label of the whole file is integral, else float64.
    zero_based : bool
        The index base, the same on every rank.
    n_features : int
        Columns, the same on every rank.
    n_samples : int
        Rows of the whole file.
    row_offset : int
        Index in the whole file of this rank's first row.
    path : str
    """

    X: sp.csr_matrix
    y: np.ndarray
    zero_based: bool
    n_features: int
    n_samples: int
    row_offset: int
    path: str


def byte_ranges(n_bytes: int, n_ranks: int) -> list[tuple[int, int]]:
    """``n_ranks`` near-equal half-open byte ranges covering ``[0, n_bytes)``."""
    return [(n_bytes * r // n_ranks, n_bytes * (r + 1) // n_ranks) for r in range(n_ranks)]


def _line_start(data: bytes, pos: int) -> int:
    """The first line start at or after ``pos`` (a line belongs to its first byte)."""
    if pos <= 0:
        return 0
    cut = data.find(b"\n", pos - 1)
    return len(data) if cut < 0 else cut + 1


def _my_bytes(path: str, rank: int, size: int) -> tuple[bytes, int, bytes | None]:
    """This rank's whole lines, their offset in the (decompressed) file, and the
    decompressed bytes before them when the file is compressed (else None)."""
    with _open(path) as f:
        if isinstance(f, io.BufferedReader):
            n = os.fstat(f.fileno()).st_size
            a, b = byte_ranges(n, size)[rank]
            starts = []
            for pos in (a, b):
                if pos <= 0 or pos >= n:
                    starts.append(min(max(pos, 0), n))
                    continue
                f.seek(pos - 1)
                f.readline()
                starts.append(f.tell())
            f.seek(starts[0])
            return f.read(max(starts[1] - starts[0], 0)), starts[0], None
        data = f.read()
    a, b = byte_ranges(len(data), size)[rank]
    s, e = _line_start(data, a), _line_start(data, b)
    return data[s : max(e, s)], s, data[:s]


def _lines_before(path: str, offset: int, prefix: bytes | None) -> int:
    if prefix is not None:
        return prefix.count(b"\n")
    count = 0
    with open(path, "rb") as f:
        while offset > 0:
            chunk = f.read(min(offset, 1 << 24))
            if not chunk:
                break
            count += chunk.count(b"\n")
            offset -= len(chunk)
    return count


def _parse(path: str, payload: bytes, opts: _Options):
    """Parse ``payload`` like :func:`read_svmlight` (fast path, Python fallback)."""
    try:
        return _parse_fast(path, opts, io.BytesIO(payload))
    except (DataError, MemoryError):
        raise
    except Exception:
        pass
    return _parse_lines(path, opts, io.BytesIO(payload))


def _agree(comm, problem: str | None) -> None:
    problems = [p for p in comm.allgather(problem) if p]
    if problems:
        raise DataError(str(problems[0]))


def read_svmlight_shard(
    path: str | os.PathLike[str],
    comm,
    *,
    zero_based: bool | str = "auto",
    n_features: int | None = None,
    dtype: npt.DTypeLike = np.float64,
    allow_extra_features: bool = False,
) -> Shard:
    """Read this rank's part of an svmlight file (collective: every rank calls it).

    Parameters are those of :func:`~dsmlr.io.read_svmlight`; ``comm`` is the group
    (:class:`~dsmlr.comm.Communicator`).  Raises the same :class:`DataError` on every
    rank when anything is wrong anywhere in the file.
    """
    opts = _check_options(zero_based, n_features, dtype, allow_extra_features)
    path = os.fsdecode(os.fspath(path))
    raw_opts = _Options(True, None, opts.dtype, False)
    problem, X, y, payload, offset, prefix = None, None, None, b"", 0, None
    try:
        payload, offset, prefix = _my_bytes(path, comm.rank, comm.size)
        if payload.strip():
            data = _parse(path, payload, raw_opts)
            X, y = data.X, data.y
    except DataError as exc:
        if exc.problem != "no data lines":  # a shard of only comments is just empty
            problem = _absolute(exc, path, offset, prefix)
    except OSError as exc:
        problem = str(DataError(f"cannot read: {exc.strerror or exc}", path))
    n_rows = 0 if X is None else X.shape[0]
    has_zero = bool(X is not None and X.nnz and X.indices.min() == 0)
    max_col = int(X.indices.max()) if X is not None and X.nnz else -1
    integral = y is None or y.dtype.kind == "i"
    facts = comm.allgather((problem, n_rows, has_zero, max_col, integral))
    _agree(comm, next((f[0] for f in facts if f[0]), None))

    zb = any(f[2] for f in facts) if zero_based == "auto" else bool(zero_based)
    widest = max(f[3] for f in facts) + (1 if zb else 0)
    n_cols = n_features if n_features is not None else max(widest, 0)
    n_samples = sum(f[1] for f in facts)
    if n_samples == 0:
        raise DataError("no data lines", path)
    row_offset = sum(f[1] for f in facts[: comm.rank])
    all_integral = all(f[4] for f in facts)

    problem = None
    if X is None:
        X = sp.csr_matrix((0, n_cols), dtype=opts.dtype)
        y = np.zeros(0, dtype=np.int64 if all_integral else np.float64)
    else:
        try:
            X = _convert(X, zb, n_cols, opts, path, payload, offset, prefix)
        except DataError as exc:
            problem = str(exc)
        y = y if all_integral else y.astype(np.float64)
    _agree(comm, problem)
    return Shard(X, y, zb, int(n_cols), int(n_samples), int(row_offset), path)


def _absolute(exc: DataError, path: str, offset: int, prefix: bytes | None) -> str:
    """The error's message with its line counted from the start of the file."""
    if exc.line is None:
        return str(exc)
    return str(DataError(exc.problem, path, exc.line + _lines_before(path, offset, prefix)))


def _convert(X, zb: bool, n_cols: int, opts: _Options, path, payload, offset, prefix):
    """Raw indices to columns of the agreed base and width (or a located error)."""
    over = (X.indices >= n_cols + (0 if zb else 1)) if X.nnz else np.zeros(0, bool)
    bad_zero = not zb and X.nnz and X.indices.min() == 0
    if bad_zero or (over.any() and not opts.allow_extra_features):
        # Let the line-by-line parser find and word the first offending line.
        strict = _Options(zb, n_cols if over.any() else None, opts.dtype, False)
        try:
            _parse_lines(path, strict, io.BytesIO(payload))
        except DataError as exc:
            raise DataError(_absolute(exc, path, offset, prefix)) from None
        raise DataError("feature index out of range", path)  # not reached
    indices, data, indptr = X.indices, X.data, X.indptr
    if over.any():
        keep = ~over
        warnings.warn(
            f"{path}: dropped {int(over.sum())} value(s) with feature index beyond "
            f"n_features={n_cols}",
            stacklevel=3,
        )
        indptr = np.concatenate(([0], np.cumsum(keep)))[indptr]
        indices, data = indices[keep], data[keep]
    if not zb:
        indices = indices - 1
    return sp.csr_matrix((data, indices, indptr), shape=(X.shape[0], n_cols))
