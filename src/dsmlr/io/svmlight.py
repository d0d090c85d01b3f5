"""Reading LIBSVM / svmlight text files (writing them: :mod:`dsmlr.io.svmlight_write`).

Each data line is ``label idx:val idx:val ... [# comment]``.  Reading goes through
scikit-learn's compiled loader first because it is an order of magnitude faster than
Python on files of millions of lines; scikit-learn is stricter in some places (it
rejects unsorted indices) and laxer in others (it accepts ``nan``, and underscores in
numbers), so every result is post-checked (files with underscores in their data are not
given to it), and whenever scikit-learn raises or a post-check fails the file is
re-read by the pure-Python parser here, which either succeeds or raises a
:class:`~dsmlr.errors.DataError` naming the first bad line.  Both paths end in the same
finishing step, so they give identical results on valid input.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import os
import warnings
import zlib
from array import array
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, NamedTuple

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from dsmlr.errors import DataError
from dsmlr.io.svmlight_messages import (
    _MAX_INDEX,
    _TEXT_BYTES,
    _heavy_problem,
    _label_problem,
    _non_finite,
    _not_text,
    _q,
    _range_problem,
    _token_problem,
    _too_large,
)

__all__ = ["SvmlightData", "read_svmlight"]

# Detected by content, not by file name, because data files are often renamed.
_OPENERS = {b"\x1f\x8b": gzip.open, b"BZh": bz2.open, b"\xfd7zXZ\x00": lzma.open}
_READ_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError)
_BOM = b"\xef\xbb\xbf"
_NO_DATA = "no data lines"


#: ``progress(bytes_parsed, total_bytes or None)``, called as a file is parsed.
Progress = Callable[[int, "int | None"], None]


@dataclass(frozen=True, eq=False)
class SvmlightData:
    """The contents of an svmlight file.

    Attributes
    ----------
    X : scipy.sparse.csr_matrix of shape (n_samples, n_features)
        Canonical CSR (sorted indices, no duplicates) of the requested dtype.
    y : ndarray of shape (n_samples,)
        ``int64`` if every label is integral, else ``float64``.
    zero_based : bool
        The index convention the file was read with.
    path : str
        The file that was read.
    """

    X: sp.csr_matrix
    y: np.ndarray
    zero_based: bool
    path: str


class _NeedsLineNumber(Exception):
    """A post-check on the fast path failed; the Python parser will locate the line."""


def read_svmlight(
    path: str | os.PathLike[str],
    *,
    zero_based: bool | str = "auto",
    n_features: int | None = None,
    dtype: npt.DTypeLike = np.float64,
    allow_extra_features: bool = False,
    check_norms: bool = False,
    progress: Progress | None = None,
    class_labels: bool = False,
) -> SvmlightData:
    """Read an svmlight / LIBSVM file (plain, gzip, bzip2 or xz compressed).

    Parameters
    ----------
    path : str or path-like
        The file to read.  Compression is recognised by its magic bytes.
    zero_based : bool or "auto", default "auto"
        Whether feature indices start at 0.  ``"auto"`` reads the file as one-based
        unless some index 0 occurs.  A zero-based file whose column 0 is never
        non-zero is indistinguishable from a one-based one, so pass ``True`` for it.
    n_features : int, optional
        Number of columns of ``X``; usually the training data's feature count when
        reading a test file.  An index beyond it is an error.
    dtype : floating dtype, default float64
        dtype of ``X``.
    allow_extra_features : bool, default False
        With ``n_features``, drop (with a warning) entries beyond it instead of failing.
    check_norms : bool, default False
        Also refuse a row whose squared norm overflows ``dtype`` (values around 1e154 in
        float64, 1e19 in float32): no model can be trained on it or score it.  Off, any
        finite values are read as they are; :func:`~dsmlr.io.load_dataset` turns it on.
    progress : callable, optional
        Called as ``progress(bytes_parsed, total_bytes)`` as parsing goes (every MiB);
        ``total_bytes`` is None where it is unknown (a compressed file).
    class_labels : bool, default False
        Refuse a label that is not a whole number (at most 2**53 in magnitude), naming its
        line: class labels are integers, and a classifier given ``1.5`` could only fail
        later without saying where.  Off, labels are any finite numbers.

    Returns
    -------
    SvmlightData

    Raises
    ------
    DataError
        For anything wrong with the file, naming the file and the 1-based line.
    """
    opts = _check_options(
        zero_based, n_features, dtype, allow_extra_features, check_norms, progress, class_labels
    )
    return _parse(os.fsdecode(os.fspath(path)), opts)


def _parse(
    path: str,
    opts: _Options,
    reopen: Callable[[], IO[bytes]] | None = None,
    first_line: int = 1,
) -> SvmlightData:
    """The fast path, falling back to the Python parser wherever it fails.

    ``reopen`` gives a fresh stream of the bytes to parse each time it is called (by
    default the file at ``path`` is opened); ``first_line`` is the number of the stream's
    first line in the file (see :func:`_parse_lines`).  The sharded reader parses each
    rank's bytes through here, so a shard is read exactly as the whole file would be.
    """
    try:
        return _parse_fast(path, opts, None if reopen is None else reopen())
    except (DataError, MemoryError):
        raise
    except Exception:
        # Unsorted indices are legal here and other failures need a line number.
        pass
    return _parse_lines(path, opts, None if reopen is None else reopen(), first_line)


class _Options(NamedTuple):
    zero_based: bool | str
    n_features: int | None
    dtype: np.dtype
    allow_extra_features: bool
    check_norms: bool
    progress: Progress | None = None
    class_labels: bool = False


def _check_options(
    zero_based,
    n_features,
    dtype,
    allow_extra_features,
    check_norms: bool = False,
    progress: Progress | None = None,
    class_labels: bool = False,
) -> _Options:
    if zero_based not in (True, False, "auto"):
        raise ValueError(f"zero_based must be True, False or 'auto', not {zero_based!r}")
    if n_features is not None and (int(n_features) != n_features or n_features < 1):
        raise ValueError(f"n_features must be a positive integer, not {n_features!r}")
    dt = np.dtype(dtype)
    if dt.kind != "f":
        raise ValueError(f"dtype must be a floating-point type, not {dt}")
    return _Options(
        zero_based,
        n_features,
        dt,
        bool(allow_extra_features),
        bool(check_norms),
        progress,
        bool(class_labels),
    )


def _open(path: str) -> IO[bytes]:
    if os.path.isdir(path):
        raise DataError("is a directory, not a data file", path)
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError("no such file", path) from None
    except OSError as exc:
        raise DataError(f"cannot open file: {exc.strerror or exc}", path) from None
    try:
        head = f.read(8)
    except OSError as exc:
        f.close()
        raise DataError(f"cannot read file: {exc.strerror or exc}", path) from None
    for magic, opener in _OPENERS.items():
        if head.startswith(magic):
            f.close()
            return opener(path, "rb")
    f.seek(0)
    return f


def _parse_fast(path: str, opts: _Options, stream: IO[bytes] | None = None) -> SvmlightData:
    with _open(path) if stream is None else stream as f:
        # zero_based=True makes scikit-learn keep the raw indices, so the convention
        # is decided by our rule, not by its slightly different "auto".
        # Imported here: scikit-learn's import costs seconds the CLI's --help should not pay.
        from sklearn.datasets import load_svmlight_file

        X, y = load_svmlight_file(
            io.BufferedReader(_UnderscoreGuard(f, opts.progress), _GUARD_CHUNK),
            zero_based=True,
            dtype=np.float32 if opts.dtype == np.float32 else np.float64,
        )
    return _finish(path, y, X.data, X.indices.astype(np.int64), X.indptr, None, opts)


_GUARD_CHUNK = 1 << 20


class _UnderscoreGuard(io.RawIOBase):
    """The bytes of ``raw``, unless an underscore occurs outside a comment.

    Python reads ``1_0`` as 10, and scikit-learn's compiled loader even reads ``1e-_1``
    as 0.1; LIBSVM's own reader (C ``strtod``) refuses both.  Files where an underscore
    occurs in the data (not in a comment) are left to the Python parser, which refuses
    them with the line.  The check is a C-speed search of each chunk, so the fast path
    keeps its speed; a lone ``_`` only costs a look back to the start of its line.
    """

    def __init__(self, raw: IO[bytes], progress: Progress | None = None) -> None:
        self._raw = raw
        self._in_comment = False  # the line the previous chunk ended in has a '#'
        self._progress = progress
        self._done = 0
        self._total = _stream_size(raw) if progress is not None else None

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._raw.read(len(buffer))
        n = len(chunk)
        buffer[:n] = chunk
        pos = chunk.find(b"_")
        while pos >= 0:
            start = chunk.rfind(b"\n", 0, pos) + 1
            if not (b"#" in chunk[start:pos] or (start == 0 and self._in_comment)):
                raise _NeedsLineNumber("'_' in the data")
            pos = chunk.find(b"_", pos + 1)
        last = chunk.rfind(b"\n")
        self._in_comment = b"#" in chunk[last + 1 :] or (last < 0 and self._in_comment)
        if self._progress is not None:
            self._done += n
            self._progress(self._done, self._total)
        return n


def _stream_size(f: IO[bytes]) -> int | None:
    """The bytes ``f`` holds from its position on: known for a file or an in-memory
    stream, not for a decompressing one."""
    if isinstance(f, io.BytesIO):
        return len(f.getbuffer()) - f.tell()
    if isinstance(f, io.BufferedReader):
        try:
            return os.fstat(f.fileno()).st_size - f.tell()
        except OSError:
            return None
    return None


def _parse_python(
    path: str | os.PathLike[str],
    *,
    zero_based: bool | str = "auto",
    n_features: int | None = None,
    dtype: npt.DTypeLike = np.float64,
    allow_extra_features: bool = False,
    check_norms: bool = False,
) -> SvmlightData:
    """The pure-Python reader; same contract as :func:`read_svmlight`."""
    opts = _check_options(zero_based, n_features, dtype, allow_extra_features, check_norms)
    return _parse_lines(os.fsdecode(os.fspath(path)), opts)


def _parse_lines(
    path: str, opts: _Options, stream: IO[bytes] | None = None, first_line: int = 1
) -> SvmlightData:
    """Parse line by line, raising a DataError that names the first bad line.

    Every check is made as the line is read, so the error is always about the first
    line that is wrong in any way (the compiled path's checks, made afterwards on the
    whole file, could only name the first line of each kind); the per-rank reader relies
    on this to report the same line as the whole-file reader.

    Lines are numbered from ``first_line``, the number in the file of the stream's first
    line.  Only line 1 of a file may start with a byte-order mark, so a caller parsing a
    later part of a file whose line number it does not know yet passes any number above 1
    and shifts the line of an error itself.
    """
    with _open(path) if stream is None else stream as f:
        if opts.zero_based == "auto" and opts.n_features is not None:
            # Whether index n_features is in range (or dropped) depends on the base, which
            # "auto" only knows at the end: find it first (an error path, or a test file
            # read without the training file's base: worth a second pass).
            try:
                opts = opts._replace(zero_based=_has_zero_index(f))
            except _READ_ERRORS:
                pass  # the parse below reports the break, or a bad line before it
            f.seek(0)
        return _parse_stream(path, opts, f, first_line)


def _parse_stream(path: str, opts: _Options, f: IO[bytes], first_line: int) -> SvmlightData:
    """The parse itself, from ``f`` (see :func:`_parse_lines`)."""
    zero_based, n_features, dtype = opts.zero_based, opts.n_features, opts.dtype
    labels, values, indices = array("d"), array("d"), array("q")
    indptr, row_lines = array("q", [0]), array("q")
    lo = 1 if zero_based is False else 0
    # Indices above `keep` are dropped (with allow_extra_features) or out of range.  Left
    # "auto" (see _parse_lines), index n_features is kept: _finish re-checks it.
    keep = _MAX_INDEX if n_features is None else n_features - (zero_based is True)
    hi = _MAX_INDEX if n_features is None or opts.allow_extra_features else keep
    # Checks the compiled path leaves to _finish, made here per token and per line only
    # when they can fail: a value beyond a narrower dtype, a row norm beyond dtype.
    narrow = _overflow_threshold(dtype)
    limit = float(np.finfo(dtype).max) if opts.check_norms else math.inf
    checking = narrow is not None or opts.check_norms
    lineno = first_line - 1
    try:
        for lineno, line in enumerate(f, first_line):
            if lineno == 1 and line.startswith(_BOM):
                line = line[3:]
            cut = line.find(b"#")
            if cut >= 0:
                line = line[:cut]
            parts = line.split()
            if not parts:
                continue
            if b"_" in line:  # float() and int() take "1_0" as 10; LIBSVM does not
                _refuse_underscore(parts, line, path, lineno)
            try:
                label = float(parts[0])
            except ValueError:
                raise DataError(_label_problem(parts[0], line, lineno), path, lineno) from None
            if label - label != 0.0:
                raise DataError(_non_finite("label", parts[0]), path, lineno)
            if opts.class_labels and not _is_class(label):
                raise DataError(_not_a_class(parts[0].decode(errors="replace")), path, lineno)
            start, prev, unsorted, sq = len(indices), -1, False, 0.0
            for k in range(1, len(parts)):
                tok = parts[k]
                i_s, sep, v_s = tok.partition(b":")
                try:
                    idx, val = int(i_s), float(v_s)
                except ValueError:
                    if sep and i_s.startswith(b"qid"):
                        continue
                    raise DataError(_token_problem(tok, line, lineno), path, lineno) from None
                if idx <= prev or idx < lo or idx > hi:
                    _check_index(idx, tok, lo, hi, n_features, path, lineno)
                    unsorted = True
                if val - val != 0.0:
                    raise DataError(_non_finite("value in token", tok), path, lineno)
                if checking and idx <= keep:  # (dropped values are not checked)
                    if narrow is not None and not -narrow < val < narrow:
                        raise DataError(f"value {val!r} overflows {dtype.name}", path, lineno)
                    sq += val * val
                prev = idx
                indices.append(idx)
                values.append(val)
            if unsorted:
                _sort_line(indices, values, start, path, lineno)
            if sq > 0.5 * limit:  # near the limit: decide exactly as _finish does
                _check_row_norm(indices[start:], values[start:], keep, dtype, path, lineno)
            labels.append(label)
            indptr.append(len(indices))
            row_lines.append(lineno)
    except _READ_ERRORS as exc:
        raise DataError(f"cannot read (corrupt or truncated?): {exc}", path, lineno + 1) from None
    return _finish(
        path,
        np.frombuffer(labels, np.float64),
        np.frombuffer(values, np.float64),
        np.frombuffer(indices, np.int64),
        np.frombuffer(indptr, np.int64),
        np.frombuffer(row_lines, np.int64),
        opts,
    )


def _refuse_underscore(parts: list[bytes], line: bytes, path: str, lineno: int) -> None:
    if line.translate(None, _TEXT_BYTES):
        raise DataError(_not_text(line, lineno), path, lineno)
    for k, tok in enumerate(parts):
        # qid tokens are skipped unread, whatever they hold.
        if b"_" in tok and not (k and tok.startswith(b"qid") and b":" in tok):
            what = "label" if k == 0 else "token"
            problem = f"malformed {what} {_q(tok)}: '_' is not part of a LIBSVM number"
            raise DataError(problem, path, lineno)


def _has_zero_index(f: IO[bytes]) -> bool:
    """Whether any feature index 0 occurs, read leniently (a line may be malformed).

    The per-rank reader asks this of a part it cannot parse, so that "auto" is decided
    on the same evidence as when the whole file is parsed.
    """
    for line in f:
        if b"0:" not in line:  # most lines: no work in Python
            continue
        for tok in line.partition(b"#")[0].split()[1:]:
            i_s, sep, _ = tok.partition(b":")
            try:
                if sep and int(i_s) == 0:
                    return True
            except ValueError:
                pass
    return False


def _overflow_threshold(dtype: np.dtype) -> float | None:
    """The smallest magnitude that rounds to inf in ``dtype``; None for float64 and wider."""
    info = np.finfo(dtype)
    if info.bits >= 64:
        return None
    # Halfway between the largest finite value and the next power of two rounds up.
    return float(info.max) + 2.0 ** (info.maxexp - info.nmant - 2)


def _check_row_norm(row_indices, row_values, keep, dtype, path, lineno) -> None:
    """Raise if the row's squared norm overflows ``dtype``, computed as _finish computes it."""
    kept = np.asarray(row_values, dtype=np.float64)[np.asarray(row_indices) <= keep]
    with np.errstate(over="ignore"):
        cast = kept.astype(dtype)
    if _first_heavy_row(cast, np.array([0, len(cast)]), dtype) is not None:
        largest = float(np.max(np.abs(cast)))
        raise DataError(_heavy_problem(largest, dtype), path, lineno)


def _check_index(idx, tok, lo, hi, n_features, path, lineno) -> None:
    if idx < 0:
        raise DataError(f"negative feature index in token {_q(tok)}", path, lineno)
    if idx < lo:
        raise DataError(
            "feature index 0 in a one-based file (if it is zero-based: --zero-based yes, or "
            "zero_based=True in Python)",
            path,
            lineno,
        )
    if idx > hi:
        if hi == _MAX_INDEX:
            raise DataError(_too_large(idx), path, lineno)
        raise DataError(_range_problem(idx, n_features, lo == 0 and hi < n_features), path, lineno)


def _sort_line(indices: array, values: array, start: int, path: str, lineno: int) -> None:
    seg, vals = indices[start:], values[start:]
    seen: set[int] = set()
    for idx in seg:
        if idx in seen:
            raise DataError(f"duplicate feature index {idx}", path, lineno)
        seen.add(idx)
    order = sorted(range(len(seg)), key=seg.__getitem__)
    indices[start:] = array("q", [seg[i] for i in order])
    values[start:] = array("d", [vals[i] for i in order])


def _finish(path, labels, data, indices, indptr, row_lines, opts: _Options) -> SvmlightData:
    """Checks and conversions shared by both parsers; ``row_lines`` is None on the fast path."""

    def fail(pos: int, problem: str, *, row: int | None = None):
        if row_lines is None:
            raise _NeedsLineNumber(problem)
        if row is None:
            row = int(np.searchsorted(indptr, pos, side="right")) - 1
        raise DataError(problem, path, int(row_lines[row]))

    zero_based, n_features, dtype = opts.zero_based, opts.n_features, opts.dtype
    n = labels.shape[0]
    if n == 0:
        raise DataError(_NO_DATA, path)
    if not np.isfinite(labels).all():
        # Only scikit-learn lets these through; the Python parser rejects them per token.
        fail(0, "non-finite label", row=int(np.argmin(np.isfinite(labels))))
    whole = _integral(labels)
    all_whole = bool(whole.all())
    if opts.class_labels and not all_whole:
        row = int(np.argmin(whole))
        fail(0, _not_a_class(repr(float(labels[row]))), row=row)
    indptr = np.asarray(indptr, dtype=np.int64)
    has_zero = bool(indices.size) and bool(indices.min() == 0)
    if indices.size and indices.max() > _MAX_INDEX:
        # Only the fast path gets here (the Python parser checks every token), and only
        # if scikit-learn ever reads indices beyond a C int.
        pos = int(np.argmax(indices > _MAX_INDEX))
        fail(pos, _too_large(int(indices[pos])))
    zb = has_zero if zero_based == "auto" else bool(zero_based)
    if has_zero and not zb:
        fail(int(np.argmin(indices)), "feature index 0 in a one-based file")
    cols = indices if zb else indices - 1
    dropped = 0
    if n_features is not None:
        over = cols >= n_features
        if over.any():
            if not opts.allow_extra_features:
                pos = int(np.argmax(over))
                fail(pos, _range_problem(int(indices[pos]), n_features, zb))
            # NaN or inf is not a value at all, dropped or not (the Python parser refuses
            # it on sight); only scikit-learn lets it get this far.
            if not np.isfinite(data[over]).all():
                fail(int(np.argmax(over & ~np.isfinite(data))), "non-finite value")
            keep = ~over
            dropped = int(over.size - np.count_nonzero(keep))
            indptr = np.concatenate(([0], np.cumsum(keep)))[indptr]
            cols, data = cols[keep], data[keep]
        n_cols = n_features
    else:
        n_cols = int(cols.max()) + 1 if cols.size else 0
    with np.errstate(over="ignore", invalid="ignore"):
        cast = data.astype(dtype)
    # A value that is not finite in dtype also makes its row's norm overflow, so the
    # first heavy row is never after the first bad value; the value is the clearer news.
    heavy = _first_heavy_row(cast, indptr, dtype) if opts.check_norms else None
    bad = ~np.isfinite(cast)
    if bad.any():
        pos = int(np.argmax(bad))
        row = int(np.searchsorted(indptr, pos, side="right")) - 1
        if heavy is None or row <= heavy:
            value = float(data[pos])
            if np.isfinite(value):
                fail(pos, f"value {value!r} overflows {dtype.name}", row=row)
            fail(pos, "non-finite value", row=row)
    if heavy is not None:
        start, stop = indptr[heavy], indptr[heavy + 1]
        largest = float(np.max(np.abs(cast[start:stop])))
        fail(start, _heavy_problem(largest, dtype), row=heavy)
    X = sp.csr_matrix((cast, cols, indptr), shape=(n, n_cols))
    if not X.has_sorted_indices:
        X.sort_indices()
    if dropped:
        warnings.warn(
            f"{path}: dropped {dropped} value(s) with feature index beyond n_features={n_features}",
            stacklevel=4,
        )
    return SvmlightData(X=X, y=_label_array(labels, all_whole), zero_based=zb, path=path)


def _first_heavy_row(values: np.ndarray, indptr: np.ndarray, dtype: np.dtype) -> int | None:
    """The first row whose squared norm is beyond ``dtype``'s range (or not finite), or None.

    Training divides its step size by the mean squared row norm and scores rows by dot
    products with the weights, so such a row would turn the step into 0 or the scores
    into inf/NaN; refusing it here names its line.  The common case costs two passes
    over the values (their extremes): norms are only summed when some value is large
    enough for its row's norm to overflow.
    """
    if values.size == 0:
        return None
    limit = float(np.finfo(dtype).max)
    longest = int(np.diff(indptr).max())
    with np.errstate(invalid="ignore"):
        largest = max(float(values.max()), -float(values.min()))  # NaN stays NaN
    if largest <= math.sqrt(limit / longest):  # False for NaN, so NaN rows are found below
        return None
    n_rows = len(indptr) - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    with np.errstate(over="ignore", invalid="ignore"):
        sq = np.bincount(rows, weights=np.square(values, dtype=np.float64), minlength=n_rows)
    heavy = ~(sq <= limit)
    return int(np.argmax(heavy)) if heavy.any() else None


def _integral(labels: np.ndarray) -> np.ndarray:
    """Which labels are whole numbers that int64 (and float64) hold exactly."""
    return (labels == np.rint(labels)) & (np.abs(labels) <= 2**53)


def _is_class(label: float) -> bool:
    """One label as :func:`_integral` judges it."""
    return label == math.floor(label) and abs(label) <= 2**53


def _not_a_class(label: str) -> str:
    return f"label '{label}' is not a class: class labels are integers (of magnitude at most 2**53)"


def _label_array(labels: np.ndarray, integral: bool | None = None) -> np.ndarray:
    """int64 labels where every one is whole (``integral``, if the caller knows), else
    float64."""
    if integral is None:
        integral = bool(_integral(labels).all())
    return labels.astype(np.int64) if integral else np.array(labels, dtype=np.float64)
