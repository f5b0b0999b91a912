#!/usr/bin/env bash
# CellFlow peer on held-out-context splits: make splits (scdit venv), run CellFlow (its own venv),
# score with scdit.evaluate (scdit venv). Single-core by design (shared machine).
#
#   benchmarks/peers/run_cellflow_context.sh [WORKDIR] [ITERATIONS] [ARCHITECTURE] [PATIENTS...]
#
# ARCHITECTURE: "tutorial" (CellFlow tutorial widths, MultiSteps(adam(5e-5), 20)) or "small"
# (reduced widths, plain adam(1e-4); the only setting affordable on one CPU core, see README).
# PREPARE_ARGS: extra arguments of "score_cellflow.py prepare", e.g.
#   PREPARE_ARGS="--no-cellline --kang /path/valid.h5ad --kang-context CD4T" with PATIENTS "none"
#   (an empty PATIENTS list falls back to the default PW030 PW034).
# Environment: CELLFLOW_PY (default /work/peers/cellflow-venv/bin/python), CPU (default 1).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORKDIR=${1:-/work/peers/runs/context}
ITERATIONS=${2:-2000}
ARCH=${3:-small}
shift $(( $# < 3 ? $# : 3 ))
if [ "${1:-}" = "none" ]; then PATIENTS=(); else PATIENTS=("${@:-PW030 PW034}"); fi
CELLFLOW_PY=${CELLFLOW_PY:-/work/peers/cellflow-venv/bin/python}
CPU=${CPU:-1}
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
export XLA_FLAGS="--xla_force_host_platform_device_count=1"
export JAX_PLATFORMS=cpu

# shellcheck disable=SC2068
taskset -c "$CPU" .venv/bin/python benchmarks/peers/score_cellflow.py prepare "$WORKDIR" \
    --iterations "$ITERATIONS" --architecture "$ARCH" --patients ${PATIENTS[@]} ${PREPARE_ARGS:-}
while read -r job; do
    echo "== CellFlow: $job"
    /usr/bin/time -v taskset -c "$CPU" "$CELLFLOW_PY" benchmarks/peers/cellflow_context.py "$job" \
        > "${job%.json}.log" 2> "${job%.json}.err" || { tail -20 "${job%.json}.err"; exit 1; }
    grep -E "seconds_(train|total)|loss_" "${job%.json}.log" || true
done < "$WORKDIR/jobs.txt"
taskset -c "$CPU" .venv/bin/python benchmarks/peers/score_cellflow.py score "$WORKDIR"
