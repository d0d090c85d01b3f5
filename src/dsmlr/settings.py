"""The training parameters, checked, and what they mean for one run.

:class:`Settings` holds :class:`dsmlr.DSMLRClassifier`'s parameters (its
``get_params()``); the estimator's ``fit`` and :func:`dsmlr.distributed.fit_sharded`
both resolve them here: the engine configuration, the seed, the memory check, the
checkpoints and the progress hooks.  The defaults' values are :mod:`dsmlr.defaults`'.
"""

from __future__ import annotations

import copy
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from numbers import Integral, Real

import numpy as np
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions, validate_parameter_constraints

from dsmlr import defaults
from dsmlr.engines import (
    ENGINES,
    OPTIMIZERS,
    EngineConfig,
    EpochRecord,
    Monitor,
    Start,
    format_epoch,
    n_class_blocks,
)
from dsmlr.kernels import HOST_KERNELS, KERNELS, LAGGING_KERNELS

__all__ = ["PARAMETER_CONSTRAINTS", "Settings", "class_weights", "normalised_weights"]

#: What each parameter may be (scikit-learn's parameter validation).
PARAMETER_CONSTRAINTS: dict[str, list] = {
    "lam": [Interval(Real, 0, None, closed="left")],
    "fit_intercept": ["boolean"],
    "max_epochs": [Interval(Integral, 1, None, closed="left")],
    "tol": [Interval(Real, None, None, closed="neither")],
    "n_iter_no_change": [Interval(Integral, 1, None, closed="left")],
    "n_workers": [Interval(Integral, 1, None, closed="left"), None],
    "engine": [StrOptions(set(ENGINES))],
    "optimizer": [StrOptions(set(OPTIMIZERS))],
    "eta": [Interval(Real, 0, None, closed="neither")],
    "batch_size": [Interval(Integral, 1, None, closed="left"), None],
    "dtype": [StrOptions({"float64", "float32"})],
    "blocks_per_rank": [Interval(Integral, 1, None, closed="left"), None],
    "eval_every": [Interval(Integral, 1, None, closed="left")],
    "kernel": [StrOptions({*KERNELS, "auto"})],
    "device": [str],
    "class_weight": [dict, StrOptions({"balanced"}), None],
    "warm_start": ["boolean"],
    "checkpoint_dir": [str, os.PathLike, None],
    "checkpoint_every": [Interval(Integral, 1, None, closed="left")],
    "resume": ["boolean"],
    "shuffle_rows": ["boolean"],
    "random_state": ["random_state"],
    "verbose": ["verbose"],
}


@dataclass(frozen=True, eq=False)  # may hold a RandomState or a dict
class Settings:
    """:class:`dsmlr.DSMLRClassifier`'s parameters, one field each (see its docstring)."""

    lam: float = defaults.LAM
    fit_intercept: bool = True
    max_epochs: int = defaults.MAX_EPOCHS
    tol: float = defaults.TOL
    n_iter_no_change: int = defaults.N_ITER_NO_CHANGE
    n_workers: int | None = None
    engine: str = defaults.ENGINE
    optimizer: str = defaults.OPTIMIZER
    eta: float = defaults.ETA
    batch_size: int | None = None
    dtype: str = defaults.DTYPE
    blocks_per_rank: int | None = None
    eval_every: int = defaults.EVAL_EVERY
    kernel: str = "auto"
    device: str = "cpu"
    class_weight: dict | str | None = None
    warm_start: bool = False
    checkpoint_dir: str | os.PathLike | None = None
    checkpoint_every: int = defaults.CHECKPOINT_EVERY
    resume: bool = False
    shuffle_rows: bool = True
    random_state: object = None
    verbose: int = 0

    @classmethod
    def checked(cls, params: dict, caller: str) -> Settings:
        """Settings from ``params`` (any subset of the fields), each checked against
        :data:`PARAMETER_CONSTRAINTS`; unknown names and bad values raise for ``caller``."""
        unknown = sorted(set(params) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"{caller} got unknown parameter(s): {', '.join(unknown)}")
        validate_parameter_constraints(PARAMETER_CONSTRAINTS, dict(params), caller_name=caller)
        return cls(**params)

    # -- what the parameters resolve to --------------------------------------------------

    def seed(self) -> int:
        """The run's seed: ``random_state`` itself, or one drawn from it."""
        if isinstance(self.random_state, (int, np.integer)):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def resolved_kernel(self) -> str:
        """The kernel name ``kernel`` and ``device`` mean (checked to fit together)."""
        if re.fullmatch(r"cpu|cuda(:\d+)?", self.device) is None:
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', not {self.device!r}")
        if self.kernel == "auto":
            return "numba" if self.device == "cpu" else "torch"
        if self.device != "cpu" and self.kernel in HOST_KERNELS:
            raise ValueError(
                f"kernel={self.kernel!r} runs on the CPU only; use kernel='torch' (or "
                f"'auto') with device={self.device!r}"
            )
        return self.kernel

    def resolved_batch_size(self) -> int:
        """``batch_size``, or the device's default (:mod:`dsmlr.defaults`)."""
        if self.batch_size is not None:
            return int(self.batch_size)
        return defaults.GPU_BATCH_SIZE if self.device != "cpu" else defaults.CPU_BATCH_SIZE

    def engine_config(
        self, n_samples: int, n_features: int, n_classes: int, seed: int
    ) -> EngineConfig:
        """The engine settings these parameters mean for a problem of this size."""
        return EngineConfig(
            n_samples=n_samples,
            n_features=n_features,
            n_classes=n_classes,
            fit_intercept=bool(self.fit_intercept),
            lam=float(self.lam),
            max_epochs=int(self.max_epochs),
            tol=float(self.tol),
            n_iter_no_change=int(self.n_iter_no_change),
            eta=float(self.eta),
            batch_size=self.resolved_batch_size(),
            optimizer=self.optimizer,
            dtype=np.dtype(self.dtype).type,
            seed=seed,
            kernel=self.resolved_kernel(),
            device=self.device,
            eval_every=int(self.eval_every),
            blocks_per_rank=None if self.blocks_per_rank is None else int(self.blocks_per_rank),
        )

    def json_params(self) -> dict:
        """The parameters a model file records: those with plain JSON values.

        A ``class_weight`` dict is left out (its keys may be any labels); it shaped
        training but plays no part in prediction.  So are ``checkpoint_dir`` and
        ``resume``, which concern one run.
        """
        skip = ("checkpoint_dir", "resume")
        # In get_params()'s order (sorted), so that model files read the same.
        values = {name: getattr(self, name) for name in sorted(f.name for f in fields(self))}
        return {k: v for k, v in values.items() if _jsonable(v) and k not in skip}

    # -- collective steps of a run ---------------------------------------------------------

    def check_memory(self, comm, cfg: EngineConfig, n_rows: int, nnz: int, workers: int) -> None:
        """Refuse (collectively) a run that would not fit in memory (:mod:`dsmlr.memory`).

        ``n_rows`` and ``nnz`` count all ranks' training and held-out rows; ``workers``
        is the number of workers sharing one process (the embedded run)."""
        from dsmlr.memory import check_memory, plan_memory

        def plan_for(n_ranks: int):
            return plan_memory(
                n_rows=-(-n_rows // n_ranks), nnz=-(-nnz // n_ranks), n_features=cfg.n_features,
                n_classes=cfg.n_classes, n_ranks=n_ranks,
                n_blocks=n_class_blocks(self.engine, cfg, max(n_ranks, workers)),
                itemsize=np.dtype(cfg.dtype).itemsize, optimizer=cfg.optimizer,
                fit_intercept=cfg.fit_intercept, engine=self.engine, n_samples=cfg.n_samples,
                anchor_tables=cfg.kernel in HOST_KERNELS,  # HostBlocks.anchor_tables
                lag=cfg.kernel in LAGGING_KERNELS,
            )  # fmt: skip

        check_memory(comm, plan_for)

    def checkpointing(self, comm, cfg: EngineConfig, start: Start | None, classes: np.ndarray):
        """``(cfg, start, checkpointer)`` with checkpoints as the parameters ask: the
        newest checkpoint's start (and seed) when resuming from one (collective)."""
        if self.checkpoint_dir is None:
            return cfg, start, None
        from dsmlr.checkpoint import Checkpointer, checkpoint_settings, resume_start

        if self.resume:
            found = resume_start(self.checkpoint_dir, comm, cfg, classes)
            if found is not None:
                start, seed, _ = found
                cfg = replace(cfg, seed=seed)
        saver = Checkpointer(
            self.checkpoint_dir, self.checkpoint_every, classes=classes,
            fit_intercept=bool(self.fit_intercept), params=self.json_params(),
            settings=checkpoint_settings(cfg),
        )  # fmt: skip
        return cfg, start, saver

    def monitor(
        self, callback: Callable[[dict], None] | None, every_rank: bool = False, checkpoint=None
    ) -> Monitor:
        """The progress hooks: a line per epoch when verbose, and the user's callback
        (with its ``progress`` method, if it has one, called after each block visit)."""

        def on_epoch(record: EpochRecord) -> None:
            # The caller's own copy: a callback that edits its entry (its peak_rss
            # list included) must not edit history_, which is built from the records.
            entry = copy.deepcopy(record.as_dict())
            if self.verbose:
                print(format_epoch(entry), flush=True)
            if callback is not None:
                callback(entry)

        return Monitor(on_epoch, getattr(callback, "progress", None), every_rank, checkpoint)


def class_weights(class_weight, classes: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Weight per class index for ``class_weight`` (None, ``"balanced"`` or a dict).

    ``counts`` are the rows per class over all the training data (over all ranks), so
    ``"balanced"`` (``n_samples / (n_classes * count)``, scikit-learn's definition, over
    the classes present) is the same wherever the rows live.
    """
    weights = np.ones(len(classes))
    if class_weight is None:
        return weights
    if isinstance(class_weight, str):  # "balanced", validated by the parameter checks
        present = counts > 0
        weights[present] = counts.sum() / (np.count_nonzero(present) * counts[present])
        return weights
    index = {label: k for k, label in enumerate(classes.tolist())}
    unknown = [label for label in class_weight if label not in index]
    if unknown:
        raise ValueError(f"class_weight names labels that are not classes of y: {unknown[:5]}")
    for label, value in class_weight.items():
        weights[index[label]] = float(value)
    return weights


def normalised_weights(weight: np.ndarray, total: float, n_total: int) -> np.ndarray:
    """Row weights scaled to mean 1 over all ``n_total`` rows (``total`` is their sum).

    The engine minimises ``(1/N) sum_i w_i loss_i``; with mean-1 weights that is the
    weighted mean loss ``(1/S) sum_i s_i loss_i`` (so integer weights act as repeated
    rows), and a row's stochastic step is ``w_i`` times an unweighted one, so the step
    size calibrated on unweighted rows still fits.
    """
    if not total > 0:
        raise ValueError("sample_weight (times class_weight) is zero for every row")
    return np.ascontiguousarray(weight * (n_total / total), dtype=np.float64)


def _jsonable(value) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))
