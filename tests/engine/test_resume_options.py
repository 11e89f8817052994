"""--resume continues a run only with the options it was trained with: the trainer compares the
options of the command with the run's training_args.json (common options and the method's options as
resolved, defaults included) and names each one that differs, before any work. A default that changed
since the run (as --none-weight did) is caught the same way, and `mclner report` writes it out."""

from __future__ import annotations

import json

import pytest

from mclner.errors import UserError
from mclner.training.config import TrainConfig
from mclner.training.records import run_args
from mclner.training.trainer import Trainer


def _record(run, cfg: TrainConfig, **method_config) -> None:
    args = run_args(cfg, cfg.method_instance())
    args["method_config"].update(method_config)
    run.mkdir(exist_ok=True)
    (run / "training_args.json").write_text(json.dumps(args))


def test_the_record_holds_the_resolved_method_options():
    cfg = TrainConfig(method_options={"w_cl": 0.5})
    args = run_args(cfg, cfg.method_instance())
    assert args["method_options"] == {"w_cl": 0.5}  # what was given
    assert args["method_config"]["w_cl"] == 0.5 and args["method_config"]["none_weight"] == 0.1  # resolved
    assert json.loads(json.dumps(args)) == args  # JSON as it is


def test_resume_with_the_same_options_passes(tmp_path):
    cfg = TrainConfig(output_dir=str(tmp_path / "run"), seed=7, method_options={"none_weight": 0.2})
    _record(tmp_path / "run", cfg)
    # options that do not change what is trained may differ (where, how fast, how verbose)
    Trainer(TrainConfig(output_dir=str(tmp_path / "run"), seed=7, method_options={"none_weight": 0.2},
                        impl="reference", log_every=5, progress=False, save_every=3), resume=True)


@pytest.mark.parametrize(("now", "message"), [
    ({"seed": 8}, r"--seed 8 \(the run: 7\)"),
    ({"max_steps": 99}, r"--max-steps 99 \(the run: None\)"),
    ({"target_segmentation": "word"}, r"--target-segmentation 'word' \(the run: 'auto'\)"),
    ({"method_options": {"none_weight": 1.0}}, r"--none-weight 1.0 \(the run: 0.1\)"),
    ({"method_options": {"sc": False}}, r"--sc False \(the run: True\)"),
])
def test_resume_with_other_options_names_them(tmp_path, now, message):
    run = tmp_path / "run"
    _record(run, TrainConfig(output_dir=str(run), seed=7))
    kw = {"seed": 7, **now}
    with pytest.raises(UserError, match=rf"^--resume: {run} was trained with other options: {message}; resume"):
        Trainer(TrainConfig(output_dir=str(run), **kw), resume=True)


def test_a_default_that_changed_since_the_run_is_caught_and_reported(tmp_path):
    from mclner.viz.report import train_command

    run = tmp_path / "run"
    _record(run, TrainConfig(output_dir=str(run)), none_weight=1.0)  # recorded when 1 was the default
    with pytest.raises(UserError, match=r"--none-weight 0.1 \(the run: 1.0\)"):
        Trainer(TrainConfig(output_dir=str(run)), resume=True)
    Trainer(TrainConfig(output_dir=str(run), method_options={"none_weight": 1.0}), resume=True)
    words = train_command(json.loads((run / "training_args.json").read_text()))
    assert words[words.index("--none-weight") + 1] == "1.0"


def test_a_run_recorded_without_method_config_compares_its_given_options(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    old = {**TrainConfig().to_dict(), "method_options": {"none_weight": 0.3}}  # before method_config
    (run / "training_args.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match=r"--none-weight 0.1 \(the run: 0.3\)"):
        Trainer(TrainConfig(output_dir=str(run)), resume=True)
    Trainer(TrainConfig(output_dir=str(run), method_options={"none_weight": 0.3}), resume=True)
