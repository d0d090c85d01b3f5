"""A block's update stage leaves columns behind between its visits and settles them in
its last one (:meth:`dsmlr.engines.epochs.Epoch.update`): what the engines ask of the
kernel, visit by visit.  That the passes compute the same steps either way is
tests/test_kernels.py's (split passes against one); that training is unchanged,
tests/test_fixed_seed.py's."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np
import pytest

from dsmlr import DSMLRClassifier
from dsmlr.kernels.numba_cpu import NumbaKernel
from problems import planted_sparse_problem


@pytest.mark.parametrize("engine", ["sync", "async"])
@pytest.mark.parametrize("optimizer", ["svrg", "sgd"])
def test_each_block_settles_its_columns_in_its_last_update_visit(monkeypatch, engine, optimizer):
    X, y = planted_sparse_problem(n_samples=300, n_features=40, n_classes=8, seed=3)
    visits: dict[int, list[tuple[bool, bool, bool]]] = defaultdict(list)
    most_behind = [0]  # the most idle steps a column is behind as a visit starts
    lock = threading.Lock()
    original = NumbaKernel.update_pass

    def recorded(self, rows, W, k0, acc, partials, q, b, order, config, snapshot=None,
                 lag=None, final=True):  # fmt: skip
        behind_before = lag is not None and bool(np.any(lag != -1))
        if lag is not None:
            with lock:
                most_behind[0] = max(most_behind[0], int(np.max(-1 - lag)))
        original(self, rows, W, k0, acc, partials, q, b, order, config, snapshot, lag, final)
        with lock:
            visits[q].append((final, behind_before, bool(np.any(lag != -1))))

    monkeypatch.setattr(NumbaKernel, "update_pass", recorded)
    epochs = 3
    DSMLRClassifier(1e-3, n_workers=2, engine=engine, optimizer=optimizer, max_epochs=epochs,
                    tol=-1, random_state=0).fit(X, y)  # fmt: skip
    assert len(visits) == (2 if engine == "sync" else 4)
    for q, seen in visits.items():
        # Two visits a block and epoch (one a rank), the second its last.
        assert [final for final, _, _ in seen] == [False, True] * epochs, q
        for i in range(0, len(seen), 2):
            (_, before_first, after_first), (_, before_last, after_last) = seen[i : i + 2]
            assert not before_first, "a block starts its update stage up to date"
            assert after_first and before_last, "the first visit left columns behind"
            assert not after_last, "the last visit settles every column"
    # Columns are left behind, by at most the epoch's rows (the passes' tables reach only
    # their own steps: the decay from before a pass is one factor a column).
    assert 0 < most_behind[0] <= len(y)


def test_the_kernels_that_carry_a_lag_are_the_ones_the_registry_names():
    # The memory plan counts a lag for LAGGING_KERNELS; the ring gives blocks one where
    # the kernel says carries_lag.
    from dsmlr.kernels import KERNELS, LAGGING_KERNELS, get_kernel

    for name in KERNELS:
        try:
            kernel = get_kernel(name)
        except ValueError:  # torch not installed
            continue
        assert kernel.carries_lag == (name in LAGGING_KERNELS), name
