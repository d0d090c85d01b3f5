"""Exporting a trained model as one plain ``.npz`` file that needs only NumPy to use.

The archive holds four arrays, none of them pickled (``numpy.load(path,
allow_pickle=False)`` reads it):

* ``coef``: shape ``(K, D)``, the weights, in the model's dtype;
* ``intercept``: shape ``(K,)`` (zeros for a model fitted without intercept);
* ``classes``: shape ``(K,)``, the labels (integers, floats, booleans or unicode strings);
* ``metadata``: a 0-d unicode array holding one JSON object: ``format``
  (``"dsmlr-export"``), ``version``, ``dsmlr_version``, ``n_classes``, ``n_features``,
  ``fit_intercept``, ``dtype``, ``params`` (the training settings), ``training`` (facts
  about the training input, e.g. the LIBSVM ``zero_based`` index base), ``epochs`` (the
  epochs training ran), ``objective`` (the last epoch's) and ``usage``.

Prediction with NumPy alone, for rows ``X`` with the model's ``D`` columns (a NumPy
array or SciPy sparse matrix)::

    m = numpy.load("model.npz")
    scores = X @ m["coef"].T + m["intercept"]
    labels = m["classes"][scores.argmax(axis=1)]
    info = json.loads(str(m["metadata"]))

Column ``j`` is the model's feature ``j``: for a model trained on a one-based LIBSVM
file (``info["training"]["zero_based"]`` false) that is feature index ``j + 1``.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from dsmlr.errors import DataError
from dsmlr.io.datasets import atomic_write_bytes
from dsmlr.io.model_files import epochs_run, read_model

__all__ = ["EXPORT_FORMAT", "export_npz"]

EXPORT_FORMAT = "dsmlr-export"
EXPORT_VERSION = 1
USAGE = (
    "scores = X @ coef.T + intercept; labels = classes[scores.argmax(axis=1)]; "
    "probabilities = softmax(scores, axis=1)"
)


def export_npz(model: Any, path: str | os.PathLike[str]) -> dict:
    """Write a model as a plain ``.npz`` (``coef``, ``intercept``, ``classes``, ``metadata``).

    See the module docstring for the layout.  The file is written to a temporary name
    and renamed into place, and always to ``path`` exactly (no ``.npz`` is appended).

    Parameters
    ----------
    model : DSMLRClassifier or str or path-like
        A fitted :class:`~dsmlr.DSMLRClassifier`, or the directory of a saved model
        (read without loading scikit-learn).
    path : str or path-like
        Destination file, usually ending in ``.npz``.

    Returns
    -------
    dict
        The metadata written (the JSON object of ``metadata``).

    Raises
    ------
    DataError
        If the model directory cannot be read or the file cannot be written.
    ValueError
        If ``model`` is an estimator that has not been fitted.
    """
    if isinstance(model, (str, os.PathLike)):
        data = read_model(model)
        n_features = data.W.shape[1] - int(data.fit_intercept)
        coef = data.W[:, :n_features]
        if data.fit_intercept:
            intercept = data.W[:, n_features]
        else:
            intercept = np.zeros(data.W.shape[0], dtype=data.W.dtype)
        classes, fit_intercept = data.classes, data.fit_intercept
        params, history, training = data.params, data.history, data.metadata
    else:
        if not hasattr(model, "coef_"):
            raise ValueError("the model is not fitted yet: call fit before exporting it")
        coef, intercept, classes = model.coef_, model.intercept_, model.classes_
        fit_intercept = bool(model.fit_intercept)
        params = {k: v for k, v in model.get_params().items() if _jsonable(v)}
        history = list(getattr(model, "history_", []) or [])
        training = dict(getattr(model, "metadata_", {}) or {})
    classes = _plain_classes(np.asarray(classes))
    from dsmlr import __version__

    info = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "dsmlr_version": __version__,
        "n_classes": int(coef.shape[0]),
        "n_features": int(coef.shape[1]),
        "fit_intercept": fit_intercept,
        "dtype": str(coef.dtype),
        "params": params,
        "training": training,
        "epochs": epochs_run(history),  # run, not recorded (eval_every > 1 records fewer)
        "objective": _finite_or_none(history[-1].get("objective") if history else None),
        "usage": USAGE,
    }
    arrays = {
        "coef": np.ascontiguousarray(coef),
        "intercept": np.ascontiguousarray(intercept),
        "classes": classes,
        # A unicode array, not a Python str object, so that no reader needs pickle.
        "metadata": np.array(json.dumps(info, default=_json_default)),
    }
    atomic_write_bytes(os.fsdecode(os.fspath(path)), lambda fh: np.savez(fh, **arrays))
    return info


def _plain_classes(classes: np.ndarray) -> np.ndarray:
    """The labels as an array ``numpy.load`` reads without pickle."""
    if classes.dtype.kind in "biufU":
        return classes
    values = classes.tolist()
    if all(isinstance(v, str) for v in values):
        return np.array(values, dtype=str)
    if all(isinstance(v, (int, np.integer)) for v in values):
        return np.array(values, dtype=np.int64)
    raise DataError(
        f"class labels of type {type(values[0]).__name__} cannot be exported: "
        "use integers, floats, booleans or strings"
    )


def _jsonable(value: object) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _finite_or_none(value: object) -> float | None:
    # JSON has no NaN or infinity; a diverged run's objective is written as null.
    return float(value) if isinstance(value, (int, float)) and np.isfinite(value) else None


def _json_default(value: object) -> object:
    # NumPy scalars in the history or metadata: write them as plain JSON numbers.
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
