"""``python tests/mpi_run.py LOG_DIR MODULE ARGS...``: run ``python -m MODULE ARGS`` with
this MPI rank's stdout and stderr in ``LOG_DIR/rank-R.log`` (used by the MPI tests, so
four ranks' reports do not interleave)."""

import os
import runpy
import sys

log_dir, module, *args = sys.argv[1:]
rank = os.environ.get("PMI_RANK", "0")
fd = os.open(os.path.join(log_dir, f"rank-{rank}.log"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
os.dup2(fd, 1)
os.dup2(fd, 2)
sys.argv = [module, *args]
runpy.run_module(module, run_name="__main__", alter_sys=True)
