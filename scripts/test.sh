#!/usr/bin/env bash
# Set up a fresh virtual environment, build and install mclner (`pip install .`), run the tests.
# CPU torch is pinned so that nothing pulls a CUDA build of torch on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MCLNER_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${MCLNER_TORCH_VERSION:-2.13.0}"
bash scripts/pip_install.sh test   # keeps build/ between runs: an unchanged extension is not rebuilt
ruff check mclner kernels tests benchmarks
# Without a GPU (CI): the CUDA kernels and bindings built against HIP-CPU (scripts/cuda_emulate.sh,
# cached under build/cuda-emu) run the impl="cuda" test cases on CPU tensors. Where the HIP-CPU kit,
# a compiler or pybind11 is missing, those cases skip and the pytest summary says why.
if [ -z "${MCLNER_CUDA_EMULATE:-}" ] && python -c "import sys, torch; sys.exit(torch.cuda.is_available())"; then
  rc=0
  emu=$(bash scripts/cuda_emulate.sh) || rc=$?
  case $rc in
    0) export MCLNER_CUDA_EMULATE="$emu" ;;
    3) export MCLNER_CUDA_EMULATE_SKIPPED="$emu" ;;
    *) echo "test.sh: the emulated CUDA build failed (exit $rc)" >&2; exit 1 ;;
  esac
fi
# Tests marked @network (real downloads from the package registries) are deselected when pip's index
# host cannot be reached (tests/conftest.py; the summary says how many); MCLNER_NETWORK=1 forces them,
# MCLNER_NETWORK=0 leaves them out.
# Run from tests/ so that the installed package (with its native modules) is imported, not ./mclner.
pytest -p no:cacheprovider "$@"
