"""Options are finite and in range, devices exist, and a run whose loss turns non-finite stops with a
one-line error naming the step while its checkpoints keep finite weights; log.jsonl stays valid JSON
(issue 10 item 5)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from mclner_fixtures import patch_training_data

from mclner.errors import UserError


def _reject(argv):
    """The options must be refused: by argparse (exit 2) or by config validation (UserError)."""
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        assert exc.code == 2
        return "argparse"
    with pytest.raises(UserError) as exc:
        config_from_args(args)
    assert "\n" not in str(exc.value)
    return str(exc.value)


BAD_TRAIN = [
    ["--encoder-lr=inf"], ["--head-lr=nan"], ["--weight-decay=nan"], ["--weight-decay=-1"], ["--w-cl=nan"],
    ["--w-tc-st=inf"], ["--w-mse=-0.5"], ["--tc-none-ratio=nan"], ["--tau-sc=inf"], ["--tau-tc=nan"],
    ["--max-grad-norm=inf"], ["--warmup-ratio=nan"], ["--seed", str(10**30)], ["--seed=-1"], ["--max-length", "1"],
    ["--device", "foo"], ["--device", "meta"], ["--cs-word-ratio=nan"],
]


@pytest.mark.parametrize("argv", BAD_TRAIN, ids=lambda a: " ".join(a)[:30])
def test_bad_train_option_is_refused(argv, capsys):
    _reject(["train", *argv])
    capsys.readouterr()


def test_cuda_without_gpu_is_refused():
    if torch.cuda.is_available():
        assert "cuda:99" in _reject(["train", "--device", "cuda:99"])
    else:
        assert "no CUDA GPU" in _reject(["train", "--device", "cuda"])


@pytest.mark.parametrize("field,value", [("w_cl", math.nan), ("encoder_lr", math.inf), ("tc_none_ratio", math.nan),
                                         ("tau_sc", math.inf), ("seed", 2**70), ("max_length", 1),
                                         ("device", "meta"), ("weight_decay", math.nan)])
def test_train_config_validate_checks_every_float(field, value):
    from mclner_fixtures import train_config

    cfg = train_config(**{field: value})
    with pytest.raises(UserError, match=field.replace("_", "-") if field != "device" else "device"):
        cfg.validate()


def test_defaults_and_presets_validate():
    from mclner.methods import registry
    from mclner.training.config import TrainConfig, apply_preset

    for method, cls in registry().items():
        for name in (None, *cls.presets):
            apply_preset(TrainConfig(method=method), name).validate()


@pytest.mark.parametrize("cmd", ["evaluate", "predict"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_none_bias_must_be_finite(cmd, value, capsys):
    from mclner.cli import main

    argv = [cmd, "ck", "data"] if cmd == "evaluate" else [cmd, "ck"]
    with pytest.raises(SystemExit) as exc:
        main(argv + [f"--none-bias={value}"])
    assert exc.value.code == 2
    assert "--none-bias" in capsys.readouterr().err


def test_non_finite_guard_counts_consecutive_steps():
    from mclner.training.guards import NonFiniteGuard

    g = NonFiniteGuard(patience=3, stage="source")
    assert g.step_ok(1, 1.0, 1.0)
    assert not g.step_ok(2, math.nan, 1.0)
    assert not g.step_ok(3, 1.0, math.inf)  # without a scaler an infinite gradient counts too
    assert g.step_ok(4, 1.0, 2.0)  # a good step resets the count
    assert g.step_ok(5, 1.0, math.inf, scaler_enabled=True)  # the float16 scaler handles overflow itself
    assert not g.step_ok(6, math.nan) and not g.step_ok(7, math.inf)
    with pytest.raises(UserError, match="steps 6-8 of stage source"):
        g.step_ok(8, math.nan)


def test_json_safe_log_records():
    from mclner.training.guards import json_safe

    rec = json_safe({"step": 3, "loss": math.nan, "grad_norm": math.inf, "lr": 1e-3, "f1": {"a": -math.inf}})
    text = json.dumps(rec, allow_nan=False)  # would raise on a bare NaN/Infinity
    assert json.loads(text) == {"step": 3, "loss": None, "grad_norm": None, "lr": 1e-3, "f1": {"a": None},
                                "nonfinite": ["loss", "grad_norm"]}


def test_nan_loss_stops_the_run_and_keeps_finite_checkpoints(tmp_path, monkeypatch, encoder_dir):
    from mclner_fixtures import train_config
    from safetensors.torch import load_file

    from mclner.methods.mclner import MCLNERMethod
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    forward = MCLNERMethod.loss
    calls = {"n": 0}

    def poisoned(self, *a, **k):  # from the third training step on the loss is NaN
        out = forward(self, *a, **k)
        calls["n"] += 1
        if calls["n"] > 2:
            out["loss"] = out["loss"] * math.nan
        return out

    monkeypatch.setattr(MCLNERMethod, "loss", poisoned)
    out = tmp_path / "run"
    cfg = train_config(source="synthetic-en", target="synthetic-zh", lexicon="synthetic", encoder=encoder_dir,
                      output_dir=str(out), batch_size=8, effective_batch_size=8, max_steps=10, eval_every=100,
                      save_every=1, biaffine_dim=8, cln_hidden=8, proj_dim=8, progress=False, patience=0, seed=3,
                      codeswitch=False, max_eval_sentences=4)
    with pytest.raises(UserError) as exc:
        train(cfg)
    msg = str(exc.value)
    assert msg.startswith("training diverged") and "steps 3-5" in msg and "\n" not in msg
    rows = [json.loads(x, parse_constant=lambda c: pytest.fail(f"bare {c} in log.jsonl"))
            for x in (out / "log.jsonl").read_text().splitlines()]
    steps = {r["step"]: r for r in rows if "step" in r and "stage" in r and "event" not in r}
    assert math.isfinite(steps[2]["loss"]) and steps[3]["loss"] is None and "loss" in steps[3]["nonfinite"]
    last = Path(out) / "stages" / "source" / "last"
    w = load_file(str(last / "model.safetensors"))
    assert all(torch.isfinite(v).all() for v in w.values() if v.is_floating_point())
    assert json.loads((last / "config.json").read_text())["extra"]["step"] == 4
    assert not (out / "best").exists() and not (out / "results.json").exists()  # no final model from a broken run
