"""Training engine: each method lowers the loss, --resume is exact, checkpoints round-trip,
self-training filters and counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from mclner_fixtures import patch_training_data, train_config

from mclner.inference.checkpoint import read_weights
from mclner.training.config import TrainConfig
from mclner.training.trainer import train


@pytest.fixture(autouse=True)
def _encoder(encoder_dir, monkeypatch):
    monkeypatch.setenv("MCLNER_TEST_ENCODER", encoder_dir)


def quick_cfg(tmp_path: Path, **kw) -> TrainConfig:
    """A fast run on the synthetic task; keywords that are not TrainConfig fields are options of the
    method (mCL-NER's small head widths are the default here)."""
    import os

    base = dict(
        source="synthetic-en", target="synthetic-zh", lexicon="synthetic", encoder=os.environ["MCLNER_TEST_ENCODER"],
        output_dir=str(tmp_path / "run"), batch_size=8, effective_batch_size=16, max_steps=10, eval_every=5,
        encoder_lr=1e-3, head_lr=3e-3, warmup_ratio=0.0, progress=False, patience=0, seed=3,
    )
    if kw.get("method", "mclner") == "mclner":
        base.update(biaffine_dim=32, cln_hidden=32, proj_dim=16)
    base.update(kw)
    return train_config(**base)


def step_losses(out_dir: Path, stage: str = "source") -> list:
    rows = [json.loads(x) for x in (out_dir / "log.jsonl").read_text().splitlines()]
    return [r for r in rows if r.get("stage") == stage and "loss" in r]


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # full source stage: ce_src + ce_cs + sc + tc
        {"codeswitch": False},
        {"sc": False, "tc": False},
        {"method": "token-classification"},
    ],
    ids=["mclner", "no-codeswitch", "no-contrastive", "token-classification"],
)
def test_methods_lower_the_loss(tmp_path, monkeypatch, overrides):
    patch_training_data(monkeypatch)
    if overrides.get("method", "mclner") == "mclner":
        # from a uniform start with the plain-mean loss, so that 10 steps have a large drop to show (the
        # prior start is tested below; the default NONE weight makes the loss mostly entity cells)
        overrides = {**overrides, "prior_init": False, "none_weight": 1.0}
    cfg = quick_cfg(tmp_path, **overrides)
    summary = train(cfg)
    rows = step_losses(Path(cfg.output_dir))
    assert len(rows) == 10
    first = sum(r["ce_src"] for r in rows[:3]) / 3
    last = sum(r["ce_src"] for r in rows[-3:]) / 3
    assert last < 0.7 * first, (first, last)
    expect = {"ce_src"}
    opts = cfg.method_options
    if cfg.method == "mclner" and opts.get("codeswitch", True):
        expect |= {"ce_cs", "sc", "tc"} if opts.get("sc", True) else {"ce_cs"}
    assert expect <= set(rows[0]), rows[0]
    assert (Path(cfg.output_dir) / "best" / "model.safetensors").is_file()
    assert "target_test" in summary["final"]


def test_resume_is_exact(tmp_path, monkeypatch):
    patch_training_data(monkeypatch)
    full = quick_cfg(tmp_path, output_dir=str(tmp_path / "full"), max_steps=8, eval_every=100, save_every=4)
    train(full)
    cut = quick_cfg(tmp_path, output_dir=str(tmp_path / "cut"), max_steps=8, eval_every=100, save_every=4,
                    stop_after_steps=6)
    assert train(cut).get("interrupted")
    # the kill came after the step-4 checkpoint: steps 5-6 are lost and redone on resume
    cut.stop_after_steps = None
    train(cut, resume=True)
    a = read_weights(tmp_path / "full" / "stages" / "source" / "last")  # encoder/ included
    b = read_weights(tmp_path / "cut" / "stages" / "source" / "last")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    from mclner.training.state_codec import load_training_state

    sa = load_training_state(tmp_path / "full" / "stages" / "source" / "last")
    sb = load_training_state(tmp_path / "cut" / "stages" / "source" / "last")
    assert sa["counters"] == sb["counters"]
    la = [r["loss"] for r in step_losses(tmp_path / "full")]
    lb = [r["loss"] for r in step_losses(tmp_path / "cut")]
    # the cut log has steps 1-6, then 5-8 again after the resume
    assert lb[:6] == la[:6] and lb[6:] == la[4:]


def test_self_training_round(tmp_path, monkeypatch):
    """The self-training stage reads the teacher's pseudo-labels: real filter counts from a short-trained
    teacher, then (the filter replaced by one that keeps every sentence with gold-like tags, since a
    10-step teacher finds no entity) the L_ce(tgt) and L_mse terms on them."""
    from mclner_fixtures import synthetic_zh

    from mclner.methods.mclner import selftrain

    patch_training_data(monkeypatch)
    cfg = quick_cfg(tmp_path / "a", self_training_rounds=1, st_threshold=0.0, max_steps=4, eval_every=2)
    counts = train(cfg)["target_data"]["st1"]
    assert counts["unlabeled"] == 24
    assert counts["unlabeled"] >= counts["has_entity"] >= counts["continuous"] >= counts["confident"]

    real = selftrain.pseudo_label
    seen = {}

    def keep_all(teacher, sentences, *a, **kw):
        kept, c = real(teacher, sentences, *a, **kw)
        seen["teacher_frozen"] = not any(p.requires_grad for p in teacher.parameters())
        gold = synthetic_zh(len(sentences), 9)
        return [type(s)(list(g.tokens), list(g.tags), "zh") for s, g in zip(sentences, gold)], c

    monkeypatch.setattr(selftrain, "pseudo_label", keep_all)
    cfg = quick_cfg(tmp_path / "b", self_training_rounds=1, st_threshold=0.0, max_steps=4, eval_every=2)
    summary = train(cfg)
    assert seen["teacher_frozen"]
    rows = step_losses(Path(cfg.output_dir), "st1")
    assert len(rows) == 4
    assert all("mse" in r and "ce_tgt" in r and "sc" not in r for r in rows)
    assert (Path(cfg.output_dir) / "stages" / "st1" / "DONE").exists()
    assert summary["stages"]["st1"]["steps"] == 4


def test_pseudo_label_filters():
    from mclner.data.labels import LabelMap
    from mclner.methods.mclner.grid import thw
    from mclner.methods.mclner.selftrain import is_continuous, relation_confidence

    lm = LabelMap(["LOC", "PER"])
    pred = torch.zeros(4, 4, dtype=torch.long)
    pred[2, 0] = thw(lm, "PER")  # entity 0..2 needs NNW at (0,1) and (1,2)
    pred[0, 1] = 1
    assert not is_continuous(pred)
    pred[1, 2] = 1
    assert is_continuous(pred)
    probs = torch.full((4, 4, 4), 0.25)
    probs[2, 0, thw(lm, "PER")] = 0.9
    probs[0, 1, 1] = 0.6
    probs[1, 2, 1] = 0.9
    assert relation_confidence(probs, [(0, 2, "PER")], lm) == pytest.approx(0.8)


def test_freeze_embeddings_keeps_the_word_embeddings(tmp_path, monkeypatch):
    from transformers import AutoModel

    patch_training_data(monkeypatch)
    cfg = quick_cfg(tmp_path, max_steps=4, eval_every=4, freeze_embeddings=True)
    train(cfg)
    after = read_weights(Path(cfg.output_dir) / "best")
    before = AutoModel.from_pretrained(cfg.encoder).state_dict()
    key = "embeddings.word_embeddings.weight"
    assert torch.equal(after["words.encoder." + key], before[key])
    # the rest of the encoder still trains
    other = "embeddings.LayerNorm.weight"
    assert not torch.equal(after["words.encoder." + other], before[other])


def test_shift_none_is_a_none_logit_shift():
    from mclner.methods.mclner.calibrate import shift_none

    x = torch.randn(5, 5, 6, dtype=torch.float64)
    b = 1.7
    y = x.clone()
    y[..., 0] -= b
    torch.testing.assert_close(shift_none(x.softmax(-1), b), y.softmax(-1))
    p = x.softmax(-1)
    assert shift_none(p, 0.0) is p  # no bias: the distribution as it is, not a renormalised copy


def test_calibrate_none_bias_is_saved_and_used(tmp_path, monkeypatch):
    from mclner_fixtures import synthetic_en

    from mclner.evaluation import evaluate
    from mclner.inference.checkpoint import load_checkpoint
    from mclner.methods.mclner import MCLNERMethod
    from mclner.methods.mclner.calibrate import NONE_BIAS_GRID

    patch_training_data(monkeypatch)
    cfg = quick_cfg(tmp_path, calibrate_none_bias=True, self_training_rounds=1, st_threshold=0.0, max_steps=4,
                    eval_every=4)
    summary = train(cfg)
    for stage in ("source", "st1"):
        res = summary["stages"][stage]
        curve = {float(k): v for k, v in res["none_bias_dev_f1"].items()}
        assert sorted(curve) == list(NONE_BIAS_GRID)
        best = res["none_bias"]
        assert curve[best] == max(curve.values())
        assert all(curve[b] < curve[best] for b in curve if b < best)  # ties go to the smaller bias
    bias = summary["stages"]["st1"]["none_bias"]
    model, tok, label_map, _ = load_checkpoint(Path(cfg.output_dir) / "best")
    assert model.config.none_bias == bias
    # evaluate decodes with the checkpoint's bias by default, and that reproduces the calibration curve
    dev = synthetic_en(8, 1)
    builder = MCLNERMethod().make_collator(tok, label_map, 512)
    by_default = evaluate(model, dev, builder, label_map)
    assert by_default["f1"] == evaluate(model, dev, builder, label_map, none_bias=bias)["f1"]
    assert by_default["f1"] == pytest.approx(summary["stages"]["st1"]["none_bias_dev_f1"][str(bias)])


def test_prior_init_starts_near_the_class_prior(tmp_path, monkeypatch):
    """With --prior-init (the default) the first step's grid loss is about the entropy of the class
    prior (NONE-dominated grids: well below ln C, the loss of a uniform start); shown on the paper's
    plain-mean loss (--none-weight 1)."""
    import math

    patch_training_data(monkeypatch)
    first = {}
    for prior in (True, False):
        cfg = quick_cfg(tmp_path / str(prior), max_steps=1, eval_every=1, prior_init=prior, none_weight=1.0)
        train(cfg)
        first[prior] = step_losses(Path(cfg.output_dir))[0]["ce_src"]
    assert first[True] < 0.5 * first[False]
    assert first[False] == pytest.approx(math.log(5), rel=0.15)  # 5 classes: NONE, NNW, 3 types
