#!/usr/bin/env bash
# Set up a fresh virtual environment, build and install mclner, and run the main job:
# mclner train on the embedded default (CoNLL-2003 en -> MSRA zh, CC-CEDICT, multilingual-e5-small), with
# the fused ops (--impl auto, the default).
# Extra arguments go to `mclner train` (e.g. --preset full on a GPU, --impl reference).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${MCLNER_VENV:-.venv}
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
# shellcheck disable=SC1091
. "$venv/bin/activate"
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${MCLNER_TORCH_VERSION:-2.13.0}"
bash scripts/pip_install.sh triton   # keeps build/ between runs: an unchanged extension is not rebuilt
# Without a GPU and without an explicit --preset, use the quick preset (a CPU run of < 30 minutes);
# `--preset full` is the whole data set for a GPU.
args=("$@")
if ! printf '%s\n' "${args[@]}" | grep -q -- '^--preset' \
   && ! python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  args=(--preset quick "${args[@]}")
fi
mclner train "${args[@]}"
