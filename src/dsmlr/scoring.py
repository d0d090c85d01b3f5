"""Prediction on a model split into class blocks, without an N x K score matrix.

Rows are scored one class block at a time, and one chunk of rows at a time, so that the
scores held at once fit a memory budget; each block's scores are folded into a running
top-k and a running log-sum-exp and then dropped.  What is kept per row is O(k): the
best classes, their scores, the normaliser ``log sum_k exp(s_k)`` and, when labels are
given, the score of the true class.  From those follow predictions, top-k probabilities
and the log-loss, so neither N x K scores nor the K x D model are ever needed in one
place.

* :func:`score_local_blocks` folds blocks held by this process into a
  :class:`BlockScores` (optionally one returned by an earlier call, to stream more
  blocks in).
* :func:`ring_scores` is the collective version: each rank scores its own rows while
  the blocks travel round the ring, as in training (:mod:`dsmlr.engines.ring`); no rank
  ever holds another rank's rows, nor more blocks than the ones passing through it.
* :func:`model_scores` and :func:`dense_scores` serve the single-process estimator: they
  cut its ``(K, D)`` weights into feature-major blocks built one at a time.

Blocks follow the layout contract of :mod:`dsmlr.objective`: ``((k0, k1), W_block)``
with ``W_block`` feature-major of shape ``(D_fit, k1 - k0)``, the intercept (when
fitted) in the last row.  Scores are ``s_ik = x_i . w_k + c_k``.

Ties: among equal scores the lower class index ranks first, so the top-1 class is
exactly ``np.argmax`` over the full score row.  NaN scores (only from a broken model)
rank as ``-inf``, and make ``log_norm`` NaN.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.special import logsumexp

from dsmlr.partition import class_blocks

__all__ = [
    "MEMORY_BYTES",
    "BlockScores",
    "ModelBlock",
    "dense_scores",
    "encode_labels",
    "evaluation_report",
    "model_blocks",
    "model_scores",
    "ring_scores",
    "score_blocks",
    "score_local_blocks",
    "summarise",
]

#: Default budget, in bytes, for the block scores held at once (a chunk of rows times
#: one block's classes, as float64).  ``memory_bytes=None`` reads this at call time.
MEMORY_BYTES = 256 * 2**20

#: A trained class block: its class range ``(k0, k1)`` and its feature-major weights (the
#: engines train :class:`dsmlr.engines.ring.Block`, which carries its optimiser state).
ModelBlock = tuple[tuple[int, int], np.ndarray]

# Sort key of an unfilled top-k slot (class -1): after every real class on a tie, so a
# real class scoring -inf still displaces a placeholder.
_NO_CLASS_KEY = np.iinfo(np.int64).max


@dataclass
class BlockScores:
    """Per-row results of scoring against class blocks.

    Attributes
    ----------
    top_classes : ndarray of int64, shape (n, k)
        Class indices (0..K-1), best first; equal scores rank the lower index first.
        A slot is -1 (with score ``-inf``) while fewer than ``k`` classes have been
        merged.
    top_scores : ndarray of float64, shape (n, k)
        Raw scores ``w_k . x + c_k`` of ``top_classes``.
    log_norm : ndarray of float64, shape (n,)
        ``log sum_k exp(score_k)`` over every class merged so far (``-inf`` before
        any): the full normaliser once all K classes are in.
    true_score : ndarray of float64, shape (n,), or None
        Score of each row's own class when labels were given, else None.  Rows whose
        label is unknown (-1), or whose class was in none of the merged blocks, hold
        ``-inf``: probability zero, so ``log_norm - true_score`` is ``+inf`` rather
        than a plausible-looking number if such a row is not filtered out (as
        :func:`summarise` does with ``y >= 0``).
    """

    top_classes: np.ndarray
    top_scores: np.ndarray
    log_norm: np.ndarray
    true_score: np.ndarray | None = None

    @classmethod
    def empty(cls, n_rows: int, k: int, with_truth: bool = False) -> BlockScores:
        """The state before any block: no classes, ``log_norm = -inf``."""
        return cls(
            np.full((n_rows, k), -1, dtype=np.int64),
            np.full((n_rows, k), -np.inf),
            np.full(n_rows, -np.inf),
            np.full(n_rows, -np.inf) if with_truth else None,
        )

    @property
    def k(self) -> int:
        """Number of top classes kept per row."""
        return self.top_classes.shape[1]

    @property
    def top_proba(self) -> np.ndarray:
        """Softmax probabilities of ``top_classes``: ``exp(top_scores - log_norm)``."""
        return np.exp(self.top_scores - self.log_norm[:, None])


# -- folding one block's scores in -------------------------------------------------------


def _block_product(X, W: np.ndarray, n_features: int, fit_intercept: bool) -> np.ndarray:
    """Scores of rows ``X`` against one feature-major block: a fresh (rows, K_q) array.

    Computed in the operands' precision, intercept included, exactly as ``X @ coef_.T +
    intercept_`` would be (the estimator's results must not change); callers widen.
    """
    S = np.asarray(X @ W[:n_features])
    if fit_intercept:
        S += W[n_features]
    return S


def _block_top(S: np.ndarray, kb: int) -> tuple[np.ndarray, np.ndarray]:
    """Columns of the ``kb`` best scores of each row of ``S`` (any order), and scores.

    Ties at the cut are resolved to the lowest columns: a plain ``argpartition`` picks an
    arbitrary subset of equal scores, which would break the lower-index rule.  So: the
    ``kb``-th largest value ``t`` per row (a partition, O(width)); every score above
    ``t``; then the first few equal to ``t``, as many as are still missing.
    """
    m, width = S.shape
    t = np.partition(S, width - kb, axis=1)[:, width - kb, None]
    above = S > t
    tied = S == t
    missing = kb - above.sum(axis=1, keepdims=True)
    take = above | (tied & (np.cumsum(tied, axis=1, dtype=np.int32) <= missing))
    cols = np.nonzero(take)[1].reshape(m, kb)  # exactly kb per row: S has no NaN here
    return cols, np.take_along_axis(S, cols, axis=1)


def _merge(
    state: BlockScores, lo: int, S: np.ndarray, k0: int, y: np.ndarray | None, normalise: bool
) -> None:
    """Fold ``S`` (scores of rows ``lo..lo+m`` for classes ``k0..k0+width``) into ``state``.

    ``S`` is consumed (overwritten in place) when it is float64.
    """
    m, width = S.shape
    if width == 0 or m == 0:
        return
    rows = slice(lo, lo + m)
    S = S.astype(np.float64, copy=False)
    row_max = S.max(axis=1)  # NaN-propagating: also tells whether S holds any NaN
    R = S
    if np.isnan(row_max).any():
        R = np.where(np.isnan(S), -np.inf, S)  # ranks: NaN as -inf (module docstring)

    if y is not None and state.true_score is not None:
        local = y - k0
        hit = np.flatnonzero((local >= 0) & (local < width))
        state.true_score[lo + hit] = S[hit, local[hit]]

    cur_c, cur_s = state.top_classes[rows], state.top_scores[rows]  # views
    k = state.k
    if k == 1:
        # The common case (predict): argmax keeps the first maximum, i.e. the lower
        # index, and a strict comparison keeps an earlier block's class on a tie unless
        # this block's class is lower (blocks may arrive in any class order).
        j = R.argmax(axis=1)
        best = R[np.arange(m), j]
        cls = j + k0
        cur_key = np.where(cur_c[:, 0] < 0, _NO_CLASS_KEY, cur_c[:, 0])
        wins = (best > cur_s[:, 0]) | ((best == cur_s[:, 0]) & (cls < cur_key))
        cur_c[wins, 0] = cls[wins]
        cur_s[wins, 0] = best[wins]
    else:
        kb = min(k, width)
        if kb < width:
            cols, vals = _block_top(R, kb)
        else:
            cols, vals = np.broadcast_to(np.arange(width), (m, width)), R
        cand_c = np.concatenate([cur_c, cols + k0], axis=1)
        cand_s = np.concatenate([cur_s, vals], axis=1)
        key = np.where(cand_c < 0, _NO_CLASS_KEY, cand_c)
        # Only k + kb candidates per row: a full sort (score descending, then class
        # ascending) is cheap and gives the final order directly.
        order = np.lexsort((key, -cand_s), axis=1)[:, :k]
        cur_c[...] = np.take_along_axis(cand_c, order, axis=1)
        cur_s[...] = np.take_along_axis(cand_s, order, axis=1)

    if not normalise:
        return
    # Streaming log-sum-exp: this block's max plus the log of its rescaled exp-sum,
    # combined with the running value by logaddexp (the same max-and-rescale step).
    # A non-finite max (all -inf, +inf, NaN) is shifted by 0 so -inf gives -inf and the
    # others propagate, instead of inf - inf = NaN.
    # S is ours (a fresh product) and nothing above kept a view of it: reuse it.
    shift = np.where(np.isfinite(row_max), row_max, 0.0)
    S -= shift[:, None]
    np.exp(S, out=S)
    with np.errstate(divide="ignore"):
        block_lse = shift + np.log(S.sum(axis=1))
    state.log_norm[rows] = np.logaddexp(state.log_norm[rows], block_lse)


# -- local and ring scoring ---------------------------------------------------------------


def _as_rows(X):
    """``X`` as CSR (sorted indices) or a C-contiguous float array; ``X`` is only read."""
    if sp.issparse(X):
        # A new matrix object over the caller's arrays (or a conversion's new ones): the
        # flags scipy caches on a matrix while checking it are then set on ours.
        X = sp.csr_matrix(X)
        if not X.has_sorted_indices:
            X = X.sorted_indices()
        return X
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D, got shape {X.shape}")
    return np.ascontiguousarray(X)


def _check_blocks(blocks: list[ModelBlock], n_features: int, fit_intercept: bool) -> None:
    d_fit = n_features + int(fit_intercept)
    for (k0, k1), W in blocks:
        if W.ndim != 2 or W.shape != (d_fit, k1 - k0):
            raise ValueError(
                f"block ({k0}, {k1}) has shape {W.shape}, expected ({d_fit}, {k1 - k0}): "
                "feature-major (D + fit_intercept, k1 - k0)"
            )


def _chunk_rows(blocks: list[ModelBlock], memory_bytes: int | None) -> int:
    """Rows per chunk so one block's float64 scores fit ``memory_bytes`` (>= 1 row).

    Folding a chunk needs a few more arrays of the same size (the product before
    widening, the partition, masks), so peak working memory is a small multiple of the
    budget; what matters is that it does not grow with N or K.
    """
    budget = MEMORY_BYTES if memory_bytes is None else int(memory_bytes)
    widest = max((W.shape[1] for _, W in blocks), default=0)
    return max(1, budget // (8 * max(widest, 1)))


def _start(
    state: BlockScores | None, n_rows: int, k: int, y, normalise: bool = True
) -> BlockScores:
    if state is None:
        state = BlockScores.empty(n_rows, max(1, int(k)), y is not None)
    if state.log_norm.shape[0] != n_rows:
        raise ValueError(f"state holds {state.log_norm.shape[0]} rows, X has {n_rows}")
    if y is not None and state.true_score is None:
        state.true_score = np.full(n_rows, -np.inf)
    if not normalise:
        state.log_norm[:] = np.nan  # a normaliser missing these blocks would be wrong
    return state


def _fold(
    state: BlockScores,
    X,
    blocks: list[ModelBlock],
    fit_intercept: bool,
    y,
    chunk: int,
    normalise: bool = True,
) -> None:
    n_rows, n_features = X.shape
    for lo in range(0, n_rows, chunk):
        hi = min(lo + chunk, n_rows)
        # Row chunk outside, blocks inside: the chunk of X (a copy for CSR) is cut once,
        # and the state's rows stay in cache while every block is folded in.
        Xc = X[lo:hi]
        yc = None if y is None else y[lo:hi]
        for (k0, _), W in blocks:
            if W.shape[1]:
                S = _block_product(Xc, W, n_features, fit_intercept)
                _merge(state, lo, S, k0, yc, normalise)


def score_local_blocks(
    X,
    blocks: list[ModelBlock],
    *,
    fit_intercept: bool,
    k: int = 1,
    y: np.ndarray | None = None,
    memory_bytes: int | None = None,
    state: BlockScores | None = None,
    normalise: bool = True,
) -> BlockScores:
    """Score rows ``X`` against class blocks held by this process.

    Parameters
    ----------
    X : {sparse matrix, ndarray} of shape (n, D)
        CSR with sorted indices, or a C-contiguous dense array (others are converted).
    blocks : list of ((k0, k1), ndarray of shape (D + fit_intercept, k1 - k0))
        Feature-major class blocks (see module docstring); any number, any sizes, in any
        class order, empty ones allowed.  Together with earlier calls' blocks they must
        cover every class for ``log_norm`` to be the full normaliser.
    fit_intercept : bool
        Whether the last row of each block is the intercept.
    k : int, default=1
        Top classes kept per row (ignored when ``state`` is given: its ``k`` holds).
        While fewer than ``k`` classes have been merged, the trailing slots are -1.
    y : ndarray of int64, shape (n,), optional
        Class indices, -1 for unknown labels; fills ``true_score`` from these blocks
        (when streaming blocks in over several calls, pass it to every call).
    memory_bytes : int, optional
        Budget for one block's float64 scores of one chunk of rows:
        ``chunk_rows * widest_block * 8 <= memory_bytes`` (at least one row).
        None: :data:`MEMORY_BYTES`.
    state : BlockScores, optional
        The result of an earlier call on the same rows, to merge more blocks into; it is
        updated in place and returned.
    normalise : bool, default=True
        Accumulate ``log_norm``.  False skips the exponentials when only the ranking is
        wanted (prediction): ``log_norm`` is then NaN, and stays NaN in later calls on
        this state, as are ``top_proba``.

    Returns
    -------
    BlockScores
    """
    X = _as_rows(X)
    _check_blocks(blocks, X.shape[1], fit_intercept)
    y = None if y is None else np.asarray(y, dtype=np.int64)
    state = _start(state, X.shape[0], k, y, normalise)
    chunk = _chunk_rows(blocks, memory_bytes)
    _fold(state, X, blocks, fit_intercept, y, chunk, normalise)
    return state


#: Earlier name of :func:`score_local_blocks`.
score_blocks = score_local_blocks


def ring_scores(
    comm,
    X_local,
    blocks: list[ModelBlock],
    *,
    n_classes: int,
    fit_intercept: bool,
    k: int = 1,
    y_local: np.ndarray | None = None,
    memory_bytes: int | None = None,
) -> BlockScores:
    """Score this rank's rows against the blocks of every rank (collective).

    Each rank may hold any number of blocks (none included) of any sizes; together they
    must cover the ``n_classes`` classes once.  In each of ``comm.size`` rounds a rank
    folds the blocks it holds into its rows' scores, then passes them to rank - 1 with
    :meth:`~dsmlr.comm.base.Communicator.ring_shift`: the block arrays and one small
    ``(n_blocks, 2)`` int64 array of their class ranges, so the receiver learns how many
    blocks arrive and which classes they carry.  After ``comm.size`` shifts every rank
    holds its own blocks again.  Rows never move; a rank holds one group of blocks at a
    time.

    Parameters
    ----------
    comm : Communicator
    X_local : {sparse matrix, ndarray} of shape (n_local, D)
        This rank's rows.
    blocks : list of ((k0, k1), ndarray of shape (D + fit_intercept, k1 - k0))
        The blocks this rank owns.  The list and its arrays are left as they were: a
        communicator may receive into the sent buffers in place (MPI does when shapes
        match), so any array that was overwritten on the way is restored from the
        returning copy at the end.
    n_classes : int
        K, to clamp ``k``.
    fit_intercept : bool
    k : int, default=1
    y_local : ndarray of int64, shape (n_local,), optional
        Class indices of this rank's rows, -1 for unknown; fills ``true_score``.
    memory_bytes : int, optional
        As for :func:`score_local_blocks`.

    Returns
    -------
    BlockScores
        For this rank's rows, over all ``n_classes`` classes.
    """
    X_local = _as_rows(X_local)
    _check_blocks(blocks, X_local.shape[1], fit_intercept)
    y = None if y_local is None else np.asarray(y_local, dtype=np.int64)
    state = _start(None, X_local.shape[0], max(1, min(int(k), n_classes)), y)
    held = list(blocks)
    for _ in range(comm.size):
        _fold(state, X_local, held, fit_intercept, y, _chunk_rows(held, memory_bytes))
        if comm.size == 1:
            break
        ranges = np.array([c for c, _ in held], dtype=np.int64).reshape(-1, 2)
        got = comm.ring_shift([ranges, *(W for _, W in held)])
        got_ranges, arrays = got[0], got[1:]
        if len(arrays) != len(got_ranges):
            raise RuntimeError(f"ring delivered {len(arrays)} blocks for {len(got_ranges)} ranges")
        held = [((int(a), int(b)), W) for (a, b), W in zip(got_ranges, arrays, strict=True)]
        _check_blocks(held, X_local.shape[1], fit_intercept)
    for (_, original), (_, back) in zip(blocks, held, strict=True):
        if back is not original and original.flags.writeable:
            np.copyto(original, back)
    return state


def summarise(scores: BlockScores, y: np.ndarray, k: int) -> tuple[float, int, int, int]:
    """Sums over the rows with a known label (``y >= 0``), ready for ``allreduce_sum``.

    Parameters
    ----------
    scores : BlockScores
        Scored with these labels (``true_score`` set) and at least ``k`` top classes.
    y : ndarray of int64, shape (n,)
        Class indices, -1 for unknown labels.
    k : int
        Top-k accuracy's k (at most ``scores.k``).

    Returns
    -------
    loss_sum : float
        ``sum (log_norm - true_score)`` over known rows (the unpenalised log-loss).
    n_correct : int
        Known rows whose top class is the label.
    n_topk_correct : int
        Known rows whose label is among the top ``k``.
    n_known : int
        Rows with a known label.  Unknown rows are never correct; callers dividing by
        all rows count them as errors, as the estimator does.
    """
    y = np.asarray(y, dtype=np.int64)
    known = y >= 0
    n_known = int(np.count_nonzero(known))
    if k > scores.k:
        raise ValueError(f"k={k} but the scores keep only the top {scores.k}")
    if n_known and scores.true_score is None:
        raise ValueError("scores have no true_score: score with the labels (y=...)")
    loss = float(np.sum((scores.log_norm - scores.true_score)[known])) if n_known else 0.0
    hits = (scores.top_classes[:, :k] == y[:, None]) & known[:, None]
    return loss, int(np.count_nonzero(hits[:, 0])), int(np.count_nonzero(hits.any(axis=1))), n_known


def encode_labels(y, classes: np.ndarray) -> np.ndarray:
    """Class indices of labels ``y`` in sorted ``classes``; -1 for a label not there."""
    y = np.asarray(y)
    if len(classes) == 0:
        return np.full(len(y), -1, dtype=np.int64)
    pos = np.clip(np.searchsorted(classes, y), 0, len(classes) - 1)
    return np.where(classes[pos] == y, pos, -1).astype(np.int64)


def evaluation_report(
    n_samples: int, sums: tuple[float, int, int, int], penalty: float, k: int
) -> dict:
    """Accuracy, top-``k`` accuracy and objective from (summed) :func:`summarise` output.

    Rows with an unknown label count as wrong and are left out of the objective.
    """
    loss, correct, top_correct, known = sums
    n = int(n_samples)
    return {
        "n_samples": n,
        "accuracy": correct / n if n else float("nan"),
        f"top_{k}_accuracy": top_correct / n if n else float("nan"),
        "objective": loss / known + penalty if known else float("nan"),
    }


# -- the single-process estimator's model -------------------------------------------------


def model_blocks(
    coef: np.ndarray,
    intercept: np.ndarray | None,
    *,
    fit_intercept: bool,
    memory_bytes: int | None = None,
) -> Iterator[ModelBlock]:
    """Cut a ``(K, D)`` model into feature-major blocks, built one at a time.

    Each block is a ``(D + fit_intercept, K_q)`` copy of ``coef[k0:k1].T`` (plus the
    intercepts), at most about ``memory_bytes`` large (at least one class wide), so the
    transposed model never exists whole; a generator, so a block can be dropped before
    the next is built.
    """
    n_classes, n_features = coef.shape
    d_fit = n_features + int(fit_intercept)
    dtype = coef.dtype if intercept is None else np.result_type(coef, intercept)
    budget = MEMORY_BYTES if memory_bytes is None else int(memory_bytes)
    width = max(1, min(n_classes, budget // (d_fit * dtype.itemsize)))
    n_blocks = -(-n_classes // width)
    for k0, k1 in class_blocks(n_classes, n_blocks):
        W = np.empty((d_fit, k1 - k0), dtype=dtype)
        W[:n_features] = coef[k0:k1].T
        if fit_intercept:
            W[n_features] = intercept[k0:k1]
        yield (k0, k1), W


def model_scores(
    X,
    coef: np.ndarray,
    intercept: np.ndarray | None,
    *,
    fit_intercept: bool,
    k: int = 1,
    y: np.ndarray | None = None,
    memory_bytes: int | None = None,
    normalise: bool = True,
) -> BlockScores:
    """:func:`score_local_blocks` against a whole ``(K, D)`` model, a block at a time.

    Memory: O(n * k) results, one block (see :func:`model_blocks`) and one chunk of its
    scores.  ``k`` is clamped to ``[1, K]``.
    """
    k = max(1, min(int(k), coef.shape[0]))
    state = None
    for block in model_blocks(coef, intercept, fit_intercept=fit_intercept,
                              memory_bytes=memory_bytes):  # fmt: skip
        state = score_local_blocks(
            X, [block], fit_intercept=fit_intercept, k=k, y=y, memory_bytes=memory_bytes,
            state=state, normalise=normalise,
        )  # fmt: skip
    return state


def dense_scores(
    X,
    coef: np.ndarray,
    intercept: np.ndarray | None,
    *,
    fit_intercept: bool,
    output: str = "scores",
    memory_bytes: int | None = None,
) -> np.ndarray:
    """The full ``(n, K)`` matrix of scores, log-probabilities or probabilities.

    For the methods whose result *is* N x K: it is filled a block and a chunk of rows at
    a time, and normalised a chunk of rows at a time in place, so no other N x K array
    exists besides the output.

    Parameters
    ----------
    output : {"scores", "log_proba", "proba"}
        ``X @ coef.T + intercept``; that minus each row's log-sum-exp; its exp.

    Returns
    -------
    ndarray of shape (n, K)
        In the precision of ``X``, ``coef`` and ``intercept`` combined (as
        ``X @ coef.T + intercept`` would be).
    """
    if output not in ("scores", "log_proba", "proba"):
        raise ValueError(f"output must be 'scores', 'log_proba' or 'proba', got {output!r}")
    X = _as_rows(X)
    n_rows, n_features = X.shape
    n_classes = coef.shape[0]
    parts = [X.dtype, coef.dtype] + ([intercept.dtype] if fit_intercept else [])
    out = np.empty((n_rows, n_classes), dtype=np.result_type(*parts))
    for (k0, k1), W in model_blocks(coef, intercept, fit_intercept=fit_intercept,
                                    memory_bytes=memory_bytes):  # fmt: skip
        # The same chunks as score_local_blocks, so both see bit-identical scores.
        chunk = _chunk_rows([((k0, k1), W)], memory_bytes)
        for lo in range(0, n_rows, chunk):
            hi = min(lo + chunk, n_rows)
            out[lo:hi, k0:k1] = _block_product(X[lo:hi], W, n_features, fit_intercept)
    if output != "scores":
        step = max(1, (MEMORY_BYTES if memory_bytes is None else int(memory_bytes))
                   // (8 * max(n_classes, 1)))  # fmt: skip
        for lo in range(0, n_rows, step):
            part = out[lo : lo + step]  # a view: normalised in place
            part -= logsumexp(part, axis=1, keepdims=True)
            if output == "proba":
                np.exp(part, out=part)
    return out
