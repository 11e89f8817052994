"""Adding a method is one folder: a method that lives in a test-only folder (tests/methods/plugin: the
``mclner_fifth`` package and its distribution's ``mclner.methods`` entry point) registers and trains
through `mclner train`, and `mclner evaluate` loads its checkpoint and offers its decoding option,
without any other file changing. The built-in methods are found the same way: every folder of
``mclner/methods/`` registers itself, and ``mclner/methods/__init__.py`` names none of them."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent / "plugin"


def _mclner(args, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PLUGIN), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mclner", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_a_fifth_method_from_a_test_folder_registers_and_trains(task_files, tmp_path):
    root, paths = task_files
    listed = _mclner(["methods"], tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert "fifth\ttest-only:" in listed.stdout
    out = tmp_path / "run"
    r = _mclner(["train", "--method", "fifth", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh",
                 "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "3", "--distil-max-steps", "2",
                 "--batch-size", "4", "--effective-batch-size", "8", "--no-progress", "--seed", "1"], tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((out / "results.json").read_text())
    assert summary["method"] == "fifth" and list(summary["stages"]) == ["tagger", "distil"]
    assert summary["stages"]["distil"]["steps"] == 2
    # its calibration (an ordinary JSON value) is kept, and its message was printed by the engine
    assert summary["stages"]["tagger"]["calibrated"]["entity_bonus"] in (0.0, 0.5)
    assert "entity bonus" in r.stdout
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    distil = [x for x in log if x.get("stage") == "distil" and "loss" in x]
    assert len(distil) == 2 and all("target_words" in x and "mse" in x for x in distil)  # its stats are logged
    assert "target_words" not in r.stdout.split("[distil] step")[-1].split("\n")[0]  # but not shown as a loss
    ev = _mclner(["evaluate", str(out / "best"), str(Path(paths["zh"]) / "test.txt"), "--lang", "zh", "--json",
                  "--entity-bonus", "0.25"], tmp_path)
    assert ev.returncode == 0, ev.stderr[-2000:]
    assert json.loads(ev.stdout)["decoding"] == "decoding: argmax with entity bonus 0.25"


def test_without_the_plugin_the_method_is_unknown(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    r = subprocess.run([sys.executable, "-m", "mclner", "methods"], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "fifth" not in r.stdout


def test_every_method_folder_registers_itself():
    import mclner.methods as methods
    from mclner.methods import registry

    folders = {m.name for m in pkgutil.iter_modules(methods.__path__) if m.ispkg}
    assert folders == {"mclner", "token_classification", "concner", "dlbri"}
    owners = {cls.__module__.split(".")[2] for cls in registry().values()}
    assert owners == folders
    source = Path(methods.__file__).read_text(encoding="utf-8")
    assert not any(f"methods import {name}" in source or f"methods.{name}" in source for name in folders)
