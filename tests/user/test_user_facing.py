"""What a user sees (issue 14): pipeline-style predictions with scores and offsets for every method,
the NERPredictor API and its README example, Hugging Face encoder folders and umask-respecting files
in checkpoints, plots from checkpoints (heatmap, entity t-SNE, confusion) with the data behind them,
`mclner report`, the training banner/progress lines, `evaluate --max-sentences`, and `--impl`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from mclner_golden_losses import make_inputs

from mclner.cli import main

ROOT = Path(__file__).resolve().parents[2]
_SMALL = ["--biaffine-dim", "16", "--cln-hidden", "16", "--proj-dim", "8", "--tc-max-pairs", "64"]


def _train(paths, out: Path, method: str, *extra: str) -> str:
    argv = ["train", "--method", method, "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh",
            "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "6",
            "--batch-size", "4", "--effective-batch-size", "8", "--eval-every", "3", "--encoder-lr", "1e-3",
            "--head-lr", "3e-3", "--seed", "5", *extra]
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return buf.getvalue()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("user")
    paths = make_inputs(root)
    rel = root / "rel"
    printed = _train(paths, rel, "mclner", "--self-training-rounds", "0", "--calibrate-none-bias", "--no-progress",
                     *_SMALL)
    tag = root / "tag"
    _train(paths, tag, "token-classification", "--no-progress")
    return {"paths": paths, "root": root, "rel": rel, "tag": tag, "printed": printed}


def _predict_rows(ckpt: Path, capsys, *args: str) -> list:
    capsys.readouterr()
    assert main(["predict", str(ckpt), *args]) == 0
    return [json.loads(x) for x in capsys.readouterr().out.splitlines()]


# ----------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("which", ["rel", "tag"])
def test_predict_gives_offsets_and_scores_for_every_method(runs, capsys, which):
    from mclner.data.text import tokenize_line
    from mclner.evaluation import predict_entities
    from mclner.inference import load_model
    from mclner.methods.mclner.grid import decode_grid_scored
    from mclner.predictor import predict_scored

    texts = ["John  visited 伦敦 today.", "Mary Smith met 北京 people in Paris"]
    rows = _predict_rows(runs[which] / "best", capsys, "--text", texts[0], "--text", texts[1], "--none-bias", "4")
    assert [r["text"] for r in rows] == texts
    n_ents = 0
    for r in rows:
        assert r["tokens"] == tokenize_line(r["text"]).words
        for e in r["entities"]:
            n_ents += 1
            assert set(e) == {"entity_group", "score", "word", "start", "end", "word_start", "word_end"}
            assert e["word"] == r["text"][e["start"] : e["end"]]  # as written: no spaces put between CJK
            assert 0.0 < e["score"] <= 1.0
    assert n_ents > 0
    # the score is what the method's decoding computes: relation models the mean probability of the
    # THW cell and NNW links (decode_grid_scored), taggers the mean max tag probability
    lm = load_model(runs[which] / "best", device="cpu")
    from mclner.data.readers import Sentence

    sents = [Sentence(tokenize_line(t).words, None, "xx") for t in texts]
    # the same implementation as `mclner predict` by default (auto)
    scored = predict_scored(lm.model, sents, lm.collator, lm.label_map, none_bias=4.0, impl="auto")
    _, probs = predict_entities(lm.model, sents, lm.collator, lm.label_map, return_probs=True, none_bias=4.0,
                                impl="auto")
    for r, ents, p in zip(rows, scored, probs):
        assert [(e["word_start"], e["word_end"], e["entity_group"]) for e in r["entities"]] == [x[:3] for x in ents]
        if which == "rel":
            expect = decode_grid_scored(p, lm.label_map)
            assert [x[:3] for x in expect] == [x[:3] for x in ents]
            assert [x[3] for x in ents] == pytest.approx([x[3] for x in expect], abs=1e-6)
        else:
            best = p.max(-1).values
            assert [x[3] for x in ents] == pytest.approx([float(best[a : b + 1].mean()) for a, b, _, _ in ents])


def test_predict_types_filter_and_errors(runs, capsys):
    ckpt = runs["rel"] / "best"
    text = "Mary Smith met 北京 people in Paris"
    every = _predict_rows(ckpt, capsys, "--text", text, "--none-bias", "6")[0]["entities"]
    kinds = sorted({e["entity_group"] for e in every})
    assert kinds
    keep = kinds[:1]
    some = _predict_rows(ckpt, capsys, "--text", text, "--none-bias", "6", "--types", ",".join(keep))[0]["entities"]
    assert some == [e for e in every if e["entity_group"] in keep]
    assert main(["predict", str(ckpt), "--text", text, "--types", "PER,FOO"]) == 2
    assert "unknown type(s) FOO" in capsys.readouterr().err
    assert main(["predict", str(ckpt), "--text", text, "--fused", "--impl", "reference"]) == 2
    assert "--fused means --impl auto" in capsys.readouterr().err
    assert main(["predict", str(ckpt), "--text", text, "-i", "somefile.txt"]) == 2
    assert "cannot be combined with --input" in capsys.readouterr().err
    # the word-level view keeps the same entities
    capsys.readouterr()
    assert main(["predict", str(ckpt), "--text", text, "--none-bias", "6", "--types", ",".join(keep),
                 "--output-format", "iob2"]) == 0
    tags = [x.split("\t")[1] for x in capsys.readouterr().out.splitlines() if x]
    from mclner.data.iob2 import iob2_to_entities

    assert iob2_to_entities(tags) == [(e["word_start"], e["word_end"], e["entity_group"]) for e in some]


def test_predictor_api_matches_the_cli(runs, capsys):
    from mclner import NERPredictor

    ckpt = runs["rel"] / "best"
    texts = ["John visited 伦敦 today.", "", "Paris"]
    rows = _predict_rows(ckpt, capsys, *[a for t in texts if t for a in ("--text", t)], "--none-bias", "3")
    ner = NERPredictor.from_pretrained(ckpt, device="cpu", none_bias=3.0, batch_size=2)
    got = ner(texts)
    assert len(got) == 3 and got[1] == []
    assert _same([got[0], got[2]], [r["entities"] for r in rows])
    assert _same([ner(texts[0])], [got[0]])  # one string: its entities (batched differently: float noise)
    assert set(ner.types) == {"LOC", "ORG", "PER"}
    words = ner.predict_words([["John", "visited", "伦", "敦"]])
    assert all(len(e) == 4 for e in words[0])


def _same(a: list, b: list) -> bool:
    """Entity lists equal up to float noise in the scores (other batch compositions)."""
    def strip(ents):
        return [[{k: v for k, v in e.items() if k != "score"} for e in x] for x in ents]

    def scores(ents):
        return [e["score"] for x in ents for e in x]

    return strip(a) == strip(b) and scores(a) == pytest.approx(scores(b), abs=1e-5)


def test_readme_example_runs(runs, monkeypatch, capsys):
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    code = next(b for b in blocks if "NERPredictor" in b)
    assert len([x for x in code.splitlines() if x.strip()]) <= 6
    assert "runs/mclner/best" in code
    code = code.replace("runs/mclner/best", str(runs["rel"] / "best"))
    capsys.readouterr()
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert [x.split(" [")[0] for x in lines] == ["Angela Merkel visited Paris.", "李明在北京工作。"]


# ----------------------------------------------------------------------------- checkpoints


def test_checkpoint_encoder_is_a_hugging_face_folder_stored_once(runs):
    from safetensors.torch import load_file
    from transformers import AutoModel

    from mclner.inference import load_model
    from mclner.store.checksums import verify_files

    ckpt = runs["rel"] / "best"
    enc = AutoModel.from_pretrained(str(ckpt / "encoder"))
    mine = load_model(ckpt, device="cpu").model.words.encoder.state_dict()
    theirs = enc.state_dict()
    assert mine.keys() == theirs.keys()
    for k in mine:
        assert torch.equal(mine[k], theirs[k]), k
    own = load_file(str(ckpt / "model.safetensors"))
    assert own and not any(k.startswith("words.encoder.") for k in own)  # not stored twice
    recorded = json.loads((ckpt / "checksums.json").read_text())["files"]
    assert "encoder/model.safetensors" in recorded and "encoder/config.json" in recorded
    verify_files(ckpt)


def test_format_3_checkpoints_still_load(runs, tmp_path):
    """Before the encoder folder held the weights, model.safetensors had them all (format 3)."""
    import shutil

    from safetensors.torch import save_file

    from mclner.inference import load_model
    from mclner.inference.checkpoint import read_weights
    from mclner.store.checksums import write_checksums

    old = tmp_path / "old"
    shutil.copytree(runs["tag"] / "best", old)
    state = read_weights(old)
    cfg = json.loads((old / "config.json").read_text())
    assert cfg.pop("encoder_prefix") == "words.encoder." and cfg["format_version"] == 4
    cfg["format_version"] = 3
    (old / "config.json").write_text(json.dumps(cfg))
    (old / "encoder" / "model.safetensors").unlink()
    (old / "model.safetensors").unlink()
    save_file({k: v.contiguous() for k, v in state.items()}, str(old / "model.safetensors"))
    (old / "checksums.json").unlink()
    write_checksums(old)
    a = load_model(old, device="cpu").model.state_dict()
    b = load_model(runs["tag"] / "best", device="cpu").model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_checkpoint_files_follow_the_umask(runs, tmp_path, mask):
    from mclner.inference import load_model
    from mclner.training.checkpoint import save_checkpoint

    lm = load_model(runs["tag"] / "best", device="cpu")
    old = os.umask(mask)
    try:
        dest = save_checkpoint(tmp_path / "ck", lm.model, lm.tokenizer, lm.label_map, {}, method=lm.method,
                               training_state={"counters": {"step": 1}, "t": torch.ones(2)})
    finally:
        os.umask(old)
    files = [p for p in dest.rglob("*") if p.is_file()]
    assert any(p.name == "training_state.safetensors" for p in files)
    for p in files:
        assert p.stat().st_mode & 0o777 == 0o666 & ~mask, p
    for p in [dest, dest / "encoder"]:
        assert p.stat().st_mode & 0o777 == 0o777 & ~mask, p


# ----------------------------------------------------------------------------- plots


def test_heatmap_of_a_checkpoint(runs, tmp_path, capsys):
    from mclner.data.readers import load_sentences

    out = tmp_path / "hm"
    assert main(["plot", "heatmap", str(runs["rel"] / "best"), "--index", "2", "--seed", "1", "-o", str(out)]) == 0
    data = json.loads((tmp_path / "hm.json").read_text(encoding="utf-8"))
    src = [s for s in load_sentences(runs["paths"]["en"], split="test") if s.tags][2]
    assert data["source_words"] == src.tokens and data["counterpart_lang"] == "zh"
    assert len(data["panels"]) == 2
    for p in data["panels"]:
        n = len(src.tokens)
        assert p["rows"] == src.tokens == p["cols"]
        m = np.array([[np.nan if v is None else v for v in row] for row in p["matrix"]])
        assert m.shape == (n, n)
        assert np.nanmin(m) >= -1 - 1e-6 and np.nanmax(m) <= 1 + 1e-6
        assert np.isfinite(m).sum() >= n  # most pairs have a counterpart
    ax = data["axes"][0]
    assert ax["xticklabels"] == src.tokens and ax["yticklabels"] == src.tokens
    assert ax["images"] == [[len(src.tokens)] * 2]
    # the same seed gives the same figure data; a target sentence gives its own words
    assert main(["plot", "heatmap", str(runs["rel"] / "best"), "--index", "2", "--seed", "1", "-o",
                 str(tmp_path / "hm2")]) == 0
    again = json.loads((tmp_path / "hm2.json").read_text(encoding="utf-8"))
    assert again["panels"] == data["panels"]
    assert main(["plot", "heatmap", str(runs["rel"] / "best"), "--target", runs["paths"]["zh"], "--target-index",
                 "1", "-o", str(tmp_path / "hm3")]) == 0
    tgt = json.loads((tmp_path / "hm3.json").read_text(encoding="utf-8"))
    zh = [s for s in load_sentences(runs["paths"]["zh"], split="test", lang="zh") if s.tags][1]
    assert tgt["panels"][1]["rows"] == zh.tokens
    # a tagger has no relation views: a one-line error
    capsys.readouterr()
    assert main(["plot", "heatmap", str(runs["tag"] / "best"), "-o", str(tmp_path / "x")]) == 2
    assert "relation model" in capsys.readouterr().err


@pytest.mark.parametrize("which", ["rel", "tag"])
def test_entity_embedding_of_any_checkpoint(runs, tmp_path, which):
    from mclner.data.iob2 import iob2_to_entities
    from mclner.data.readers import load_sentences

    argv = ["plot", "entities", str(runs[which] / "best"), "--reduce", "pca", "--max-sentences", "6", "--seed", "3"]
    assert main([*argv, "-o", str(tmp_path / "e1")]) == 0
    data = json.loads((tmp_path / "e1.json").read_text(encoding="utf-8"))
    counts = {}
    for spec, lang in ((runs["paths"]["en"], "en"), (runs["paths"]["zh"], "zh")):
        sents = [s for s in load_sentences(spec, split="test", lang=lang if lang == "zh" else None) if s.tags][:6]
        for s in sents:
            for _, _, t in iob2_to_entities(s.tags):
                counts[f"{s.lang}/{t}"] = counts.get(f"{s.lang}/{t}", 0) + 1
    assert {k: v for k, v in data["counts"].items() if v} == counts
    assert len(data["coords"]) == sum(counts.values())
    assert data["languages"] == ["en", "zh"] and data["method"] == "pca"
    assert sum(data["axes"][0]["scatter_points"]) == sum(counts.values())
    assert sorted(data["axes"][0]["legend"]) == [["LOC", "ORG", "PER"], ["en", "zh"]]
    assert main([*argv, "-o", str(tmp_path / "e2")]) == 0
    assert json.loads((tmp_path / "e2.json").read_text(encoding="utf-8"))["coords"] == data["coords"]


def test_confusion_from_a_checkpoint_matches_its_predictions(runs, tmp_path, capsys):
    ckpt = runs["rel"] / "best"
    gold = str(Path(runs["paths"]["zh"]) / "test.txt")
    assert main(["plot", "confusion", gold, str(ckpt), "--lang", "zh", "--json", "-o", str(tmp_path / "c1")]) == 0
    direct = json.loads(capsys.readouterr().out.splitlines()[0])
    preds = tmp_path / "p.jsonl"
    assert main(["predict", str(ckpt), "-i", gold, "--input-format", "conll", "--lang", "zh", "-o", str(preds)]) == 0
    assert main(["plot", "confusion", gold, str(preds), "--lang", "zh", "--json", "-o", str(tmp_path / "c2")]) == 0
    via_file = json.loads(capsys.readouterr().out.splitlines()[0])
    assert direct == via_file
    k = len(direct["labels"])
    assert np.array(direct["counts"]).shape == (k, k) and direct["labels"][-1] == "O"
    data = json.loads((tmp_path / "c1.json").read_text(encoding="utf-8"))
    assert data["axes"][0]["images"] == [[k, k]]


# ----------------------------------------------------------------------------- report, run output, evaluate


def test_report_embeds_the_figures_and_reproduces_the_run(runs, capsys):
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args
    from mclner.training.records import run_args
    from mclner.viz.report import train_command

    run = runs["rel"]
    assert main(["report", str(run), "--max-sentences", "5"]) == 0
    text = (run / "report.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {Path(p).stem for p in images} == {"curves", "per_type", "entities", "confusion", "heatmap"}
    for p in images:
        assert (run / p).is_file()
    assert "| source |" in text and "none_bias" in text
    args = json.loads((run / "training_args.json").read_text())
    words = train_command(args)
    # the page suggests the same command into a new folder (never the run's own, never --overwrite)
    shown = list(words)
    shown[shown.index("--output-dir") + 1] = f"{run}-reproduced"
    assert shlex_in(shown, text) and "--overwrite" not in text
    cfg = config_from_args(build_parser().parse_args(words[1:]))
    assert cfg.to_dict() == {k: v for k, v in args.items() if k != "method_config"}
    assert run_args(cfg, cfg.method_instance())["method_config"] == args["method_config"]


def shlex_in(words, text: str) -> bool:
    import shlex

    return shlex.join(words) in text


def test_training_prints_banner_evaluations_steps_and_where(runs):
    out = runs["printed"]
    lines = out.splitlines()
    banner = next(x for x in lines if x.startswith("mclner train:"))
    from mclner.ops import selected_impl

    assert "method mclner" in banner and "device cpu" in banner
    # the default implementation, and what it picks here (the native kernels when built)
    assert f"impl auto ({selected_impl('biaffine', torch.device('cpu'), torch.float32)} here);" in banner
    assert any(x.startswith("data: 24 source train, 8 dev, 8 target test") and str(runs["rel"]) in x for x in lines)
    evals = [x for x in lines if re.match(r"\[source\] step \d+/6 dev P", x)]
    assert len(evals) == 2 and all("best F1" in x for x in evals)
    steps = [x for x in lines if re.match(r"\[source\] step \d+/6 ce_src", x)]
    assert steps and all("steps/s" in x and "left" in x and " loss " in x for x in steps)
    assert any(x.startswith("done. best model: " + str(runs["rel"] / "best")) for x in lines)


def test_evaluate_max_sentences_and_decoding_note(runs, capsys):
    from mclner.data.readers import load_sentences
    from mclner.evaluation import evaluate
    from mclner.inference import load_model

    ckpt = runs["rel"] / "best"
    data = str(Path(runs["paths"]["zh"]) / "test.txt")
    capsys.readouterr()
    assert main(["evaluate", str(ckpt), data, "--lang", "zh", "--max-sentences", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sentences"] == 3 and res["impl"] == "auto"
    bias = json.loads((ckpt / "config.json").read_text())["model"]["none_bias"]
    assert res["decoding"].startswith(f"decoding: NONE bias {bias:g}")
    lm = load_model(ckpt, device="cpu")
    sents = [s for s in load_sentences(data, split="test", lang="zh") if s.tags][:3]
    assert res["f1"] == evaluate(lm.model, sents, lm.collator, lm.label_map, impl="auto")["f1"]
    assert main(["evaluate", str(runs["tag"] / "best"), data, "--lang", "zh"]) == 0
    assert "argmax per word" in capsys.readouterr().err


def test_impl_option(runs, capsys):
    from mclner.ops import available_impls

    ckpt = runs["rel"] / "best"
    ref = _predict_rows(ckpt, capsys, "--text", "Paris", "--impl", "reference")
    if available_impls()["cpu"]["runnable"]:
        cpu = _predict_rows(ckpt, capsys, "--text", "Paris", "--impl", "cpu")
        assert [e["entity_group"] for e in cpu[0]["entities"]] == [e["entity_group"] for e in ref[0]["entities"]]
    if not available_impls()["cuda"]["runnable"]:
        assert main(["predict", str(ckpt), "--text", "Paris", "--impl", "cuda"]) == 2
        assert "--impl cuda cannot run here" in capsys.readouterr().err


def test_impl_defaults_to_auto(runs, capsys, monkeypatch):
    """evaluate (above), predict, the plot commands and NERPredictor run impl "auto" unless told; the
    run records the implementation it trained with."""
    import mclner.predictor as predictor
    from mclner import NERPredictor
    from mclner.cli import build_parser
    from mclner.errors import UserError
    from mclner.viz.cli import _load_model

    ckpt = runs["rel"] / "best"
    seen = []
    real = predictor.predict_scored

    def spy(*a, **kw):
        seen.append(kw["impl"])
        return real(*a, **kw)

    monkeypatch.setattr(predictor, "predict_scored", spy)
    for extra, want in (((), "auto"), (("--fused",), "auto"), (("--impl", "reference"), "reference")):
        _predict_rows(ckpt, capsys, "--text", "Paris", *extra)
        assert seen.pop() == want
    assert NERPredictor.from_pretrained(ckpt, device="cpu").impl == "auto"
    assert NERPredictor.from_pretrained(ckpt, device="cpu", fused=True).impl == "auto"
    assert NERPredictor.from_pretrained(ckpt, device="cpu", impl="reference").impl == "reference"
    with pytest.raises(UserError, match="contradicts --impl reference"):
        NERPredictor.from_pretrained(ckpt, device="cpu", fused=True, impl="reference")
    for argv in (["plot", "heatmap", str(ckpt)], ["plot", "entities", str(ckpt)]):
        args = build_parser().parse_args(argv)
        assert _load_model(args)[1] == "auto"
    assert build_parser().parse_args(["report", str(runs["rel"])]).impl is None  # = auto
    # the run folder, the checkpoint and the log say what the run used
    for f in (runs["rel"] / "training_args.json", ckpt / "training_args.json"):
        assert json.loads(f.read_text())["impl"] == "auto"
    first = json.loads((runs["rel"] / "log.jsonl").read_text().splitlines()[0])
    assert first["impl"] == "auto" and set(first["impl_selected"]) == {"biaffine", "cln_head", "info_nce", "sup_con"}


def test_auto_without_native_module_runs_the_reference(runs, capsys, monkeypatch):
    """auto on a machine where the native CPU module is not built: the reference, with no error."""
    from mclner.ops import _common

    ckpt = runs["rel"] / "best"
    text = ["--text", "Mary Smith met 北京 people in Paris", "--none-bias", "4"]
    ref = _predict_rows(ckpt, capsys, *text, "--impl", "reference")
    monkeypatch.setitem(_common._STATUS, "cpu", lambda: (False, False, "native CPU module not built: (test)"))
    assert _predict_rows(ckpt, capsys, *text) == ref  # the same code path: identical output
    assert main(["predict", str(ckpt), *text, "--impl", "cpu"]) == 2
    assert "--impl cpu cannot run here: native CPU module not built" in capsys.readouterr().err
