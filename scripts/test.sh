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
# Run from tests/ so that the installed package (with its native modules) is imported, not ./mclner.
pytest -p no:cacheprovider "$@"
