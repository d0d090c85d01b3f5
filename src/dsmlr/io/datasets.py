"""Data sets in either format dsmlr reads: LIBSVM/svmlight text or a NumPy ``.npz`` archive.

The format is picked by the file name: a name ending in ``.npz`` (any case) is an archive,
anything else (``.svm``, ``.txt``, ``.gz``, ``.bz2``, ``.xz``, no extension) is LIBSVM
text, read by :func:`~dsmlr.io.read_svmlight`.

The ``.npz`` convention (one file holds the features and the labels):

* ``y``: the labels, 1-D, one per row: integers, floats (finite; integral ones become
  ``int64`` as from LIBSVM), booleans or strings stored as a unicode array (``np.str_``,
  not Python objects).
* the features, either
  - ``X``: a dense 2-D array of real numbers, or
  - the arrays :func:`scipy.sparse.save_npz` writes: ``format`` (``csr``, ``csc`` or
    ``coo``), ``shape``, ``data`` and ``indices`` + ``indptr`` (csr, csc) or ``row`` +
    ``col`` (or ``coords``) (coo).

:func:`save_dataset` writes such a file (sparse ``X`` as ``csr`` keys), so
``scipy.sparse.load_npz(path)`` reads its ``X`` and ``numpy.load(path)["y"]`` its
labels, without dsmlr.  A file from ``scipy.sparse.save_npz`` alone has no labels:
add them by writing it again with :func:`save_dataset`.  A ``.npy`` file holds a single
array, so it cannot carry both and is not accepted.

Columns are numbered from 0 and the width is the archive's exact column count, so the
LIBSVM index base (``zero_based``) does not apply to ``.npz`` files and is ignored for
them.  ``X`` always comes back as canonical CSR (sorted, duplicates summed, explicit
zeros dropped), as from a LIBSVM file, so the same data gives the same model in either
format.  Nothing is unpickled: arrays are read with ``allow_pickle=False`` and an archive
holding Python objects is refused.
"""

from __future__ import annotations

import contextlib
import os
import warnings
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from dsmlr.errors import DataError, on_all_ranks
from dsmlr.io.sharded import Shard, read_svmlight_shard
from dsmlr.io.svmlight import (
    Progress,
    _check_options,
    _first_heavy_row,
    _heavy_problem,
    _label_array,
    _Options,
    read_svmlight,
)
from dsmlr.partition import row_shards

if TYPE_CHECKING:
    from dsmlr.comm.base import Communicator

__all__ = ["Dataset", "atomic_write_bytes", "load_dataset", "read_dataset_shard", "save_dataset"]

FORMATS = ("libsvm", "npz")
_SPARSE_PARTS = {"csr": ("indices", "indptr"), "csc": ("indices", "indptr"), "coo": ()}
_SPARSE_KEYS = {"format", "shape", "data", "indices", "indptr", "row", "col", "coords"}
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # a zip with members, an empty zip
_NPY_MAGIC = b"\x93NUMPY"
# What reading a damaged archive member can raise (numpy reports a short member as a
# ValueError from reshaping it, zipfile a bad checksum as BadZipFile).
_MEMBER_ERRORS = (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error)


@dataclass(frozen=True, eq=False)
class Dataset:
    """Rows and labels read from a data file of either format.

    Attributes
    ----------
    X : scipy.sparse.csr_matrix of shape (n_samples, n_features)
        Canonical CSR (sorted indices, no duplicates, no explicit zeros from ``.npz``)
        of the requested dtype.
    y : ndarray of shape (n_samples,)
        The labels (see the module docstring for their types).
    path : str
        The file that was read.
    format : {"libsvm", "npz"}
        The format it was read as.
    zero_based : bool or None
        The index base a LIBSVM file was read with; None for ``.npz`` (columns have no
        base).  Passing it on as ``zero_based`` to read a later file treats None as
        ``"auto"``.
    """

    X: sp.csr_matrix
    y: np.ndarray
    path: str
    format: str
    zero_based: bool | None


def data_format(path: str | os.PathLike[str]) -> str:
    """``"npz"`` if the file name ends in ``.npz`` (any case), else ``"libsvm"``."""
    return "npz" if os.fsdecode(os.fspath(path)).lower().endswith(".npz") else "libsvm"


def load_dataset(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    zero_based: bool | str | None = "auto",
    n_features: int | None = None,
    dtype: npt.DTypeLike = np.float64,
    allow_extra_features: bool = False,
    check_norms: bool = True,
    progress: Progress | None = None,
    class_labels: bool = True,
) -> Dataset:
    """Read a LIBSVM/svmlight file or a ``.npz`` archive (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        The file to read.
    format : {"libsvm", "npz"}, optional
        The file's format; by default chosen by its name (``.npz`` or not).
    zero_based : bool, "auto" or None, default "auto"
        LIBSVM only: whether feature indices start at 0 (see
        :func:`~dsmlr.io.read_svmlight`); None means ``"auto"``.  Ignored for ``.npz``.
    n_features : int, optional
        Number of columns of ``X``: narrower data is padded with zero columns, wider data
        is an error unless ``allow_extra_features``.
    dtype : floating dtype, default float64
        dtype of ``X``.
    allow_extra_features : bool, default False
        With ``n_features``, drop (with a warning) values beyond it instead of failing.
    check_norms : bool, default True
        Refuse a row whose squared norm overflows ``dtype`` (values around 1e154 in
        float64, 1e19 in float32), naming its line: training would otherwise fail on it
        far from the cause, and no model can score it.  Off, any finite values are read.
    progress : callable, optional
        For LIBSVM files: ``progress(bytes_parsed, total_bytes or None)`` as parsing
        goes (see :func:`~dsmlr.io.read_svmlight`).
    class_labels : bool, default True
        For LIBSVM files: refuse a label that is not a whole number, naming its line
        (dsmlr's labels are classes; see :func:`~dsmlr.io.read_svmlight`).  Off, any
        finite label is read.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        For anything wrong with the file, naming it (and, for LIBSVM, the line).
    ValueError
        For invalid options.
    """
    path = os.fsdecode(os.fspath(path))
    fmt = _resolve_format(path, format)
    base = "auto" if zero_based is None else zero_based
    if fmt == "libsvm":
        data = read_svmlight(
            path, zero_based=base, n_features=n_features, dtype=dtype,
            allow_extra_features=allow_extra_features, check_norms=check_norms,
            progress=progress, class_labels=class_labels,
        )  # fmt: skip
        return Dataset(data.X, data.y, path, fmt, data.zero_based)
    opts = _check_options(base, n_features, dtype, allow_extra_features, check_norms)
    X, y = _read_npz(path, opts.dtype)
    X, dropped = _fit_width(X, opts, path)
    if dropped:
        warnings.warn(_dropped_warning(path, dropped, opts.n_features), stacklevel=2)
    return Dataset(X, y, path, fmt, None)


def read_dataset_shard(
    path: str | os.PathLike[str],
    comm: Communicator,
    *,
    format: str | None = None,
    zero_based: bool | str | None = "auto",
    n_features: int | None = None,
    dtype: npt.DTypeLike = np.float64,
    allow_extra_features: bool = False,
    check_norms: bool = True,
    progress: Progress | None = None,
    class_labels: bool = True,
) -> Shard:
    """This rank's rows of a LIBSVM file or ``.npz`` archive (collective).

    LIBSVM files go to :func:`~dsmlr.io.read_svmlight_shard` (each rank parses only its
    byte range).  An ``.npz`` archive cannot be entered in the middle: every rank reads
    the whole file and keeps the contiguous rows :func:`~dsmlr.partition.row_shards`
    gives it (balanced by non-zeros, rank 0 first), so each rank needs the memory for
    the whole data set while reading it.  Ranks then exchange one small ``allgather``
    so that a problem on any rank ends every rank with the same :class:`DataError`.

    Parameters are those of :func:`load_dataset`; ``comm`` is the group.  The returned
    :class:`~dsmlr.io.Shard` has ``zero_based`` None for ``.npz``.
    """
    path = os.fsdecode(os.fspath(path))
    fmt = _resolve_format(path, format)
    base = "auto" if zero_based is None else zero_based
    if fmt == "libsvm":
        return read_svmlight_shard(
            path, comm, zero_based=base, n_features=n_features, dtype=dtype,
            allow_extra_features=allow_extra_features, check_norms=check_norms,
            progress=progress, class_labels=class_labels,
        )  # fmt: skip
    opts = _check_options(base, n_features, dtype, allow_extra_features, check_norms)
    problem: tuple[str, str | None] | None = None
    crash: BaseException | None = None
    dropped = 0
    try:
        X, y = _read_npz(path, opts.dtype)
        X, dropped = _fit_width(X, opts, path)
    except DataError as exc:
        problem = (exc.problem, exc.path)
    except Exception as exc:
        # Not a data problem (out of memory, a bug), but the other ranks must still hear
        # of it, or they would wait forever in the allgather below.
        crash = exc
    report = (problem, None if crash is None else repr(crash))
    everyone = comm.allgather(report)
    for rank, (other_problem, other_crash) in enumerate(everyone):  # type: ignore[misc]
        if other_crash is not None:
            if crash is not None:
                raise crash
            raise RuntimeError(f"{path}: rank {rank} failed while reading: {other_crash}")
        if other_problem is not None:
            raise on_all_ranks(DataError(*other_problem))
    if dropped and comm.rank == 0:  # once for the whole file, not once per rank
        warnings.warn(_dropped_warning(path, dropped, opts.n_features), stacklevel=2)
    start, stop = row_shards(X.indptr, comm.size)[comm.rank]
    # Copies, so that the whole file's arrays are freed when this returns.
    X_mine, y_mine = X[start:stop], y[start:stop].copy()
    return Shard(X_mine, y_mine, None, X.shape[1], X.shape[0], start, path)


def save_dataset(
    path: str | os.PathLike[str], X: object, y: object, *, compressed: bool = True
) -> None:
    """Write ``X`` and labels ``y`` as one ``.npz`` archive that :func:`load_dataset` reads.

    Sparse ``X`` is stored as :func:`scipy.sparse.save_npz` stores a CSR matrix (so
    ``scipy.sparse.load_npz`` reads it back), dense ``X`` as the array ``X``; ``y`` as the
    array ``y``.  The file is written to a temporary name and renamed into place, and
    always to ``path`` exactly (NumPy's own writers append ``.npz`` to other names); give
    it the ``.npz`` extension if the command line is to recognise it.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    X : array-like or sparse matrix of shape (n_samples, n_features)
        Finite real values.
    y : array-like of shape (n_samples,)
        Labels: numbers (finite), booleans or strings.
    compressed : bool, default True
        Compress the archive (zip deflate), as ``scipy.sparse.save_npz`` does by default.

    Raises
    ------
    DataError
        If ``X`` or ``y`` cannot be stored or the file cannot be written.
    """
    path = os.fsdecode(os.fspath(path))
    arrays: dict[str, np.ndarray]
    if sp.issparse(X):
        M = sp.csr_matrix(X)
        if M.dtype.kind not in "biuf":
            raise DataError(f"X must hold real numbers, not {M.dtype}", path)
        _check_finite(M.data, M.indptr, path)
        arrays = {
            "format": np.array(b"csr"), "shape": np.array(M.shape, dtype=np.int64),
            "data": M.data, "indices": M.indices, "indptr": M.indptr,
        }  # fmt: skip
        n_rows = M.shape[0]
    else:
        dense = np.asarray(X)
        if dense.ndim != 2:
            raise DataError(f"X must be 2-dimensional, got shape {dense.shape}", path)
        if dense.dtype.kind not in "biuf":
            raise DataError(f"X must hold real numbers, not {dense.dtype}", path)
        _check_finite(dense.ravel(), np.arange(dense.shape[0] + 1) * dense.shape[1], path)
        arrays = {"X": dense}
        n_rows = dense.shape[0]
    arrays["y"] = _storable_labels(y, n_rows, path)
    save = np.savez_compressed if compressed else np.savez
    atomic_write_bytes(path, lambda fh: save(fh, **arrays))


def atomic_write_bytes(path: str, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write(fh)`` on a temporary binary file next to ``path``, then rename it there.

    Readers never see a half-written file, and an existing file survives a failed write.
    An ``OSError`` becomes a :class:`DataError` naming ``path``.
    """
    if os.path.isdir(path):
        raise DataError("is a directory", path)
    if os.path.exists(path) and not os.path.isfile(path):
        # A device or pipe (e.g. /dev/stdout) cannot be renamed onto: write it directly.
        try:
            with open(path, "wb") as fh:
                write(fh)
        except OSError as exc:
            raise DataError(f"cannot write: {exc.strerror or exc}", path) from None
        return
    target = Path(path).resolve()  # through a symlink: replace the file, not the link
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise DataError(f"cannot write: {exc.strerror or exc}", path) from None
        raise


# ---------------------------------------------------------------- reading .npz


def _resolve_format(path: str, format: str | None) -> str:
    if format is None:
        return data_format(path)
    if format not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS} or None, not {format!r}")
    return format


def _read_npz(path: str, dtype: np.dtype) -> tuple[sp.csr_matrix, np.ndarray]:
    """The archive's rows as canonical CSR of ``dtype`` and its labels, all checked."""
    _check_magic(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except _MEMBER_ERRORS as exc:
        raise DataError(f"cannot read .npz archive (corrupt or truncated?): {exc}", path) from None
    with archive:
        names = set(archive.files)

        def member(name: str) -> np.ndarray:
            try:
                return archive[name]
            except _MEMBER_ERRORS as exc:
                if "allow_pickle" in str(exc):
                    raise DataError(
                        f"array {name!r} holds Python objects, which dsmlr never unpickles; "
                        "store numbers, or labels as a unicode string array",
                        path,
                    ) from None
                raise DataError(
                    f"cannot read array {name!r} (corrupt or truncated?): {exc}", path
                ) from None

        if "y" not in names:
            found = ", ".join(sorted(names)) or "no arrays"
            raise DataError(
                f"no labels: the archive has no array 'y' (found: {found}); write X and y "
                "with dsmlr.io.save_dataset",
                path,
            )
        sparse = names & _SPARSE_KEYS
        if "X" in names and sparse:
            raise DataError(
                f"both a dense 'X' and sparse parts ({', '.join(sorted(sparse))}): keep only one",
                path,
            )
        if "X" in names:
            X = _dense_rows(member("X"), path)
        elif "format" in names:
            X = _sparse_rows(member, names, path)
        else:
            raise DataError(
                "no features: expected an array 'X' or the arrays of scipy.sparse.save_npz "
                "(format, shape, data, ...)",
                path,
            )
        y = _labels(member("y"), X.shape[0], path)
    if X.shape[0] == 0:
        raise DataError("no rows", path)
    return _canonical(X, dtype, path), y


def _check_magic(path: str) -> None:
    """Name the usual mistakes before numpy does, in words a user can act on."""
    if os.path.isdir(path):
        raise DataError("is a directory, not a data file", path)
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except FileNotFoundError:
        raise DataError("no such file", path) from None
    except OSError as exc:
        raise DataError(f"cannot open file: {exc.strerror or exc}", path) from None
    if head.startswith(_NPY_MAGIC):
        raise DataError(
            "a single .npy array, not an .npz archive of X and y (see dsmlr.io.save_dataset)",
            path,
        )
    if not head.startswith(_ZIP_MAGIC):
        raise DataError("not an .npz archive (it does not start like a zip file)", path)


def _dense_rows(X: np.ndarray, path: str) -> sp.csr_matrix:
    if X.ndim != 2:
        raise DataError(f"X must be 2-dimensional, got shape {X.shape}", path)
    if X.dtype.kind not in "biuf":
        raise DataError(f"X must hold real numbers, not {X.dtype}", path)
    # Checked while still dense: the CSR conversion keeps NaN, but the row is clearer here.
    _check_finite(X.ravel(), np.arange(X.shape[0] + 1, dtype=np.int64) * X.shape[1], path)
    return sp.csr_matrix(X)


def _sparse_rows(member: Callable[[str], np.ndarray], names: set[str], path: str):
    raw = member("format")
    fmt = raw.item() if raw.ndim == 0 else None
    if isinstance(fmt, bytes):
        fmt = fmt.decode("ascii", "replace")
    if fmt not in _SPARSE_PARTS:
        raise DataError(f"sparse format {fmt!r} is not supported: save X as csr, csc or coo", path)
    if fmt == "coo":
        parts = ("coords",) if "coords" in names and "row" not in names else ("row", "col")
    else:
        parts = _SPARSE_PARTS[fmt]
    missing = [k for k in ("shape", "data", *parts) if k not in names]
    if missing:
        raise DataError(f"{fmt} matrix without array(s) {', '.join(missing)}", path)
    shape = member("shape")
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or (shape < 0).any():
        raise DataError(f"shape must be two non-negative integers, got {shape.tolist()}", path)
    n_rows, n_cols = (int(v) for v in shape)
    data = member("data")
    if data.ndim != 1 or data.dtype.kind not in "biuf":
        raise DataError(f"data must be a 1-D array of real numbers, not {data.dtype}", path)
    arrays = [member(k) for k in parts]
    for name, arr in zip(parts, arrays, strict=True):
        if arr.dtype.kind not in "iu":
            raise DataError(f"{name} must hold integers, not {arr.dtype}", path)
    try:
        if fmt == "coo":
            row, col = arrays if len(arrays) == 2 else tuple(arrays[0])
            if len(row) != len(data) or len(col) != len(data):
                raise ValueError(f"{len(data)} values but {len(row)} rows and {len(col)} columns")
            M = sp.coo_matrix((data, (row, col)), shape=(n_rows, n_cols)).tocsr()
        else:
            cls = sp.csr_matrix if fmt == "csr" else sp.csc_matrix
            M = cls((data, *arrays), shape=(n_rows, n_cols))
            # The constructor checks lengths only; indices out of range would crash later.
            M.check_format(full_check=True)
            M = M.tocsr()
    except (ValueError, TypeError, IndexError) as exc:
        raise DataError(f"inconsistent {fmt} matrix: {' '.join(str(exc).split())}", path) from None
    _check_finite(M.data, M.indptr, path)
    return M


def _canonical(X: sp.csr_matrix, dtype: np.dtype, path: str) -> sp.csr_matrix:
    X = sp.csr_matrix(X, copy=True)
    X.sum_duplicates()  # also sorts the indices
    X.eliminate_zeros()
    with np.errstate(over="ignore", invalid="ignore"):
        cast = X.data.astype(dtype)
    bad = ~np.isfinite(cast)
    if bad.any():
        pos = int(np.argmax(bad))
        row = int(np.searchsorted(X.indptr, pos, side="right")) - 1
        raise DataError(
            f"X row {row} (from 0): value {float(X.data[pos])!r} overflows {dtype}", path
        )
    X.data = cast
    return X


def _check_finite(values: np.ndarray, indptr: np.ndarray, path: str) -> None:
    """Refuse NaN and inf, naming the first row (from 0) that holds one."""
    if values.dtype.kind != "f":
        return
    bad = ~np.isfinite(values)
    if bad.any():
        pos = int(np.argmax(bad))
        row = int(np.searchsorted(indptr, pos, side="right")) - 1
        raise DataError(f"X row {row} (from 0) holds a non-finite value ({values[pos]})", path)


def _labels(y: np.ndarray, n_rows: int, path: str) -> np.ndarray:
    if y.ndim != 1:
        raise DataError(f"y must be 1-dimensional, got shape {y.shape}", path)
    if len(y) != n_rows:
        raise DataError(f"y has {len(y)} labels but X has {n_rows} rows", path)
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            pos = int(np.argmax(~np.isfinite(y)))
            raise DataError(f"label {pos} (from 0) is not finite ({y[pos]})", path)
        return _label_array(y.astype(np.float64))  # integral floats -> int64, as LIBSVM
    if y.dtype.kind in "iu":
        return y.astype(np.int64)
    if y.dtype.kind in "bU":
        return y
    raise DataError(
        f"labels of type {y.dtype} are not supported: use integers, floats, booleans or "
        "unicode strings",
        path,
    )


def _fit_width(X: sp.csr_matrix, opts: _Options, path: str) -> tuple[sp.csr_matrix, int]:
    """``X`` with exactly ``opts.n_features`` columns (if given), and the values dropped.

    Rows are checked for overflowing norms here (if asked), after any dropping, as the
    LIBSVM reader checks them.
    """
    n, dropped = opts.n_features, 0
    if n is not None and X.shape[1] < n:
        X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], n))
    elif n is not None and X.shape[1] > n:
        if not opts.allow_extra_features:
            raise DataError(
                f"X has {X.shape[1]} columns, more than n_features={n} of the training data",
                path,
            )
        dropped = int(np.count_nonzero(X.indices >= n))
        X = X[:, :n].tocsr()
    if opts.check_norms and (row := _first_heavy_row(X.data, X.indptr, X.dtype)) is not None:
        largest = float(np.max(np.abs(X.data[X.indptr[row] : X.indptr[row + 1]])))
        raise DataError(f"X row {row} (from 0): {_heavy_problem(largest, X.dtype)}", path)
    return X, dropped


def _dropped_warning(path: str, dropped: int, n_features: int | None) -> str:
    return f"{path}: dropped {dropped} value(s) in columns beyond n_features={n_features}"


def _storable_labels(y: object, n: int, path: str) -> np.ndarray:
    labels = np.asarray(y)
    if labels.dtype.kind == "O" and all(isinstance(v, str) for v in labels.ravel().tolist()):
        labels = labels.astype(str)  # e.g. a pandas column of strings: store as unicode
    if labels.ndim != 1 or labels.shape[0] != n:
        raise DataError(f"y must have shape ({n},), got {labels.shape}", path)
    if labels.dtype.kind not in "biufU":
        raise DataError(f"y must hold numbers, booleans or strings, not {labels.dtype}", path)
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise DataError("y contains non-finite labels (NaN or inf)", path)
    return labels
