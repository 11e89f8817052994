import pytest
import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from mclner.data.collate import (
    IGNORE,
    SentenceCollator,
    batch_iob2,
    pool_words,
    rejoin_tags,
    window_sentences,
    word_pieces,
)
from mclner.data.labels import LabelMap
from mclner.data.readers import Sentence
from mclner.methods.mclner.grid import NNW, GridLabels, thw

LM = LabelMap(["LOC", "PER"])


def grid_collator(tok, lm, max_length=512):
    """The collator with a two-dimensional label encoder (mCL-NER's relation grid)."""
    return SentenceCollator(tok, max_length, labels={"grid_labels": GridLabels(lm)})


@pytest.fixture(scope="module")
def tok():
    """A tiny WordPiece tokenizer built in memory (no download): 'washington' is 2 pieces."""
    vocab = {t: i for i, t in enumerate(
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "john", "lives", "in", "new", "york", "wash", "##ington", "."])}
    t = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    t.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=t, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]")


def test_word_pieces(tok):
    assert word_pieces(tok, ["washington", "john", "\u200b"]) == [[9, 10], [4], [1]]


def test_collator_shapes_and_masks(tok):
    c = grid_collator(tok, LM)
    batch = [
        Sentence(["john", "lives", "in", "new", "york"], ["B-PER", "O", "O", "B-LOC", "I-LOC"]),
        Sentence(["washington", "."], None),
    ]
    out = c(batch)
    assert out["input_ids"].shape == (2, 7) and out["input_ids"].dtype == torch.long
    assert out["input_ids"][1].tolist() == [2, 9, 10, 11, 3, 0, 0]
    assert out["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 0, 0]
    assert out["word_index"][0].tolist() == [-1, 0, 1, 2, 3, 4, -1]
    assert out["word_index"][1].tolist() == [-1, 0, 0, 1, -1, -1, -1]
    assert out["word_mask"].dtype == torch.bool and out["word_mask"].tolist() == [[True] * 5, [True] * 2 + [False] * 3]
    g = out["grid_labels"]
    assert g.shape == (2, 5, 5)
    assert (g[1] == IGNORE).all()  # unlabelled
    assert g[0, 0, 0] == thw(LM, "PER") and g[0, 3, 4] == NNW and g[0, 4, 3] == thw(LM, "LOC")
    assert (g[0] >= 0).all()
    assert out["lengths"].tolist() == [5, 2] and out["orig_lengths"].tolist() == [5, 2]


def test_padding_ignored_in_grid(tok):
    out = grid_collator(tok, LM)([Sentence(["john"], ["B-PER"]), Sentence(["in", "new", "york"], ["O"] * 3)])
    g = out["grid_labels"]
    assert g[0, 0, 0] == thw(LM, "PER") and (g[0, 1:, :] == IGNORE).all() and (g[0, :, 1:] == IGNORE).all()
    assert (g[1] == 0).all()


def test_truncation_warns_and_counts(tok):
    c = grid_collator(tok, LM, max_length=6)  # 4 pieces fit
    s = Sentence(["john", "lives", "in", "washington", "."], ["B-PER", "O", "O", "B-LOC", "O"])
    with pytest.warns(UserWarning, match=r"1 sentence\(s\) .* \(1 so far\)"):
        out = c([s, Sentence(["john"], ["B-PER"])])
    assert out["lengths"].tolist() == [3, 1] and out["orig_lengths"].tolist() == [5, 1]
    with pytest.warns(UserWarning, match=r"\(2 so far\)"):
        c([s])
    assert batch_iob2([[(0, 0, "PER")]], [5]) == [["B-PER", "O", "O", "O", "O"]]


def test_windows_rejoin(tok):
    s = Sentence(["john", "lives", "in", "new", "york", "washington"], ["B-PER", "O", "O", "B-LOC", "I-LOC", "B-LOC"])
    wins, where = window_sentences([s, Sentence(["john"], None)], tok, max_length=6, overlap=0)
    assert [w.tokens for w in wins] == [["john", "lives", "in", "new"], ["york", "washington"], ["john"]]
    assert wins[1].tags == ["B-LOC", "B-LOC"]  # a window opening inside an entity starts it
    assert where == [(0, 0), (0, 4), (1, 0)]
    joined = rejoin_tags([w.tags or ["O"] for w in wins], where, 2)
    assert joined[0] == ["B-PER", "O", "O", "B-LOC", "B-LOC", "B-LOC"] and joined[1] == ["O"]
    with pytest.raises(ValueError):
        window_sentences([s], tok, max_length=2)


def test_overlapping_windows_and_merge(tok):
    words = ["john", "lives", "in", "new", "york", "washington", ".", "john", "lives", "in"]
    wins, where = window_sentences([Sentence(words, None)], tok, max_length=8, overlap=3)  # 6 pieces a window
    # washington is 2 pieces; each window starts where its predecessor's last (at most) 3 pieces begin
    assert [(w.tokens[0], len(w.tokens), st) for w, (_, st) in zip(wins, where)] == [
        ("john", 5, 0), ("in", 5, 2), ("washington", 5, 5)]
    assert all(len(tok(w.tokens, is_split_into_words=True)["input_ids"]) <= 8 for w in wins)
    # Windows 0..5 and 4..9; an entity 3..6 crosses the overlap: the first window sees it cut at its
    # right edge, the second from its left edge. Word 4 is farther from a cut in the first window,
    # word 5 in the second: the entity comes out whole.
    a = ["O", "O", "O", "B-LOC", "I-LOC", "I-LOC"]
    b = ["B-LOC", "I-LOC", "I-LOC", "O", "O", "O"]
    assert rejoin_tags([a, b], [(0, 0), (0, 4)], 1) == [["O"] * 3 + ["B-LOC"] + ["I-LOC"] * 3 + ["O"] * 3]
    # a word near a cut takes the other window's tag even when it disagrees; the result is valid IOB2
    b2 = ["O", "I-PER", "O", "O", "O", "O"]
    assert rejoin_tags([a, b2], [(0, 0), (0, 4)], 1) == [["O"] * 3 + ["B-LOC", "I-LOC", "B-PER"] + ["O"] * 4]
    with pytest.raises(ValueError, match="gap"):
        rejoin_tags([["O"], ["O"]], [(0, 0), (0, 2)], 1)


def test_collator_never_exceeds_the_encoder(tok, capsys):
    """A tokenizer that records the encoder's limit (model_max_length) caps max_length, with a note."""
    from transformers import BertConfig, BertModel, RobertaConfig, RobertaModel

    from mclner.data.collate import encoder_max_length, fit_tokenizer_to_encoder

    small = dict(vocab_size=16, hidden_size=8, num_hidden_layers=1, num_attention_heads=2, intermediate_size=8)
    bert = BertModel(BertConfig(max_position_embeddings=12, **small))
    roberta = RobertaModel(RobertaConfig(max_position_embeddings=12, pad_token_id=1, **small))
    assert encoder_max_length(bert) == 12 and encoder_max_length(roberta) == 10  # positions from padding_idx + 1
    ids = torch.full((1, 10), 5)
    roberta(input_ids=ids)  # the derived limit is real: 10 pieces run, 11 do not
    with pytest.raises((IndexError, RuntimeError)):
        roberta(input_ids=torch.full((1, 11), 5))
    import copy

    t = copy.deepcopy(tok)
    fit_tokenizer_to_encoder(t, roberta)
    assert t.model_max_length == 10
    c = grid_collator(t, LM, max_length=512)
    assert c.max_length == 10 and "more than the encoder takes" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="cut to the words that fit"):
        out = c([Sentence(["john", "lives", "in", "washington"] * 5, None), Sentence(["john." * 5], None)])
    assert out["input_ids"].shape[1] == 10 and out["lengths"].tolist() == [7, 1]
    assert out["attention_mask"][1].sum() == 10  # a 10-piece word alone keeps its first 8 pieces
    roberta(input_ids=out["input_ids"], attention_mask=out["attention_mask"])


def test_pool_words():
    states = torch.arange(12, dtype=torch.float32).view(1, 6, 2)
    widx = torch.tensor([[-1, 0, 0, 1, -1, -1]])
    out = pool_words(states, widx, 3)
    assert out.tolist() == [[[3.0, 4.0], [6.0, 7.0], [0.0, 0.0]]]


def test_lone_metaspace_dropped_for_character_languages():
    from tokenizers import models as m
    from tokenizers import pre_tokenizers as pt

    vocab = [("<unk>", 0.0), ("▁", -2.0), ("北", -3.0), ("京", -3.0), ("▁hello", -1.0), ("ab", -3.0)]
    t = Tokenizer(m.Unigram(vocab, unk_id=0))
    t.pre_tokenizer = pt.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    tok = PreTrainedTokenizerFast(tokenizer_object=t, unk_token="<unk>")
    assert tok(["ab"], add_special_tokens=False)["input_ids"] == [[1, 5]]
    # Han words lose the bare "▁" whatever the sentence's language (predict without --lang) ...
    assert word_pieces(tok, ["北", "京", "hello", "ab"]) == [[2], [3], [4], [1, 5]]
    assert word_pieces(tok, ["北", "京", "hello", "ab"], lang="en") == [[2], [3], [4], [1, 5]]
    # ... and in a zh/ja sentence every word does
    assert word_pieces(tok, ["北", "京", "hello", "ab"], lang="zh") == [[2], [3], [4], [5]]


def test_alignment_padding():
    from mclner.data.codeswitch import CodeSwitcher
    from mclner.data.collate import pad_alignments, pad_spans
    from mclner.data.lexicon import Candidate, Lexicon

    lex = Lexicon({"new york": [Candidate("纽约", True, (0,))]}, "zh")
    src = [Sentence(["in", "New", "York"], ["O", "B-LOC", "I-LOC"]), Sentence(["in"], ["O"])]
    res = CodeSwitcher(lex, word_ratio=0.0).switch_all(src)
    assert [r.sentence.tokens for r in res] == [["in", "纽", "约"], ["in"]]
    al = pad_alignments([r.alignment for r in res], 3, [3, 1])
    assert al.tolist() == [[0, 1, 2], [0, -1, -1]]
    assert pad_alignments([res[0].alignment], 3, [2]).tolist() == [[0, 1, -1]]  # counterpart cut
    sp = pad_spans([r.spans for r in res], 3, [3, 1])
    assert sp[0].tolist() == [[0, 0], [1, 1], [2, 2]] and sp[1, 1].tolist() == [-1, -1]
