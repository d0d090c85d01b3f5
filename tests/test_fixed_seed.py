"""A fixed seed trains the same model as it did when ``tests/data/fixed_seed.json`` was
written: restructuring the engines must not change what they compute.

The recorded figures (every epoch's objective, the weights' norm and their projection on
a fixed random direction) are compared
to 1e-9 relative: a change of the algorithm moves them by far more, while a CPU whose
vector units add in another order may move the last bits.  In process here, under
``mpiexec -n 1..4`` in ``tests/mpi/test_mpi_training.py`` (the synchronous engine is
bit-identical across transports).  After a deliberate change of behaviour, rewrite the
file with ``python tests/test_fixed_seed.py`` and say why in the commit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dsmlr import DSMLRClassifier
from problems import planted_sparse_problem

RECORD = Path(__file__).parent / "data" / "fixed_seed.json"

#: (engine, workers, optimizer, dtype): the deterministic runs (the asynchronous engine is
#: deterministic on one worker only).
RUNS = [
    ("sync", 1, "svrg", "float64"),
    ("sync", 2, "svrg", "float64"),
    ("sync", 3, "svrg", "float32"),
    ("sync", 4, "svrg", "float64"),
    ("sync", 2, "adagrad", "float64"),
    ("sync", 3, "sgd", "float64"),
    ("async", 1, "svrg", "float64"),
]


def problem():
    return planted_sparse_problem(n_samples=400, n_features=60, n_classes=10, seed=21)


def settings(engine: str, optimizer: str, dtype: str) -> dict:
    """The parameters of a recorded run, but its number of workers."""
    return {"engine": engine, "optimizer": optimizer, "dtype": dtype, "max_epochs": 5,
            "tol": -1, "random_state": 7}  # fmt: skip


def fingerprint(engine: str, workers: int, optimizer: str, dtype: str) -> dict:
    """What a run with these settings and seed 7 trains: the objective of every epoch,
    the weights' Frobenius norm and their projection on :func:`direction`."""
    X, y = problem()
    clf = DSMLRClassifier(1e-3, n_workers=workers, **settings(engine, optimizer, dtype))
    clf.fit(X, y)
    W = np.hstack([clf.coef_, clf.intercept_[:, None]]).astype(np.float64)
    return {
        "objectives": [h["objective"] for h in clf.history_],
        "projection": float((W * direction(*W.shape)).sum()),
        "norm": float(np.linalg.norm(W)),
    }


def direction(n_classes: int, n_columns: int) -> np.ndarray:
    """A fixed random ``(K, D_fit)`` direction: the weights' projection on it moves with
    any of them (their plain sum is zero: they are centred over the classes)."""
    return np.random.default_rng(0).standard_normal((n_classes, n_columns))


def key(engine: str, workers: int, optimizer: str, dtype: str) -> str:
    return f"{engine}-P{workers}-{optimizer}-{dtype}"


def assert_matches(got: dict, want: dict, name: str) -> None:
    np.testing.assert_allclose(got["objectives"], want["objectives"], rtol=1e-9, err_msg=name)
    figures = ("projection", "norm")
    np.testing.assert_allclose([got[f] for f in figures], [want[f] for f in figures],
                               rtol=1e-9, err_msg=name)  # fmt: skip


@pytest.mark.parametrize("run", RUNS, ids=lambda r: key(*r))
def test_a_fixed_seed_trains_the_recorded_model(run):
    want = json.loads(RECORD.read_text())[key(*run)]
    assert_matches(fingerprint(*run), want, key(*run))


if __name__ == "__main__":  # rewrite the record (a deliberate change of behaviour)
    RECORD.parent.mkdir(exist_ok=True)
    record = {key(*run): fingerprint(*run) for run in RUNS}
    RECORD.write_text(json.dumps(record, indent=1) + "\n")
    print(f"wrote {RECORD}")
