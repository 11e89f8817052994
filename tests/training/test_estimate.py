"""Time estimates of training rows (python -m mclner.training.estimate, MCLNER_ESTIMATE=1 of
scripts/experiments.sh): the planned steps are what the trainer runs, the probe measures every stage, the
table adds up, and the script passes its rows on."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from mclner_fixtures import patch_training_data

from mclner.training.estimate import format_table, main, plan_row, probe_row, train_config
from mclner.training.trainer import train

REPO = Path(__file__).resolve().parents[2]
TINY = ("--source synthetic-en --target synthetic-zh --lexicon synthetic --batch-size 8 --effective-batch-size 16 "
        "--encoder-lr 1e-3 --patience 0")
SMALL = "--biaffine-dim 32 --cln-hidden 32 --proj-dim 16"  # mCL-NER's heads at the tiny encoder's size


@pytest.fixture
def tiny(encoder_dir, monkeypatch):
    patch_training_data(monkeypatch)  # 32 source train, 8 dev, 8 target test, 24 unlabelled sentences
    return f"{TINY} --encoder {encoder_dir}"


def _evals(run: Path) -> dict:
    out: dict = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "eval":
            out[rec["stage"]] = out.get(rec["stage"], 0) + 1
    return out


@pytest.mark.parametrize("options", [f"--method mclner --self-training-rounds 1 --epochs 2 {SMALL}",
                                     f"--method mclner --self-training-rounds 1 --epochs 3 --eval-every 3 {SMALL}",
                                     "--method concner --epochs 2", "--method dlbri --epochs 1"],
                         ids=["mclner-epochs", "eval-every", "concner", "dlbri"])
def test_planned_steps_are_what_the_trainer_runs(tmp_path, tiny, options):
    cfg = train_config("full", 3, f"{options} {tiny}", str(tmp_path / "run"))
    plan = plan_row(cfg, "row", 2, options, extra_target_evals=2)
    assert plan.sizes == {"source_train": 32, "source_dev": 8, "target_test": 8, "target_unlabeled": 24}
    summary = train(cfg)
    assert {s.name: s.steps for s in plan.stages} == {k: v["steps"] for k, v in summary["stages"].items()}
    assert {s.name: s.evaluations for s in plan.stages} == _evals(tmp_path / "run")
    # 32 sentences in micro-batches of 8, two per step: 2 steps an epoch (ConCNER's kd: 24 target sentences)
    assert plan.stages[0].steps_per_epoch == 2
    labelled = {s.name: s.pseudo_labelled for s in plan.stages}
    if "st1" in labelled:  # self-training labels every unlabelled sentence before its stage
        assert labelled == {"source": 0, "st1": 24}
        assert summary["target_data"]["st1"]["unlabeled"] == 24
    # dev predictions: each evaluation and the final one; target: pseudo-labels, final test, 2 scorings
    assert plan.source_inference == 8 * (sum(s.evaluations for s in plan.stages) + 1)
    assert plan.target_inference == sum(labelled.values()) + 8 + 2 * 8


def test_probe_times_every_stage_and_the_table_adds_up(tmp_path, tiny):
    cfg = train_config("quick", 3, f"--method mclner --self-training-rounds 1 {SMALL} {tiny}", str(tmp_path / "run"))
    plan = plan_row(cfg, "mclner", 3)
    assert [(s.name, s.steps) for s in plan.stages] == [("source", 250), ("st1", 100)]  # the quick preset
    probe_row(plan, cfg, steps=3, eval_sentences=4)
    assert not (tmp_path / "run").exists()  # the probe runs in a temporary folder
    assert all(s.seconds_per_step is not None and s.seconds_per_step > 0 for s in plan.stages), plan.stages
    assert plan.seconds_per_sentence["source"] > 0 and plan.seconds_per_sentence["target"] > 0
    assert plan.run_s == pytest.approx(250 * plan.stages[0].seconds_per_step + 100 * plan.stages[1].seconds_per_step
                                       + plan.inference_s)
    table = format_table([plan], "cpu", 3)
    row = next(line for line in table.splitlines() if line.startswith("| mclner |"))
    assert f"source 250 × {plan.stages[0].seconds_per_step:.3f}" in row
    assert f"{3 * plan.run_s / 3600:.2f} h |" in row
    assert "median of 3 probe steps per stage on cpu" in table


def test_main_writes_rows_and_total(tmp_path, tiny, capsys):
    out = tmp_path / "estimate.json"
    rc = main(["--preset", "quick", "--seed", "3", "--probe-steps", "2", "--json", str(out),
               "--row", "tc", "3", f"--method token-classification --max-steps 5 {tiny}",
               "--row", "grid", "1",
               f"--method mclner --self-training-rounds 0 --no-codeswitch --max-steps 7 {SMALL} {tiny}",
               "--row", "dlbri", "1", f"--method dlbri {tiny}"])
    assert rc == 0
    doc = json.loads(out.read_text())
    rows = {r["row"]: r for r in doc["rows"]}
    assert rows["tc"]["stages"][0]["steps"] == 5 and rows["grid"]["stages"][0]["steps"] == 7
    # DLBri's quick budgets per stage, each stage probed
    assert [(s["name"], s["steps"]) for s in rows["dlbri"]["stages"]] == [
        ("bridge1", 30), ("bridge2", 30), ("bridge3", 30), ("source", 100), ("students", 100), ("combine", 60)]
    assert all(s["seconds_per_step"] > 0 for s in rows["dlbri"]["stages"])
    assert doc["total_s"] == pytest.approx(3 * rows["tc"]["run_s"] + rows["grid"]["run_s"] + rows["dlbri"]["run_s"])
    printed = capsys.readouterr().out
    assert "| tc | 3 | source 5 × " in printed and f"**{doc['total_s'] / 3600:.2f} h**" in printed
    # options mclner train refuses: a one-line error
    assert main(["--no-probe", "--row", "x", "1", "--no-such-option 1"]) == 2
    assert "does not accept the options" in capsys.readouterr().err
    assert main(["--no-probe", "--row", "x", "three", "--method mclner"]) == 2
    assert "RUNS must be a positive integer, got 'three'" in capsys.readouterr().err
    assert main(["--probe-steps", "1", "--row", "x", "1", "--method mclner"]) == 2
    assert "--probe-steps must be at least 2" in capsys.readouterr().err


def test_experiments_sh_estimate_mode_passes_its_rows(tmp_path):
    """MCLNER_ESTIMATE=1: main rows once per seed, ablations once, MCLNER_ROWS and MCLNER_TRAIN_ARGS
    honoured, nothing trained (a stand-in python records the call)."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "experiments.sh", tmp_path / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$ARGS_OUT"\n')
    (bin_dir / "python").chmod(0o755)
    (bin_dir / "mclner").write_text("#!/bin/sh\nexit 99\n")  # must not be called
    (bin_dir / "mclner").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "ARGS_OUT": str(tmp_path / "args"),
           "MCLNER_ESTIMATE": "1", "MCLNER_TRAIN_ARGS": "--device cuda", "MCLNER_ROWS": "tc mclner cs"}
    subprocess.run(["bash", str(tmp_path / "scripts" / "experiments.sh"), "full", "13", "42"], env=env, check=True,
                   cwd=tmp_path, timeout=60)
    args = (tmp_path / "args").read_text().splitlines()
    assert args[:2] == ["-m", "mclner.training.estimate"]
    assert args[args.index("--preset") + 1] == "full" and args[args.index("--seed") + 1] == "13"
    assert args[args.index("--extra-target-evals") + 1] == "2"
    assert args[args.index("--json") + 1] == "runs/full/estimate.json"
    rows = [args[i + 1 : i + 4] for i, a in enumerate(args) if a == "--row"]
    assert [r[:2] for r in rows] == [["tc", "2"], ["mclner", "2"], ["cs", "1"]]
    assert rows[1][2].split() == ["--fused", "--method", "mclner", "--device", "cuda"]
    assert args[args.index("--probe-steps") + 1] == "8" and "--no-probe" not in args
    subprocess.run(["bash", str(tmp_path / "scripts" / "experiments.sh"), "full"], check=True, cwd=tmp_path,
                   env={**env, "MCLNER_PROBE_STEPS": "0"}, timeout=60)
    args = (tmp_path / "args").read_text().splitlines()
    assert "--no-probe" in args and "--probe-steps" not in args
    assert [args[i + 2] for i, a in enumerate(args) if a == "--row"] == ["3", "3", "1"]  # default seeds 13 42 87
    env["MCLNER_ROWS"] = "nothing"
    r = subprocess.run(["bash", str(tmp_path / "scripts" / "experiments.sh"), "full"], env=env, cwd=tmp_path,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "MCLNER_ROWS names no row" in r.stderr


def _experiments_sh(tmp_path, rows: str, decoding: str = "decoding: argmax per word"):
    """Run a copy of experiments.sh (quick, seed 42) for ``rows`` with a stand-in python: `train` makes
    the run folder with a results.json, `evaluate` prints scores with ``decoding``. Returns the train
    and the evaluate command lines, in order."""
    (tmp_path / "scripts").mkdir()
    shutil.copy(REPO / "scripts" / "experiments.sh", tmp_path / "scripts")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python").write_text(
        '#!/bin/sh\n'
        'case "$3" in\n'
        '  train) echo "$*" >> "$TRAINS"; while [ "$1" != "--output-dir" ]; do shift; done; mkdir -p "$2";'
        ' echo "{}" > "$2/results.json";;\n'
        '  evaluate) echo "$*" >> "$CALLS"; printf \'{"f1": 0.5, "decoding": "%s"}\\n\' "$DECODING";;\n'
        'esac\n')
    (bin_dir / "python").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TRAINS": str(tmp_path / "trains"),
           "CALLS": str(tmp_path / "calls"), "DECODING": decoding, "MCLNER_ROWS": rows}
    subprocess.run(["bash", str(tmp_path / "scripts" / "experiments.sh"), "quick", "42"], env=env, check=True,
                   cwd=tmp_path, timeout=60)
    return [(tmp_path / f).read_text().splitlines() if (tmp_path / f).is_file() else [] for f in ("trains", "calls")]


@pytest.mark.parametrize(("decoding", "passes"), [
    ("decoding: argmax per word (the method has no decoding bias)", 1),
    ("decoding: NONE bias 0 (plain argmax)", 1),
    ("decoding: NONE bias 0.5 (calibrated on the source dev set, kept in the checkpoint)", 2),
])
def test_experiments_sh_scores_once_when_the_own_decoding_is_argmax(tmp_path, decoding, passes):
    """Each run is scored on the whole MSRA test set with its own decoding and with argmax; when the
    first pass already was plain argmax (a tagger, a calibrated bias of 0) its file is copied instead of
    a second pass (a stand-in python records the calls)."""
    _, calls = _experiments_sh(tmp_path, "tc", decoding)
    assert len(calls) == passes and ("--none-bias 0" in calls[-1]) == (passes == 2)
    run = tmp_path / "runs" / "quick" / "tc-s42"
    own, arg = (json.loads((run / f).read_text()) for f in ("msra_full.json", "msra_full_argmax.json"))
    assert own == arg == {"f1": 0.5, "decoding": decoding}


def test_experiments_sh_ablations_reuse_the_stages_of_their_main_row(tmp_path):
    """A late-stage ablation row (dlbri-no-lp) starts with --reuse-stages-from the same seed's main row
    once that row is complete; a row whose option acts from the first stage (dlbri-no-bridging) and a
    row whose main row is not complete train from scratch (a stand-in python records the calls)."""
    trains, _ = _experiments_sh(tmp_path, "dlbri dlbri-no-lp dlbri-no-bridging concner-no-kd")
    calls = {c.split("--output-dir ")[1].split()[0]: c for c in trains}
    assert "--reuse-stages-from runs/quick/dlbri-s42" in calls["runs/quick/dlbri-no-lp-s42"]
    for run in ("dlbri-s42", "dlbri-no-bridging-s42", "concner-no-kd-s42"):  # concner-s42 was not trained
        assert "--reuse-stages-from" not in calls[f"runs/quick/{run}"] and "--resume" not in calls[f"runs/quick/{run}"]
