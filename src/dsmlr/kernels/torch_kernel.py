"""GPU kernel (PyTorch): the kernel passes with class blocks and rows on a torch device.

The same three passes as :mod:`dsmlr.kernels.numba_cpu`, written as a few large tensor
operations per mini-batch so that a GPU does the work: the mini-batch's rows are a CSR
matrix over the columns they touch, scores are one sparse x dense product (cuSPARSE),
the log-sum-exp, residuals and probabilities are fused elementwise passes, and the
gradient is the transposed product, compact over the touched columns.  Nothing of size
N x K is formed; a block is updated only in the rows (features) the mini-batch touches,
and the penalty (and SVRG's anchor gradient) reaches the others lazily, in closed form,
when they are next touched or at the end of the pass — exactly the recurrence of
:class:`dsmlr.kernels.base.UpdateConfig`, so on the CPU (``device="cpu"``) the kernel is
tested against the reference kernel like the numba one.

What lives where.  The rows are copied to the device once per kernel (cached; the
intercept is an explicit column of ones there).  Class blocks and their optimiser state
are device tensors for the whole run (the engines allocate them through
:meth:`TorchKernel.zeros_block`), and travel between ranks as host buffers only under
MPI.  The per-row state (``b``, the cached partial normalisers, the running arg-max) is
small, ``O(N B)``, and stays in host numpy: each pass copies it in and out once.

Scores are computed in the blocks' dtype (float32 on a GPU is the fast path); the
log-sum-exp, ``b`` and the AdaGrad accumulators are float64, as in the CPU kernels.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from dsmlr.kernels.base import LocalRows, Snapshot, UpdateConfig, merge_best

try:  # torch is the optional "gpu" extra; the registry imports this module lazily
    import torch
except ImportError as exc:  # pragma: no cover - exercised only without torch
    raise ImportError(
        "the torch kernel needs PyTorch: pip install 'dsmlr[gpu]' (or any torch >= 2.2)"
    ) from exc

__all__ = ["TorchKernel", "resolve_device"]

#: Elements of one chunk of scores in the full passes (scoring, gradient): 2^25 float32
#: values are 128 MB, small beside a GPU's memory and large enough to keep it busy.
CHUNK_ELEMENTS = 2**25

#: The scaled pass adds each non-zero's contribution straight into the block while a
#: batch holds at most this many non-zeros per column; denser batches first sum them
#: over the batch's distinct columns (see :class:`_ScaledPass`).
SCATTER_RATIO = 0.5

#: Values of a block widened to float64 at a time to sum its rows (128 MiB).
SUM_SLICE_VALUES = 1 << 24

_TORCH_DTYPES = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


def _row_index(rows, device):
    """A slice as it is, host indices as a tensor on ``device``."""
    return rows if isinstance(rows, slice) else torch.as_tensor(rows, device=device)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """The torch device for ``device`` (``"cpu"``, ``"cuda"``, ``"cuda:N"``) on a worker.

    ``"cuda"`` without an index gives each worker of a host its own GPU: its
    ``local_rank`` among the host's workers (the communicator's ``local_rank``) modulo
    the number of visible GPUs.
    """
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev
    if not torch.cuda.is_available():
        raise ValueError(
            f"device {device!r} asked for, but PyTorch sees no CUDA GPU "
            f"(torch {torch.__version__}, built with CUDA {torch.version.cuda})"
        )
    if dev.index is not None:
        return dev
    return torch.device("cuda", local_rank % torch.cuda.device_count())


@dataclass
class _DeviceRows:
    """One worker's rows on the device (CSR, or dense) with the intercept as a column."""

    n_rows: int
    n_cols: int  # D_fit: features plus the intercept column
    indptr: np.ndarray | None  # host copy, for slicing chunks and permutations
    crow: torch.Tensor | None
    col: torch.Tensor | None
    val: torch.Tensor | None
    dense: torch.Tensor | None
    y: torch.Tensor
    weight: torch.Tensor
    #: Sparse rows without the intercept column: (host indptr, crow, col, val).
    features: tuple | None = None

    @property
    def is_sparse(self) -> bool:
        return self.dense is None

    def chunk(self, lo: int, hi: int) -> torch.Tensor:
        """Rows ``lo:hi`` as a matrix (sparse CSR or dense) over all columns."""
        if not self.is_sparse:
            return self.dense[lo:hi]
        a, b = int(self.indptr[lo]), int(self.indptr[hi])
        return _csr_tensor(
            self.crow[lo : hi + 1] - self.crow[lo], self.col[a:b], self.val[a:b],
            (hi - lo, self.n_cols),
        )  # fmt: skip


def _csr_tensor(crow, col, val, shape) -> torch.Tensor:
    with warnings.catch_warnings():  # "sparse CSR support is in beta": expected, not news
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, val, size=shape)


class TorchKernel:
    """PyTorch implementation of the kernel passes on one device.

    Parameters
    ----------
    device : str or torch.device
        Where blocks and rows live: ``"cuda"``, ``"cuda:N"`` or ``"cpu"`` (the CPU path
        exists so that the kernel is tested without a GPU).
    """

    name = "torch"
    #: SVRG's anchor is held as weights on the device (no probability tables).
    anchor_tables = False
    #: Each update pass brings every column up to date (see HostBlocks.carries_lag).
    carries_lag = False

    def settle(self, W, lag, cols, config: UpdateConfig, snapshot=None) -> None:
        """Nothing is left behind (see :meth:`HostBlocks.settle`)."""

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self._rows: dict[tuple[int, str], tuple[LocalRows, _DeviceRows]] = {}

    # ---- block storage (the engines allocate and move blocks through these) ----------

    def zeros_block(self, n_columns: int, width: int, capacity: int, dtype) -> torch.Tensor:
        """A zeroed ``(n_columns, width)`` block on the device (``capacity`` is a host
        storage detail of the MPI ring; device blocks are staged through new buffers)."""
        return torch.zeros((n_columns, width), dtype=_TORCH_DTYPES[np.dtype(dtype)],
                           device=self.device)  # fmt: skip

    def zeros(self, n: int) -> torch.Tensor:
        """A float64 vector on the device (AdaGrad accumulators)."""
        return torch.zeros(n, dtype=torch.float64, device=self.device)

    def from_host(self, a: np.ndarray) -> torch.Tensor:
        """A host array as a device tensor (shares memory on the CPU device)."""
        return torch.as_tensor(np.ascontiguousarray(a)).to(self.device)

    def to_host(self, a) -> np.ndarray:
        """A device tensor as a host numpy array (a view on the CPU device)."""
        if isinstance(a, np.ndarray):
            return a
        return a.detach().contiguous().cpu().numpy()

    def squared_norm(self, W) -> float:
        """``||W||^2`` in float64."""
        return float(torch.sum(torch.square(W.double())))

    def class_sums(self, W, rows) -> np.ndarray:
        """``W[rows]`` (a slice or indices) summed over the block's classes, in float64,
        on the host (a float32 block is widened a slice of rows at a time, so that device
        memory never holds a float64 copy of it)."""
        W = W[_row_index(rows, W.device)]
        step = max(1, SUM_SLICE_VALUES // max(1, W.shape[1]))
        parts = [W[i : i + step].double().sum(dim=1) for i in range(0, W.shape[0], step)]
        return torch.cat(parts).cpu().numpy() if parts else np.zeros(0)

    def subtract_from_rows(self, W, rows, v: np.ndarray) -> None:
        """``W[rows] -= v[:, None]`` in place on the device (``v`` a float64 host vector)."""
        v_dev = torch.as_tensor(v).to(device=W.device, dtype=W.dtype)
        W[_row_index(rows, W.device)] -= v_dev[:, None]

    # ---- rows on the device --------------------------------------------------------

    def _device_rows(self, rows: LocalRows, dtype: torch.dtype) -> _DeviceRows:
        key = (id(rows), str(dtype))
        hit = self._rows.get(key)
        if hit is not None and hit[0] is rows:
            return hit[1]
        dev = self.device
        n, d = rows.n_rows, rows.n_features
        n_cols = d + int(rows.fit_intercept)
        y = torch.as_tensor(np.asarray(rows.y, dtype=np.int64)).to(dev)
        weight = torch.as_tensor(rows.weight).to(dev)
        if rows.is_sparse:
            # rows.X may share its arrays with the caller's matrix: sort a copy, if any.
            X = sp.csr_matrix(rows.X)
            if not X.has_sorted_indices:
                X = X.sorted_indices()
            fptr = X.indptr.astype(np.int64)
            features = (
                fptr, torch.as_tensor(fptr).to(dev),
                torch.as_tensor(X.indices.astype(np.int64)).to(dev),
                torch.as_tensor(X.data).to(dev, dtype),
            )  # fmt: skip
            if rows.fit_intercept:
                X = sp.hstack([X, np.ones((n, 1), dtype=X.dtype)], format="csr")
            X.sort_indices()
            indptr = X.indptr.astype(np.int64)
            dr = _DeviceRows(
                n, n_cols, indptr,
                torch.as_tensor(indptr).to(dev),
                torch.as_tensor(X.indices.astype(np.int64)).to(dev),
                torch.as_tensor(X.data).to(dev, dtype),
                None, y, weight, features,
            )  # fmt: skip
        else:
            X = np.asarray(rows.X)
            if rows.fit_intercept:
                X = np.hstack([X, np.ones((n, 1), dtype=X.dtype)])
            dense = torch.as_tensor(np.ascontiguousarray(X)).to(dev, dtype)
            dr = _DeviceRows(n, n_cols, None, None, None, None, dense, y, weight)
        self._rows[key] = (rows, dr)
        return dr

    def _row_chunks(self, n_rows: int, width: int):
        step = max(1, CHUNK_ELEMENTS // max(width, 1))
        for lo in range(0, n_rows, step):
            yield lo, min(n_rows, lo + step)

    # ---- the passes ----------------------------------------------------------------

    def score_pass(self, rows, W_block, k0, partials, q, true_score, best_score, best_class):
        n_block = W_block.shape[1]
        if n_block == 0:
            partials[:, q] = -np.inf
            return
        dr = self._device_rows(rows, W_block.dtype)
        for lo, hi in self._row_chunks(dr.n_rows, n_block):
            S = torch.mm(dr.chunk(lo, hi), W_block).double()
            partials[lo:hi, q] = torch.logsumexp(S, dim=1).cpu().numpy()
            local = dr.y[lo:hi] - k0
            inside = (local >= 0) & (local < n_block)
            truth = S.gather(1, local.clamp(0, n_block - 1)[:, None])[:, 0]
            inside_h = inside.cpu().numpy()
            true_score[lo:hi][inside_h] = truth.cpu().numpy()[inside_h]
            # torch.max gives the first maximal index: within the block ties go to the
            # lower class, as in the other kernels.
            top, arg = torch.max(S, dim=1)
            merge_best(top.cpu().numpy(), arg.cpu().numpy() + k0, best_score[lo:hi],
                       best_class[lo:hi])  # fmt: skip

    def gradient_pass(self, rows, W_block, k0, b, scale, out, keep=None):
        if keep is not None:
            raise ValueError("the torch kernel holds SVRG's anchor as weights only")
        n_block = W_block.shape[1]
        if n_block == 0 or rows.n_rows == 0:
            return
        dr = self._device_rows(rows, W_block.dtype)
        b_d = torch.as_tensor(b).to(self.device)
        for lo, hi in self._row_chunks(dr.n_rows, n_block):
            X = dr.chunk(lo, hi)
            R = torch.exp(torch.mm(X, W_block).double() + b_d[lo:hi, None])
            _subtract_labels(R, dr.y[lo:hi] - k0, 1.0)
            R *= dr.weight[lo:hi, None]
            out.add_(torch.mm(X.t(), R.to(W_block.dtype)), alpha=float(scale))

    def update_pass(self, rows: LocalRows, W_block, k0, acc, partials, q, b, order,
                    config: UpdateConfig, snapshot: Snapshot | None = None, lag=None,
                    final=True):  # fmt: skip
        # Every pass brings its columns up to date (carries_lag False): lag, final unused.
        n_block = W_block.shape[1]
        if n_block == 0:
            partials[:, q] = -np.inf
            return
        if len(order) == 0:
            return
        dev = self.device
        dr = self._device_rows(rows, W_block.dtype)
        part_d = torch.as_tensor(partials).to(dev)
        b_d = torch.as_tensor(b).to(dev)
        b0_d = torch.as_tensor(snapshot.b).to(dev) if snapshot is not None else None
        # Sparse rows with one step size for every column: the lazy penalty as a scale
        # factor of the whole block (no per-column bookkeeping, see _ScaledPass);
        # AdaGrad's per-column steps and dense rows take the general pass.
        fast = (
            dr.is_sparse
            and not config.adaptive
            # Decays (1 - eta lam) near or below 0 (absurd steps) take the general pass,
            # which clamps them at 0 for untouched columns as the reference does.
            and config.eta * config.lam < 0.5
        )
        kind = _ScaledPass if fast else _Pass
        pass_ = kind(dr, W_block, acc, config, snapshot, b0_d, k0, q, part_d, b_d)
        order = np.ascontiguousarray(order, dtype=np.int64)
        pass_.run(order)
        partials[...] = part_d.cpu().numpy()
        b[...] = b_d.cpu().numpy()


def _subtract_labels(R: torch.Tensor, local: torch.Tensor, amount) -> None:
    """``R[i, y_i - k0] -= amount`` for rows whose class is in the block."""
    inside = (local >= 0) & (local < R.shape[1])
    idx = torch.nonzero(inside, as_tuple=True)[0]
    sub = amount if isinstance(amount, float) else amount[idx]
    R[idx, local[idx]] -= sub


def _in_order(order, order_d, indptr, crow, col, val):
    """The rows in a pass's order as one CSR matrix: mini-batch t is then the contiguous
    slice of rows ``t*m:(t+1)*m``, found without any per-step search.

    Returns the host and device row pointers, the device row lengths, and the column
    indices and values in the new order.
    """
    lens = np.diff(indptr)[order]
    pc = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lens, out=pc[1:])
    dev = crow.device
    pc_d = torch.as_tensor(pc).to(dev)
    lens_d = torch.as_tensor(lens).to(dev)
    nnz = int(pc[-1])
    shift = torch.repeat_interleave(crow[order_d] - pc_d[:-1], lens_d, output_size=nnz)
    pos = shift + torch.arange(nnz, device=dev)
    return pc, pc_d, lens_d, col[pos], val[pos]


class _Pass:
    """One stochastic pass of a block over the rows in a given order (lazy penalty)."""

    def __init__(self, dr, W, acc, config, snapshot, b0, k0, q, partials, b):
        self.dr, self.W, self.acc, self.cfg = dr, W, acc, config
        self.snapshot, self.b0, self.k0, self.q = snapshot, b0, k0, q
        self.partials, self.b = partials, b
        self.last = torch.full((dr.n_cols,), -1, dtype=torch.int64, device=W.device)
        self.pen = torch.arange(dr.n_cols, device=W.device) < config.n_penalized

    # The closed form of ``n`` untouched steps of a column, as factors of ``w`` and of
    # ``eta * mu``: ``w <- power * w - eta * mu * geometric``.
    def _decay(self, cols: torch.Tensor | None, n_steps: torch.Tensor):
        cfg = self.cfg
        pen = self.pen if cols is None else self.pen[cols]
        n = n_steps.clamp(min=0).double()
        if self.snapshot is None:
            if cfg.adaptive:
                acc = self.acc if cols is None else self.acc[cols]
                step = cfg.eta / torch.sqrt(acc + cfg.delta)
            else:
                step = torch.full_like(n, cfg.eta)
            base = torch.clamp(1.0 - step * cfg.lam, min=0.0)
            power = torch.where(pen & (n > 0), base**n, torch.ones_like(n))
            return power, None
        a = cfg.eta * cfg.lam
        if a <= 0.0:  # no penalty (or a step so small that it underflows): mu alone
            return torch.ones_like(n), n
        if a < 1.0:
            log_c = math.log1p(-a)
            power = torch.exp(n * log_c)
            geometric = -torch.expm1(n * log_c) / a
        else:
            power = (1.0 - a) ** n
            geometric = (1.0 - power) / a
        power = torch.where(pen, power, torch.ones_like(n))
        geometric = torch.where(pen, geometric, n)
        return power, geometric

    def _catch_up(self, cols: torch.Tensor | None, Wc: torch.Tensor, n_steps) -> torch.Tensor:
        power, geometric = self._decay(cols, n_steps)
        Wc.mul_(power[:, None].to(Wc.dtype))  # a gathered copy, or W itself at the end
        if geometric is not None:
            mu = self.snapshot.mean_grad if cols is None else self.snapshot.mean_grad[cols]
            Wc.sub_((self.cfg.eta * mu * geometric[:, None]).to(Wc.dtype))
        return Wc

    def run(self, order: np.ndarray) -> None:
        dr, cfg = self.dr, self.cfg
        dev = self.W.device
        m = int(cfg.batch_size)
        n = len(order)
        n_batches = (n + m - 1) // m
        order_d = torch.as_tensor(order).to(dev)
        if dr.is_sparse:
            pc, pc_d, _, col, val = _in_order(order, order_d, dr.indptr, dr.crow, dr.col, dr.val)
        for t in range(n_batches):
            lo, hi = t * m, min(n, (t + 1) * m)
            rows_b = order_d[lo:hi]
            if dr.is_sparse:
                a, z = int(pc[lo]), int(pc[hi])
                cols, inv = torch.unique(col[a:z], return_inverse=True)
                Xb = _csr_tensor(pc_d[lo : hi + 1] - pc_d[lo], inv, val[a:z],
                                 (hi - lo, len(cols)))  # fmt: skip
                Wc = self._catch_up(cols, self.W[cols], t - 1 - self.last[cols])
            else:
                cols = None
                Xb = dr.dense[rows_b]
                Wc = self.W
            self._step(Xb, Wc, cols, rows_b)
            if cols is not None:
                self.W[cols] = Wc
                self.last[cols] = t
        if dr.is_sparse:
            self.W[...] = self._catch_up(None, self.W, n_batches - 1 - self.last)

    def _step(self, Xb, Wc, cols, rows_b) -> None:
        """One mini-batch step on the touched columns ``Wc`` (updated in place)."""
        cfg, snap = self.cfg, self.snapshot
        m = len(rows_b)
        S = torch.mm(Xb, Wc).double()
        self.partials[rows_b, self.q] = torch.logsumexp(S, dim=1)
        b = -torch.logsumexp(self.partials[rows_b], dim=1)
        self.b[rows_b] = b
        w = self.dr.weight[rows_b]
        R = torch.exp(S + b[:, None])
        if snap is None:
            _subtract_labels(R, self.dr.y[rows_b] - self.k0, 1.0)
        else:
            # SVRG: the labels cancel between the current and the anchor gradient.
            W0 = snap.W_block if cols is None else snap.W_block[cols]
            R -= torch.exp(torch.mm(Xb, W0).double() + self.b0[rows_b, None])
        R *= (w / m)[:, None]
        # In place from here: on a GPU the touched columns' arrays are the large ones.
        G = torch.mm(Xb.t(), R.to(Wc.dtype))
        pen = self.pen if cols is None else self.pen[cols]
        G.add_(cfg.lam * Wc * pen[:, None].to(Wc.dtype))
        # The intercept column's step is scaled (UpdateConfig.unpenalized_scale).
        one = torch.ones(len(pen), dtype=torch.float64, device=pen.device)
        scale = torch.where(pen, one, one * cfg.unpenalized_scale)  # float64, not float32
        if snap is not None:
            G.add_(snap.mean_grad if cols is None else snap.mean_grad[cols])
            G.mul_((cfg.eta * scale)[:, None].to(Wc.dtype))
            Wc.sub_(G)
            return
        if cfg.adaptive:
            G64 = G.double()
            if cols is None:
                self.acc += torch.mean(G64 * G64, dim=1)
                step = cfg.eta / torch.sqrt(self.acc + cfg.delta)
            else:
                acc = self.acc[cols] + torch.mean(G64 * G64, dim=1)
                self.acc[cols] = acc
                step = cfg.eta / torch.sqrt(acc + cfg.delta)
        else:
            step = torch.full_like(scale, cfg.eta)
        G.mul_((step * scale)[:, None].to(Wc.dtype))
        Wc.sub_(G)


class _ScaledPass(_Pass):
    """A pass of plain or SVRG steps over sparse rows, with the penalty in closed form.

    Every penalised column follows ``w <- (1 - a) w - eta mu - eta g`` with
    ``a = eta lam`` (``mu`` the SVRG anchor gradient, zero for plain steps, ``g`` the
    mini-batch's data gradient, zero for columns it does not touch).  Keeping the
    penalised rows of the block as ``W = s V + t mu`` makes the first two terms two
    scalar updates, ``s <- (1 - a) s`` and ``t <- (1 - a) t - eta``, so a step writes
    only ``V``'s rows of the touched features: one scatter-add of the non-zeros'
    contributions (no sort, no gather, no device-to-host synchronisation).  The
    intercept row (never penalised) is kept as is.  ``V`` is folded back into ``W``
    when ``s`` gets small and at the end of the pass.  The arithmetic is the reference
    kernel's recurrence, in another order.

    The touched rows of ``V`` are updated in one of two ways.  Small batches add each
    non-zero's contribution ``x_ij r_i`` straight into ``V``'s row ``j`` (one scatter-add
    of ``nnz x K_q``, no sort and no synchronisation).  Once a batch holds many
    non-zeros per column (:data:`SCATTER_RATIO`), most of them fall on the same columns
    and the batch's gradient is first summed over its distinct columns (one sort, one
    transposed sparse product), then added to those rows of ``V``: a write of
    ``n_touched x K_q`` instead of ``nnz x K_q``.
    """

    #: Fold ``s`` back into the weights below this value (keeps ``V`` well scaled).
    MIN_SCALE = 1e-3

    def run(self, order: np.ndarray) -> None:
        dr, cfg, snap = self.dr, self.cfg, self.snapshot
        dev, dtype = self.W.device, self.W.dtype
        m, n = int(cfg.batch_size), len(order)
        d = cfg.n_penalized
        icpt = dr.n_cols > d
        fptr, crow, col_all, val_all = dr.features
        compact = m * len(col_all) > SCATTER_RATIO * max(d, 1) * max(n, 1)
        order_d = torch.as_tensor(order).to(dev)
        pc, pc_d, lens_d, col, val = _in_order(order, order_d, fptr, crow, col_all, val_all)
        rid = (
            None
            if compact
            else torch.repeat_interleave(torch.arange(n, device=dev), lens_d, output_size=len(col))
        )
        V = self.W[:d]  # a view: the penalised rows, as V during the pass
        mu = snap.mean_grad[:d].to(dtype) if snap is not None else None
        a = cfg.eta * cfg.lam
        self.s, self.t = 1.0, 0.0
        for lo in range(0, n, m):
            hi = min(n, lo + m)
            rows_b = order_d[lo:hi]
            z0, z1 = int(pc[lo]), int(pc[hi])
            Xb = _csr_tensor(pc_d[lo : hi + 1] - pc_d[lo], col[z0:z1], val[z0:z1],
                             (hi - lo, d))  # fmt: skip
            S = self.s * torch.mm(Xb, V)
            if mu is not None and self.t != 0.0:
                S += self.t * torch.mm(Xb, mu)
            if icpt:
                S += self.W[d]
            R = self._residuals(S.double(), Xb, rows_b, hi - lo)
            Rd = R.to(dtype)
            s_next = self.s * (1.0 - a)
            if compact:
                cols, inv = torch.unique(col[z0:z1], return_inverse=True)
                Xc = _csr_tensor(Xb.crow_indices(), inv, val[z0:z1], (hi - lo, len(cols)))
                V.index_add_(0, cols, torch.mm(Xc.t(), Rd), alpha=-cfg.eta / s_next)
            else:
                contrib = val[z0:z1, None] * Rd[rid[z0:z1] - lo]
                V.index_add_(0, col[z0:z1], contrib, alpha=-cfg.eta / s_next)
            self.s = s_next
            if mu is not None:
                self.t = self.t * (1.0 - a) - cfg.eta
            if icpt:
                g = R.sum(dim=0)
                if snap is not None:
                    g = g + snap.mean_grad[d]
                self.W[d] -= (cfg.eta * cfg.unpenalized_scale * g).to(dtype)
            if self.s < self.MIN_SCALE:
                self._fold(V, mu)
        self._fold(V, mu)

    def _fold(self, V: torch.Tensor, mu: torch.Tensor | None) -> None:
        """``V <- s V + t mu`` (the true weights), then ``s = 1, t = 0``."""
        if self.s != 1.0:
            V.mul_(self.s)
        if mu is not None and self.t != 0.0:
            V.add_(mu, alpha=self.t)
        self.s, self.t = 1.0, 0.0

    def _residuals(self, S: torch.Tensor, Xb, rows_b, m: int) -> torch.Tensor:
        """Refresh the partials and ``b``, then ``s_i (p - y) / m`` (SVRG: ``p - p~``)."""
        snap = self.snapshot
        self.partials[rows_b, self.q] = torch.logsumexp(S, dim=1)
        b = -torch.logsumexp(self.partials[rows_b], dim=1)
        self.b[rows_b] = b
        R = torch.exp(S + b[:, None])
        if snap is None:
            _subtract_labels(R, self.dr.y[rows_b] - self.k0, 1.0)
        else:
            d = self.cfg.n_penalized
            S0 = torch.mm(Xb, snap.W_block[:d]).double()
            if self.dr.n_cols > d:
                S0 += snap.W_block[d].double()
            R -= torch.exp(S0 + self.b0[rows_b, None])
        R *= (self.dr.weight[rows_b] / m)[:, None]
        return R
