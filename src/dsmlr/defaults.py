"""The default of every training setting, in one place.

:class:`dsmlr.DSMLRClassifier`'s parameters, ``dsmlr train``'s options and the engines'
:class:`~dsmlr.engines.base.EngineConfig` all take their defaults from here, so the three
front doors to training cannot disagree.
"""

from __future__ import annotations

__all__ = [
    "CHECKPOINT_EVERY",
    "CPU_BATCH_SIZE",
    "DTYPE",
    "ENGINE",
    "ETA",
    "EVAL_EVERY",
    "GPU_BATCH_SIZE",
    "LAM",
    "MAX_EPOCHS",
    "N_ITER_NO_CHANGE",
    "OPTIMIZER",
    "TOL",
]

#: L2 strength ``lam`` of the objective.
LAM = 1e-4
#: Upper bound on epochs.
MAX_EPOCHS = 100
#: Stop when the objective's relative decrease stays below this ...
TOL = 1e-5
#: ... for this many consecutive scored epochs.
N_ITER_NO_CHANGE = 2
#: The synchronous ring (``"async"``: token passing).
ENGINE = "sync"
#: Variance-reduced steps after one plain epoch.
OPTIMIZER = "svrg"
#: Step size, in units of ``1 / mean_i ||x_i||^2`` for SVRG and SGD.
ETA = 2.0
#: Weights and data in float32; sums, ``b`` and the objective in float64 regardless.
DTYPE = "float32"
#: Score the exact objective every epoch.
EVAL_EVERY = 1
#: Save a checkpoint after every scored epoch (when a checkpoint directory is given).
CHECKPOINT_EVERY = 1
#: Rows a stochastic step on the CPU: one row a step is fastest there.
CPU_BATCH_SIZE = 1
#: Rows a stochastic step on a GPU, which needs many rows a kernel launch.
GPU_BATCH_SIZE = 256
