"""The layout of class blocks in a shared window (dsmlr.engines.shared_blocks), on a
stand-in window of plain memory; under MPI, tests/mpi/test_mpi_shared_memory.py."""

from __future__ import annotations

import numpy as np

from dsmlr.engines.optimizers import UPDATE_RULES
from dsmlr.engines.shared_blocks import SharedBlocks
from dsmlr.partition import class_blocks


class _Window:
    """Each rank's part as plain bytes; records the handoffs."""

    def __init__(self, n_ranks: int, nbytes: int):
        self.parts = [np.zeros(nbytes, np.uint8) for _ in range(n_ranks)]
        self.handoffs: list[tuple[int, int, int]] = []

    def segment(self, rank: int) -> np.ndarray:
        return self.parts[rank]

    def handoff(self, dest: int, source: int, nbytes: int) -> None:
        self.handoffs.append((dest, source, nbytes))


def _address(a: np.ndarray) -> int:
    return a.__array_interface__["data"][0]


class _Comm:
    def __init__(self, n_ranks: int):
        self.size, self.window = n_ranks, None

    def share(self, nbytes: int) -> _Window:
        self.window = _Window(self.size, nbytes)
        return self.window


def test_every_array_of_every_block_has_memory_of_its_own():
    n_ranks, per_group, n_columns, n_classes = 3, 2, 17, 20
    blocks = class_blocks(n_classes, n_ranks * per_group)
    capacity = max(hi - lo for lo, hi in blocks)
    names = ("W", "mean_grad", "W_anchor", "acc")
    comm = _Comm(n_ranks)
    store = SharedBlocks.create(comm, names, n_columns, capacity, np.float32, per_group)
    arrays = {}
    for q, (lo, hi) in enumerate(blocks):
        for i, name in enumerate(names):
            a = store.zeros(q, name, hi - lo, n_ranks)
            want = (n_columns,) if name == "acc" else (n_columns, hi - lo)
            assert a.shape == want and a.dtype == (np.float64 if name == "acc" else np.float32)
            # Cache-line aligned where the part is (an MPI window is page-aligned).
            part = comm.window.parts[q % n_ranks]
            assert (_address(a) - _address(part)) % 64 == 0
            a[...] = 10 * q + i + 1
            arrays[q, name] = a
    # Written one after the other, each still holds its own value: nothing overlaps.
    for (q, name), a in arrays.items():
        assert np.all(a == 10 * q + names.index(name) + 1)
        # Block q lives in the part of the rank its group starts on.
        assert np.shares_memory(a, comm.window.parts[q % n_ranks])


def test_each_part_is_as_large_as_a_private_group():
    n_ranks, per_group, n_columns, capacity = 4, 1, 1000, 8
    for rule in UPDATE_RULES.values():
        for tables in (False, True):
            comm = _Comm(n_ranks)
            names = rule.block_arrays(tables)
            SharedBlocks.create(comm, names, n_columns, capacity, np.float64, per_group)
            private = rule.model_arrays(tables) * n_columns * capacity * 8
            private += rule.carried_bytes(n_columns)
            assert private <= comm.window.parts[0].size < private + 64 * len(names)


def test_a_store_passes_the_handed_bytes_to_its_window():
    comm = _Comm(2)
    store = SharedBlocks.create(comm, ("W",), 4, 3, np.float32, 1)
    store.handoff(1, 1, 48)
    assert comm.window.handoffs == [(1, 1, 48)]
