"""Reading one rank's part of a LIBSVM file: each rank parses only its byte range.

The file is cut into P near-equal byte ranges (:func:`byte_ranges`) and a line belongs to
the rank whose range holds the line's first byte, so the ranks' rows are contiguous, in
file order, rank 0 first; bytes track non-zeros closely, so shards are balanced by
non-zeros.  A rank reads only its lines' bytes (plus the rest of the line its range
starts in, which it discards) and hands them to the same parsers as
:func:`~dsmlr.io.read_svmlight`, the compiled fast path and the pure-Python fallback,
keeping the raw feature indices.  What depends on the whole file is then settled with
one small ``allgather``: the index base (``"auto"`` is zero-based if index 0 occurs on
any rank), the number of features, the label type and every rank's row offset.
Concatenating the ranks' shards in rank order gives exactly what :func:`read_svmlight`
gives for the whole file.

Errors never leave a rank waiting in a collective: a rank that fails still takes part
in the ``allgather``, and then every rank raises the same :class:`DataError`, the first
problem of the lowest rank that has one, with its line counted from the start of the
file.  Because the index base is not known before the exchange, each rank reports the
first problem it would have under either base, and the agreed base picks one.

Compressed files (gzip, bzip2, xz) cannot be entered in the middle: every rank
decompresses the whole file once to learn its decompressed length, and again up to the
end of its range, so reading them costs every rank about two full decompressions.
Decompress large files beforehand.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from dsmlr.errors import DataError, on_all_ranks
from dsmlr.io.svmlight import (
    _NO_DATA,
    _READ_ERRORS,
    Progress,
    _check_options,
    _first_heavy_row,
    _has_zero_index,
    _open,
    _Options,
    _parse,
    _parse_lines,
)

if TYPE_CHECKING:
    from dsmlr.comm.base import Communicator

__all__ = ["Shard", "byte_ranges", "global_classes", "read_svmlight_shard"]

# Reads are chunked so that neither skipping to a range nor a very long line needs the
# skipped bytes in memory at once.
_CHUNK = 1 << 20


@dataclass(frozen=True, eq=False)
class Shard:
    """One rank's rows of an svmlight file.

    Attributes
    ----------
    X : scipy.sparse.csr_matrix of shape (n_local, n_features)
        Canonical CSR of the requested dtype; ``n_local`` may be 0.
    y : ndarray of shape (n_local,)
        Labels; ``int64`` when every label of the whole file is integral, else
        ``float64`` (the same on every rank).
    zero_based : bool or None
        The index base, the same on every rank (None for an ``.npz`` file, see
        :func:`~dsmlr.io.read_dataset_shard`).
    n_features : int
        Columns, the same on every rank.
    n_samples : int
        Rows of the whole file.
    row_offset : int
        Index in the whole file of this rank's first row.
    path : str
        The file that was read.
    """

    X: sp.csr_matrix
    y: np.ndarray
    zero_based: bool | None
    n_features: int
    n_samples: int
    row_offset: int
    path: str


def byte_ranges(n_bytes: int, n_ranks: int) -> list[tuple[int, int]]:
    """Near-equal half-open byte ranges covering ``[0, n_bytes)``.

    Parameters
    ----------
    n_bytes : int
        Length of the data, ``>= 0``.
    n_ranks : int
        Number of ranges, ``>= 1``.

    Returns
    -------
    list of (int, int)
        ``n_ranks`` contiguous ranges ``(start, stop)`` in order; their lengths differ by
        at most one byte (some are empty when ``n_bytes < n_ranks``).
    """
    if n_bytes < 0 or n_ranks < 1:
        raise ValueError(f"need n_bytes >= 0 and n_ranks >= 1, not {n_bytes}, {n_ranks}")
    return [(n_bytes * r // n_ranks, n_bytes * (r + 1) // n_ranks) for r in range(n_ranks)]


def global_classes(y_local: np.ndarray, comm: Communicator) -> np.ndarray:
    """The sorted union of the labels held by all ranks (collective: one ``allgather``).

    Parameters
    ----------
    y_local : ndarray of shape (n_local,)
        This rank's labels (may be empty).
    comm : Communicator
        The group.

    Returns
    -------
    ndarray
        The distinct labels of all ranks, sorted; the same on every rank.
    """
    parts = comm.allgather(np.unique(np.asarray(y_local)))
    return np.unique(np.concatenate([np.asarray(p) for p in parts]))


class _Facts(NamedTuple):
    """What one rank tells the others: everything the agreement needs, nothing more.

    A problem is ``(message, path, line)``; ``line`` is absolute (or None).
    """

    failure: tuple[str, str | None, int | None] | None  # wrong whichever the base
    crash: str | None  # not a data problem (out of memory, a bug); raised as such
    if_one_based: tuple[str, str | None, int | None] | None  # first problem if one-based
    if_zero_based: tuple[str, str | None, int | None] | None  # first problem if zero-based
    n_rows: int
    has_zero: bool  # index 0 occurs in this shard
    max_index: int  # largest raw index, -1 if none
    integral: bool  # every label of this shard is integral
    dropped: tuple[int, int]  # values beyond n_features if one-based, if zero-based


# A rank with no rows (and no problem); failing ranks send it with `failure` or `crash` set.
_NOTHING = _Facts(None, None, None, None, 0, False, -1, True, (0, 0))


def read_svmlight_shard(
    path: str | os.PathLike[str],
    comm: Communicator,
    *,
    zero_based: bool | str = "auto",
    n_features: int | None = None,
    dtype: npt.DTypeLike = np.float64,
    allow_extra_features: bool = False,
    check_norms: bool = False,
    progress: Progress | None = None,
    class_labels: bool = False,
) -> Shard:
    """Read this rank's part of an svmlight file (collective: every rank calls it).

    Rank ``r`` takes the lines whose first byte lies in ``byte_ranges(size, P)[r]`` and
    the ranks make exactly one ``comm.allgather`` call to agree on the rest (see the
    module docstring).  Compressed files cost every rank a full decompression or two.

    Parameters
    ----------
    path : str or path-like
        The file to read, plain or compressed (recognised by its magic bytes); the same
        file on every rank.
    comm : Communicator
        The group; ``comm.rank`` picks the byte range.
    zero_based : bool or "auto", default "auto"
        Whether feature indices start at 0; ``"auto"`` decides zero-based if index 0
        occurs anywhere in the file (on any rank).
    n_features : int, optional
        Number of columns; an index beyond it is an error.  By default, the largest
        column over all ranks plus one.
    dtype : floating dtype, default float64
        dtype of ``X``.
    allow_extra_features : bool, default False
        With ``n_features``, drop values beyond it instead of failing; rank 0 warns
        once with the number dropped in the whole file.
    check_norms : bool, default False
        Also refuse a row whose squared norm overflows ``dtype`` (see
        :func:`~dsmlr.io.read_svmlight`).
    progress : callable, optional
        ``progress(bytes_parsed, total_bytes)`` as this rank parses its lines.
    class_labels : bool, default False
        Refuse a label that is not a whole number (see :func:`~dsmlr.io.read_svmlight`).

    Returns
    -------
    Shard
        This rank's rows; in rank order the shards make up what :func:`read_svmlight`
        returns for the whole file.  A rank may get zero rows.

    Raises
    ------
    DataError
        On every rank alike (marked :func:`~dsmlr.errors.on_all_ranks`), for anything
        wrong anywhere in the file: the lowest failing rank's first problem, naming the
        file and the line counted from the file's start.  "no data lines" if no rank
        has a row.
    ValueError
        For invalid options (raised before any communication; the options are expected
        to be the same on every rank).
    """
    opts = _check_options(
        zero_based, n_features, dtype, allow_extra_features, check_norms, progress, class_labels
    )
    path = os.fsdecode(os.fspath(path))
    crash: BaseException | None = None
    try:
        facts, X, y = _read_local(path, comm.rank, comm.size, opts)
    except DataError as exc:  # e.g. the file went unreadable while counting lines
        facts, X, y = _NOTHING._replace(failure=(exc.problem, exc.path, exc.line)), None, None
    except Exception as exc:
        # Not a data problem, but the other ranks must still hear of it, or they would
        # wait forever in the allgather below.
        crash = exc
        facts = _NOTHING._replace(crash=repr(exc))
        X = y = None
    everyone: list[_Facts] = [_Facts(*f) for f in comm.allgather(facts)]

    zb = any(f.has_zero for f in everyone) if zero_based == "auto" else bool(zero_based)
    for r, f in enumerate(everyone):
        if f.crash is not None:
            if crash is not None:
                raise crash
            raise RuntimeError(f"{path}: rank {r} failed while reading its part: {f.crash}")
        problem = f.failure or (f.if_zero_based if zb else f.if_one_based)
        if problem is not None:
            raise on_all_ranks(DataError(*problem))
    n_samples = sum(f.n_rows for f in everyone)
    if n_samples == 0:
        raise on_all_ranks(DataError(_NO_DATA, path))
    if n_features is not None:
        n_cols = int(n_features)
    else:
        # The largest raw index is the last column when one-based, one short when zero-based.
        n_cols = max(max(f.max_index for f in everyone) + (1 if zb else 0), 0)
    integral = all(f.integral for f in everyone)
    row_offset = sum(f.n_rows for f in everyone[: comm.rank])
    dropped = sum(f.dropped[zb] for f in everyone)
    if dropped and comm.rank == 0:
        # Once for the whole file, as read_svmlight does, not once per rank.
        warnings.warn(
            f"{path}: dropped {dropped} value(s) with feature index beyond n_features={n_cols}",
            stacklevel=2,
        )

    label_dtype = np.int64 if integral else np.float64
    if X is None:
        X = sp.csr_matrix((0, n_cols), dtype=opts.dtype)
        y = np.zeros(0, dtype=label_dtype)
    else:
        X = _columns(X, zb, n_cols, opts.dtype)
        # int64 labels came from exactly integral float64 ones, so this is lossless.
        y = y.astype(label_dtype, copy=False)
    return Shard(X, y, zb, n_cols, int(n_samples), int(row_offset), path)


def _read_local(
    path: str, rank: int, size: int, opts: _Options
) -> tuple[_Facts, sp.csr_matrix | None, np.ndarray | None]:
    """Read and parse this rank's lines alone; return its facts and raw-index rows."""
    try:
        payload, start = _my_bytes(path, rank, size)
    except _BrokenStream as broken:
        # Every rank decompresses the whole file to find its range, so every rank sees
        # the break; read_svmlight would instead stop at the first bad line before it
        # (and number the break by its own buffering).  What it says is what to report.
        exc = broken
        try:
            _parse_lines(path, opts)
        except DataError as first:
            exc = first
        return _NOTHING._replace(failure=(exc.problem, exc.path, exc.line)), None, None
    except DataError as exc:
        return _NOTHING._replace(failure=(exc.problem, exc.path, exc.line)), None, None

    # This rank's line numbers are only known after counting the lines before `start`,
    # which is a read of everything before it, so that is done only to report an error.
    # Meanwhile lines are numbered from 2 after the first byte, which also keeps the
    # parser from taking a byte-order mark there (only line 1 may start with one).
    first_line = 1 if start == 0 else 2
    lines_before: list[int] = []

    def where(exc: DataError) -> tuple[str, str | None, int | None]:
        if exc.line is None or start == 0:
            return exc.problem, exc.path, exc.line
        if not lines_before:
            lines_before.append(_count_lines(path, start))
        return exc.problem, exc.path, exc.line - first_line + 1 + lines_before[0]

    def locate(strict: _Options, fallback: DataError | None = None):
        """The first problem in this shard under ``strict`` (the Python parser words it)."""
        try:
            _parse_lines(path, strict, io.BytesIO(payload), first_line)
        except DataError as exc:
            return where(exc)
        # Not reached: checks only ask for this when the Python parser will object.
        return where(fallback or DataError("inconsistent parse of this part", path))

    n = opts.n_features
    # Raw indices (zero_based=True, no n_features) depend on nothing on other ranks.
    # With dropped extra features the value and row-norm checks must follow the dropping,
    # so parse in float64 without them and check after.
    dropping = opts.allow_extra_features and n is not None
    raw_dtype = np.dtype(np.float64) if dropping else opts.dtype
    raw = _Options(True, None, raw_dtype, False, opts.check_norms and not dropping, opts.progress,
                   opts.class_labels)  # fmt: skip
    try:
        data = _parse(path, raw, lambda: io.BytesIO(payload), first_line) if payload else None
    except DataError as exc:
        if exc.problem == _NO_DATA and exc.line is None:  # only comments and blank lines
            data = None
        elif opts.zero_based == "auto" and n is not None:
            # Which line is first wrong may depend on the base (index n_features is out
            # of range only if zero-based), and index 0 may be on another rank: report
            # the first problem under either base, as the agreement expects.
            has_zero = _has_zero_index(io.BytesIO(payload))
            as_zero_based = locate(opts._replace(zero_based=True), exc)
            as_one_based = None if has_zero else locate(opts._replace(zero_based=False), exc)
            facts = _NOTHING._replace(
                if_zero_based=as_zero_based, if_one_based=as_one_based, has_zero=has_zero
            )
            return facts, None, None
        else:
            # Re-parse with the caller's options, so that the first problem reported is
            # the first line the whole-file reader would object to.
            return _NOTHING._replace(failure=locate(opts, exc)), None, None
    if data is None:
        return _NOTHING, None, None

    X, y = data.X, data.y
    return _facts_of(X, y, opts, dropping, locate), X, y


def _facts_of(
    X: sp.csr_matrix, y: np.ndarray, opts: _Options, dropping: bool, locate: Callable
) -> _Facts:
    """What this rank's parsed rows (raw indices) say to the agreement over the ranks:
    the first problem were the file one- or zero-based, the values each base drops, and
    the index range.  ``locate(options)`` words the first problem under ``options``;
    ``dropping``: the extra features are dropped (values parsed in float64)."""
    n, idx = opts.n_features, X.indices
    has_zero = bool(X.nnz) and int(idx.min()) == 0
    bad_value = None
    heavy_rows = False  # some row's norm overflows before dropping (only checked if dropping)
    if dropping:  # (the value check is always made, the norm check only if asked for)
        with np.errstate(over="ignore", invalid="ignore"):
            cast = X.data.astype(opts.dtype, copy=False)
        bad_value = ~np.isfinite(cast)
        # Dropping values only shrinks norms: without a heavy row now, no base has one.
        heavy_rows = opts.check_norms and _first_heavy_row(cast, X.indptr, opts.dtype) is not None

    # The problem (if any) and the number of values dropped, were the file to be decided
    # one-based (False) or zero-based (True).  "auto" with index 0 here can only be the
    # latter, so the other stays None.
    problems: dict[bool, tuple[str, str | None, int | None] | None] = {False: None, True: None}
    dropped = {False: 0, True: 0}
    if opts.zero_based == "auto":
        bases = (True,) if has_zero else (True, False)
    else:
        bases = (bool(opts.zero_based),)
    for base in bases:
        wrong = not base and has_zero
        if n is not None:
            # One-based raw index n is column n - 1, still inside; zero-based it is not.
            over = idx >= (n if base else n + 1)
            if opts.allow_extra_features:
                dropped[base] = int(np.count_nonzero(over))
                wrong = wrong or bool(bad_value is not None and (bad_value & ~over).any())
                if heavy_rows and not wrong:
                    kept = np.where(over, 0.0, cast)
                    wrong = _first_heavy_row(kept, X.indptr, opts.dtype) is not None
            else:
                wrong = wrong or bool(over.any())
        if wrong:
            problems[base] = locate(opts._replace(zero_based=base))
    facts = _Facts(
        failure=None,
        crash=None,
        if_one_based=problems[False],
        if_zero_based=problems[True],
        n_rows=int(X.shape[0]),
        has_zero=has_zero,
        max_index=int(idx.max()) if X.nnz else -1,
        integral=y.dtype.kind == "i",
        dropped=(dropped[False], dropped[True]),
    )
    return facts


def _columns(X: sp.csr_matrix, zb: bool, n_cols: int, dtype: np.dtype) -> sp.csr_matrix:
    """Raw-index rows as columns of the agreed base and width (extra ones dropped)."""
    cols = X.indices if zb else X.indices - 1
    data, indptr = X.data, X.indptr
    over = cols >= n_cols
    if over.any():  # only with allow_extra_features: otherwise this was an error
        keep = ~over
        indptr = np.concatenate(([0], np.cumsum(keep)))[indptr]
        cols, data = cols[keep], data[keep]
    out = sp.csr_matrix((data.astype(dtype, copy=False), cols, indptr), shape=(X.shape[0], n_cols))
    if not out.has_sorted_indices:  # sets the flag, as read_svmlight's result has it
        out.sort_indices()
    return out


# ---------------------------------------------------------------- byte ranges


def _my_bytes(path: str, rank: int, size: int) -> tuple[bytes, int]:
    """This rank's whole lines and the (decompressed) offset of the first one."""
    f, n_bytes, compressed = _open_sized(path)
    with f:
        a, b = byte_ranges(n_bytes, size)[rank]
        try:
            return _read_lines_from(f, a, b, compressed)
        except _READ_ERRORS as exc:
            raise _read_error(exc, path, compressed) from None


def _open_sized(path: str) -> tuple[IO[bytes], int, bool]:
    """The file, opened at its start, its (decompressed) length, and if it is compressed."""
    f = _open(path)
    if isinstance(f, io.BufferedReader):
        try:
            return f, os.fstat(f.fileno()).st_size, False
        except OSError as exc:
            f.close()
            raise _read_error(exc, path, False) from None
    # A decompressed length is only known by decompressing: a full counting pass.
    with f:
        n_bytes, _ = _scan(f, None, path, True)
    return _open(path), n_bytes, True


def _read_lines_from(f: IO[bytes], a: int, b: int, compressed: bool) -> tuple[bytes, int]:
    """The lines whose first byte lies in ``[a, b)`` and where they start; ``f`` is at 0."""
    start = 0
    if a > 0:
        # The line holding byte a - 1 belongs to a lower rank; skip through its end (if
        # that byte is itself the newline, nothing more is skipped).
        if compressed:
            _skip(f, a - 1)  # forward only: seeking back would decompress again
        else:
            f.seek(a - 1)
        start = a - 1 + _skip_line(f)
    if start >= b:
        return b"", start  # the range lies inside a line that began before it
    parts = [_read_exact(f, b - start)]
    if len(parts[0]) == b - start and not parts[0].endswith(b"\n"):
        # The last line started before b: it is ours to the end, past b.
        while True:
            piece = f.readline(_CHUNK)
            parts.append(piece)
            if not piece or piece.endswith(b"\n"):
                break
    return b"".join(parts), start


def _skip(f: IO[bytes], n: int) -> None:
    while n > 0:
        chunk = f.read(min(n, _CHUNK))
        if not chunk:
            return
        n -= len(chunk)


def _skip_line(f: IO[bytes]) -> int:
    """Read through the next newline (or to the end); the number of bytes read."""
    count = 0
    while True:
        piece = f.readline(_CHUNK)
        count += len(piece)
        if not piece or piece.endswith(b"\n"):
            return count


def _read_exact(f: IO[bytes], n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def _scan(f: IO[bytes], limit: int | None, path: str, compressed: bool) -> tuple[int, int]:
    """Read up to ``limit`` bytes (all if None); return how many and the newlines in them."""
    n_bytes = n_lines = 0
    try:
        while limit is None or n_bytes < limit:
            chunk = f.read(_CHUNK if limit is None else min(_CHUNK, limit - n_bytes))
            if not chunk:
                break
            n_bytes += len(chunk)
            n_lines += chunk.count(b"\n")
    except _READ_ERRORS as exc:
        raise _read_error(exc, path, compressed, n_lines + 1) from None
    return n_bytes, n_lines


def _count_lines(path: str, offset: int) -> int:
    """The number of lines before the (decompressed) ``offset``, a line start."""
    with _open(path) as f:
        return _scan(f, offset, path, not isinstance(f, io.BufferedReader))[1]


class _BrokenStream(DataError):
    """A compressed file that cannot be decompressed to its end (corrupt or truncated)."""


def _read_error(
    exc: BaseException, path: str, compressed: bool, line: int | None = None
) -> DataError:
    if compressed:
        return _BrokenStream(f"cannot read (corrupt or truncated?): {exc}", path, line)
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
    return DataError(f"cannot read file: {text}", path)
