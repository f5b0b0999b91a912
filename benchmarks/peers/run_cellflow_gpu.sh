#!/usr/bin/env bash
# CellFlow at its tutorial configuration on a GPU machine that has JAX for CUDA but not CellFlow.
#
#   benchmarks/peers/run_cellflow_gpu.sh WHEELS_DIR OUTDIR TRAIN_SECONDS JOB.json [JOB.json ...]
#
# WHEELS_DIR holds the wheels of cellflow-gpu-wheels.txt (Python 3.12, manylinux x86-64):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#     --platform manylinux2014_x86_64 -d WHEELS_DIR -r benchmarks/peers/cellflow-gpu-wheels.txt
# The jobs come from "score_cellflow.py prepare" (relative paths: run from the repository root).
# Copy OUTDIR/<job folder>_pred.h5ad(.json) back as <job folder>/pred.h5ad(.json), then
# "score_cellflow.py score".
set -euo pipefail
WHEELS=$1 OUTDIR=$2 SECONDS_CAP=$3
shift 3
SITE=${SITE:-/tmp/cellflow-site}
# some wheels are compiled for CPython 3.12 (pydantic_core, msgspec, numcodecs, google_crc32c)
python3 -c 'import sys; assert sys.version_info[:2] == (3, 12), sys.version' \
    || { echo "run_cellflow_gpu.sh: the carried wheels need Python 3.12" >&2; exit 2; }
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$SITE" "$WHEELS"/*.whl
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi -L || true
python3 benchmarks/peers/cellflow_jobs.py "$OUTDIR" "$@" --train-seconds "$SECONDS_CAP"
