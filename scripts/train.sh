#!/usr/bin/env bash
# Set up a fresh virtual environment, build and install mclner, and run the main job:
# mclner train --fused on the embedded default (CoNLL-2003 en -> MSRA zh, CC-CEDICT, multilingual-e5-small).
# Extra arguments go to `mclner train` (e.g. --preset full on a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MCLNER_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${MCLNER_TORCH_VERSION:-2.13.0}"
python -m pip install -q ".[triton]"
mclner train --fused "$@"
