#!/usr/bin/env bash
# Everything that needs a GPU, in one command (for a lent GPU machine with torch, triton, nvcc, cmake):
# build in place for the GPU's architecture, run the whole test suite (cuda and triton cases included),
# measure the device's ceilings and run the benchmarks. Results go to $OUT (or ./gpu-results).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-results}
mkdir -p "$out"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
MCLNER_CUDA=ON MCLNER_CUDA_ARCHS=${MCLNER_CUDA_ARCHS:-90} scripts/dev_build.sh 2>&1 | tail -3
python -m mclner ops | tee "$out/impls.txt"
python -m pytest -q -p no:cacheprovider tests -m "not network" -x --deselect tests/ops/test_build.py 2>&1 \
  | tee "$out/tests.log" | tail -15
python benchmarks/mclner_gpu_ceilings.py --out "$out/ceilings.json"
# On a GPU bench_ops.py adds its GPU sizes (CASES there), among them info_nce at M=65,536 and sup_con at
# M=65,536 and M=131,072 (LCL-like: 10 label classes; TCL-like: M/2 pair labels), reference/triton/cuda.
python -m pytest -q -p no:cacheprovider benchmarks/bench_ops.py --benchmark-only \
  --ratio-table "$out/ratios.md" --benchmark-json "$out/bench.json" 2>&1 | tee "$out/bench.log" | tail -25
# Time estimate of the --preset full table (scripts/experiments.sh full) from a measured step time per row:
# MCLNER_GPU_ESTIMATE=1 adds it here for the main rows (one short probe per row); for all rows:
#   MCLNER_ESTIMATE=1 MCLNER_TRAIN_ARGS="--device cuda" bash scripts/experiments.sh full
if [ "${MCLNER_GPU_ESTIMATE:-0}" = 1 ]; then
  MCLNER_ESTIMATE=1 MCLNER_ROWS="${MCLNER_ROWS:-tc mclner concner dlbri}" MCLNER_TRAIN_ARGS="--device cuda" \
    bash scripts/experiments.sh full 2> "$out/estimate.log" | tee "$out/estimate.md"
  cp runs/full/estimate.json "$out/" 2>/dev/null || true
fi
