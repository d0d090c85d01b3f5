"""What an MPI launcher tells a process through its environment (no MPI calls).

``mpiexec`` (MPICH's Hydra, Open MPI's ``prterun``) and ``srun`` set variables in every
process they start.  Reading them answers "was this process launched as a rank?" without
importing mpi4py, whose first import initialises MPI; it also answers where MPI itself
cannot (``dsmlr info`` under a launcher whose mpi4py is broken).  This module is the one
list of those variables.
"""

from __future__ import annotations

import os

__all__ = [
    "LAUNCHER_VARIABLES",
    "LOCAL_RANK_VARIABLES",
    "RANK_VARIABLES",
    "SIZE_VARIABLES",
    "launched_by_mpi",
    "launcher_local_rank",
    "launcher_rank_and_size",
]

#: This process's rank in the job: MPICH / Intel MPI, Open MPI, PMIx (Slurm).
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")
#: The number of processes in the job.
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE")
#: This process's rank among those on its host.
LOCAL_RANK_VARIABLES = ("MPI_LOCALRANKID", "OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID")
#: Any of these means an MPI launcher started this process (``MPI_LOCALNRANKS``: Hydra).
LAUNCHER_VARIABLES = (*RANK_VARIABLES, *SIZE_VARIABLES, "MPI_LOCALNRANKS")


def launched_by_mpi() -> bool:
    """Whether this process was started by an MPI launcher (``mpiexec``, ``srun``)."""
    return any(name in os.environ for name in LAUNCHER_VARIABLES)


def _first_int(names: tuple[str, ...]) -> int | None:
    for name in names:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return None


def launcher_rank_and_size() -> tuple[int, int | None]:
    """``(rank, size)`` as the launcher's variables give them: rank 0 and size None
    where they do not say."""
    rank = _first_int(RANK_VARIABLES)
    return (0 if rank is None else rank), _first_int(SIZE_VARIABLES)


def launcher_local_rank(default: int) -> int:
    """This process's rank among the job's processes on its host, or ``default`` where
    the launcher does not say (then the caller's rank stands for it)."""
    local = _first_int(LOCAL_RANK_VARIABLES)
    return default if local is None else local
