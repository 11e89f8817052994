"""The contract every registered method keeps (a new method folder passes it without new test code):
a few steps lower its loss, save → load gives identical predictions, `mclner evaluate` and
`mclner predict` load its checkpoint without flags, and --resume is exact."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mclner.cli import main
from mclner.methods import registry
from mclner.training.checkpoint import read_weights

STEPS = 8


def _args(paths, out: Path, method: str, *extra: str) -> list:
    return [
        "train", "--method", method, "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh",
        "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", str(STEPS),
        "--batch-size", "4", "--effective-batch-size", "8", "--eval-every", "4", "--encoder-lr", "1e-3",
        "--head-lr", "3e-3", "--warmup-ratio", "0", "--no-progress", "--seed", "5", *extra,
    ]


def _train(paths, out: Path, method: str, *extra: str) -> int:
    return main(_args(paths, out, method, *extra))


def _log(out: Path) -> list:
    return [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module", params=list(registry()))
def run(request, task_files):
    root, paths = task_files
    name = request.param
    out = root / f"run-{name}"
    assert _train(paths, out, name) == 0
    return name, root, paths, out


def test_a_few_steps_lower_the_loss(run):
    name, _, _, out = run
    first_stage = next(r["stage"] for r in _log(out) if "loss" in r)
    losses = [r["loss"] for r in _log(out) if "loss" in r and r["stage"] == first_stage]
    assert len(losses) == STEPS
    assert sum(losses[-3:]) < sum(losses[:3]), (name, losses)


def test_save_load_gives_identical_predictions(run, tmp_path):
    from mclner_fixtures import synthetic_zh

    from mclner.evaluation import predict_entities
    from mclner.inference import load_model
    from mclner.training.checkpoint import save_checkpoint

    name, _, _, out = run
    lm = load_model(out / "best", device="cpu")
    assert lm.method.name == name and type(lm.model).method == name
    sents = synthetic_zh(10, 7)
    a, pa = predict_entities(lm.model, sents, lm.collator, lm.label_map, return_probs=True)
    save_checkpoint(tmp_path / "copy", lm.model, lm.tokenizer, lm.label_map, {}, method=lm.method)
    lm2 = load_model(tmp_path / "copy", device="cpu")
    b, pb = predict_entities(lm2.model, sents, lm2.collator, lm2.label_map, return_probs=True)
    assert a == b
    for x, y in zip(pa, pb):
        assert torch.equal(x, y)


def test_evaluate_and_predict_load_without_flags(run, capsys, tmp_path):
    _, _, paths, out = run
    capsys.readouterr()
    assert main(["evaluate", str(out / "best"), str(Path(paths["zh"]) / "test.txt"), "--lang", "zh", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert 0.0 <= scores["f1"] <= 1.0 and scores["sentences"] == 8
    # every method's predictions reach the span / type split of the score
    assert 0 <= scores["type"]["correct"] <= scores["type"]["matched"] <= scores["support"]
    assert scores["f1"] == pytest.approx(scores["span"]["f1"] * scores["type"]["accuracy"])
    text = tmp_path / "in.txt"
    text.write_text("John visited 伦敦 today\n", encoding="utf-8")
    assert main(["predict", str(out / "best"), "-i", str(text), "-o", str(tmp_path / "out.jsonl")]) == 0
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and isinstance(rows[0]["entities"], list)


def test_resume_is_exact(run):
    """Killed after step 7 of the first stage (the last checkpoint is step 6), resumed: every stage ends
    with the weights of the uninterrupted run, bit for bit."""
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args
    from mclner.training.trainer import train

    name, root, paths, out = run
    cut = root / f"cut-{name}"
    cfg = config_from_args(build_parser().parse_args(_args(paths, cut, name, "--save-every", "2")))
    cfg.stop_after_steps = 7
    assert train(cfg).get("interrupted")
    cfg.stop_after_steps = None
    train(cfg, resume=True)
    stages = sorted(p.name for p in (out / "stages").iterdir())
    assert stages == sorted(p.name for p in (cut / "stages").iterdir()) and stages
    for ckpt in [f"stages/{s}/last" for s in stages] + ["best"]:
        a, b = read_weights(out / ckpt), read_weights(cut / ckpt)  # model.safetensors + encoder/
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (ckpt, k)


def test_entity_plot_of_every_method(run, tmp_path):
    """`mclner plot entities` takes its points from any method's checkpoint (DLBri: the decoding
    pair's type student): one point per gold entity of the source and target test sentences."""
    pytest.importorskip("matplotlib")
    _, _, paths, out = run
    dest = tmp_path / "entities"
    assert main(["plot", "entities", str(out / "best"), "--reduce", "pca", "--output", str(dest)]) == 0
    data = json.loads(dest.with_suffix(".json").read_text())
    assert dest.with_suffix(".png").is_file()
    n = len(data["coords"])
    assert n > 0 and len(data["point_languages"]) == len(data["point_types"]) == n
    assert set(data["point_languages"]) == {"en", "zh"}
    assert sum(data["counts"].values()) == n
