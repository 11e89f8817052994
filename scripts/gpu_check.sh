#!/usr/bin/env bash
# Everything that needs a GPU, in one command (a GPU machine with CUDA torch, triton, nvcc, cmake,
# ninja, pybind11). Under 8 minutes on one H100: the steps' time limits add up to 8 minutes, so a slow
# step cannot take the later steps' results with it. Steps, expected minutes (16 CPU cores), limits:
#   1. build    (~1.5, limit 2)    native modules in place, CUDA for this GPU's architecture only
#   2. impls    (~0.1, limit 0.25) which implementations can run (python -m mclner ops)
#   3. kernels  (~0.7, limit 1)    every Triton kernel x dtype x config and the CUDA kernels compiled for
#                                  this GPU: registers, spills, shared memory (scripts/gpu_resources.py)
#   4. tests    (~1.5, limit 2)    the GPU tests: every cuda and triton case of tests/ops (forward and
#                                  gradients in float32/bfloat16/float16 on the device, real atomics and
#                                  streams) and the gpu-marked ones (memory stays O(M·P) at M = 65,536)
#   5. ceilings (~0.3, limit 0.5)  measured dense bf16/fp32 matmul rate and copy bandwidth
#   6. roofline (~0.05, limit 0.25) the predicted bound of every GPU case (mclner.ops.roofline)
#   7. bench    (~2,   limit 2)    benchmarks/bench_ops.py at the GPU sizes (bfloat16) with
#                                  MCLNER_TRITON_AUTOTUNE=1: time, peak memory, ratios, the roofline
#                                  bound of every case and the share of it reached ("% of bound"), the
#                                  autotune choices; the tables are rewritten after every case
# Results go to $OUT (or ./gpu-results): build.log, impls.txt, resources.md, resources.json,
# tests.log, ceilings.json, ratios.md, autotune.md, bench.json, bench.log, roofline.md, steps.txt.
#
# usage: scripts/gpu_check.sh [--dry-run]
#   --dry-run   print the steps, their commands and limits; run nothing, write nothing.
# MCLNER_GPU_ESTIMATE=1 adds a time estimate of the --preset full table (one short training probe per
# main row; not part of the 8 minutes). For all rows:
#   MCLNER_ESTIMATE=1 MCLNER_TRAIN_ARGS="--device cuda" bash scripts/experiments.sh full
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

dry=0
case "${1:-}" in
  --dry-run) dry=1 ;;
  "") ;;
  *) echo "usage: scripts/gpu_check.sh [--dry-run]" >&2; exit 2 ;;
esac

out=${OUT:-gpu-results}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
status=0

# step NAME LIMIT_SECONDS LOG COMMAND...: run COMMAND with a time limit, its output teed to $out/LOG.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  echo "== $name (limit ${limit}s): $*"
  if [ "$dry" = 1 ]; then return 0; fi
  local t0 rc
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$out/$log" 2>&1
  rc=$?
  tail -n 25 "$out/$log"
  echo "$name: exit $rc after $(( $(date +%s) - t0 ))s" | tee -a "$out/steps.txt"
  if [ "$rc" != 0 ]; then status=1; fi
  return 0
}

if [ "$dry" = 0 ]; then
  mkdir -p "$out"
  : > "$out/steps.txt"
  cc=$(python -c 'import torch; m, n = torch.cuda.get_device_capability(); print(10 * m + n)') || {
    echo "gpu_check: no CUDA device visible to torch" >&2; exit 1; }
else
  cc=90
  echo "(dry run: architecture taken as sm_$cc; outputs would go to $out/)"
fi

step build 120 build.log env MCLNER_CUDA=ON MCLNER_CUDA_ARCHS="$cc" bash scripts/dev_build.sh
step impls 15 impls.txt python -m mclner ops
step kernels 60 resources.log python scripts/gpu_resources.py --archs "$cc" --jobs "$(nproc)" \
  --markdown "$out/resources.md" --json "$out/resources.json"
step tests 120 tests.log python -m pytest -q -p no:cacheprovider tests/ops tests/methods/test_fused_resume.py \
  -m "not network" -k "(cuda or triton or gpu) and not compile"
step ceilings 30 ceilings.log python benchmarks/mclner_gpu_ceilings.py --out "$out/ceilings.json"
step roofline 15 roofline.md python -m mclner.ops.roofline
step bench 120 bench.log env MCLNER_TRITON_AUTOTUNE=1 python -m pytest -q -p no:cacheprovider \
  benchmarks/bench_ops.py --benchmark-only --ratio-table "$out/ratios.md" --autotune-table "$out/autotune.md" \
  --benchmark-json "$out/bench.json"

if [ "${MCLNER_GPU_ESTIMATE:-0}" = 1 ]; then
  step estimate 1800 estimate.log env MCLNER_ESTIMATE=1 MCLNER_ROWS="${MCLNER_ROWS:-tc mclner concner dlbri}" \
    MCLNER_TRAIN_ARGS="--device cuda" bash scripts/experiments.sh full
  if [ "$dry" = 0 ]; then cp runs/full/estimate.json "$out/" 2>/dev/null || true; fi
fi
[ "$dry" = 1 ] || echo "gpu_check: results in $out/ (exit $status)"
exit "$status"
