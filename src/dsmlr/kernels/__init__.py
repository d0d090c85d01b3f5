"""Local numerics, no communication: a registry of interchangeable kernels.

``reference`` is the numpy oracle; ``numba`` is the fast CPU kernel.  Later backends
(GPU) register here under their own name.
"""

from __future__ import annotations

from collections.abc import Callable

from dsmlr.kernels.base import Kernel, LocalRows, UpdateConfig

__all__ = ["KERNELS", "Kernel", "LocalRows", "UpdateConfig", "get_kernel"]


def _reference() -> Kernel:
    from dsmlr.kernels.reference import ReferenceKernel

    return ReferenceKernel()


def _numba() -> Kernel:
    # Imported lazily: numba's import costs about a second and is not needed for I/O.
    from dsmlr.kernels.numba_cpu import NumbaKernel

    return NumbaKernel()


KERNELS: dict[str, Callable[[], Kernel]] = {"reference": _reference, "numba": _numba}


def get_kernel(name: str) -> Kernel:
    """Return a new instance of the kernel registered as ``name``."""
    try:
        factory = KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown kernel {name!r}; choose one of {sorted(KERNELS)}") from None
    return factory()
