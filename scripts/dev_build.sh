#!/usr/bin/env bash
# Development build: compiles the native modules into mclner/ (so `PYTHONPATH=.` uses them) without
# installing. Usage: scripts/dev_build.sh [extra cmake -D options]; MCLNER_CUDA=OFF skips nvcc.
set -euo pipefail
cd "$(dirname "$0")/.."
build=${MCLNER_BUILD_DIR:-build/dev}
pybind11_dir=$(python -c "import pybind11; print(pybind11.get_cmake_dir())")
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMCLNER_INPLACE=ON \
  -DMCLNER_CUDA="${MCLNER_CUDA:-AUTO}" -DMCLNER_CUDA_ARCHS="${MCLNER_CUDA_ARCHS:-80;90}" \
  -Dpybind11_DIR="$pybind11_dir" -DPython_EXECUTABLE="$(command -v python)" "$@" >/dev/null
cmake --build "$build" -j "$(nproc)"
