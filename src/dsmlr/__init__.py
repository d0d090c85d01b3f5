"""dsmlr: multinomial logistic regression at extreme scale by double separability.

The public API: :class:`DSMLRClassifier` (scikit-learn compatible), :func:`load_model`,
LIBSVM/svmlight I/O (:func:`read_svmlight`, :func:`write_svmlight`) and the synthetic
data generator :func:`make_extreme_multiclass`.
"""

from dsmlr.datagen import make_extreme_multiclass
from dsmlr.errors import DataError, NumericalError
from dsmlr.estimator import DSMLRClassifier, load_model
from dsmlr.io import read_svmlight, write_svmlight

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
