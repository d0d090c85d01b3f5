"""benchmarks/bench_mpi.py's cached optimum: used only for the data file and lam it was
computed for."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from dsmlr.io import write_svmlight

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench_mpi():
    spec = importlib.util.spec_from_file_location("bench_mpi_under_test", BENCH / "bench_mpi.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _write(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(60, 5))
    write_svmlight(path, X, rng.integers(0, 3, size=60))


def test_the_cached_optimum_is_kept_with_its_file_and_lam(bench_mpi, tmp_path, capsys):
    train = tmp_path / "p.train.svm"
    _write(train, 0)
    best = bench_mpi._optimum(train, 1e-2)
    cache = json.loads(train.with_suffix(".optimum.json").read_text())
    assert cache["objective"] == best and cache["lam"] == 1e-2 and len(cache["sha256"]) == 64
    # A planted objective is returned for the same file and lam ...
    cache["objective"] = 123.0
    train.with_suffix(".optimum.json").write_text(json.dumps(cache))
    assert bench_mpi._optimum(train, 1e-2) == 123.0
    # ... and recomputed for another lam or other data.
    assert bench_mpi._optimum(train, 1e-2 * 2) != 123.0
    assert "recomputing" in capsys.readouterr().out
    _write(train, 1)
    again = bench_mpi._optimum(train, 1e-2 * 2)
    assert "recomputing" in capsys.readouterr().out
    assert json.loads(train.with_suffix(".optimum.json").read_text())["objective"] == again
    # With cached_only, no match stops the run (exit 3) instead of computing one.
    assert bench_mpi._optimum(train, 1e-2 * 2, cached_only=True) == again
    with pytest.raises(SystemExit) as stop:
        bench_mpi._optimum(train, 1e-2 * 3, cached_only=True)
    assert stop.value.code == 3 and "--cached-optimum" in capsys.readouterr().out
