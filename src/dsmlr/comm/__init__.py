"""Communication between workers; the only package that will ever import mpi4py.

Nothing here touches MPI at import time.  Implementations are registered by name.
"""

from dsmlr.comm.base import Communicator
from dsmlr.comm.inprocess import InProcessComm, run_workers

__all__ = ["Communicator", "InProcessComm", "run_workers"]
