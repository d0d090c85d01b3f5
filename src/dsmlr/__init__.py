"""dsmlr: multinomial logistic regression at extreme scale by double separability.

The public API: :class:`DSMLRClassifier` (scikit-learn compatible), :func:`load_model`,
LIBSVM/svmlight I/O (:func:`read_svmlight`, :func:`write_svmlight`) and the synthetic
data generator :func:`make_extreme_multiclass`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dsmlr.datagen import make_extreme_multiclass
    from dsmlr.errors import DataError, NumericalError
    from dsmlr.estimator import DSMLRClassifier, load_model
    from dsmlr.io import read_svmlight, write_svmlight

# Public names are loaded on first use: the estimator pulls in scikit-learn, which costs
# seconds that ``dsmlr --help`` and the data tools should not pay.
_LAZY = {
    "DSMLRClassifier": "dsmlr.estimator",
    "load_model": "dsmlr.estimator",
    "make_extreme_multiclass": "dsmlr.datagen",
    "DataError": "dsmlr.errors",
    "NumericalError": "dsmlr.errors",
    "read_svmlight": "dsmlr.io",
    "write_svmlight": "dsmlr.io",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dsmlr' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "DSMLRClassifier",
    "DataError",
    "NumericalError",
    "__version__",
    "load_model",
    "make_extreme_multiclass",
    "read_svmlight",
    "write_svmlight",
]
