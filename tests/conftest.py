"""Shared fixtures: small problems and their scikit-learn reference optima."""

from __future__ import annotations

import pytest

from problems import planted_sparse_problem, sklearn_optimum

__all__ = ["planted_sparse_problem", "sklearn_optimum"]


@pytest.fixture(scope="session")
def sparse_problem():
    X, y = planted_sparse_problem()
    return X, y
