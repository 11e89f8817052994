"""scripts/dlbri_stages.py: the per-stage scores of a DLBri run agree with scoring each checkpoint on its
own, and a run of another method is refused with one line."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mclner_golden_losses import make_inputs  # noqa: E402

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "dlbri_stages.py"


def _script():
    spec = importlib.util.spec_from_file_location("dlbri_stages", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _train(paths, out: Path, *extra: str) -> None:
    from mclner.cli import main

    assert main(["train", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh",
                 "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "2",
                 "--batch-size", "4", "--effective-batch-size", "4", "--no-progress", "--seed", "5", *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("stages")
    paths = make_inputs(root)
    _train(paths, root / "dlbri", "--method", "dlbri", "--bridge-max-steps", "1", "--source-max-steps", "2",
           "--students-max-steps", "2", "--combine-max-steps", "1")
    _train(paths, root / "tc", "--method", "token-classification")
    return root, paths


def _score(path: Path, sents, decode_with: str, student: float) -> float:
    from mclner.evaluation import predict_entities, score
    from mclner.inference import load_model

    lm = load_model(path, "cpu")
    lm.model.config.decode_with, lm.model.config.student = decode_with, student
    preds = predict_entities(lm.model, sents, lm.collator, lm.label_map, batch_size=3, device=lm.device,
                             impl="reference")
    return score([s.tags for s in sents], preds)["f1"]


def test_every_stage_and_pair_is_scored(runs, monkeypatch, capsys):
    from mclner.data.readers import load_sentences

    root, paths = runs
    run = root / "dlbri"
    monkeypatch.setattr(sys, "argv", ["dlbri_stages.py", str(run), "--data", paths["zh"], "--max-sentences", "5"])
    assert _script().main() == 0
    got = json.loads((run / "dlbri_stages_5.json").read_text())
    assert list(got) == ["source/pair 1", "source/pair 2", "students/pair 1", "students/pair 2",
                         "combine/pair 1", "combine/pair 2", "combine/combination"]
    assert len(capsys.readouterr().out.splitlines()) == 7
    sents = load_sentences(paths["zh"], split="test")[:5]
    gold = sum(len([t for t in s.tags if t.startswith("B-")]) for s in sents)
    for key, rec in got.items():
        stage, part = key.split("/")
        mode, k = ("combination", 1.0) if part == "combination" else ("student", float(part[-1]))
        assert rec["f1"] == pytest.approx(_score(run / "stages" / stage / "best", sents, mode, k)), key
        assert rec["gold_entities"] == gold
    # the run's final model is the combination stage's best, decoding with the combination
    assert got["combine/combination"]["f1"] == pytest.approx(_score(run / "best", sents, "combination", 1.0))


@pytest.mark.parametrize("folder", ["tc", "empty"])
def test_what_is_not_a_dlbri_run_is_refused(runs, monkeypatch, capsys, folder):
    root, paths = runs
    (root / "empty").mkdir(exist_ok=True)
    monkeypatch.setattr(sys, "argv", ["dlbri_stages.py", str(root / folder), "--data", paths["zh"]])
    assert _script().main() == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "not a DLBri run" in err and "\n" not in err
    assert not list((root / folder).glob("dlbri_stages_*.json"))
