#!/bin/sh
# dist.sh [BUILD_DIR] [tg-bench-dist options...] — the dist suite: tg-bench-dist on 2 ranks of
# one thread each (tapegrad's and OpenBLAS's), with OpenMPI's default non-blocking allreduce and
# with its ring algorithm, and the load average before and after, since the probe and the
# scaling figures mean little on a busy machine.
set -eu
build=${1:-build}
[ $# -gt 0 ] && shift
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
if [ "$(id -u)" = 0 ]; then
    export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
echo "dist.sh: $(date -u '+%Y-%m-%d %H:%M UTC'), load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# Twice: with OpenMPI's default algorithm for the non-blocking allreduce (tapegrad's, during
# backward), and with its ring algorithm, which tg-train asks for.
for algorithm in default 1; do
    if [ "$algorithm" = default ]; then
        echo "=== OpenMPI's default non-blocking allreduce"
        unset OMPI_MCA_coll_libnbc_iallreduce_algorithm
    else
        echo "=== OMPI_MCA_coll_libnbc_iallreduce_algorithm=1 (ring)"
        export OMPI_MCA_coll_libnbc_iallreduce_algorithm=1
    fi
    mpirun -np 2 --oversubscribe -x OPENBLAS_NUM_THREADS -x OMP_NUM_THREADS \
        "$build/bench/tg-bench-dist" "$@"
done
echo "dist.sh: load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
