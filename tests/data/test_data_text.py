"""Raw-text tokenisation with character offsets, and word entities as pipeline-style dicts."""

from __future__ import annotations

import random

import pytest

from mclner.data.text import entity_dicts, split_lines, split_words, tokenize_line, words_to_text


def _check_offsets(line, tw):
    """Offsets index the line as given, increase, never overlap, and cover every non-space character."""
    assert tw.text == line and len(tw.words) == len(tw.spans)
    prev = 0
    covered = set()
    for w, (s, e) in zip(tw.words, tw.spans):
        assert line[s:e] == w and s >= prev and e > s
        prev = e
        covered.update(range(s, e))
    rest = "".join(ch for i, ch in enumerate(line) if i not in covered)
    assert all(ch.isspace() or ch in "\ufeff\u200b\u200c\u200d\u2060" for ch in rest), repr(rest)


@pytest.mark.parametrize(
    "line, words",
    [
        ("United Nations.", ["United", "Nations", "."]),
        ("EU rejects German call, says (AP).", ["EU", "rejects", "German", "call", ",", "says", "(", "AP", ")", "."]),
        ("Germany's U.S. envoy", ["Germany", "'s", "U.S.", "envoy"]),
        ("O'Neill, a Japan-based firm, paid 1,000.50 at 12:30...", ["O'Neill", ",", "a", "Japan-based", "firm", ",",
                                                                  "paid", "1,000.50", "at", "12:30", "..."]),
        ('"Quoted" -- end!?', ['"', "Quoted", '"', "--", "end", "!", "?"]),
        ("naïve हिन्दी café", ["naïve", "हिन्दी", "café"]),
        ("東京都", ["東", "京", "都"]),
        ("東 京 都", ["東", "京", "都"]),
        ("我在北京大学读书。", ["我", "在", "北", "京", "大", "学", "读", "书", "。"]),
        ("iPhone手机在Apple店", ["iPhone", "手", "机", "在", "Apple", "店"]),
        ("ソニー(Sony)は東京", ["ソ", "ニ", "ー", "(", "Sony", ")", "は", "東", "京"]),
        ("\ufeffBOM first", ["BOM", "first"]),
        # ZWNJ inside a Persian word joins it; a zero-width space separates
        ("\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645 x\u200by \u200c!",
         ["\u0645\u06cc\u200c\u062e\u0648\u0627\u0647\u0645", "x", "y", "!"]),
        ("  two   spaces\tand\t\ttabs  ", ["two", "spaces", "and", "tabs"]),
        ("", []),
        ("   \t ", []),
    ],
)
def test_tokenize_line(line, words):
    tw = tokenize_line(line)
    assert tw.words == words
    assert split_words(line) == words
    _check_offsets(line, tw)


def test_offsets_after_bom_and_tabs():
    tw = tokenize_line("\ufeffJohn\t\tlives in  London.")
    assert tw.words == ["John", "lives", "in", "London", "."]
    assert tw.spans == [(1, 5), (7, 12), (13, 15), (17, 23), (23, 24)]


def test_random_lines_keep_every_character():
    """Fresh random mixtures of scripts, punctuation and separators: offsets are always exact."""
    alphabet = list("abcXYZ019.,;:'-/()\"!?&%$#") + list("東京都北大学") + ["ü", "é", "\u0301", "ा"]
    alphabet += [" ", "\t", "  ", "\u200c", "\u200b"]
    rng = random.Random(1234)
    for _ in range(300):
        line = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        if rng.random() < 0.2:
            line = "\ufeff" + line
        _check_offsets(line, tokenize_line(line))


def test_split_lines_drops_bom_and_blank_lines():
    text = "\ufeffJohn met Mary .\n\n   \n\t\n東京都\r\nlast"
    assert split_lines(text) == ["John met Mary .", "東京都", "last"]
    assert split_lines("") == []


def test_entity_dicts_english_punctuation():
    line = "He joined the United Nations. Then Paris."
    tw = tokenize_line(line)
    i_un, i_paris = tw.words.index("United"), tw.words.index("Paris")
    ents = entity_dicts(line, tw.spans, [(i_paris, i_paris, "LOC", 0.75), (i_un, i_un + 1, "ORG", 0.9)])
    # sorted by position; the period is not part of the entity
    assert ents[0] == {"entity_group": "ORG", "score": 0.9, "word": "United Nations", "start": 14, "end": 28,
                       "word_start": i_un, "word_end": i_un + 1}
    assert ents[1]["word"] == "Paris" and line[ents[1]["start"] : ents[1]["end"]] == "Paris"
    assert isinstance(ents[1]["score"], float) and ents[1]["score"] == 0.75


def test_entity_dicts_cjk_surface_as_written():
    for line, surface in [("我住在東京都。", "東京都"), ("我住在 東 京 都 。", "東 京 都")]:
        tw = tokenize_line(line)
        a = tw.words.index("東")
        (ent,) = entity_dicts(line, tw.spans, [(a, a + 2, "LOC", 0.5)])
        assert ent["word"] == surface  # exactly the input's characters, nothing inserted or removed
        assert line[ent["start"] : ent["end"]] == surface


def test_entity_dicts_mixed_bom_tabs_and_no_score():
    line = "\ufeffApple\t在\t北京"
    tw = tokenize_line(line)
    assert tw.words == ["Apple", "在", "北", "京"]
    ents = entity_dicts(line, tw.spans, [(0, 0, "ORG"), (2, 3, "LOC", None)])
    assert [(e["word"], e["start"], e["end"], e["score"]) for e in ents] == [("Apple", 1, 6, None),
                                                                            ("北京", 9, 11, None)]


def test_entity_dicts_bad_spans():
    tw = tokenize_line("a b c")
    with pytest.raises(ValueError, match=r"outside the 3 word"):
        entity_dicts(tw.text, tw.spans, [(2, 3, "PER", 1.0)])
    with pytest.raises(ValueError, match=r"outside"):
        entity_dicts(tw.text, tw.spans, [(2, 1, "PER", 1.0)])
    with pytest.raises(ValueError, match=r"start_word, end_word, type"):
        entity_dicts(tw.text, tw.spans, [(0, 1)])
    assert entity_dicts(tw.text, tw.spans, []) == []


def test_words_to_text_joins_cjk_without_spaces():
    tw = words_to_text(["John", "visited", "伦", "敦", "and", "東", "京", "."])
    assert tw.text == "John visited 伦敦 and 東京 ."
    assert [tw.text[s:e] for s, e in tw.spans] == tw.words
    (ent,) = entity_dicts(tw.text, tw.spans, [(2, 3, "LOC", 0.3)])
    assert ent["word"] == "伦敦"
    assert words_to_text([]).text == ""
    with pytest.raises(ValueError, match="word 1 is empty"):
        words_to_text(["a", ""])


def test_docs_usage_example():
    """The example of docs/USAGE.md, with the values it shows."""
    tw = tokenize_line("我住在東京都。He joined the United Nations.")
    assert tw.words[:6] == ["我", "住", "在", "東", "京", "都"] and tw.spans[:3] == [(0, 1), (1, 2), (2, 3)]
    assert entity_dicts(tw.text, tw.spans, [(3, 5, "LOC", 0.91), (10, 11, "ORG", 0.88)]) == [
        {"entity_group": "LOC", "score": 0.91, "word": "東京都", "start": 3, "end": 6, "word_start": 3, "word_end": 5},
        {"entity_group": "ORG", "score": 0.88, "word": "United Nations", "start": 21, "end": 35, "word_start": 10,
         "word_end": 11}]
