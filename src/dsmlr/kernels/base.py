"""What every kernel receives: a worker's rows and the optimiser settings.

A kernel is pure local numerics: it never communicates.  All kernels implement the same
two passes over one worker's rows and one class block (feature-major ``W_block`` of
shape ``(D_fit, K_q)``, see :mod:`dsmlr.objective`):

``score_pass``
    scores every local row against the block; writes the block's partial log-sum-exp
    into ``partials[:, q]`` and merges the true-class score and the running arg-max.
``update_pass``
    one pass of mini-batch stochastic steps on ``L(W, b)`` for the block over the local
    rows in the given order.  Before each mini-batch step the rows' ``b_i`` are refreshed
    from the cached per-block partial normalisers, with the block's own partial
    recomputed at the current weights (see :class:`UpdateConfig`).  With a
    :class:`Snapshot` the steps are SVRG steps (variance-reduced by the anchor).
``gradient_pass``
    adds ``scale * sum_i s_i (exp(w_k . x_i + b_i) - [y_i = k]) x_i`` over the local rows
    to ``out`` (the data gradient of the block, for the SVRG anchor).  Given ``keep``,
    only the probabilities of at least ``keep`` enter the sum, and the pass returns them
    as an :class:`~dsmlr.kernels.anchor_table.AnchorTable`.

Every row's loss term, hence its gradient, is scaled by its weight ``s_i``
(:attr:`LocalRows.weight`, ones unless ``sample_weight`` was given); ``b_i`` is not,
since its optimum ``-log sum_k exp(w_k . x_i)`` does not depend on ``s_i``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import scipy.sparse as sp

from dsmlr.errors import DataError
from dsmlr.kernels.anchor_table import AnchorTable

__all__ = [
    "HostBlocks",
    "Kernel",
    "LocalRows",
    "Snapshot",
    "UpdateConfig",
    "merge_best",
    "training_layout",
]


def training_layout(X, dtype) -> sp.csr_matrix | np.ndarray:
    """``X`` as the kernels read it: CSR with sorted, summed indices, or C-contiguous
    dense rows, of ``dtype``.

    The caller's ``X`` is never modified.  The result may share arrays with it where
    they are already what the kernels read (a canonical CSR matrix of ``dtype``, or
    C-contiguous rows of ``dtype``), so it must be treated as read-only; an array is
    copied only where it has to change (the values cast to ``dtype``; the indices
    sorted and duplicates summed in a copy of the matrix's arrays).

    Values beyond ``dtype``'s range (float64 data cast to float32, the default) are
    refused with a :class:`~dsmlr.errors.DataError` instead of becoming infinities.
    """
    dtype = np.dtype(dtype)
    values = X.data if sp.issparse(X) else np.asarray(X)
    limit = float(np.finfo(dtype).max)
    if values.size and values.dtype.itemsize > dtype.itemsize:
        # Two reductions instead of np.abs: no temporary copy the size of the data.
        largest = max(float(values.max()), -float(values.min()))
        if largest > limit:
            raise DataError(
                f"X holds a value of magnitude {largest:.3g}, beyond {dtype.name} (at most "
                f"{limit:.3g}): train with dtype='float64', or rescale the features"
            )
    if sp.issparse(X):
        return _canonical_csr(X, dtype)
    return np.ascontiguousarray(X, dtype=dtype)


def _canonical_csr(X, dtype: np.dtype) -> sp.csr_matrix:
    """``X`` as CSR of ``dtype`` with sorted indices and no duplicates, ``X`` untouched.

    scipy's ``csr_matrix(X, dtype=...)`` shares ``indices`` and ``indptr`` with ``X``
    (and ``data`` too when the dtype is already right), and ``sort_indices`` and
    ``sum_duplicates`` work in place: on shared arrays they would reorder the caller's
    indices but not its values (whose cast is a copy), silently turning ``X`` into
    another matrix.  So arrays the caller owns are only ever read; any array that must
    change is copied first, and only then.
    """
    # Another format's conversion builds new arrays, which are ours to change.  A CSR
    # matrix gets a new matrix object over the same arrays, so that even the flags
    # scipy caches on a matrix (``has_sorted_indices``) are set on ours, not the caller's.
    own_arrays = X.format != "csr"
    M = sp.csr_matrix(X)
    own_data = own_arrays
    if M.dtype != dtype:
        M.data = M.data.astype(dtype)
        own_data = True
    if not M.has_canonical_format:  # one pass over the indices, no allocation
        if not own_arrays:
            # Sorting and summing rewrite indices, data and indptr in place.
            M.indices = M.indices.copy()
            M.indptr = M.indptr.copy()
            if not own_data:
                M.data = M.data.copy()
        M.sum_duplicates()  # sorts the indices first
    return M


@dataclass(frozen=True)
class LocalRows:
    """The rows one worker owns.

    Attributes
    ----------
    X : csr_matrix or ndarray of shape (n_local, D)
        Features; CSR with sorted indices or a C-contiguous dense array.
    y : ndarray of int64, shape (n_local,)
        Class indices in ``0..K-1``.
    fit_intercept : bool
        Whether an implicit feature equal to 1 follows the D real ones (column ``D`` of
        the block, never penalised).
    weight : ndarray of float64, shape (n_local,), optional
        Per-row weight ``s_i`` of the loss term (``sample_weight``); None means all ones
        (stored as ones, so kernels need one code path: multiplying by 1.0 is exact and
        unweighted results are bit-identical to a kernel without weights).
    """

    X: sp.csr_matrix | np.ndarray
    y: np.ndarray
    fit_intercept: bool
    weight: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        weighted = self.weight is not None
        w = np.ones(self.X.shape[0]) if self.weight is None else self.weight
        object.__setattr__(self, "weight", np.ascontiguousarray(w, dtype=np.float64))
        object.__setattr__(self, "weighted", weighted)

    weighted: bool = field(default=False, init=False, repr=False)

    @property
    def n_rows(self) -> int:
        return self.X.shape[0]

    @property
    def n_features(self) -> int:
        return self.X.shape[1]

    @property
    def is_sparse(self) -> bool:
        return sp.issparse(self.X)


@dataclass(frozen=True)
class UpdateConfig:
    """Settings of one block-update pass.

    Attributes
    ----------
    eta : float
        Step size.  With ``adaptive`` it scales AdaGrad's per-feature step
        ``eta / sqrt(acc_j + delta)``; otherwise it is the plain SGD step.
    lam : float
        L2 strength.
    n_penalized : int
        Columns ``0..n_penalized-1`` are penalised (the intercept column is not).
    batch_size : int
        Rows per stochastic step.
    adaptive : bool
        AdaGrad per-feature steps (accumulator shared by the block's classes and carried
        with the block) instead of plain SGD.  Ignored by SVRG steps, which use the
        constant step ``eta``.
    delta : float
        AdaGrad's floor inside the square root.
    unpenalized_scale : float
        Factor on the step of the unpenalised (intercept) column.  A mini-batch's step
        is longer than one row's along features its rows rarely share, but not along the
        intercept, which every row shares (see :func:`dsmlr.engines.step_size.batch_gain`).

    Notes
    -----
    The penalty's gradient ``lam * w_j`` (and, for SVRG, the anchor's full gradient
    ``mu_j``) is applied to every column at every step.  A column no row of the
    mini-batch touches follows a fixed linear recurrence, ``w <- (1 - a lam) w - a mu``,
    so fast kernels apply it lazily in closed form (when the column is next touched, and
    at the end of the pass); the reference kernel applies it eagerly, step by step.
    """

    eta: float
    lam: float
    n_penalized: int
    batch_size: int
    adaptive: bool = True
    delta: float = 1e-12
    unpenalized_scale: float = 1.0


@dataclass(frozen=True)
class Snapshot:
    """SVRG anchor for one block: the weights (or the rows' largest probabilities),
    exact b and full gradient at the anchor.

    Attributes
    ----------
    W_block : ndarray of shape (D_fit, K_q), or None
        Block weights at the anchor point ``W~`` (None where ``table`` holds the anchor).
    mean_grad : ndarray of shape (D_fit, K_q)
        Full data gradient of the block at the anchor,
        ``(1/N) sum_i (p~_ik - [y_i = k]) x_i`` (no penalty term; with a ``table``, over
        the probabilities it keeps), summed in the weights' dtype (see
        :meth:`dsmlr.engines.epochs.Epoch.begin_gradient`).
    b : ndarray of shape (n_local,)
        Exact ``b~_i = -log sum_k exp(w~_k . x_i)`` of the local rows at the anchor.
    table : AnchorTable, optional
        The anchor probabilities the control variate uses instead of ``W_block``
        (:mod:`dsmlr.kernels.anchor_table`).

    Notes
    -----
    An SVRG step uses ``b_i`` refreshed from the cached partials exactly like a plain
    step; the anchor term uses the anchor's exact ``b~_i``.  Both gradients then agree
    at the anchor, so the correction vanishes there.  Blocks that different workers
    update at the same time each make up for a shift of probability mass between them
    as if the others stood still; the engines relax each visit's moves along the
    directions it settles (the intercept, dense columns) so that together they do not
    overshoot it (:mod:`dsmlr.engines.relaxation`).
    """

    W_block: np.ndarray | None
    mean_grad: np.ndarray
    b: np.ndarray
    table: AnchorTable | None = None


def merge_best(
    top: np.ndarray, arg: np.ndarray, best_score: np.ndarray, best_class: np.ndarray
) -> None:
    """Merge a block's per-row best score and class into the running arg-max, in place.

    Ties go to the lower class index, so the merge is independent of the visit order.
    """
    better = (top > best_score) | ((top == best_score) & (arg < best_class))
    best_score[better] = top[better]
    best_class[better] = arg[better]


class HostBlocks:
    """Block storage of the kernels that work on host numpy arrays.

    The engines allocate class blocks and move them between ranks through these methods,
    so a kernel on another device (:class:`dsmlr.kernels.torch_kernel.TorchKernel`)
    keeps its blocks there for the whole run; for host kernels they are plain numpy.
    """

    #: Whether the kernel holds SVRG's anchor as :class:`AnchorTable` s (``keep``).
    anchor_tables = True
    #: Whether the kernel's update passes can leave columns behind for the next pass
    #: (``lag``, ``final`` of ``update_pass``; see :meth:`settle`).
    carries_lag = False

    def settle(self, W, lag, cols, config: UpdateConfig, snapshot=None) -> None:
        """Bring columns ``cols`` of ``W``, which ``lag`` says earlier update passes left
        behind, up to date (kernels that leave none behind: nothing to do)."""

    def zeros_block(self, n_columns: int, width: int, capacity: int, dtype) -> np.ndarray:
        """A zeroed ``(n_columns, width)`` block with room for ``capacity`` classes (see
        :func:`dsmlr.engines.ring.block_array`)."""
        flat = np.zeros(n_columns * max(capacity, width), dtype=dtype)
        return flat[: n_columns * width].reshape(n_columns, width)

    def zeros(self, n: int) -> np.ndarray:
        """A float64 vector (AdaGrad accumulators)."""
        return np.zeros(n)

    def from_host(self, a: np.ndarray) -> np.ndarray:
        return a

    def to_host(self, a: np.ndarray) -> np.ndarray:
        return a

    def squared_norm(self, W: np.ndarray) -> float:
        from dsmlr.objective import squared_norm

        return squared_norm(W)

    def class_sums(self, W: np.ndarray, rows) -> np.ndarray:
        """``W[rows]`` (a slice or indices) summed over the block's classes, in float64."""
        return W[rows].sum(axis=1, dtype=np.float64)

    def subtract_from_rows(self, W: np.ndarray, rows, v: np.ndarray) -> None:
        """``W[rows] -= v[:, None]`` in place (``v`` a float64 host vector)."""
        W[rows] -= v.astype(W.dtype)[:, None]


class Kernel(Protocol):
    """The two local passes every kernel provides (see module docstring)."""

    name: str
    anchor_tables: bool
    carries_lag: bool

    def zeros_block(self, n_columns: int, width: int, capacity: int, dtype): ...

    def zeros(self, n: int): ...

    def from_host(self, a: np.ndarray): ...

    def to_host(self, a) -> np.ndarray: ...

    def squared_norm(self, W) -> float: ...

    def class_sums(self, W, rows) -> np.ndarray: ...

    def subtract_from_rows(self, W, rows, v: np.ndarray) -> None: ...

    def score_pass(
        self,
        rows: LocalRows,
        W_block: np.ndarray,
        k0: int,
        partials: np.ndarray,
        q: int,
        true_score: np.ndarray,
        best_score: np.ndarray,
        best_class: np.ndarray,
    ) -> None: ...

    def update_pass(
        self,
        rows: LocalRows,
        W_block: np.ndarray,
        k0: int,
        acc: np.ndarray,
        partials: np.ndarray,
        q: int,
        b: np.ndarray,
        order: np.ndarray,
        config: UpdateConfig,
        snapshot: Snapshot | None = None,
        lag: np.ndarray | None = None,
        final: bool = True,
    ) -> None: ...

    def settle(self, W, lag, cols, config: UpdateConfig, snapshot=None) -> None: ...

    def gradient_pass(
        self,
        rows: LocalRows,
        W_block: np.ndarray,
        k0: int,
        b: np.ndarray,
        scale: float,
        out: np.ndarray,
        keep: float | None = None,
    ) -> AnchorTable | None: ...
