"""Raw text into words the way a model's target corpus is split (issue 29 §1, issue 25 §6): segmenters
(built-in and the optional Japanese/Chinese ones), CoNLL words joined as they are written, records
split at newlines only."""

from __future__ import annotations

import builtins
import importlib.util

import pytest

from mclner.errors import UserError

JA = "佐々木さんは東京からニューヨークへ行った。ソニーの社員だ。"
ZH = "李明在北京的清华大学工作。"


def _has(*mods: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in mods)


def _check_offsets(tw) -> None:
    assert len(tw.words) == len(tw.spans)
    for w, (s, e) in zip(tw.words, tw.spans):
        assert tw.text[s:e] == w


def test_char_segmenter_is_the_old_split():
    from mclner.data.segmenters import Segmenter
    from mclner.data.text import tokenize_line

    for line in (JA, ZH, "Angela Merkel visited Paris.", "東京 Tower, U.S. 1,000.50"):
        assert Segmenter("char")(line) == tokenize_line(line)
    assert Segmenter("char").words("東京都") == ["東", "京", "都"]


def test_space_segmenter_keeps_runs_between_spaces_and_punctuation():
    from mclner.data.segmenters import Segmenter

    tw = Segmenter("space")("佐々木 さん は 東京、ニューヨーク へ。Sony Corp.")
    _check_offsets(tw)
    assert tw.words == ["佐々木", "さん", "は", "東京", "、", "ニューヨーク", "へ", "。", "Sony", "Corp", "."]


def test_a_segmenter_that_does_not_spell_the_run_falls_back_to_characters():
    from mclner.data.text import tokenize_line

    tw = tokenize_line("東京都に", lambda run: ["東京", "XX", "に"])
    _check_offsets(tw)
    assert tw.words == ["東京", "都", "に"]  # after the piece that does not fit: one per character
    assert tokenize_line("東京都", lambda run: [" 東京 ", "都"]).words == ["東京", "都"]  # spaces in a piece


@pytest.mark.skipif(not _has("fugashi", "unidic_lite"), reason='fugashi + unidic-lite not installed (mclner[ja])')
def test_fugashi_splits_japanese_into_words():
    from mclner.data.segmenters import Segmenter

    tw = Segmenter("fugashi")(JA)
    _check_offsets(tw)
    for w in ("佐々木", "東京", "ニューヨーク", "ソニー"):
        assert w in tw.words, tw.words


@pytest.mark.skipif(not _has("sudachipy", "sudachidict_core"),
                    reason="sudachipy + sudachidict-core not installed (mclner[ja-sudachi])")
def test_sudachipy_splits_japanese_into_words():
    from mclner.data.segmenters import Segmenter

    tw = Segmenter("sudachipy")(JA)
    _check_offsets(tw)
    for w in ("佐々木", "東京", "ニューヨーク", "ソニー"):
        assert w in tw.words, tw.words


@pytest.mark.skipif(not _has("jieba"), reason="jieba not installed (mclner[zh])")
def test_jieba_splits_chinese_into_words(capfd):
    from mclner.data.segmenters import Segmenter

    tw = Segmenter("jieba")(ZH)
    _check_offsets(tw)
    assert "北京" in tw.words and "李明" in tw.words
    assert "Building prefix dict" not in capfd.readouterr().err


@pytest.mark.parametrize("name,extra", [("fugashi", "ja"), ("sudachipy", "ja-sudachi"), ("jieba", "zh")])
def test_a_missing_segmenter_names_its_extra(monkeypatch, name, extra):
    from mclner.data import segmenters

    segmenters._splitter.cache_clear()
    real = builtins.__import__
    blocked = set(segmenters.EXTERNAL[name][1])

    def fake(mod, *a, **kw):
        if mod.split(".")[0] in blocked:
            raise ImportError(mod)
        return real(mod, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", fake)
    monkeypatch.setattr(importlib, "import_module", lambda mod: fake(mod))
    with pytest.raises(UserError) as e:
        segmenters.Segmenter(name)
    msg = str(e.value)
    assert "\n" not in msg and f'pip install "mclner[{extra}]"' in msg
    segmenters._splitter.cache_clear()


def test_unknown_segmenter_is_one_line():
    from mclner.data.segmenters import Segmenter

    with pytest.raises(UserError, match="unknown segmenter 'mecab'; choose one of char, space"):
        Segmenter("mecab")


def test_default_segmenters_follow_the_target():
    from mclner.data.segmenters import default_segmenter, text_record

    assert default_segmenter("char", "ja") == "char"
    assert default_segmenter("word", "ja") == "fugashi"
    assert default_segmenter("word", "zh") == "jieba"
    assert default_segmenter("word", "de") == "space"
    assert text_record("word", "ja") == {"segmentation": "word", "lang": "ja", "segmenter": "fugashi"}
    assert text_record("word", "ja", "sudachipy")["segmenter"] == "sudachipy"


@pytest.mark.parametrize("words,text", [
    (["佐", "々", "木"], "佐々木"),
    (["東京", "、", "大阪"], "東京、大阪"),
    (["「", "ソニー", "」", "の", "社員"], "「ソニー」の社員"),
    (["李", "明", "（", "北", "京", "）"], "李明（北京）"),
    (["Sony", "の", "社員"], "Sony の社員"),
    (["visited", "東京", "."], "visited 東京 ."),
])
def test_conll_words_are_joined_as_written(words, text):
    from mclner.data.text import entity_dicts, words_to_text

    tw = words_to_text(words)
    assert tw.text == text
    _check_offsets(tw)
    ent = entity_dicts(tw.text, tw.spans, [(0, len(words) - 1, "X")])[0]
    assert ent["word"] == text  # the entity's surface string has no stray spaces either


def test_records_split_at_newlines_only():
    from mclner.data.text import split_lines, split_records

    inside = "a\x0bb\x0cc\x1cd\u2028e\x85f"  # VT, FF, FS, LINE SEPARATOR, NEL: all inside one line
    text = f"\ufeffone\r\n{inside}\n\n  \nlast"
    assert split_records(text) == ["one", inside, "", "  ", "last"]
    assert split_records("x\n") == ["x"] and split_records("") == [] and split_records("\n") == [""]
    assert split_lines(text) == ["one", inside, "last"]
    assert len(inside.splitlines()) == 6  # what str.splitlines would have made of it


def test_checkpoint_segmenter_of_old_checkpoints(tmp_path):
    import json

    from mclner.data.segmenters import checkpoint_segmenter

    run = tmp_path / "run"
    ck = run / "best"
    ck.mkdir(parents=True)
    (ck / "config.json").write_text(json.dumps({"method": "x"}))
    (ck / "training_args.json").write_text(json.dumps({"target_lang": "ja", "target_segmentation": "auto"}))
    assert checkpoint_segmenter(ck)["segmenter"] == "char"  # nothing says otherwise: as before
    (run / "results.json").write_text(json.dumps({"target_segmentation": {"mode": "word"}}))
    rec = checkpoint_segmenter(ck)
    assert rec == {"segmentation": "word", "lang": "ja", "segmenter": "fugashi", "recorded": False}
    cfg = {"text": {"segmentation": "word", "lang": "ja", "segmenter": "sudachipy"}}
    assert checkpoint_segmenter(ck, cfg)["segmenter"] == "sudachipy"
    assert checkpoint_segmenter(None, cfg)["segmenter"] == "sudachipy"  # a model without its folder
    assert checkpoint_segmenter(None, {})["segmenter"] == "char"


def test_train_reads_raw_unlabelled_target_text_with_the_segmenter(tmp_path):
    from mclner_golden_losses import make_inputs

    from mclner.methods import get_method
    from mclner.training.config import TrainConfig
    from mclner.training.rundata import read_sentences

    paths = make_inputs(tmp_path)
    raw = tmp_path / "raw.txt"
    raw.write_text("约翰 访问 伦敦。\n\n玛丽在巴黎\r\n", encoding="utf-8")
    cfg = TrainConfig(method="concner", source=paths["en"], target=paths["zh"], target_lang="zh",
                      target_unlabeled=str(raw), target_unlabeled_format="text", target_segmentation="word",
                      target_segmenter="space", lexicon=paths["lex"], encoder=paths["enc"])
    method = get_method("concner")()
    unl = read_sentences(cfg, method).target_unlabeled
    assert [s.tokens for s in unl] == [["约翰", "访问", "伦敦", "。"], ["玛丽在巴黎"]]
    assert all(s.tags is None for s in unl)
    cfg.target_segmenter = None  # the default for the resolved segmentation: word -> jieba for zh
    cfg.target_segmentation = "char"
    assert [s.tokens for s in read_sentences(cfg, method).target_unlabeled][1] == list("玛丽在巴黎")
    cfg.target_unlabeled = str(tmp_path / "missing.txt")
    with pytest.raises(UserError, match="missing.txt: no such file"):
        read_sentences(cfg, method)
