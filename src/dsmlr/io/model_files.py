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
from pathlib import Path

import numpy as np

from dsmlr.errors import DataError
from dsmlr.partition import class_blocks

__all__ = ["FORMAT", "ModelData", "read_model", "write_model"]

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


def _sha256(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _atomic_write_bytes(path: Path, payload: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(payload)
    os.replace(tmp, path)


def write_model(path: str | os.PathLike, model: ModelData, n_blocks: int = 1) -> None:
    """Write ``model`` to directory ``path`` (created if missing).

    The manifest is written last, so a directory without one was interrupted mid-write
    and never loads as a model.
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a directory", str(out))
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        manifest_path.unlink()
    W = np.ascontiguousarray(model.W)
    blocks = []
    for q, (lo, hi) in enumerate(class_blocks(W.shape[0], n_blocks)):
        name = f"block_{q:05d}.npy"
        buffer = io.BytesIO()
        np.save(buffer, W[lo:hi], allow_pickle=False)
        payload = buffer.getvalue()
        _atomic_write_bytes(out / name, payload)
        blocks.append({"file": name, "classes": [lo, hi], "sha256": _sha256(payload)})
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "n_classes": int(W.shape[0]),
        "n_features": int(W.shape[1] - model.fit_intercept),
        "fit_intercept": model.fit_intercept,
        "dtype": str(W.dtype),
        "classes": _encode_classes(np.asarray(model.classes)),
        "blocks": blocks,
        "params": model.params,
        "history": model.history,
        "metadata": model.metadata,
    }
    _atomic_write_bytes(manifest_path, json.dumps(manifest, indent=1).encode())


def read_model(path: str | os.PathLike) -> ModelData:
    """Read a model directory written by :func:`write_model`.

    Raises
    ------
    DataError
        Missing directory or manifest, wrong format, a missing, truncated or altered
        block file; the message names the file.
    """
    src = Path(path)
    manifest_path = src / "manifest.json"
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
    W = np.empty((n_classes, n_cols), dtype=dtype)
    covered = 0
    for lo, hi, name, digest in blocks:
        file = src / name
        if lo != covered or hi < lo:
            raise DataError(
                f"blocks do not cover the classes: expected one starting at class {covered}",
                str(manifest_path),
            )
        covered = hi
        try:
            payload = file.read_bytes()
        except OSError:
            raise DataError("block file missing or unreadable", str(file)) from None
        if _sha256(payload) != digest:
            raise DataError("block file is truncated or altered (checksum mismatch)", str(file))
        try:
            part = np.load(io.BytesIO(payload), allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"not a plain numeric array ({exc})", str(file)) from None
        if part.shape != (hi - lo, n_cols):
            raise DataError(
                f"block has shape {part.shape}, expected {(hi - lo, n_cols)}", str(file)
            )
        W[lo:hi] = part
    if covered != n_classes:
        raise DataError(f"blocks cover classes 0..{covered - 1} of {n_classes}", str(manifest_path))
    return ModelData(
        W, classes, fit_intercept, manifest.get("params"), manifest.get("history"),
        manifest.get("metadata"),
    )  # fmt: skip
