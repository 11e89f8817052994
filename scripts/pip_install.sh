#!/usr/bin/env bash
# Install mclner from this checkout into the active virtual environment, reusing the native build.
# Usage: scripts/pip_install.sh [EXTRAS]   (e.g. "test" or "triton"; run inside the venv)
#
# A plain `pip install .` builds in a fresh temporary environment each time: the pybind11 include
# path in every compile command changes, so ninja recompiles the whole extension although
# build/{wheel_tag} (scikit-build-core's build-dir) is kept. Installing the build requirements into
# the venv once and building with --no-build-isolation keeps the paths stable: an unchanged extension
# is not recompiled, a changed source file recompiles only what depends on it.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-}
python -m pip install -q "scikit-build-core>=0.10,<2" "pybind11>=2.12,<4"
# scikit-build-core needs CMake >= 3.24 and ninja: use the system's when new enough, else the wheels.
if ! python - <<'EOF'
import re, shutil, subprocess, sys
cmake = shutil.which("cmake")
if not cmake or not shutil.which("ninja"):
    sys.exit(1)
out = subprocess.run([cmake, "--version"], capture_output=True, text=True).stdout
m = re.search(r"(\d+)\.(\d+)", out)
sys.exit(0 if m and (int(m[1]), int(m[2])) >= (3, 24) else 1)
EOF
then
  python -m pip install -q "cmake>=3.24" ninja
fi
# seqeval ships only an sdist whose setup.py fetches setuptools_scm as an egg; built without
# isolation inside this venv, that egg (setuptools_scm 10, missing its vcs_versioning dependency)
# makes the metadata say version 0.0.0 and pip refuses it. Built with isolation it installs cleanly,
# so install it first and the --no-build-isolation step below finds it already satisfied.
python -m pip install -q "seqeval>=1.2.2,<2"
# The segmenters of the test extra that ship only sdists (jieba, unidic-lite): built with isolation too.
if [[ ",$extras," == *",test,"* ]]; then
  python -m pip install -q "unidic-lite>=1.0.8,<2" "jieba>=0.42,<1"
fi
python -m pip install -q --no-build-isolation ".${extras:+[$extras]}"
