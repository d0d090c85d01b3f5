"""scikit-learn compatible estimator: wiring between arrays, the engine and model files."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import _check_sample_weight, check_is_fitted, validate_data

from dsmlr import defaults
from dsmlr.comm import run_workers
from dsmlr.engines import EngineConfig, Start
from dsmlr.errors import DataError
from dsmlr.io.model_files import ModelData, epochs_run, read_model, write_model
from dsmlr.kernels import gpu_count
from dsmlr.kernels.base import training_layout
from dsmlr.memory import count_nonzeros
from dsmlr.objective import l2_penalty, squared_norm
from dsmlr.scoring import BlockScores, dense_scores, encode_labels, model_scores, summarise
from dsmlr.settings import (
    PARAMETER_CONSTRAINTS,
    Settings,
    class_weights,
    normalised_weights,
)
from dsmlr.training import train_embedded

__all__ = ["CLASSES_PER_WORKER", "DSMLRClassifier", "load_model"]

#: With ``n_workers=None``, no more workers than ``n_classes // CLASSES_PER_WORKER``.
CLASSES_PER_WORKER = 100


class DSMLRClassifier(ClassifierMixin, BaseEstimator):
    """Multinomial logistic regression trained by DS-MLR (data and model parallel).

    Minimises ``lam/2 ||W||^2 + (1/N) sum_i [log sum_k exp(w_k . x_i + c_k) - w_{y_i} .
    x_i - c_{y_i}]``, i.e. scikit-learn's ``LogisticRegression(C=1/(lam*N))``, by the
    doubly-separable reformulation: ``n_workers`` workers each own a shard of rows while
    class blocks circulate among them.

    Parameters
    ----------
    lam : float, default=1e-4
        L2 regularisation strength (per example-averaged loss).
    fit_intercept : bool, default=True
        Learn an unpenalised per-class intercept.
    max_epochs : int, default=100
        Maximum passes over the data.
    tol : float, default=1e-5
        Stop when the relative decrease of the objective stays below ``tol`` for
        ``n_iter_no_change`` consecutive checks.  The objective is checked at each epoch
        that computes it exactly: every epoch, or every ``eval_every``-th.
    n_iter_no_change : int, default=2
        See ``tol``; with ``eval_every > 1`` it counts checks, not epochs.
    n_workers : int or None, default=None
        In-process workers (threads).  None: one per core, but at most one per
        ``CLASSES_PER_WORKER`` (100) classes, because every worker adds a class block
        and each block costs a pass over the rows' indices: with few classes a second
        worker makes epochs no faster (and several blocks converge more slowly at the
        end), with many it does (``docs/benchmarks.md``).
    engine : {"sync", "async"}, default="sync"
        Training engine: the synchronous ring, or asynchronous token passing (blocks
        flow around slow workers instead of waiting for them, each through an epoch's
        anchor gradient, updates and scoring on its own).
    optimizer : {"svrg", "adagrad", "sgd"}, default="svrg"
        Per-block update rule: variance-reduced steps (after one plain warm-up epoch),
        AdaGrad, or the DS-MLR paper's decaying-step SGD.
    eta : float, default=2.0
        Step size in units of ``1 / mean_i ||x_i||^2`` (for AdaGrad: its raw scale).
        It is halved automatically whenever an epoch raises the objective.
    batch_size : int or None, default=None
        Rows per stochastic step.  None: 1 on the CPU, 256 on a GPU, where one-row
        steps would leave it idle (:mod:`dsmlr.defaults`).  Steps on a mini-batch's mean gradient
        are scaled up to keep the per-epoch progress of one-row steps (see
        :func:`dsmlr.engines.step_size.batch_gain`).
    dtype : {"float32", "float64"}, default="float32"
        Storage type of the data and the weights.  float32 halves the model's memory and
        the bytes each step reads (the kernels are bound by memory traffic), so training
        takes about four fifths of float64's time; the objective, the normalisers
        ``b`` and SVRG's anchor gradient are always accumulated in float64.  float64 is
        for optima wanted closer than float32's 7 significant digits allow: in float32
        a ``tol`` far below 1e-7 may never be met, and training then runs to
        ``max_epochs``.
    blocks_per_rank : int or None, default=None
        Class blocks per worker, so ``B = n_workers * blocks_per_rank`` blocks circulate.
        None: the engine's choice (sync: 1, see
        :func:`dsmlr.engines.sync_ring.blocks_per_group`; async: 2, so blocks can flow
        around a slow worker, see :func:`dsmlr.engines.async_tokens.blocks_per_group`).
        More blocks mean finer-grained work and more messages; from two under MPI, each
        block travels while the next is visited.
    eval_every : int, default=1
        Compute the exact objective (every class block scores every worker's rows)
        every this many epochs, and after the last; ``tol`` is checked at those epochs.
        Larger values save that pass's compute and communication.  SVRG, whose anchor
        needs the exact normalisers that pass gives, scores its first epoch too and
        anchors in the epoch after each scoring one, keeping that anchor until the next.
        Only these epochs leave a record in ``history_``; ``n_iter_`` counts them all.
    kernel : str, default="auto"
        Compute kernel: ``"numba"`` (fast CPU), ``"torch"`` (PyTorch, on ``device``),
        ``"reference"`` (numpy oracle); ``"auto"`` is numba on the CPU, torch on a GPU.
    device : str, default="cpu"
        ``"cuda"`` (or ``"cuda:N"``) trains on GPUs with the torch kernel (the ``gpu``
        extra): class blocks and rows stay on the GPU, one GPU per worker (``"cuda"``
        spreads the workers over the visible GPUs; by default one worker per GPU).
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes' loss terms, multiplied into ``sample_weight`` as in
        scikit-learn's ``LogisticRegression``: a ``{label: weight}`` dict, or
        ``"balanced"`` for ``n_samples / (n_classes * np.bincount(y))``.
    warm_start : bool, default=False
        When fitting again on data with the same classes and features, start from the
        previous ``coef_`` and ``intercept_`` instead of zero (and anchor SVRG at once).
        This is the way to continue training; there is no ``partial_fit``, because
        every DS-MLR epoch needs all rows (each row's auxiliary ``b_i`` and the SVRG
        anchor gradient are exact only over the whole training set).
    checkpoint_dir : str or None, default=None
        Save a checkpoint here after every ``checkpoint_every`` epochs (with an exact
        objective) and after the last (see :mod:`dsmlr.checkpoint`; the newest two are
        kept, and each loads as a model).
    checkpoint_every : int, default=1
        See ``checkpoint_dir``.
    resume : bool, default=False
        Continue from the newest checkpoint in ``checkpoint_dir``, if there is one (its
        seed replaces ``random_state``); the result is exactly that of the uninterrupted
        run when the number of workers and the settings are the same.  Data that
        defines another problem (rows, features, classes, ``lam``, intercept, dtype) is
        refused.
    shuffle_rows : bool, default=True
        Give each worker a random sample of the rows (drawn from ``random_state``)
        rather than a contiguous range of them.  Data files are often sorted by label;
        contiguous ranges would then give each worker its own classes, and the class
        blocks' steps on one worker's rows would fit those classes alone, which costs
        many epochs.  The sample is a copy of the rows (one for all workers together);
        ``False`` keeps contiguous ranges (views, no copy) for rows already in random
        order.  With one worker it changes nothing.
    random_state : int or None, default=None
        Seed for the rows' assignment to workers, the ring order of each epoch and the
        row shuffles.
    verbose : int, default=0
        Print one line per epoch when > 0.

    Attributes
    ----------
    coef_ : ndarray of shape (n_classes, n_features)
    intercept_ : ndarray of shape (n_classes,)
        Zeros when ``fit_intercept=False``.
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    n_iter_ : int
        Epochs run by the last ``fit`` (when it resumed from a checkpoint, by the whole
        run, the epochs before the checkpoint included), as in scikit-learn: with
        ``eval_every > 1`` more than the records in ``history_``.
    converged_ : bool or None
        Whether the stopping rule fired before ``max_epochs``; None for a model read by
        :func:`load_model` (model files do not record it).
    history_ : list of dict
        One record per epoch that computed the exact objective, in order: every epoch
        with ``eval_every=1``; otherwise every ``eval_every``-th, SVRG's first, and always
        the last epoch run, so ``history_[-1]["epoch"] == n_iter_``.  A record holds
        ``epoch`` (its number, from 1), ``time`` (seconds since the start), ``objective``
        (exact), ``train_accuracy``, ``compute_seconds``, ``comm_seconds``,
        ``wait_seconds``, ``eval_seconds`` and ``bytes_sent`` (summed over the epochs
        since the previous record), ``peak_rss``, and ``test_objective`` /
        ``test_accuracy`` / ``test_top5_accuracy`` when a validation set was given.
        After a resumed ``fit``, the records from before the checkpoint come first.
    metadata_ : dict
        Only on a model read by :func:`load_model`: the facts stored with it by
        :meth:`save` (``dsmlr train`` stores the training file's index base,
        ``{"zero_based": False}`` for a one-based LIBSVM file).
    """

    _parameter_constraints: ClassVar[dict] = PARAMETER_CONSTRAINTS

    def __init__(
        self,
        lam: float = defaults.LAM,
        *,
        fit_intercept: bool = True,
        max_epochs: int = defaults.MAX_EPOCHS,
        tol: float = defaults.TOL,
        n_iter_no_change: int = defaults.N_ITER_NO_CHANGE,
        n_workers: int | None = None,
        engine: str = defaults.ENGINE,
        optimizer: str = defaults.OPTIMIZER,
        eta: float = defaults.ETA,
        batch_size: int | None = None,
        dtype: str = defaults.DTYPE,
        blocks_per_rank: int | None = None,
        eval_every: int = defaults.EVAL_EVERY,
        kernel: str = "auto",
        device: str = "cpu",
        class_weight: dict | str | None = None,
        warm_start: bool = False,
        checkpoint_dir: str | os.PathLike | None = None,
        checkpoint_every: int = defaults.CHECKPOINT_EVERY,
        resume: bool = False,
        shuffle_rows: bool = True,
        random_state: int | None = None,
        verbose: int = 0,
    ):
        self.lam = lam
        self.fit_intercept = fit_intercept
        self.max_epochs = max_epochs
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.n_workers = n_workers
        self.engine = engine
        self.optimizer = optimizer
        self.eta = eta
        self.batch_size = batch_size
        self.dtype = dtype
        self.blocks_per_rank = blocks_per_rank
        self.eval_every = eval_every
        self.kernel = kernel
        self.device = device
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.checkpoint_dir = checkpoint_dir
        self.checkpoint_every = checkpoint_every
        self.resume = resume
        self.shuffle_rows = shuffle_rows
        self.random_state = random_state
        self.verbose = verbose

    # -- data preparation -------------------------------------------------------------

    def _prepare(self, X, *, reset: bool, y="no_validation"):
        """``X`` validated and in the training layout; with ``y``, ``(X, y)`` validated."""
        if not (isinstance(y, str) and y == "no_validation"):
            X, y = validate_data(
                self, X, y, accept_sparse=["csr", "csc", "coo"],
                dtype=[np.float64, np.float32], reset=reset,
            )  # fmt: skip
            return self._layout(X), y
        X = validate_data(
            self, X, accept_sparse=["csr", "csc", "coo"], dtype=[np.float64, np.float32],
            reset=reset,
        )  # fmt: skip
        return self._layout(X)

    def _layout(self, X):
        return training_layout(X, getattr(self, "dtype", "float32"))

    def _settings(self) -> Settings:
        """The parameters as :class:`dsmlr.settings.Settings` (what they mean for a run)."""
        return Settings(**self.get_params())

    def _resolved_workers(self, n_samples: int, n_classes: int) -> int:
        workers = self.n_workers
        if workers is None and self.device != "cpu":
            workers = 1 if ":" in self.device else gpu_count()
        if workers is None:
            workers = min(os.cpu_count() or 1, n_classes // CLASSES_PER_WORKER)
        return max(1, min(workers, n_samples))

    # -- training ---------------------------------------------------------------------

    def fit(
        self,
        X,
        y,
        sample_weight=None,
        *,
        X_val=None,
        y_val=None,
        callback: Callable[[dict], None] | None = None,
    ):
        """Train on ``X`` (dense or sparse, (N, D)) and labels ``y`` (any hashable).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        sample_weight : array-like of shape (n_samples,), optional
            Non-negative weight of each row's loss term: the objective becomes
            ``lam/2 ||W||^2 + (1/S) sum_i s_i loss_i`` with ``S = sum_i s_i``, so an
            integer weight acts exactly like repeating the row; it is scikit-learn's
            ``LogisticRegression(C=1/(lam*S)).fit(X, y, sample_weight=s)``.  Multiplied
            by ``class_weight`` when both are given.
        X_val, y_val : optional
            Held-out data scored every epoch (``test_*`` entries of ``history_``);
            labels not seen in ``y`` count as errors.
        callback : callable, optional
            Called with each ``history_`` record as training proceeds (a copy of its
            own: changing it changes nothing else).  If
            it also has a ``progress(epoch, done, total)`` method, that is called after
            each class-block visit of the epoch on the first worker (the anchor
            gradient's, the updates' and the scoring's; for progress bars).

        Returns
        -------
        self

        Notes
        -----
        ``X``, ``y`` and ``sample_weight`` are only read.  A ``fit`` that fails leaves
        the fitted attributes as they were, so a model never pairs the weights of one
        fit with the classes or features of another.
        """
        fitted = {k: v for k, v in vars(self).items() if _fitted_attribute(k)}
        try:
            return self._fit(X, y, sample_weight, X_val, y_val, callback)
        except BaseException:
            for name in [k for k in vars(self) if _fitted_attribute(k)]:
                delattr(self, name)
            vars(self).update(fitted)
            raise

    def _fit(self, X, y, sample_weight, X_val, y_val, callback):
        self._validate_params()
        warm = self._warm_weights() if self.warm_start else None
        X, y = self._prepare(X, reset=True, y=y)
        check_classification_targets(y)
        self.classes_, y_idx = np.unique(y, return_inverse=True)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                "DSMLRClassifier needs samples of at least 2 classes in the data, but the "
                f"data contains only one class: {self.classes_.tolist()[0]!r}"
            )
        y_idx = y_idx.astype(np.int64)
        weight = self._sample_weight(sample_weight, X, y_idx)
        W0 = self._warm_start_matrix(warm, X.shape[1])
        X_test = y_test = None
        if X_val is not None and y_val is not None:
            X_test = self._prepare(X_val, reset=False)
            y_test = encode_labels(y_val, self.classes_)

        settings = self._settings()
        cfg = self._engine_config(X.shape[0], X.shape[1], n_classes, settings.seed())
        start = None if W0 is None else Start(weights=lambda k0, k1: W0[k0:k1])
        n_workers = self._resolved_workers(X.shape[0], n_classes)
        nnz = count_nonzeros(X) + (0 if X_test is None else count_nonzeros(X_test))
        n_rows = X.shape[0] + (0 if X_test is None else X_test.shape[0])

        def prepare(comm):  # the checks and loads a distributed run makes collectively
            settings.check_memory(comm, cfg, n_rows, nnz, n_workers)
            return settings.checkpointing(comm, cfg, start, self.classes_)

        cfg, start, saver = run_workers(1, prepare)[0]
        monitor = settings.monitor(callback, checkpoint=saver)
        result = train_embedded(
            X, y_idx, cfg, n_workers, self.engine, X_test, y_test, monitor, weight, start,
            shuffle_rows=bool(self.shuffle_rows),
        )  # fmt: skip
        self._set_weights(result.W)
        self.history_ = [r.as_dict() for r in result.history]
        # Epochs run, not records: with eval_every > 1 only scoring epochs leave one,
        # and the last epoch run always scores.
        self.n_iter_ = epochs_run(self.history_)
        self.converged_ = result.converged
        # What load_model read about an earlier training input (its index base) does
        # not describe this one, and export_npz would write it as if it did.
        vars(self).pop("metadata_", None)
        return self

    def _sample_weight(self, sample_weight, X, y_idx: np.ndarray) -> np.ndarray | None:
        """Row weights from ``sample_weight`` and ``class_weight`` (new arrays); None when
        neither is given."""
        if sample_weight is None and self.class_weight is None:
            return None  # the unweighted kernels' exact path
        weight = _check_sample_weight(sample_weight, X, dtype=np.float64, ensure_non_negative=True)
        counts = np.bincount(y_idx, minlength=len(self.classes_))
        weight = weight * class_weights(self.class_weight, self.classes_, counts)[y_idx]
        return normalised_weights(weight, float(weight.sum()), len(weight))

    def _warm_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The fitted ``(classes_, coef_, intercept_)`` to start from, or None."""
        if not hasattr(self, "coef_"):
            return None
        return self.classes_, self.coef_, self.intercept_

    def _warm_start_matrix(self, warm, n_features: int) -> np.ndarray | None:
        """Starting ``(K, D_fit)`` weights for ``warm_start`` (None: start from zero)."""
        if warm is None:
            return None
        classes, coef, intercept = warm
        if not np.array_equal(classes, self.classes_):
            differ = np.setxor1d(classes, self.classes_)[:5].tolist()
            raise ValueError(
                f"warm_start needs the same classes as the previous fit; these are in one but "
                f"not the other: {differ}"
            )
        if coef.shape[1] != n_features:
            raise ValueError(
                f"warm_start needs the same features as the previous fit: it had "
                f"{coef.shape[1]}, this data has {n_features}"
            )
        dtype = np.dtype(self.dtype)
        if self.fit_intercept:
            return np.hstack([coef, intercept[:, None]]).astype(dtype)
        return coef.astype(dtype)

    def _engine_config(
        self, n_samples: int, n_features: int, n_classes: int, seed: int
    ) -> EngineConfig:
        """The engine settings these parameters mean for a problem of this size."""
        return self._settings().engine_config(n_samples, n_features, n_classes, seed)

    def _set_weights(self, W: np.ndarray) -> None:
        n_features = W.shape[1] - int(self.fit_intercept)
        self.coef_ = np.ascontiguousarray(W[:, :n_features])
        if self.fit_intercept:
            self.intercept_ = np.ascontiguousarray(W[:, n_features])
        else:
            self.intercept_ = np.zeros(W.shape[0], dtype=W.dtype)

    # -- prediction -------------------------------------------------------------------

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``, shape (n_samples, n_classes).

        With two classes, scikit-learn's binary convention: one score per row, that of
        ``classes_[1]`` minus that of ``classes_[0]`` (positive means ``classes_[1]``).
        """
        scores = self._dense_scores(X, "scores")
        return scores[:, 1] - scores[:, 0] if scores.shape[1] == 2 else scores

    def predict_proba(self, X) -> np.ndarray:
        """Softmax class probabilities, shape (n_samples, n_classes)."""
        return self._dense_scores(X, "proba")

    def predict_log_proba(self, X) -> np.ndarray:
        """Log of :meth:`predict_proba`."""
        return self._dense_scores(X, "log_proba")

    def predict(self, X) -> np.ndarray:
        """Most probable class label per row (ties: the first class)."""
        # Only the ranking: no exponentials for the normaliser.
        top = self._block_scores(X, k=1, normalise=False).top_classes[:, 0]
        return self.classes_[top]

    def predict_top_k(self, X, k: int = 5) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most probable labels per row, best first, and their probabilities."""
        s = self._block_scores(X, k=k)
        return self.classes_[s.top_classes], s.top_proba

    def objective(self, X, y) -> float:
        """The training objective ``L(W)`` on ``(X, y)`` (rows with unknown labels skipped)."""
        y_idx = encode_labels(y, self.classes_)
        s = self._block_scores(X, k=1, y=y_idx)
        loss, _, _, n_known = summarise(s, y_idx, 1)
        penalty = l2_penalty(self.lam, squared_norm(self.coef_))
        return loss / n_known + penalty if n_known else float("nan")

    # Prediction streams over class blocks and chunks of rows (dsmlr.scoring): the
    # methods returning one value (or k) per row never hold N x K scores, and those
    # returning N x K hold nothing else of that size; memory budget scoring.MEMORY_BYTES.

    def _block_scores(
        self, X, *, k: int, y: np.ndarray | None = None, normalise: bool = True
    ) -> BlockScores:
        check_is_fitted(self)
        X = self._prepare(X, reset=False)
        return model_scores(
            X, self.coef_, self.intercept_, fit_intercept=bool(self.fit_intercept), k=k, y=y,
            normalise=normalise,
        )  # fmt: skip

    def _dense_scores(self, X, output: str) -> np.ndarray:
        check_is_fitted(self)
        X = self._prepare(X, reset=False)
        return dense_scores(
            X, self.coef_, self.intercept_, fit_intercept=bool(self.fit_intercept), output=output
        )

    # -- persistence ------------------------------------------------------------------

    def save(
        self, path: str | os.PathLike, n_blocks: int = 1, metadata: dict | None = None
    ) -> None:
        """Write the fitted model to directory ``path`` (JSON manifest + ``.npy`` blocks).

        ``metadata`` (JSON values) is stored beside the model and comes back as
        ``metadata_`` from :func:`load_model`.
        """
        check_is_fitted(self)
        W = self.coef_
        if self.fit_intercept:
            W = np.hstack([self.coef_, self.intercept_[:, None]])
        params = self.json_params()
        write_model(
            path,
            ModelData(W, self.classes_, self.fit_intercept, params, self.history_, metadata),
            n_blocks,
        )

    def json_params(self) -> dict:
        """The parameters a model file records (:meth:`dsmlr.settings.Settings.json_params`)."""
        return self._settings().json_params()

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _fitted_attribute(name: str) -> bool:
    """Whether ``name`` is an attribute ``fit`` sets (scikit-learn's trailing ``_``)."""
    return name.endswith("_") and not name.startswith("__")


def load_model(path: str | os.PathLike) -> DSMLRClassifier:
    """Load a model directory written by :meth:`DSMLRClassifier.save` as a fitted estimator."""
    data = read_model(path)
    names = DSMLRClassifier().get_params()
    params = {k: v for k, v in data.params.items() if k in names}
    try:
        clf = DSMLRClassifier(**params)
    except TypeError as exc:
        raise DataError(f"invalid parameters in manifest ({exc})", str(path)) from None
    clf.fit_intercept = data.fit_intercept
    clf.classes_ = data.classes
    clf.n_features_in_ = data.W.shape[1] - int(data.fit_intercept)
    clf._set_weights(data.W)
    clf.history_ = data.history
    clf.n_iter_ = epochs_run(data.history)
    clf.converged_ = None
    clf.metadata_ = data.metadata
    return clf
