"""Model directories: a JSON manifest plus one ``.npy`` file per class block.

Nothing is ever unpickled: arrays are read with ``allow_pickle=False`` and metadata is
JSON, so loading an untrusted model directory cannot execute code.  One file per block
means a distributed run can write its blocks without assembling ``W`` anywhere.

Layout of ``DIR``::

    manifest.json          format, version, shapes, dtype, settings, classes, blocks
    block_00000.npy        W[k0:k1] of block 0, shape (k1 - k0, D_fit), C order
    ...
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dsmlr.errors import DataError
from dsmlr.partition import class_blocks

__all__ = [
    "FORMAT",
    "IO_CHUNK_BYTES",
    "Manifest",
    "ModelData",
    "epochs_run",
    "prepare_directory",
    "read_block",
    "read_manifest",
    "read_model",
    "read_npy",
    "write_block",
    "write_manifest",
    "write_model",
    "write_npy",
]

FORMAT = "dsmlr-model"
VERSION = 1


class ModelData:
    """The arrays and settings of a saved model.

    Attributes
    ----------
    W : ndarray of shape (K, D_fit)
    classes : ndarray of shape (K,)
    fit_intercept : bool
    params : dict
        Estimator parameters used for training (JSON values).
    history : list of dict
    metadata : dict
        Free-form JSON facts about the training input (e.g. its feature index base).
    """

    def __init__(self, W, classes, fit_intercept, params=None, history=None, metadata=None):
        self.W = W
        self.classes = classes
        self.fit_intercept = bool(fit_intercept)
        self.params = dict(params or {})
        self.history = list(history or [])
        self.metadata = dict(metadata or {})


def epochs_run(history: list) -> int:
    """The epochs a training run made, from its history: the last record's ``epoch``.

    A record is kept for each epoch that computed the exact objective: every
    ``eval_every``-th, SVRG's first, and always the last epoch run, so with
    ``eval_every > 1`` there are fewer records than epochs.  A history without epoch
    numbers (a hand-written manifest) counts its records.
    """
    if not history:
        return 0
    try:
        return int(history[-1]["epoch"])
    except (KeyError, TypeError, ValueError):
        return len(history)


def _encode_classes(classes: np.ndarray) -> dict:
    if classes.dtype.kind in "iu":
        return {"kind": "int", "values": [int(c) for c in classes]}
    if classes.dtype.kind == "f":
        return {"kind": "float", "values": [float(c) for c in classes]}
    if classes.dtype.kind == "b":
        return {"kind": "bool", "values": [bool(c) for c in classes]}
    values = list(classes)
    if all(isinstance(c, str) for c in values):
        return {"kind": "str", "values": [str(c) for c in values]}
    if all(isinstance(c, (int, np.integer)) for c in values):
        return {"kind": "int", "values": [int(c) for c in values]}
    raise DataError(
        "class labels must be integers, floats, booleans or strings to be saved; "
        f"got {type(values[0]).__name__}"
    )


def _decode_classes(spec: dict) -> np.ndarray:
    kind, values = spec["kind"], spec["values"]
    dtype = {"int": np.int64, "float": np.float64, "bool": bool, "str": str}[kind]
    return np.array(values, dtype=dtype)


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


#: Arrays are written and read this many bytes at a time, so that saving or loading a
#: block never holds a second copy of it (a block can be most of a rank's memory).
IO_CHUNK_BYTES = 64 * 2**20


def _rows_a_chunk(row_bytes: int, chunk_bytes: int) -> int:
    return max(1, chunk_bytes // max(row_bytes, 1))


def write_npy(path: Path, rows: np.ndarray, *, chunk_bytes: int = IO_CHUNK_BYTES) -> str:
    """Write ``rows`` (1-D or 2-D) to ``path`` as a C-order ``.npy`` file; return its
    SHA-256.

    ``rows`` may be any strided view (a feature-major block's transpose): it is made
    contiguous ``chunk_bytes`` at a time.  The file appears under its name only once
    complete (written beside it, then renamed).
    """
    rows = np.asarray(rows)
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header,
        {"descr": np.lib.format.dtype_to_descr(rows.dtype), "fortran_order": False,
         "shape": tuple(int(n) for n in rows.shape)},
    )  # fmt: skip
    head = header.getvalue()
    digest = hashlib.sha256(head)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(head)
        step = _rows_a_chunk(rows[:1].nbytes, chunk_bytes)
        for a in range(0, rows.shape[0], step):
            chunk = np.ascontiguousarray(rows[a : a + step])
            f.write(chunk)
            digest.update(chunk)
    os.replace(tmp, path)
    return digest.hexdigest()


_HEADER_READERS = {
    (1, 0): np.lib.format.read_array_header_1_0,
    (2, 0): np.lib.format.read_array_header_2_0,
}


class _HashingReader:
    """A binary file whose bytes are hashed as they are read."""

    def __init__(self, f):
        self.f, self.digest = f, hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.digest.update(data)
        return data

    def hexdigest_of_all(self, chunk_bytes: int) -> str:
        """The digest of the whole file (the bytes not read yet included)."""
        while self.read(chunk_bytes):
            pass
        return self.digest.hexdigest()


def read_npy(
    path: Path,
    digest: str,
    shape: tuple[int, ...],
    dtype,
    *,
    transposed: bool = False,
    what: str = "file",
    chunk_bytes: int = IO_CHUNK_BYTES,
) -> np.ndarray:
    """Read the ``.npy`` file ``path`` checked against its SHA-256 ``digest``.

    The array must have ``shape`` (its values are cast to ``dtype``); with
    ``transposed`` a 2-D one is returned as its C-order transpose, filled ``chunk_bytes``
    at a time, so reading never holds a second copy.  Nothing in the file is unpickled;
    ``what`` names the file in messages.

    Raises
    ------
    DataError
        The file is missing, truncated or altered (checksum), or not an array of
        ``shape``; the message names the file.
    """
    problem = None
    try:
        with open(path, "rb") as f:
            reader = _HashingReader(f)
            try:
                version = np.lib.format.read_magic(reader)
                read_header = _HEADER_READERS.get(version)
                if read_header is None:
                    raise ValueError(f"unsupported .npy version {version}")
                found, fortran_order, stored = read_header(reader)
                if found != tuple(shape) or fortran_order or stored.hasobject:
                    raise ValueError(
                        f"array of shape {found} and type {stored}, expected {tuple(shape)} "
                        f"and {np.dtype(dtype)} in C order"
                    )
                out = np.empty(shape[::-1] if transposed else shape, dtype=dtype)
                row_bytes = int(np.prod(shape[1:])) * stored.itemsize
                step = _rows_a_chunk(row_bytes, chunk_bytes)
                for a in range(0, shape[0], step):
                    n = min(step, shape[0] - a)
                    data = reader.read(n * row_bytes)
                    if len(data) != n * row_bytes:
                        raise ValueError("file ends inside the array")
                    chunk = np.frombuffer(data, dtype=stored).reshape((n, *shape[1:]))
                    if transposed:
                        out[:, a : a + n] = chunk.T
                    else:
                        out[a : a + n] = chunk
            except ValueError as exc:
                problem = exc
            whole = reader.hexdigest_of_all(chunk_bytes)
    except OSError:
        raise DataError(f"{what} missing or unreadable", str(path)) from None
    if whole != digest:
        raise DataError(f"{what} is truncated or altered (checksum mismatch)", str(path))
    if problem is not None:
        raise DataError(f"{what} is not a plain numeric array ({problem})", str(path))
    return out


def prepare_directory(path: str | os.PathLike) -> Path:
    """Create model directory ``path`` and remove any old manifest from it.

    Without a manifest the directory never loads as a model, so a crash while the block
    files are (re)written cannot leave a mix of old and new blocks that loads.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a directory", str(out))
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()
    return out


def write_block(out: Path, q: int, classes: tuple[int, int], rows: np.ndarray) -> dict:
    """Write block ``q`` (``rows`` = ``W[k0:k1]``, class-major; a strided view such as a
    feature-major block's transpose is fine) and return its manifest entry."""
    name = f"block_{q:05d}.npy"
    digest = write_npy(out / name, rows)
    return {"file": name, "classes": [int(classes[0]), int(classes[1])], "sha256": digest}


def write_manifest(
    out: Path, blocks: list[dict], shape: tuple[int, int], dtype, model: ModelData
) -> None:
    """Write the manifest last: it makes the directory a loadable model.

    ``model`` supplies everything but the weights (its ``W`` may be None).
    """
    n_classes, n_cols = shape
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "n_classes": int(n_classes),
        "n_features": int(n_cols - model.fit_intercept),
        "fit_intercept": model.fit_intercept,
        "dtype": str(np.dtype(dtype)),
        "classes": _encode_classes(np.asarray(model.classes)),
        "blocks": sorted(blocks, key=lambda blk: blk["classes"][0]),
        "params": model.params,
        "history": model.history,
        "metadata": model.metadata,
    }
    _atomic_write_bytes(out / "manifest.json", json.dumps(manifest, indent=1).encode())


def write_model(path: str | os.PathLike, model: ModelData, n_blocks: int = 1) -> None:
    """Write ``model`` to directory ``path`` (created if missing).

    The manifest is written last, so a directory without one was interrupted mid-write
    and never loads as a model.
    """
    out = prepare_directory(path)
    W = np.ascontiguousarray(model.W)
    blocks = [
        write_block(out, q, (lo, hi), W[lo:hi])
        for q, (lo, hi) in enumerate(class_blocks(W.shape[0], n_blocks))
    ]
    write_manifest(out, blocks, W.shape, W.dtype, model)


@dataclass(frozen=True)
class Manifest:
    """A model directory's manifest, checked; ``blocks`` are ``(k0, k1, file, sha256)``
    in class order and cover ``0..n_classes`` exactly."""

    path: Path
    n_classes: int
    n_columns: int
    fit_intercept: bool
    dtype: np.dtype
    classes: np.ndarray
    blocks: list[tuple[int, int, str, str]]
    params: dict
    history: list
    metadata: dict


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Read and check the manifest of model directory ``path`` (no block is read)."""
    src = Path(path)
    manifest_path = src / "manifest.json"
    if src.is_file():
        raise DataError("a file, not a model directory (one holding manifest.json)", str(src))
    if not src.is_dir():
        raise DataError("no such model directory", str(src))
    if not manifest_path.is_file():
        raise DataError("not a dsmlr model directory (manifest.json missing)", str(src))
    try:
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("format") != FORMAT:
            raise DataError(f"not a dsmlr model (format {manifest.get('format')!r})")
        n_classes = int(manifest["n_classes"])
        fit_intercept = bool(manifest["fit_intercept"])
        n_cols = int(manifest["n_features"]) + fit_intercept
        classes = _decode_classes(manifest["classes"])
        dtype = np.dtype(manifest["dtype"])
        # (first class, end class, file, checksum) per block, in class order.
        blocks = sorted(
            (int(blk["classes"][0]), int(blk["classes"][1]), str(blk["file"]), str(blk["sha256"]))
            for blk in manifest["blocks"]
        )
    except DataError as exc:
        raise DataError(exc.problem, str(manifest_path)) from None
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise DataError(f"corrupted manifest ({exc})", str(manifest_path)) from None
    if dtype.kind != "f" or len(classes) != n_classes:
        raise DataError("inconsistent manifest", str(manifest_path))
    covered = 0
    for lo, hi, _, _ in blocks:
        if lo != covered or hi < lo:
            raise DataError(
                f"blocks do not cover the classes: expected one starting at class {covered}",
                str(manifest_path),
            )
        covered = hi
    if covered != n_classes:
        raise DataError(f"blocks cover classes 0..{covered - 1} of {n_classes}", str(manifest_path))
    return Manifest(
        src, n_classes, n_cols, fit_intercept, dtype, classes, blocks,
        dict(manifest.get("params") or {}), list(manifest.get("history") or []),
        dict(manifest.get("metadata") or {}),
    )  # fmt: skip


def read_block(manifest: Manifest, index: int, *, feature_major: bool = False) -> np.ndarray:
    """Block ``index`` (in class order) of a model: ``W[k0:k1]``, checked against its
    checksum; with ``feature_major`` its C-order transpose (the engines' layout), read
    straight into that layout."""
    lo, hi, name, digest = manifest.blocks[index]
    shape = (hi - lo, manifest.n_columns)
    return read_npy(
        manifest.path / name, digest, shape, manifest.dtype, transposed=feature_major,
        what="block file",
    )  # fmt: skip


def read_model(path: str | os.PathLike) -> ModelData:
    """Read a model directory written by :func:`write_model`.

    Raises
    ------
    DataError
        Missing directory or manifest, wrong format, a missing, truncated or altered
        block file; the message names the file.
    """
    manifest = read_manifest(path)
    W = np.empty((manifest.n_classes, manifest.n_columns), dtype=manifest.dtype)
    for index, (lo, hi, _, _) in enumerate(manifest.blocks):
        W[lo:hi] = read_block(manifest, index)
    return ModelData(
        W, manifest.classes, manifest.fit_intercept, manifest.params, manifest.history,
        manifest.metadata,
    )  # fmt: skip
