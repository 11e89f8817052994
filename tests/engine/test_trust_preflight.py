"""Refused before training, not after it (issue 25 items 13, 14): a device index the CPU does not
have, a model too large for the machine (with its size), and a resume from a training state whose
tensors or counters were edited, each a one-line error naming the thing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mclner_fixtures import patch_training_data
from test_reliability_checkpoint import _cfg

from mclner.cli import main


def _one_line(capsys, argv, *expect):
    """The command fails with one error line (after the encoder's loading progress, if any)."""
    capsys.readouterr()
    rc = main(argv)
    err = [x for x in capsys.readouterr().err.strip().splitlines() if "Loading weights" not in x]
    assert rc == 2 and len(err) == 1 and all(e in err[0] for e in expect), err
    return err[0]


def _train_args(task_files, out: Path, *extra: str):
    _, paths = task_files
    return ["train", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh", "--lexicon", paths["lex"],
            "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "2", "--batch-size", "4",
            "--no-progress", *extra]


def test_a_cpu_device_index_is_refused_before_training(task_files, tmp_path, capsys):
    out = tmp_path / "run"
    _one_line(capsys, _train_args(task_files, out, "--device", "cpu:3"), "--device cpu:3", "no device index")
    assert not out.exists()  # nothing trained, nothing written


def test_a_model_too_large_is_refused_with_its_size(task_files, tmp_path, capsys):
    out = tmp_path / "run"
    line = _one_line(capsys, _train_args(task_files, out, "--biaffine-dim", "100000000"), "parameters", "GiB",
                     "largest: relation.U [5, 100000000, 100000000]")
    assert "would have 50,000,0" in line
    assert not (out / "stages").exists()


def test_the_size_estimate_counts_what_is_built(encoder_dir):
    """The meta-device estimate has exactly the parameters of the real model, and draws no random
    number (so training after it is unchanged)."""
    import torch

    from mclner.data.labels import LabelMap
    from mclner.encoders import load_encoder
    from mclner.methods import get_method, registry
    from mclner.training.preflight import _meta_model, training_bytes

    _, enc = load_encoder(encoder_dir)
    lm = LabelMap(["LOC", "ORG", "PER"])
    for name in registry():
        method = get_method(name)()
        state = torch.get_rng_state()
        n, need, _ = training_bytes(_meta_model(method, enc, lm))
        assert torch.equal(state, torch.get_rng_state())
        real = method.build_model(enc, lm)
        assert n == sum(p.numel() for p in real.parameters()) and need == 16 * n, name


def _killed_run(tmp_path, monkeypatch, encoder_dir):
    from mclner.training.trainer import train

    patch_training_data(monkeypatch, n_train=16, n_dev=4, n_test=4)
    cfg = _cfg(tmp_path, encoder_dir, stop_after_steps=3)  # last written at step 2
    train(cfg)
    cfg.stop_after_steps = None
    return cfg, Path(cfg.output_dir) / "stages" / "source" / "last"


def test_a_transposed_tensor_in_last_is_one_line_at_resume(tmp_path, monkeypatch, encoder_dir):
    """A weight whose header says [out, in] instead of [in, out] (checksums rewritten to match)."""
    from safetensors.torch import load_file, save_file

    from mclner.errors import UserError
    from mclner.store.checksums import write_checksums
    from mclner.training.trainer import train

    cfg, last = _killed_run(tmp_path, monkeypatch, encoder_dir)
    f = last / "model.safetensors"
    state = load_file(str(f))
    name = next(k for k, v in state.items() if v.dim() == 2 and v.shape[0] != v.shape[1])
    state[name] = state[name].t().contiguous()
    save_file(state, str(f), metadata={"format": "pt"})
    write_checksums(last)
    with pytest.raises(UserError, match=f"{last}: weights do not match the model.*{name}"):
        train(cfg, resume=True)


def test_a_transposed_optimizer_tensor_is_one_line_at_resume(tmp_path, monkeypatch, encoder_dir):
    from safetensors.torch import load_file, save_file

    from mclner.errors import UserError
    from mclner.store.checksums import write_checksums
    from mclner.training.trainer import train

    cfg, last = _killed_run(tmp_path, monkeypatch, encoder_dir)
    f = last / "training_state.safetensors"
    state = load_file(str(f))
    name = next(k for k, v in state.items() if v.dim() == 2 and v.shape[0] != v.shape[1])
    state[name] = state[name].t().contiguous()
    save_file(state, str(f), metadata={"format": "pt"})
    write_checksums(last)
    with pytest.raises(UserError, match=f"{last / 'training_state.json'}: .*optimizer state .* shape"):
        train(cfg, resume=True)


@pytest.mark.parametrize("key, value", [("step", "x"), ("epoch", -1), ("best_f1", "high"), ("batch_pos", 1.5),
                                        ("step", True)])
def test_edited_counters_are_one_line_at_resume(tmp_path, monkeypatch, encoder_dir, key, value):
    from mclner.errors import UserError
    from mclner.store.checksums import write_checksums
    from mclner.training.trainer import train

    cfg, last = _killed_run(tmp_path, monkeypatch, encoder_dir)
    f = last / "training_state.json"
    doc = json.loads(f.read_text())
    doc["state"]["counters"][key] = value
    f.write_text(json.dumps(doc))
    write_checksums(last)
    with pytest.raises(UserError, match=f"{f}: counter {key!r} is {value!r}"):
        train(cfg, resume=True)
