#!/usr/bin/env bash
# The MPI figures that need a core per rank (8 ranks at most), in one run:
#
#   1. scaling: SVRG epoch time at P = 1, 2, 4, 8 on 40K rows, 20K features, K = 2000;
#   2. stragglers: sync against async with rank 1 slowed 2x, at P = 8 and P = 4, K = 1000
#      (bench_mpi.py's straggler problem with --straggler-classes 1000: at K = 200 the
#      async engine's tokens at P = 8 would be 12 classes wide, where a visit's cost is
#      mostly per row; the scikit-learn optimum takes half an hour on 2 cores: carry
#      benchmarks/cache/mpi-k1000.train.optimum.json where one has been computed);
#   3. scaling with plain SGD;
#   4. scaling at P = 8 with two blocks per rank (shifts overlapped with the next visit);
#   5. time to 0.1% of the optimum on the real set debian-files under mpiexec at P = 1 and
#      8, and at P = 8 the sync and async engines with rank 1 slowed 2x
#      (parallel_convergence.py --mpi; the data files from $DSMLR_DATA_DIR, by default
#      shared/data beside the repository: on a machine without it, copy them to
#      benchmarks/cache/data, which the script then uses, and carry benchmarks/cache with
#      the optimum that `benchmarks/optimum.py debian-files --solver dsmlr` cached).
#
# Usage:  benchmarks/mpi_many_cores.sh OUTDIR [BUDGET_SECONDS]
#
# Each step writes OUTDIR/<step>.json (bench_mpi.py's output) and OUTDIR/<step>.log as it
# finishes; a step that would start after BUDGET_SECONDS (default 480) is skipped and
# every step is stopped at it, so a run cut short keeps the steps it finished.  The ranks
# run one thread each.  Where the `mpich` wheel's library sits beside `mpiexec`, mpi4py
# is pointed at it (where another MPI is installed too, mpi4py could load that one, and
# each rank would start as a job of its own).  Generated data and the
# scikit-learn optima go to benchmarks/cache/ (an optimum cached there is used only for
# the same file and lam).
#
# Environment (for a smaller trial run): PYTHON (python3), RANKS ("1 2 4 8"),
# STRAGGLER_RANKS ("8 4"), SCALE ("--scale-samples 40000 --scale-classes 2000"),
# STRAGGLER ("--repeats 2 --straggler-classes 1000 --straggler-epochs 16
# --cached-optimum": without a cached optimum for the data generated, those steps stop
# at once rather than spend the budget computing it).
set -uo pipefail

if [[ $# -lt 1 || $1 == -h || $1 == --help ]]; then
    sed -n '2,/^set /p' "$0" | sed '$d; s/^# \{0,1\}//'  # this header, as help
    exit $(($# < 1 ? 2 : 0))
fi
out=$1
budget=${2:-480}
py=${PYTHON:-python3}
ranks=${RANKS:-1 2 4 8}
straggler_ranks=${STRAGGLER_RANKS:-8 4}
scale=${SCALE:---scale-samples 40000 --scale-classes 2000}
straggler=${STRAGGLER:---repeats 2 --straggler-classes 1000 --straggler-epochs 16 --cached-optimum}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"

cores=$(getconf _NPROCESSORS_ONLN)  # before OMP_NUM_THREADS, which nproc would obey
export OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export PYTHONUNBUFFERED=1
mpiexec=$(command -v mpiexec) || { echo "no mpiexec on PATH (pip install mpich)" >&2; exit 2; }
libmpi=$(dirname "$mpiexec")/../lib/libmpi.so.12
if [[ -e $libmpi && -z ${MPI4PY_LIBMPI:-} ]]; then
    # mpi4py loads this library and takes its ABI from it (setting MPI4PY_MPIABI too
    # would skip the loading, and the wheel's directory is not on the loader's path).
    MPI4PY_LIBMPI=$(realpath "$libmpi")
    export MPI4PY_LIBMPI
fi
largest=0
for p in $ranks $straggler_ranks; do ((p > largest)) && largest=$p; done
if ((cores < largest)); then
    echo "warning: $cores cores for up to $largest ranks: the ranks will share cores" >&2
fi
"$py" -c "import dsmlr, mpi4py; print('dsmlr', dsmlr.__version__, 'mpi4py', mpi4py.__version__)"
echo "mpiexec: $mpiexec; MPI4PY_LIBMPI=${MPI4PY_LIBMPI:-unset}; $cores cores"

failed=0
step() {  # step NAME SCRIPT ARGS...: benchmarks/SCRIPT ARGS --out OUTDIR/NAME
    local name=$1 script=$2 left=$((budget - SECONDS))
    shift 2
    if ((left <= 0)); then
        echo "== $name: skipped (the budget of ${budget} s is spent)"
        return
    fi
    echo "== $name (at ${SECONDS} s; at most ${left} s)"
    timeout "$left" "$py" "$here/$script" "$@" --out "$out/$name" 2>&1 | tee "$out/$name.log"
    local rc=${PIPESTATUS[0]}
    if ((rc != 0)); then
        echo "== $name: failed or stopped (exit $rc)"
        failed=1
    fi
}

# The option lists ($ranks, $scale, ...) are meant to split into words.
# shellcheck disable=SC2086
step scaling_svrg bench_mpi.py --only scaling --ranks $ranks --repeats 1 $scale
for p in $straggler_ranks; do
    # shellcheck disable=SC2086
    step "straggler_p$p" bench_mpi.py --only straggler --straggler-ranks "$p" $straggler
done
# shellcheck disable=SC2086
step scaling_sgd bench_mpi.py --only scaling --ranks $ranks --repeats 1 --optimizer sgd $scale
first=${ranks%% *}
last=${ranks##* }
# shellcheck disable=SC2086
step scaling_svrg_two_blocks bench_mpi.py --only scaling --ranks "$first" "$last" --repeats 1 \
    --blocks-per-rank 2 $scale
if [[ -z ${DSMLR_DATA_DIR:-} && -e $here/cache/data/debian-files.train.svm.gz ]]; then
    export DSMLR_DATA_DIR=$here/cache/data
fi
step parallel_debian_files parallel_convergence.py --problems debian-files --workers \
    --engines sync async --epochs 8 --mpi --mpi-ranks 1 "$last" --mpi-straggler 1:2 --no-plots
echo "done in ${SECONDS} s"
exit $failed
