import gzip

import pytest

from mclner.data.codeswitch import CodeSwitcher
from mclner.data.lexicon import Candidate, Lexicon, load_lexicon, parse_cedict, parse_muse
from mclner.data.readers import Sentence
from mclner.errors import DataFormatError, UserError

CEDICT = """# CC-CEDICT test
#! version=1
北京 北京 [Bei3 jing1] /Beijing, capital of the People's Republic of China/
紐約 纽约 [Niu3 yue1] /New York/
約克 约克 [Yue1 ke4] /York/
新 新 [xin1] /new/newly/meso- (chemistry)/
新 新 [Xin1] /abbr. for Xinjiang/surname Xin/
蘋果 苹果 [ping2 guo3] /apple (CL:個|个[ge4])/
蘋果 苹果 [Ping2 guo3] /Apple (company)/
波麗士 波丽士 [bo1 li4 shi4] /police (loanword) (Tw)/
警察 警察 [jing3 cha2] /police; police officer/CL:個|个[ge4]/
吃 吃 [chi1] /to eat/to consume/
荷蘭 荷兰 [He2 lan2] /Holland/the Netherlands/
"""


def cedict_lex():
    return parse_cedict(CEDICT.split("\n"), "test")


def test_cedict_inversion():
    lex = cedict_lex()
    assert lex.target_lang == "zh"
    assert lex.translate("Beijing", entity=True) == ["北京"]  # "Beijing, capital of ..." -> "Beijing"
    assert lex.translate("new york", entity=True) == ["纽约"]
    assert lex.translate("Apple", entity=True) == ["苹果"]
    assert [c.proper for c in lex.candidates("apple")] == [False, True]
    assert lex.translate("police") == ["警察"]  # the (loanword) (Tw) gloss ranks below
    assert lex.translate("eat") == ["吃"]  # "to eat"
    assert lex.translate("Netherlands", entity=True) == ["荷兰"]
    assert lex.translate("Xin", entity=True) == ["新"]  # surname gloss
    assert lex.translate("Xinjiang") is None  # abbr. references are skipped
    assert lex.translate("unknown words") is None
    with pytest.raises(DataFormatError, match=r"^bad:2: not a CEDICT entry"):
        parse_cedict(["# c", "this is not cedict"], "bad")


def test_cedict_file_gz_detection(tmp_path):
    p = tmp_path / "cedict.txt.gz"
    with gzip.open(p, "wt", encoding="utf-8") as f:
        f.write(CEDICT)
    assert load_lexicon(str(p)).translate("york", entity=True) == ["约克"]


def test_muse(tmp_path):
    p = tmp_path / "en-de.txt"
    p.write_text("house haus\nhouse gebäude\nNew\tneu\n\n", encoding="utf-8")
    lex = load_lexicon(str(p))
    assert lex.target_lang == "de" and len(lex) == 2
    assert lex.translate("House") == ["haus"] and lex.translate("new") == ["neu"]
    bad = tmp_path / "x.txt"
    bad.write_text("a b c\n", encoding="utf-8")
    with pytest.raises(DataFormatError, match=rf"^{bad}:1: expected 'source target', got 3"):
        parse_muse(bad.read_text().split("\n"), "de", str(bad))
    with pytest.raises(UserError, match="give the target language"):
        load_lexicon(str(bad))
    with pytest.raises(UserError, match="neither a lexicon name"):
        load_lexicon(str(tmp_path / "nope.txt"))


def _b64(n):
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    s = ""
    while True:
        s = alphabet[n % 64] + s
        n //= 64
        if not n:
            return s


def test_dictd(tmp_path):
    entries = [
        ("00-database-info", "This is a test dictionary\n"),
        ("cat", "cat /kæt/\n1. Katze <f>\n2. Kater <m>, Mieze\n"),
        ("house", "house /haʊs/ <n>\nHaus <n>; Gebäude\n"),
        ("Germany", "Germany\nDeutschland <n, prop>\n"),
    ]
    body, index = b"", ""
    for head, text in entries:
        raw = text.encode()
        index += f"{head}\t{_b64(len(body))}\t{_b64(len(raw))}\n"
        body += raw
    (tmp_path / "freedict-eng-deu.index").write_text(index, encoding="utf-8")
    with gzip.open(tmp_path / "freedict-eng-deu.dict.dz", "wb") as f:
        f.write(body)
    lex = load_lexicon(str(tmp_path / "freedict-eng-deu.index"))
    assert lex.target_lang == "de"
    assert lex.translate("cat") == ["Katze"] and [c.target for c in lex.candidates("cat")] == ["Katze", "Kater"]
    assert lex.translate("house") == ["Haus"]
    assert lex.translate("Germany", entity=True) == ["Deutschland"]
    assert "00-database-info" not in lex
    with pytest.raises(UserError, match="apt-get install dict-freedict-eng-xyz"):
        load_lexicon("freedict:xyz")


def toy_lexicon(target="zh"):
    e = {
        "new york": [Candidate("纽约", True, (0,))],
        "new": [Candidate("新", False, (0,))],
        "york": [Candidate("约克", True, (0,))],
        "john": [Candidate("约翰", True, (0,))],
        "smith": [Candidate("史密斯", True, (0,))],
        "lives": [Candidate("住", False, (0,))],
        "in": [Candidate("在", False, (0,))],
        "red": [Candidate("rot", False, (0,))],
        "bank": [Candidate("Bank der", False, (0,))],
    }
    return Lexicon(e, target, "toy")


def test_codeswitch_projection_and_alignment():
    s = Sentence(["John", "Smith", "lives", "in", "New", "York", "."],
                 ["B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"])
    cs = CodeSwitcher(toy_lexicon(), word_ratio=0.0, seed=0)
    r = cs.switch_detailed(s)
    # John Smith: no phrase entry, word by word (约翰 史密斯 -> characters); New York: whole phrase 纽约
    assert r.sentence.tokens == ["约", "翰", "史", "密", "斯", "lives", "in", "纽", "约", "."]
    assert r.sentence.tags == ["B-PER", "I-PER", "I-PER", "I-PER", "I-PER", "O", "O", "B-LOC", "I-LOC", "O"]
    assert r.alignment == [0, 2, 5, 6, 7, 8, 9]
    assert r.spans[1] == (2, 4) and r.spans[4] == (7, 7) and r.spans[5] == (8, 8)
    assert r.sentence.lang == "zh"
    assert (r.entities, r.switched_phrase, r.switched_words) == (2, 1, 1)
    # every other word switched when word_ratio = 1
    out, align = CodeSwitcher(toy_lexicon(), word_ratio=1.0).switch(s)
    assert out.tokens[5:8] == ["住", "在", "纽"] and align[2:4] == [5, 6]
    assert "2/2 entities (100.0%" in cs.report()


def test_codeswitch_phrase_alignment_lengths_differ_and_untranslatable():
    lex = Lexicon({"united states of america": [Candidate("美国", True, (0,))]}, "zh")
    s = Sentence(["the", "United", "States", "of", "America", "and", "Narnia"],
                 ["O", "B-LOC", "I-LOC", "I-LOC", "I-LOC", "O", "B-LOC"])
    cs = CodeSwitcher(lex, word_ratio=0.5, seed=3)
    r = cs.switch_detailed(s)
    assert r.sentence.tokens == ["the", "美", "国", "and", "Narnia"]
    assert r.sentence.tags == ["O", "B-LOC", "I-LOC", "O", "B-LOC"]
    # first source word -> first target word, last -> last, the middle has no counterpart
    assert r.alignment == [0, 1, -1, -1, 2, 3, 4]
    assert cs.stats.missing == {"Narnia": 1} and "Narnia (1)" in cs.report()


def test_codeswitch_space_language_and_seed():
    lex = toy_lexicon("de")
    s = Sentence(["red", "bank", "in", "York"], ["O", "O", "O", "B-LOC"])
    r = CodeSwitcher(lex, word_ratio=1.0).switch_detailed(s)
    assert r.sentence.tokens == ["rot", "Bank", "der", "在", "约克"]  # not split into characters
    assert r.alignment == [0, 1, 3, 4] and r.spans[1] == (1, 2)
    runs = [CodeSwitcher(lex, word_ratio=0.5, seed=7).switch(s)[0].tokens for _ in range(2)]
    assert runs[0] == runs[1]
    with pytest.raises(ValueError):
        CodeSwitcher(lex).switch(Sentence(["a"], None))


@pytest.mark.network
def test_real_cedict_and_coverage():
    """The embedded CC-CEDICT (4 MB) inverted, and code-switching coverage on real CoNLL sentences."""
    from mclner.data.readers import load_sentences

    lex = load_lexicon("cc-cedict")
    assert len(lex) > 90000 and lex.target_lang == "zh"
    for en, zh in (("China", "中国"), ("New York", "纽约"), ("United States", "美国"), ("U.S.", "美国"),
                   ("Germany", "德国"), ("European Union", "欧盟"), ("Clinton", "克林顿"), ("police", "警察")):
        got = lex.translate(en, entity=en[0].isupper())
        assert got is not None and got[0] in (zh, "警方"), (en, got)
    cs = CodeSwitcher(lex, word_ratio=0.3, seed=0)
    results = cs.switch_all(load_sentences("conll2003-en", "train")[:1000])
    assert 0.4 < cs.stats.entity_coverage < 0.7
    for r in results:  # projected tags are valid IOB2 and the alignment points inside the sentence
        assert len(r.sentence.tags) == len(r.sentence.tokens)
        assert all(-1 <= a < len(r.sentence.tokens) for a in r.alignment)
