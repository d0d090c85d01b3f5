"""The benchmark suite's problem registry: every problem a method is timed on.

Each :class:`Problem` loads ``(X_train, y_train, X_test, y_test)`` deterministically from
its seed.  The generated sparse problems are text-like (``dsmlr.datagen``: Zipf feature
popularity, tf-idf-like values, L2-normalised rows, labels sampled from a planted softmax
model, so the optimum is finite and the data are not separable); generating the larger
ones takes minutes, so they are cached as ``.npz`` files (plain arrays, no pickle) under
``benchmarks/cache/``, which git ignores.

All problems share one objective (:func:`objective` in ``adapters/common.py``)::

    f(W, b) = (1/N) sum_i [logsumexp(x_i W^T + b) - (x_i . w_{y_i} + b_{y_i})]
              + lam/2 ||W||_F^2

with the intercept ``b`` (when ``fit_intercept``) not penalised.  That is dsmlr's
``plain_objective`` and scikit-learn's ``LogisticRegression(C=1/(lam*N))``, whose
objective ``1/2 ||W||^2 + C sum_i loss_i`` is ``C*N`` times ``f``.

``tiny`` exists for the suite's own tests and is never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.sparse as sp

__all__ = ["CACHE_DIR", "PROBLEMS", "Data", "Problem", "get_problem"]

CACHE_DIR = Path(__file__).resolve().parent / "cache"

# Bump when a generator changes, so stale caches are not silently reused.
_GENERATOR_VERSION = 1


@dataclass(frozen=True, eq=False)
class Data:
    """One problem's train and test arrays (CSR float64 or dense float64, int64 labels)."""

    X_train: sp.csr_matrix | np.ndarray
    y_train: np.ndarray
    X_test: sp.csr_matrix | np.ndarray
    y_test: np.ndarray

    @property
    def n_classes(self) -> int:
        """Classes of the training labels, numbered ``0..K-1`` (test label -1: unseen)."""
        return int(self.y_train.max()) + 1


@dataclass(frozen=True)
class Problem:
    """A registered benchmark problem.

    Attributes
    ----------
    name : str
    description : str
        One line for the results table.
    lam : float
        L2 strength of the per-example-averaged objective.
    fit_intercept : bool
        Learn an unpenalised per-class intercept.
    generate : callable
        ``generate(seed) -> Data``; deterministic in ``seed``.
    shape : dict
        Nominal ``n_train``, ``n_test``, ``n_features``, ``n_classes`` (part of the cache
        keys, so a changed shape never reads an old cache).
    seed : int
        The seed the suite uses.
    cache : bool
        Store the generated arrays under ``cache_dir`` (generation is slow).
    """

    name: str
    description: str
    lam: float
    fit_intercept: bool
    generate: Callable[[int], Data] = field(repr=False)
    shape: dict = field(default_factory=dict)
    seed: int = 0
    cache: bool = True

    def key(self) -> str:
        """Identifies the problem's data and objective (cache file names use it)."""
        spec = {
            "name": self.name,
            "shape": self.shape,
            "lam": self.lam,
            "fit_intercept": self.fit_intercept,
            "seed": self.seed,
            "version": _GENERATOR_VERSION,
        }
        digest = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
        return f"{self.name}-{digest}"

    def load(self, cache_dir: Path | str | None = None, verbose: bool = False) -> Data:
        """The problem's arrays, generated once and then read from the cache."""
        if not self.cache:
            return _labels_of_train(self.generate(self.seed))
        path = Path(cache_dir or CACHE_DIR) / f"problem-{self.key()}.npz"
        if path.exists():
            return _read_npz(path)
        if verbose:
            print(f"generating problem {self.name!r} ({self.description}) ...", flush=True)
        data = _labels_of_train(self.generate(self.seed))
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_npz(path, data)
        if verbose:
            print(f"cached {path}", flush=True)
        return data


def _labels_of_train(data: Data) -> Data:
    """Labels renumbered ``0..K-1`` over the classes present in the training rows.

    Every library then learns the same ``K`` classes (scikit-learn only knows the
    classes it sees, and an unseen class would change the objective's normaliser).
    Test rows of a class absent from training get label -1: an error for every method.
    """
    classes = np.unique(data.y_train)
    y_train = np.searchsorted(classes, data.y_train).astype(np.int64)
    pos = np.clip(np.searchsorted(classes, data.y_test), 0, len(classes) - 1)
    y_test = np.where(classes[pos] == data.y_test, pos, -1).astype(np.int64)
    return Data(data.X_train, y_train, data.X_test, y_test)


def _write_npz(path: Path, data: Data) -> None:
    arrays: dict[str, np.ndarray] = {"y_train": data.y_train, "y_test": data.y_test}
    for part in ("train", "test"):
        X = getattr(data, f"X_{part}")
        if sp.issparse(X):
            arrays |= {
                f"X_{part}_data": X.data,
                f"X_{part}_indices": X.indices,
                f"X_{part}_indptr": X.indptr,
                f"X_{part}_shape": np.asarray(X.shape, dtype=np.int64),
            }
        else:
            arrays[f"X_{part}"] = np.asarray(X)
    # Written beside the target and renamed: an interrupted run leaves no half file.
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def _read_npz(path: Path) -> Data:
    with np.load(path, allow_pickle=False) as z:
        parts = {}
        for part in ("train", "test"):
            if f"X_{part}" in z:
                parts[part] = z[f"X_{part}"]
            else:
                shape = tuple(int(v) for v in z[f"X_{part}_shape"])
                parts[part] = sp.csr_matrix(
                    (z[f"X_{part}_data"], z[f"X_{part}_indices"], z[f"X_{part}_indptr"]),
                    shape=shape,
                )
        return Data(parts["train"], z["y_train"], parts["test"], z["y_test"])


def _text_like(
    n_train: int, n_test: int, n_features: int, n_classes: int, nnz: int
) -> Callable[[int], Data]:
    def generate(seed: int) -> Data:
        from dsmlr.datagen import make_extreme_multiclass

        g = make_extreme_multiclass(
            n_train + n_test, n_features, n_classes, nnz_per_row=nnz, random_state=seed
        )
        # Rows are independent draws, so the last rows are as good a test set as any.
        X = g.X.tocsr()
        return Data(X[:n_train], g.y[:n_train], X[n_train:], g.y[n_train:])

    return generate


def _gaussian_mixture(
    n_train: int, n_test: int, n_features: int, n_classes: int
) -> Callable[[int], Data]:
    def generate(seed: int) -> Data:
        rng = np.random.default_rng(seed)
        n = n_train + n_test
        # Unit noise per feature and class means 0.1 apart per feature: two means are
        # about 3 noise deviations apart along the line between them, so the classes
        # overlap, the data are not separable and the optimum is finite and interior.
        means = rng.normal(scale=0.1, size=(n_classes, n_features))
        y = rng.integers(0, n_classes, size=n).astype(np.int64)
        X = means[y] + rng.normal(size=(n, n_features))
        return Data(X[:n_train], y[:n_train], X[n_train:], y[n_train:])

    return generate


def _digits(seed: int) -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X = X / 16.0  # pixel intensities 0..16 -> [0, 1], what MaxAbsScaler would do here
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, random_state=seed, stratify=y)
    return Data(Xtr, ytr.astype(np.int64), Xte, yte.astype(np.int64))


#: Where the real data sets are (``debian-*.{train,test}.svm.gz``): ``$DSMLR_DATA_DIR``, by
#: default the ``shared/data`` folder beside the repository's.
DATA_DIR = Path(
    os.environ.get("DSMLR_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
)


def _real(name: str) -> Callable[[int], Data]:
    """A real data set of ``DATA_DIR`` (the seed is ignored: the split is the files')."""

    def load(seed: int) -> Data:
        from dsmlr.io import load_dataset

        paths = [DATA_DIR / f"{name}.{part}.svm.gz" for part in ("train", "test")]
        missing = [str(p) for p in paths if not p.exists()]
        if missing:
            raise FileNotFoundError(
                f"{', '.join(missing)} not found: set DSMLR_DATA_DIR to the folder that "
                f"holds the real data sets"
            )
        train = load_dataset(paths[0], dtype=np.float64, zero_based=False)
        test = load_dataset(
            paths[1], dtype=np.float64, zero_based=False, n_features=train.X.shape[1],
            allow_extra_features=True,
        )  # fmt: skip
        return Data(train.X, train.y.astype(np.int64), test.X, test.y.astype(np.int64))

    return load


def _shape(n_train: int, n_test: int, n_features: int, n_classes: int) -> dict:
    return {"n_train": n_train, "n_test": n_test, "n_features": n_features, "n_classes": n_classes}


def _registry() -> dict[str, Problem]:
    problems = [
        Problem(
            "tiny",
            "generated sparse text-like, 1.5K+500 rows, 800 features, 12 classes (tests)",
            lam=1e-3,
            fit_intercept=False,
            generate=_text_like(1500, 500, 800, 12, 20),
            shape=_shape(1500, 500, 800, 12),
            cache=False,
        ),
        Problem(
            "small",
            "generated sparse text-like, 20K+5K rows, 20K features, 100 classes, ~50 nnz/row",
            lam=1e-5,
            fit_intercept=False,
            generate=_text_like(20_000, 5_000, 20_000, 100, 50),
            shape=_shape(20_000, 5_000, 20_000, 100),
        ),
        Problem(
            "medium",
            "generated sparse text-like, 100K+20K rows, 50K features, 1000 classes, ~50 nnz/row",
            lam=1e-5,
            fit_intercept=False,
            generate=_text_like(100_000, 20_000, 50_000, 1000, 50),
            shape=_shape(100_000, 20_000, 50_000, 1000),
        ),
        Problem(
            "large",
            "generated sparse text-like, 1M+100K rows, 200K features, 5000 classes, "
            "~50 nnz/row (a float64 model alone is 8 GB)",
            lam=1e-6,
            fit_intercept=False,
            generate=_text_like(1_000_000, 100_000, 200_000, 5000, 50),
            shape=_shape(1_000_000, 100_000, 200_000, 5000),
        ),
        Problem(
            "dense",
            "dense Gaussian mixture, 20K+5K rows, 500 features, 50 classes",
            lam=1e-4,
            fit_intercept=True,
            generate=_gaussian_mixture(20_000, 5_000, 500, 50),
            shape=_shape(20_000, 5_000, 500, 50),
        ),
        Problem(
            "debian-source",
            "real: Debian package descriptions -> source package, 17.6K+4.5K rows, 41K "
            "features, 2416 classes, ~14 nnz/row, file sorted by label",
            lam=1e-5,
            fit_intercept=False,
            generate=_real("debian-source"),
            shape=_shape(17_582, 4_453, 40_936, 2416),
        ),
        Problem(
            "debian-files",
            "real: Debian file paths -> owning package, 97.8K+24.4K rows, 17.7K features, "
            "1222 classes, ~12 nnz/row",
            lam=1e-5,
            fit_intercept=False,
            generate=_real("debian-files"),
            shape=_shape(97_760, 24_440, 17_669, 1222),
        ),
        Problem(
            "digits",
            "scikit-learn digits (8x8 images / 16), 1437+360 rows, 64 features, 10 classes",
            lam=1e-3,
            fit_intercept=True,
            generate=_digits,
            shape=_shape(1437, 360, 64, 10),
            cache=False,  # loading it is instant
        ),
    ]
    return {p.name: p for p in problems}


#: Every registered problem by name.
PROBLEMS: dict[str, Problem] = _registry()


def get_problem(name: str) -> Problem:
    """The registered problem ``name`` (KeyError listing the known names otherwise)."""
    try:
        return PROBLEMS[name]
    except KeyError:
        raise KeyError(f"unknown problem {name!r}; known: {', '.join(PROBLEMS)}") from None
