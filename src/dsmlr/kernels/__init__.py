"""Local numerics, no communication: a registry of interchangeable kernels.

``reference`` is the numpy oracle; ``numba`` is the fast CPU kernel; ``torch`` runs the
same passes with blocks and rows on a PyTorch device (a CUDA GPU, or the CPU for tests).
Kernels on a device other than the host's memory allocate and move class blocks through
their own ``zeros_block``/``to_host``/``from_host`` (see :class:`HostBlocks`).
"""

from __future__ import annotations

from collections.abc import Callable

from dsmlr.kernels.base import HostBlocks, Kernel, LocalRows, UpdateConfig

__all__ = [
    "HOST_KERNELS",
    "KERNELS",
    "LAGGING_KERNELS",
    "HostBlocks",
    "Kernel",
    "LocalRows",
    "UpdateConfig",
    "get_kernel",
    "gpu_count",
]


def _reference(device: str = "cpu", local_rank: int = 0) -> Kernel:
    from dsmlr.kernels.reference import ReferenceKernel

    return ReferenceKernel()


def _numba(device: str = "cpu", local_rank: int = 0) -> Kernel:
    # Imported lazily: numba's import costs about a second and is not needed for I/O.
    from dsmlr.kernels.numba_cpu import NumbaKernel

    return NumbaKernel()


def _torch(device: str = "cpu", local_rank: int = 0) -> Kernel:
    try:
        from dsmlr.kernels.torch_kernel import TorchKernel, resolve_device
    except ImportError as missing:  # a usage problem, reported in one line
        raise ValueError(str(missing)) from None

    return TorchKernel(resolve_device(device, local_rank))


KERNELS: dict[str, Callable[..., Kernel]] = {
    "reference": _reference,
    "numba": _numba,
    "torch": _torch,
}

#: Kernels that run on the host CPU only.
HOST_KERNELS = ("reference", "numba")

#: Kernels whose update passes leave columns behind for the block's next visit, so that
#: its blocks carry a lag (``carries_lag``; one int64 a column, see HostBlocks.settle).
LAGGING_KERNELS = ("numba",)


def get_kernel(name: str, device: str = "cpu", local_rank: int = 0) -> Kernel:
    """Return a new instance of the kernel registered as ``name``, on ``device``.

    ``device`` is a torch device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``); the host
    kernels accept only ``"cpu"``.  ``local_rank`` (the worker's index among its
    host's workers) picks the GPU for ``"cuda"``.
    """
    try:
        factory = KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown kernel {name!r}; choose one of {sorted(KERNELS)}") from None
    if name in HOST_KERNELS and device != "cpu":
        raise ValueError(f"the {name} kernel runs on the CPU only, not on {device!r}")
    return factory(device, local_rank)


def gpu_count() -> int:
    """CUDA GPUs PyTorch sees (0 without torch); torch is imported only when asked."""
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0
