#!/usr/bin/env bash
# Device-machine entry point: install the carried wheels, then run a sweep into $OUT.
# Usage (from the repo root): bash benchmarks/jobs/gpu_run.sh JOBS_FILE DEADLINE_S WORKERS
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT/logs"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import torch, anndata, lightning, scdit; print(torch.__version__, anndata.__version__, lightning.__version__, torch.cuda.is_available())" || exit 1
python3 benchmarks/sweep.py --jobs "$1" --deadline "$2" --workers "$3" --threads "${4:-2}" --out "$OUT/sweep.csv" --logs /tmp/logs
tar czf "$OUT/logs.tgz" -C /tmp logs
