#!/usr/bin/env bash
# The emulated CUDA test cases under AddressSanitizer: the kernels and bindings built against HIP-CPU
# with -fsanitize=address (-O1 -g, blocks one after another, 256 KiB fiber stacks), loaded into the
# test process with libasan preloaded. An out-of-bounds read or write in a kernel aborts the run with
# a report that cites the csrc/cuda/*.cu line. Usage: scripts/cuda_emulate_asan.sh [pytest options]
# (from an environment with the test dependencies, e.g. the venv that scripts/test.sh sets up).
set -euo pipefail
cd "$(dirname "$0")/.."
rc=0
emu=$(MCLNER_CUDA_EMULATE_FLAVOUR=asan bash scripts/cuda_emulate.sh) || rc=$?
if [ "$rc" = 3 ]; then echo "cuda_emulate_asan: skipped: $emu"; exit 0; fi
[ "$rc" = 0 ] || exit "$rc"
# libasan first; libstdc++ preloaded too, or ASan's __cxa_throw interceptor finds no real one (python
# does not link libstdc++) and the first C++ exception (a binding's argument check) aborts.
preload="$("${CXX:-g++}" -print-file-name=libasan.so) $("${CXX:-g++}" -print-file-name=libstdc++.so.6)"
# Python and torch are not instrumented and keep memory until exit: no leak report. The fibers swap
# stacks, which ASan's stack-use-after-return detection does not follow.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:detect_stack_use_after_return=0:abort_on_error=1}
export MCLNER_CUDA_EMULATE=$emu OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
# Only the CUDA cases: the impl="cuda" parameters of every op's tests, the CUDA binding checks and
# tests/ops/test_cuda_emulated.py.
LD_PRELOAD=$preload python -m pytest -q -p no:cacheprovider -k "cuda" tests/ops/test_op_*.py tests/ops/test_native_*.py \
  tests/ops/test_cuda_emulated.py "$@"
