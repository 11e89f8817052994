"""--target-segmentation: inferring the target's tokenisation, splitting translations to match it, and
the choice reaching the printed line, the run's log, results and checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mclner_fixtures import LEX, patch_training_data, synthetic_zh, train_config

from mclner.data.codeswitch import CodeSwitcher
from mclner.data.lexicon import Candidate, Lexicon
from mclner.data.readers import Sentence
from mclner.data.segmentation import (
    WORD_SHARE,
    cjk_token_counts,
    infer_segmentation,
    resolve_segmentation,
    segment_translation,
)
from mclner.data.translations import lexicon_translations


def S(tokens, tags=None, lang="zh"):
    return Sentence(list(tokens), list(tags) if tags is not None else None, lang)


PER_CHAR = [S("约翰在北京工作。"), S("谷歌公司的总部在美国。")]
WORD_SEG = [S(["约翰", "在", "北京", "工作", "。"]), S(["谷歌", "公司", "的", "总部", "在", "美国", "。"])]
# morpheme-segmented Japanese: one-kana particles are many, content words still have several characters
JA_WORDS = [S(["東京", "に", "ある", "会社", "で", "働い", "て", "いる", "。"], lang="ja"),
            S(["ジョン", "は", "日本", "の", "大学", "に", "行っ", "た"], lang="ja")]


def test_infers_per_character_and_word_segmented_targets():
    seg = infer_segmentation(PER_CHAR, "zh", "toy")
    assert (seg.mode, seg.requested, seg.mismatch) == ("char", "auto", False)
    assert "0.0% of 17 CJK tokens of toy" in seg.how
    seg = infer_segmentation(WORD_SEG, "zh", "toy")
    assert seg.mode == "word" and "of 10 CJK tokens of toy" in seg.how
    assert cjk_token_counts(WORD_SEG) == (12, 10, 7)  # "。" is not a CJK token
    ja = infer_segmentation(JA_WORDS, "ja")
    assert ja.mode == "word", ja.how  # 9 of 16 tokens: above the threshold despite the particles
    # the threshold is strict: exactly WORD_SHARE stays per character
    n_multi = int(WORD_SHARE * 10)
    edge = [S(["北京"] * n_multi + ["在"] * (10 - n_multi))]
    assert infer_segmentation(edge, "zh").mode == "char"
    assert infer_segmentation(edge + [S(["北京"])], "zh").mode == "word"


def test_non_cjk_and_missing_target_text():
    de = [S(["Angela", "Merkel", "besuchte", "Peking", "(", "北京", ")", "."], lang="de")]
    seg = infer_segmentation(de, "de")
    assert seg.mode == "word" and "is not CJK (1 of 8 tokens" in seg.how  # a few CJK names do not count
    assert resolve_segmentation("auto", "de").mode == "word"
    none = resolve_segmentation("auto", "zh")
    assert none.mode == "char" and "no target text" in none.how
    assert resolve_segmentation("auto", "ja", []).mode == "char"
    with pytest.raises(ValueError, match="one of auto, char, word"):
        resolve_segmentation("words", "zh")


def test_given_mode_is_kept_and_a_mismatch_is_flagged():
    seg = resolve_segmentation("char", "zh", WORD_SEG, "the target test set (x)")
    assert seg.mode == "char" and seg.mismatch
    assert seg.describe().startswith("char (given; MISMATCH: 70.0% of 10 CJK tokens of the target test set (x)")
    assert seg.describe().endswith("which suggests word)")
    seg = resolve_segmentation("word", "zh", PER_CHAR)
    assert seg.mode == "word" and seg.mismatch and "suggests char" in seg.how
    ok = resolve_segmentation("word", "zh", WORD_SEG)
    assert not ok.mismatch and ok.how.startswith("given; 70.0%")
    assert resolve_segmentation("char", "zh").describe() == "char (given)"  # nothing to check against
    assert ok.to_dict() == {"mode": "word", "requested": "word", "how": ok.how, "mismatch": False}


def test_segment_translation():
    assert segment_translation(["纽约"], "char") == ["纽", "约"]
    assert segment_translation(["纽约"], "word") == ["纽约"]
    assert segment_translation(["卡拉OK", "歌厅"], "char") == ["卡", "拉", "O", "K", "歌", "厅"]
    assert segment_translation(["卡拉OK", "歌厅"], "word") == ["卡拉OK", "歌厅"]
    assert segment_translation(["Vereinigte Staaten"], "word") == ["Vereinigte", "Staaten"]
    assert segment_translation("美国", "word") == ["美国"]  # a bare string is one word, not its characters
    with pytest.raises(ValueError, match="'char' or 'word'"):
        segment_translation(["x"], "auto")


def _lexicon() -> Lexicon:
    e = {"john": [Candidate("约翰", True, (0,))], "smith": [Candidate("史密斯", True, (0,))],
         "new york": [Candidate("纽约", True, (0,))], "lives": [Candidate("住在", False, (0,))]}
    return Lexicon(e, "zh", "toy")


def test_char_and_word_split_of_translated_entities():
    s = S(["John", "Smith", "lives", "in", "New", "York", "."], ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"],
          "en")
    char = CodeSwitcher(_lexicon(), word_ratio=1.0, segmentation="char").switch_detailed(s)
    assert char.sentence.tokens == ["约", "翰", "史", "密", "斯", "住", "在", "in", "纽", "约", "."]
    word = CodeSwitcher(_lexicon(), word_ratio=1.0, segmentation="word").switch_detailed(s)
    assert word.sentence.tokens == ["约翰", "史密斯", "住在", "in", "纽约", "."]
    assert word.sentence.tags == ["B-PER", "I-PER", "O", "O", "B-LOC", "O"]
    # word by word: one target word each; the phrase "New York" -> one word, both ends on it
    assert word.spans == [(0, 0), (1, 1), (2, 2), (3, 3), (4, 4), (4, 4), (5, 5)]
    assert word.alignment == [0, 1, 2, 3, 4, 4, 5]
    # default (None): per character for zh, as before the option existed
    assert CodeSwitcher(_lexicon(), word_ratio=1.0).switch(s)[0].tokens == char.sentence.tokens
    with pytest.raises(ValueError):
        CodeSwitcher(_lexicon(), segmentation="morpheme")
    # the translations of ConCNER and DLBri use the same split
    full = lexicon_translations([s], _lexicon(), "zh", "full", segmentation="word")[0]
    assert full.sentence.tokens == word.sentence.tokens
    ents = lexicon_translations([s], _lexicon(), "zh", "entities", segmentation="char")[0]
    assert ents.sentence.tokens == ["约", "翰", "史", "密", "斯", "lives", "in", "纽", "约", "."]


def _patch_data(monkeypatch, test_sentences):
    """The trainer reads the synthetic task, with ``test_sentences`` as the target test set, and the
    synthetic lexicon through the real code-switcher and translation code."""
    patch_training_data(monkeypatch, n_train=24, n_dev=6, target=test_sentences, real_codeswitcher=True)


def _word_segmented(sentences):
    """The synthetic zh sentences with each entity one word (as a word-segmented corpus has it)."""
    from mclner.data.iob2 import iob2_to_entities

    out = []
    for s in sentences:
        toks, tags, i = [], [], 0
        ents = {a: (b, t) for a, b, t in iob2_to_entities(s.tags)}
        while i < len(s.tokens):
            if i in ents:
                b, t = ents[i]
                toks.append("".join(s.tokens[i : b + 1]))
                tags.append(f"B-{t}")
                i = b + 1
            else:
                toks.append(s.tokens[i])
                tags.append("O")
                i += 1
        out.append(type(s)(toks, tags, s.lang))
    return out


@pytest.mark.parametrize("method,line", [("mclner", "code-switching (synthetic; target segmentation "),
                                         ("concner", "translations (synthetic, full; target segmentation "),
                                         ("dlbri", "oriented pairs (synthetic; target segmentation ")])
def test_each_method_prints_and_uses_the_inferred_segmentation(monkeypatch, capsys, method, line):
    from mclner.methods import get_method
    from mclner.training.rundata import load_data

    _patch_data(monkeypatch, _word_segmented(synthetic_zh(8, 2)))
    cfg = train_config(method=method, source="synthetic-en", target="synthetic-zh", lexicon="synthetic")
    m = get_method(method)
    data = load_data(cfg, m(m.Config(**cfg.method_options)))
    out = capsys.readouterr().out
    assert data.segmentation.mode == "word"
    assert line + "word (auto: " in out
    # the unlabelled target text when a stage reads it (ConCNER's kd, DLBri's students), else the test set
    text = "the target test set" if method == "mclner" else "the unlabelled target text"
    assert f"CJK tokens of {text} (synthetic-zh)" in out
    # translated entities are whole words: 约翰, never 约 翰
    views = []
    for e in data.examples:
        views += [e.cs] if hasattr(e, "cs") and e.cs is not None else []
        views += list(getattr(e, "variants", {}).values())
    toks = {t for v in views for t in v.tokens}
    assert toks & set(LEX.values()), sorted(toks)[:20]
    assert not {"约", "翰"} <= toks
    # per-character target text: characters again, and a given mode against it is flagged
    _patch_data(monkeypatch, synthetic_zh(8, 2))
    assert load_data(cfg, m(m.Config(**cfg.method_options))).segmentation.mode == "char"
    cfg.target_segmentation = "word"
    load_data(cfg, m(m.Config(**cfg.method_options)))
    assert line + "word (given; MISMATCH: 0.0% of" in capsys.readouterr().out


def test_option_in_cli_config_and_run_folder(tmp_path, monkeypatch, capsys, encoder_dir):
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args
    from mclner.training.config import TrainConfig
    from mclner.training.trainer import train

    parser = build_parser()
    cfg = config_from_args(parser.parse_args(["train", "--target-segmentation", "word"]))
    assert cfg.target_segmentation == "word"
    assert config_from_args(parser.parse_args(["train"])).target_segmentation == "auto"
    assert TrainConfig.from_dict(cfg.to_dict()).target_segmentation == "word"
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--target-segmentation", "morpheme"])
    assert "invalid choice: 'morpheme'" in capsys.readouterr().err

    _patch_data(monkeypatch, _word_segmented(synthetic_zh(8, 2)))
    out = tmp_path / "run"
    cfg = train_config(method="concner", kd=False, source="synthetic-en", target="synthetic-zh", lexicon="synthetic",
                       encoder=encoder_dir, output_dir=str(out), batch_size=8, effective_batch_size=8, max_steps=1,
                       progress=False)
    train(cfg)
    res = json.loads((out / "results.json").read_text())
    assert res["target_segmentation"]["mode"] == "word" and res["target_segmentation"]["requested"] == "auto"
    event = next(json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if '"event": "data"' in x)
    assert event["target_segmentation"] == res["target_segmentation"]
    # the option itself is kept with the run and its checkpoints (resume/evaluate read it from there)
    for where in (out, out / "best"):
        assert json.loads((where / "training_args.json").read_text())["target_segmentation"] == "auto"
    assert os.path.isfile(Path(out) / "best" / "model.safetensors")
    # figures that rebuild the run's code-switched sentences split them as the run did
    from mclner.data.segmentation import recorded_mode

    args = json.loads((out / "training_args.json").read_text())
    assert recorded_mode(args, out) == "word"
    (out / "results.json").unlink()  # a run still going: its log's data event
    assert recorded_mode(args, out) == "word"
    assert recorded_mode(args, tmp_path) is None and recorded_mode(args) is None
    assert recorded_mode({"target_segmentation": "char"}, out) == "char"
