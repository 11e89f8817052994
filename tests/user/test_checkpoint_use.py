"""A trained checkpoint as a user meets it (issue 29 §1, §3, §4; issue 25 §5, §6, §12): raw text split
with the segmenter the checkpoint records, NERPredictor's validation and streaming, predict's records
and progress, the model card and the encoder's tokenizer, `mclner export` to a Hugging Face
token-classification folder, and the one-line errors of a run folder given for a checkpoint."""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path

import pytest
import torch
from mclner_fixtures import synthetic_zh, write_conll
from mclner_golden_losses import make_inputs

from mclner.cli import main
from mclner.errors import UserError

ENGLISH = ["John Smith visited London today .", "Mary went to Paris with Anna Lee", "Reuters said Google met UN",
           "Peter and Mary visited Tokyo"]


def _word_segmented_zh(path: Path, n: int, seed: int) -> None:
    """The synthetic Chinese sentences with each entity (and the filler) as multi-character words."""
    from mclner.data.iob2 import iob2_to_entities
    from mclner.data.readers import Sentence

    out = []
    for s in synthetic_zh(n, seed):
        toks, tags, k = [], [], 0
        ents = {a: (b, t) for a, b, t in iob2_to_entities(s.tags)}
        while k < len(s.tokens):
            if k in ents:
                b, t = ents[k]
                toks.append("".join(s.tokens[k : b + 1]))
                tags.append(f"B-{t}")
                k = b + 1
            else:
                j = k
                while j < len(s.tokens) and j not in ents and j - k < 2:
                    j += 1
                toks.append("".join(s.tokens[k:j]))
                tags.append("O")
                k = j
        out.append(Sentence(toks, tags, "zh"))
    write_conll(path, out)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckuse")
    paths = make_inputs(root)
    zh = root / "zhw"
    zh.mkdir()
    _word_segmented_zh(zh / "test.txt", 8, 3)
    _word_segmented_zh(zh / "train.txt", 16, 4)
    out = root / "tag"
    argv = ["train", "--method", "token-classification", "--source", paths["en"], "--target", str(zh),
            "--target-lang", "zh", "--target-segmentation", "word", "--target-segmenter", "space",
            "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "40",
            "--batch-size", "8", "--effective-batch-size", "8", "--eval-every", "20", "--encoder-lr", "1e-3",
            "--head-lr", "1e-2", "--seed", "5", "--no-progress"]
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(argv) == 0
    return {"root": root, "paths": paths, "run": out, "ckpt": out / "best", "zh": zh}


@pytest.fixture(scope="module")
def ner(run):
    from mclner import NERPredictor

    return NERPredictor.from_pretrained(run["ckpt"], device="cpu")


# ----------------------------------------------------------------------------- segmentation


def test_checkpoint_records_its_segmenter_and_predict_uses_it(run, ner, capsys):
    cfg = json.loads((run["ckpt"] / "config.json").read_text(encoding="utf-8"))
    assert cfg["text"] == {"segmentation": "word", "lang": "zh", "segmenter": "space"}
    assert ner.segmenter.name == "space"
    text = "约翰 访问 伦敦。"
    assert ner.words(text).words == ["约翰", "访问", "伦敦", "。"]  # not one word per character
    capsys.readouterr()
    assert main(["predict", str(run["ckpt"]), "--text", text]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == ["约翰", "访问", "伦敦", "。"]
    assert main(["predict", str(run["ckpt"]), "--text", text, "--segmenter", "char"]) == 0
    assert json.loads(capsys.readouterr().out)["tokens"] == list("约翰访问伦敦。")


def test_predict_with_a_real_segmenter_or_a_line_naming_its_extra(run, capsys):
    import importlib.util

    capsys.readouterr()
    rc = main(["predict", str(run["ckpt"]), "--text", "约翰访问伦敦。", "--segmenter", "jieba"])
    if importlib.util.find_spec("jieba") is None:
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and 'pip install "mclner[zh]"' in err
    else:
        assert rc == 0
        tokens = json.loads(capsys.readouterr().out)["tokens"]
        assert "伦敦" in tokens and "".join(tokens) == "约翰访问伦敦。"


def test_evaluate_notes_data_split_otherwise_than_the_target(run, capsys):
    capsys.readouterr()
    per_char = str(Path(run["paths"]["zh"]) / "test.txt")  # the per-character synthetic set
    assert main(["evaluate", str(run["ckpt"]), per_char, "--lang", "zh", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "one token per character" in res["segmentation_note"]
    assert main(["evaluate", str(run["ckpt"]), str(run["zh"]), "--lang", "zh", "--json"]) == 0
    assert "segmentation_note" not in json.loads(capsys.readouterr().out)


def test_blank_lines_and_odd_separators_keep_records_aligned(run, tmp_path, capsys):
    src = tmp_path / "in.txt"
    lines = ["John visited London", "", "Mary\x0bmet\x0cAnna\u2028in\x85Paris\x1ctoday", "   ", "Peter"]
    src.write_bytes(("\r\n".join(lines) + "\n").encode("utf-8"))
    out = tmp_path / "out.jsonl"
    assert main(["predict", str(run["ckpt"]), "-i", str(src), "-o", str(out)]) == 0
    recs = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert len(recs) == len(lines)
    assert [r["text"] for r in recs] == lines
    assert recs[1] == {"text": "", "tokens": [], "entities": []} and recs[3]["tokens"] == []
    assert recs[2]["tokens"] == ["Mary", "met", "Anna", "in", "Paris", "today"]


def test_predict_shows_progress_on_a_terminal(run, tmp_path, capsys, monkeypatch):
    src = tmp_path / "many.txt"
    src.write_text("\n".join(ENGLISH * 6) + "\n", encoding="utf-8")
    capsys.readouterr()
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["predict", str(run["ckpt"]), "-i", str(src), "--batch-size", "1"]) == 0
    cap = capsys.readouterr()
    assert len(cap.out.splitlines()) == 24 and "predict" in cap.err and "24/24" in cap.err
    assert main(["predict", str(run["ckpt"]), "-i", str(src), "--batch-size", "1", "--no-progress"]) == 0
    assert "24/24" not in capsys.readouterr().err


# ----------------------------------------------------------------------------- NERPredictor


def test_predictor_validates_its_arguments(run, ner):
    from mclner import NERPredictor

    assert ner.types == ["LOC", "ORG", "PER"]
    text = ENGLISH[0]
    every = ner(text)
    assert ner(text, types="PER") == [e for e in every if e["entity_group"] == "PER"]  # one type, not letters
    with pytest.raises(UserError, match=r"unknown type\(s\) FOO; the model predicts LOC, ORG, PER"):
        ner(text, types=["FOO"])
    with pytest.raises(UserError, match="unknown type"):
        ner(text, types="P")
    with pytest.raises(UserError, match="types is empty"):
        ner(text, types=[])
    with pytest.raises(UserError, match="expected a string, got bytes"):
        ner(text.encode())
    with pytest.raises(UserError, match="expected a string, got None"):
        ner(None)
    with pytest.raises(UserError, match="text 1: expected a string, got int"):
        ner([text, 3])
    for bad in (float("nan"), float("inf"), "1"):
        with pytest.raises(UserError, match="none_bias must be a finite number"):
            NERPredictor.from_pretrained(run["ckpt"], device="cpu", none_bias=bad)
        with pytest.raises(UserError, match="none_bias must be a finite number"):
            NERPredictor(ner.loaded, none_bias=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(UserError, match="batch_size must be a positive integer"):
            NERPredictor.from_pretrained(run["ckpt"], device="cpu", batch_size=bad)
        with pytest.raises(UserError, match="batch_size must be a positive integer"):
            list(ner.pipe([text], batch_size=bad))


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is present")
def test_predictor_on_cuda_without_a_gpu_is_one_line(run):
    from mclner import NERPredictor

    for dev in ("cuda", torch.device("cuda:0")):
        with pytest.raises(UserError, match="no CUDA GPU is available"):
            NERPredictor.from_pretrained(run["ckpt"], device=dev)
    with pytest.raises(UserError, match="not a torch device"):
        NERPredictor.from_pretrained(run["ckpt"], device="gpu0")


def test_pipe_streams_in_batches(ner):
    seen = []

    def texts():
        for t in ENGLISH * 3:
            seen.append(t)
            yield t

    it = ner.pipe(texts(), batch_size=5)
    first = next(it)
    assert len(seen) == 5  # only the first batch was read
    rest = list(it)
    assert [first, *rest] == ner(ENGLISH * 3)


def test_a_run_folder_given_for_a_checkpoint_says_use_best(run, capsys):
    from mclner import NERPredictor

    with pytest.raises(UserError, match=r"is a run folder, not a checkpoint: use .*best"):
        NERPredictor.from_pretrained(run["run"], device="cpu")
    for argv in (["predict", str(run["run"]), "--text", "x"], ["evaluate", str(run["run"]), str(run["zh"])],
                 ["export", str(run["run"]), str(run["root"] / "never")], ["plot", "entities", str(run["run"])]):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and f"use {run['run'] / 'best'}" in err, err
    assert not (run["root"] / "never").exists()


# ----------------------------------------------------------------------------- model card, tokenizer, export


def test_every_checkpoint_has_a_model_card_and_its_encoder_a_tokenizer(run):
    from transformers import AutoTokenizer

    from mclner.store.checksums import verify_files

    results = json.loads((run["run"] / "results.json").read_text())
    stages = run["run"] / "stages"
    for ck in (run["ckpt"], *sorted(stages.glob("*/best")), *sorted(stages.glob("*/last"))):
        card = (ck / "README.md").read_text(encoding="utf-8")
        for want in ("token-classification", "## Data", "Lexicon:", "## Scores", "## Command", "mclner train",
                     "## Intended use", "## Limits", "segmenter `space`"):
            assert want in card, (ck, want)
        assert "README.md" in json.loads((ck / "checksums.json").read_text())["files"]
        verify_files(ck)
        enc_tok = AutoTokenizer.from_pretrained(str(ck / "encoder"))
        top_tok = AutoTokenizer.from_pretrained(str(ck))
        assert enc_tok("John visited 伦敦")["input_ids"] == top_tok("John visited 伦敦")["input_ids"]
    card = (run["ckpt"] / "README.md").read_text(encoding="utf-8")
    f1 = 100 * results["final"]["target_test"]["f1"]
    assert f"| {f1:.1f} |" in card  # RUN/best shows the run's final target-test score


def test_export_loads_in_transformers_and_agrees_with_the_predictor(run, ner, tmp_path, capsys):
    from transformers import AutoModelForTokenClassification, pipeline

    out = tmp_path / "hf"
    assert main(["export", str(run["ckpt"]), str(out)]) == 0
    assert "BertForTokenClassification" in capsys.readouterr().out
    model = AutoModelForTokenClassification.from_pretrained(str(out))
    assert list(model.config.id2label.values()) == json.loads((run["ckpt"] / "config.json").read_text())[
        "model"]["tags"]
    pipe = pipeline("token-classification", model=str(out), aggregation_strategy="simple", device="cpu")
    found = 0
    for text in ENGLISH:
        ours = [(e["entity_group"], e["start"], e["end"]) for e in ner(text)]
        theirs = [(e["entity_group"], int(e["start"]), int(e["end"])) for e in pipe(text)]
        assert theirs == ours, text
        for a, b in zip(ner(text), pipe(text)):
            assert abs(a["score"] - float(b["score"])) < 1e-4
        found += len(ours)
    assert found > 0  # the comparison saw entities
    # refuses to overwrite without --overwrite, and to export a relation model
    capsys.readouterr()
    assert main(["export", str(run["ckpt"]), str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["export", str(run["ckpt"]), str(out), "--overwrite"]) == 0
