"""`mclner train / evaluate / predict` end to end on files, and one-line errors for bad input."""

from __future__ import annotations

import json

import pytest
from mclner_fixtures import (
    make_tiny_encoder_dir,
    synthetic_en,
    synthetic_zh,
    write_conll,
)

from mclner.cli import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A checkpoint trained through the command line on CoNLL files (no code-switching: files only)."""
    root = tmp_path_factory.mktemp("cli")
    enc = make_tiny_encoder_dir(root / "enc")
    for split, n, seed in (("train", 32, 0), ("dev", 8, 1), ("test", 8, 2)):
        write_conll(root / "en" / f"{split}.txt", synthetic_en(n, seed))
    write_conll(root / "zh" / "test.txt", synthetic_zh(12, 3))
    out = root / "run"
    rc = main([
        "train", "--source", str(root / "en"), "--target", str(root / "zh"), "--encoder", enc, "--no-codeswitch",
        "--output-dir", str(out), "--max-steps", "6", "--batch-size", "8", "--effective-batch-size", "16",
        "--eval-every", "3", "--encoder-lr", "1e-3", "--head-lr", "3e-3", "--biaffine-dim", "16",
        "--cln-hidden", "16", "--proj-dim", "8", "--no-progress", "--seed", "1", "--self-training-rounds", "0",
    ])
    assert rc == 0
    return root, out / "best"


def test_train_writes_checkpoint_and_results(trained):
    root, best = trained
    for name in ("config.json", "model.safetensors", "label_map.json", "encoder/config.json", "training_args.json"):
        assert (best / name).is_file(), name
    res = json.loads((root / "run" / "results.json").read_text())
    assert 0.0 <= res["final"]["target_test"]["f1"] <= 1.0
    log = [json.loads(x) for x in (root / "run" / "log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all("lr_encoder" in r and "lr_head" in r and "grad_norm" in r for r in steps)


def test_evaluate_predict_round_trip(trained, capsys, tmp_path):
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    root, best = trained
    capsys.readouterr()
    assert main(["evaluate", str(best), str(root / "zh" / "test.txt"), "--lang", "zh", "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) >= {"precision", "recall", "f1", "per_type", "dropped_types"}

    out = tmp_path / "pred.iob2"
    assert main(["predict", str(best), "-i", str(root / "zh" / "test.txt"), "--input-format", "conll",
                 "--output-format", "iob2", "-o", str(out)]) == 0
    pred_blocks = [b for b in out.read_text().split("\n\n") if b.strip()]
    gold = synthetic_zh(12, 3)
    assert len(pred_blocks) == len(gold)
    y_pred = [[ln.split("\t")[1] for ln in b.splitlines()] for b in pred_blocks]
    y_true = [s.tags for s in gold]
    # the predicted file scores exactly as `evaluate` said (no type is dropped: same label set)
    assert scores["dropped_types"] == [] or all(t not in {"PER", "LOC", "ORG"} for t in scores["dropped_types"])
    assert f1_score(y_true, y_pred, mode="strict", scheme=IOB2) == pytest.approx(scores["f1"])
    # the span / type split: span F1 is the F1 of the file with every type renamed to one, and the
    # typed F1 is span F1 × type accuracy
    assert set(scores["span"]) == {"precision", "recall", "f1"}
    assert set(scores["type"]) == {"accuracy", "matched", "correct"}

    def one_type(seqs):
        return [[t if t == "O" else t[:2] + "E" for t in s] for s in seqs]

    assert f1_score(one_type(y_true), one_type(y_pred), mode="strict", scheme=IOB2,
                    zero_division=0) == pytest.approx(scores["span"]["f1"])
    assert scores["f1"] == pytest.approx(scores["span"]["f1"] * scores["type"]["accuracy"])
    assert main(["evaluate", str(best), str(root / "zh" / "test.txt"), "--lang", "zh"]) == 0
    printed = capsys.readouterr().out.splitlines()
    span_lines = [x for x in printed if x.startswith("span ")]
    assert len(span_lines) == 1 and f"on the {scores['type']['matched']} exact spans" in span_lines[0]

    text = tmp_path / "raw.txt"
    text.write_text("John visited 伦敦 today\nthe UN met\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["predict", str(best), "-i", str(text)]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["tokens"] for r in lines] == [["John", "visited", "伦", "敦", "today"], ["the", "UN", "met"]]
    for r in lines:
        for e in r["entities"]:
            assert 0 <= e["start"] <= e["end"] < len(r["tokens"]) and e["type"] in {"PER", "LOC", "ORG"}


def _one_line_error(capsys, argv, expect):
    capsys.readouterr()
    rc = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2
    assert len(err) == 1, err
    assert expect in err[0]


def test_checkpoint_loads_without_tokenizer_warnings(trained, capfd):
    # transformers>=5 warns about a "Mistral regex" for local folders whose config.json lacks
    # transformers_version; our checkpoints carry it, so loading one is quiet.
    from mclner.inference.checkpoint import load_checkpoint

    _, best = trained
    capfd.readouterr()
    load_checkpoint(best)
    err = capfd.readouterr().err
    assert "regex" not in err, err


def test_missing_checkpoint_is_one_line(capsys, tmp_path):
    _one_line_error(capsys, ["evaluate", str(tmp_path / "nope"), "msra-zh"], "does not exist")


def test_not_a_checkpoint_is_one_line(capsys, tmp_path):
    (tmp_path / "x").mkdir()
    _one_line_error(capsys, ["predict", str(tmp_path / "x")], "not an mclner checkpoint")


def test_incompatible_checkpoint_is_one_line(capsys, trained, tmp_path):
    import shutil

    _, best = trained
    bad = tmp_path / "bad"
    shutil.copytree(best, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["method_config"]["biaffine_dim"] = 32  # the architecture no longer fits the weights
    (bad / "config.json").write_text(json.dumps(cfg))
    from mclner.store.checksums import write_checksums

    write_checksums(bad)  # consistent files (else the checksum check refuses the edit first)
    _one_line_error(capsys, ["predict", str(bad)], "do not match")


def test_unknown_source_is_one_line(capsys, tmp_path, trained):
    root, _ = trained
    _one_line_error(capsys, ["train", "--source", "no-such-corpus", "--encoder", str(root / "enc"),
                             "--output-dir", str(tmp_path / "o"), "--no-progress"], "no-such-corpus")


def test_missing_predict_input_is_one_line(capsys, trained, tmp_path):
    _, best = trained
    _one_line_error(capsys, ["predict", str(best), "-i", str(tmp_path / "none.txt")], "no such file")


@pytest.mark.parametrize("argv", [["train", "--batch-size", "0"], ["train", "--st-threshold", "2"],
                                  ["train", "--method", "crf"]])
def test_bad_flag_value_is_rejected(capsys, argv):
    try:  # argparse exits (types, choices); the config's validation returns 2 with one line
        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err
    assert "error:" in err.strip().splitlines()[-1]


def test_help_explains_every_option(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    for opt in ("--source", "--target", "--target-unlabeled", "--lexicon", "--encoder", "--output-dir",
                "--max-steps", "--epochs", "--batch-size", "--seed", "--fused", "--preset", "--resume",
                "--no-codeswitch", "--no-sc", "--no-tc", "--self-training-rounds", "--method"):
        assert opt in out, opt


def test_preset_and_overrides():
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args

    parser = build_parser()

    def cfg_of(*argv):
        return config_from_args(parser.parse_args(["train", *argv]))

    cfg = cfg_of("--preset", "quick", "--max-steps", "7", "--no-sc")
    opts = cfg.method_options
    assert cfg.max_steps == 7 and cfg.max_train_sentences == 2000 and cfg.encoder_lr == 1e-4
    assert cfg.freeze_embeddings and opts["calibrate_none_bias"]
    assert opts["sc"] is False and "tc" not in opts and "codeswitch" not in opts
    m = cfg.method_instance().config
    assert not m.sc and m.tc and m.codeswitch and m.calibrate_none_bias and m.self_training_rounds == 1
    cfg = cfg_of("--preset", "quick", "--no-freeze-embeddings")
    assert not cfg.freeze_embeddings and cfg.max_steps == 250 and cfg.method_options["calibrate_none_bias"]
    cfg = cfg_of("--preset", "quick", "--no-calibrate-none-bias")
    assert not cfg.method_instance().config.calibrate_none_bias
    cfg = cfg_of()
    assert (cfg.source, cfg.target, cfg.lexicon, cfg.encoder) == ("conll2003-en", "msra-zh", "cc-cedict",
                                                                  "multilingual-e5-small")
    assert cfg.max_steps is None and cfg.effective_batch_size == 32 and not cfg.fused
    assert not cfg.freeze_embeddings and not cfg.method_instance().config.calibrate_none_bias
    assert cfg_of("--target", "none").target is None


def test_explicit_option_equal_to_its_default_beats_the_preset():
    """--encoder-lr 3e-5 is the built-in default, and quick sets 1e-4: the explicit value wins."""
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args

    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["train", "--preset", "quick", "--encoder-lr", "3e-5",
                                              "--tc-max-pairs", "4096", "--max-words", "40"]))
    assert cfg.encoder_lr == 3e-5 and cfg.method_options["tc_max_pairs"] == 4096 and cfg.max_words == 40
    cfg = config_from_args(parser.parse_args(["train", "--preset", "quick"]))
    assert cfg.encoder_lr == 1e-4 and cfg.method_options["tc_max_pairs"] == 1024


def test_presets_are_per_method():
    from mclner.methods import registry

    for name, cls in registry().items():
        assert {"quick", "full"} <= set(cls.presets), name


def test_option_of_another_method_is_one_line(capsys):
    _one_line_error(capsys, ["train", "--method", "token-classification", "--w-mse", "2"],
                    "--w-mse is an option of mclner")


def test_methods_lists_every_method(capsys):
    from mclner.methods import registry

    capsys.readouterr()
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == list(registry())
    assert {"mclner", "token-classification"} <= set(registry())
    assert all(len(ln.split("\t")) == 2 and ln.split("\t")[1] for ln in lines)


def test_predict_conll_input_takes_lang(tmp_path):
    import argparse

    from mclner.inference_cli import _read_predict_input

    f = tmp_path / "in.conll"
    write_conll(f, synthetic_zh(2, 0))
    ns = argparse.Namespace(input=str(f), input_format="conll", lang="zh")
    assert {s.lang for s in _read_predict_input(ns)} == {"zh"}
    ns.lang = None
    assert {s.lang for s in _read_predict_input(ns)} == {"en"}  # read_conll's default
