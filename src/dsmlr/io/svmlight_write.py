"""Writing LIBSVM / svmlight text files (reading them: :mod:`dsmlr.io.svmlight`)."""

from __future__ import annotations

import contextlib
import os

import numpy as np
import scipy.sparse as sp

from dsmlr.errors import DataError

__all__ = ["write_svmlight"]

#: Rows formatted and written at a time.
_WRITE_CHUNK = 65536


def write_svmlight(
    path: str | os.PathLike[str],
    X: object,
    y: object,
    *,
    zero_based: bool = False,
) -> None:
    """Write ``X`` and ``y`` as an svmlight file, atomically.

    Values are written with ``repr`` so that reading the file back returns exactly the
    same float64 numbers; explicit zeros are not written.  The file is first written to
    ``path + ".tmp"`` and then renamed, so readers never see a partial file.

    Parameters
    ----------
    path : str or path-like
        Destination file.
    X : array-like or sparse matrix of shape (n_samples, n_features)
        Finite real values.
    y : array-like of shape (n_samples,)
        Finite numeric labels; integral ones are written as integers.
    zero_based : bool, default False
        Write indices starting at 0 instead of 1.  Read such files back with
        ``zero_based=True``: auto-detection cannot tell if column 0 is all zero.

    Raises
    ------
    DataError
        If ``X`` or ``y`` cannot be written, or the file cannot be created.
    """
    path = os.fsdecode(os.fspath(path))
    X = _as_csr(X, path)
    labels = _format_labels(y, X.shape[0], path)
    off = 0 if zero_based else 1
    ip = X.indptr.tolist()
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="ascii", newline="\n") as f:
            for start in range(0, X.shape[0], _WRITE_CHUNK):
                stop = min(X.shape[0], start + _WRITE_CHUNK)
                a, b = ip[start], ip[stop]
                cols = (X.indices[a:b].astype(np.int64) + off).tolist()
                vals = X.data[a:b].astype(np.float64).tolist()
                # repr of a Python float is the shortest text that reads back exactly.
                toks = [f"{c}:{v!r}" for c, v in zip(cols, vals, strict=True)]
                lines = [
                    " ".join([labels[r], *toks[ip[r] - a : ip[r + 1] - a]])
                    for r in range(start, stop)
                ]
                f.write("\n".join(lines))
                f.write("\n")
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        if isinstance(exc, OSError):
            raise DataError(f"cannot write file: {exc.strerror or exc}", path) from None
        raise


def _as_csr(X: object, path: str) -> sp.csr_matrix:
    if sp.issparse(X):
        X = sp.csr_matrix(X, copy=True)
    else:
        arr = np.asarray(X)
        if arr.ndim != 2:
            raise DataError(f"X must be 2-dimensional, got shape {arr.shape}", path)
        if arr.dtype.kind not in "biuf":
            raise DataError(f"X must hold real numbers, not {arr.dtype}", path)
        X = sp.csr_matrix(arr)
    if X.dtype.kind not in "biuf":
        raise DataError(f"X must hold real numbers, not {X.dtype}", path)
    X.sum_duplicates()
    X.eliminate_zeros()
    if not np.isfinite(X.data).all():
        raise DataError("X contains non-finite values (NaN or inf), which cannot be written", path)
    return X


def _format_labels(y: object, n: int, path: str) -> list[str]:
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise DataError(f"y must have shape ({n},), got {y.shape}", path)
    if y.dtype.kind in "biu":
        return [str(int(v)) for v in y.tolist()]
    if y.dtype.kind != "f":
        raise DataError(f"y must hold numbers, not {y.dtype}", path)
    if not np.isfinite(y).all():
        raise DataError("y contains non-finite labels (NaN or inf), which cannot be written", path)
    return [
        str(int(v)) if v.is_integer() and abs(v) <= 2**53 else repr(v)
        for v in y.astype(np.float64).tolist()
    ]
