"""The versions and resources that a bug report or a cluster check needs (``dsmlr info``).

:func:`collect_info` gathers them into a dict; :func:`format_info` writes it as aligned
text.  Nothing here may fail because an optional part is missing or broken: each probe
catches its own errors and reports them as the value (``"not installed"``,
``"unavailable (reason)"``).

Two probes are expensive or risky, so they run only when asked: importing torch
(seconds), and asking the MPI library for its version
(:func:`dsmlr.comm.mpi.mpi_library_version`, in a child process unless an MPI launcher
started this one).
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
from typing import Any

from dsmlr import __version__
from dsmlr.comm.launcher import launched_by_mpi, launcher_rank_and_size
from dsmlr.comm.shared_memory import shared_memory_enabled, shared_memory_room

__all__ = ["collect_info", "format_info", "mpi_world"]

NOT_INSTALLED = "not installed"

# (key, importable module, distribution name): versions in the order they are printed.
_PACKAGES = [
    ("numpy", "numpy", "numpy"),
    ("scipy", "scipy", "scipy"),
    ("scikit-learn", "sklearn", "scikit-learn"),
    ("numba", "numba", "numba"),
    ("mpi4py", "mpi4py", "mpi4py"),
]
_LATE_PACKAGES = [("matplotlib", "matplotlib", "matplotlib"), ("tqdm", "tqdm", "tqdm")]

# Text labels of the keys whose printed name differs from the JSON key.
_LABELS = {
    "mpi_library": "MPI library",
    "gpus": "GPUs",
    "cpu_cores": "CPU cores",
    "cpu_cores_usable": "CPU cores usable",
    "mpi_world_size": "MPI world size",
    "shared_memory": "shared memory",
}


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _reason(exc: BaseException) -> str:
    return _one_line(f"{type(exc).__name__}: {exc}")


def _version(module_name: str, dist_name: str) -> str:
    """The version of an importable package, ``"not installed"``, or ``"broken (...)"``."""
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return NOT_INSTALLED
    except Exception as exc:  # installed, but importing it fails: say how
        return f"broken ({_reason(exc)})"
    version = getattr(module, "__version__", None)
    if isinstance(version, str):
        return version
    try:
        return importlib.metadata.version(dist_name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def _first_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return _one_line(lines[0]) if lines else "unknown"


def _mpi_library() -> str:
    """The first line of the MPI library's version, or ``"unavailable (reason)"``."""
    from dsmlr.comm.mpi import mpi_library_version

    try:
        return _first_line(mpi_library_version())
    except ImportError:
        return "unavailable (mpi4py not installed)"
    except RuntimeError as exc:  # the probe's own words: its last line of errors
        return f"unavailable ({_one_line(str(exc))})"
    except Exception as exc:
        return f"unavailable ({_reason(exc)})"


def mpi_world() -> tuple[int, int | None]:
    """``(rank, world size)`` of this process: ``(0, 1)`` unless an MPI launcher started it.

    Under a launcher without a working mpi4py the launcher's environment variables
    answer instead (size ``None`` where they do not say), so ``info`` can still report.
    """
    if not launched_by_mpi():
        return 0, 1
    from dsmlr.comm.mpi import world_rank_and_size

    try:
        return world_rank_and_size()
    except Exception:
        return launcher_rank_and_size()


def _torch_and_gpus() -> tuple[str, list[str]]:
    """torch's version and the CUDA devices it sees (names; empty when none)."""
    version = _version("torch", "torch")
    if version == NOT_INSTALLED or version.startswith("broken"):
        return version, []
    try:
        import torch

        if not torch.cuda.is_available():
            return version, []
        return version, [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception as exc:  # a driver/runtime mismatch: report it, do not fail
        return version, [f"unavailable ({_reason(exc)})"]


def _usable_cores() -> int | None:
    """Cores this process may run on (a batch scheduler's CPU set, not the machine's)."""
    if hasattr(os, "process_cpu_count"):  # Python >= 3.13
        return os.process_cpu_count()
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count()


def collect_info() -> dict[str, Any]:
    """Versions of dsmlr and its dependencies, and the resources this process sees.

    Returns
    -------
    dict
        Keys ``dsmlr``, ``python``, ``platform``, ``numpy``, ``scipy``,
        ``scikit-learn``, ``numba``, ``mpi4py``, ``mpi_library``, ``torch``,
        ``matplotlib``, ``tqdm`` (str: a version, ``"not installed"``, or a reason it
        is unavailable); ``gpus`` (list of CUDA device names, empty when none);
        ``cpu_cores`` and ``cpu_cores_usable`` (int or None); ``mpi_world_size``
        (int: 1 unless started by an MPI launcher; None where it cannot be told);
        ``shared_memory`` (str: the room MPI ranks of one host have to share the class
        blocks in, or why they copy them).
    """
    info: dict[str, Any] = {
        "dsmlr": __version__,
        "python": f"{platform.python_version()} ({platform.python_implementation()})",
        "platform": platform.platform(),
    }
    for key, module, dist in _PACKAGES:
        info[key] = _version(module, dist)
    info["mpi_library"] = _mpi_library()
    info["torch"], info["gpus"] = _torch_and_gpus()
    for key, module, dist in _LATE_PACKAGES:
        info[key] = _version(module, dist)
    info["cpu_cores"] = os.cpu_count()
    info["cpu_cores_usable"] = _usable_cores()
    info["mpi_world_size"] = mpi_world()[1]
    info["shared_memory"] = _shared_memory()
    return info


def _shared_memory() -> str:
    """What the MPI ranks of one host have to share the class blocks in
    (:mod:`dsmlr.comm.shared_memory`): ``/dev/shm``'s free room, or why they copy."""
    if not shared_memory_enabled():
        return "off (DSMLR_SHARED_MEMORY=0: the ranks copy the blocks)"
    room = shared_memory_room()
    if room is None:
        return "unknown (no /dev/shm)"
    return f"{room / 2**30:.1f} GiB free in /dev/shm (for the class blocks of ranks on one host)"


def format_info(info: dict[str, Any]) -> str:
    """``info`` as aligned ``name  value`` lines (None shown as ``unknown``)."""
    width = max(len(_LABELS.get(key, key)) for key in info)
    lines = []
    for key, value in info.items():
        if key == "gpus":
            value = ", ".join(f"{i}: {name}" for i, name in enumerate(value)) or "none"
        elif value is None:
            value = "unknown"
        lines.append(f"{_LABELS.get(key, key):<{width}}  {value}")
    return "\n".join(lines)
