import os
import warnings

import pytest

from mclner.data.readers import ReadReport, Sentence, load_sentences, read_conll, read_text, write_conll
from mclner.errors import DataFormatError, UserError


def write(tmp_path, text, name="f.txt", raw=None):
    p = tmp_path / name
    if raw is not None:
        p.write_bytes(raw)
    else:
        p.write_text(text, encoding="utf-8")
    return p


CONLL = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""


def test_conll_basic(tmp_path):
    p = write(tmp_path, CONLL)
    rep = []
    sents = read_conll(p, report=rep)
    assert sents == [
        Sentence(["EU", "rejects", "German", "call"], ["B-ORG", "O", "B-MISC", "O"]),
        Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    ]
    assert rep[0].scheme == "iob2" and rep[0].sentences == 2 and rep[0].tokens == 6
    # other columns, unlabelled reading
    assert read_conll(p, token_col=1, tag_col=None)[1] == Sentence(["NNP", "NNP"], None)


def test_schemes_to_iob2(tmp_path):
    iob1 = "A I-PER\nB I-PER\nC B-PER\nD O\nE I-LOC\n"
    assert read_conll(write(tmp_path, iob1))[0].tags == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    bioes = "A B-PER\nB E-PER\nC S-LOC\nD O\nE B-ORG\nF I-ORG\nG E-ORG\n"
    rep = []
    assert read_conll(write(tmp_path, bioes), report=rep)[0].tags == [
        "B-PER", "I-PER", "B-LOC", "O", "B-ORG", "I-ORG", "I-ORG"]
    assert rep[0].scheme == "bioes"
    bmes = "中\tB-LOC\n国\tM-LOC\n人\tE-LOC\n的\tO\n李\tS-PER\n"
    assert read_conll(write(tmp_path, bmes), lang="zh")[0].tags == ["B-LOC", "I-LOC", "I-LOC", "O", "B-PER"]
    # tab-separated tokens may contain spaces (and the ideographic space)
    assert read_conll(write(tmp_path, "New York\tB-LOC\n\u3000\tO\n"))[0].tokens == ["New York", "\u3000"]


def test_wrong_column_count(tmp_path):
    p = write(tmp_path, "a NN O\nb NN O\n\nc O\n")
    with pytest.raises(DataFormatError, match=rf"^{p}:4: 2 column\(s\), expected 3 as on line 1"):
        read_conll(p)
    with pytest.raises(DataFormatError, match=rf"^{p}:1: 3 column\(s\), but the tag column is 5"):
        read_conll(p, tag_col=5)


def test_unknown_tag(tmp_path):
    p = write(tmp_path, "a O\nb B-PER\n\nc X-PER\n")
    with pytest.raises(DataFormatError, match=rf"^{p}:4: unknown tag 'X-PER'"):
        read_conll(p)
    p = write(tmp_path, "a O\nb B-PER\n\nc B-DATE\n")
    with pytest.raises(DataFormatError, match=rf"^{p}:4: unknown entity type 'DATE'"):
        read_conll(p, types=["PER", "LOC"])
    p = write(tmp_path, "a B-PER\nb M-PER\n")
    with pytest.raises(DataFormatError, match=rf"^{p}:2: unknown tag 'M-PER' for the IOB2 scheme"):
        read_conll(p, scheme="iob2")


def test_invalid_transition_and_lenient(tmp_path):
    text = "a B-PER\nb O\nc I-PER\nd I-LOC\n\ne B-ORG\nf I-ORG\n"
    p = write(tmp_path, text)
    with pytest.raises(DataFormatError, match=rf"^{p}:3: invalid IOB2 transition: I-PER after O"):
        read_conll(p)
    rep = []
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        sents = read_conll(p, lenient=True, report=rep)
    assert rep[0].repairs == 2 and "repaired 2" in str(w[0].message)
    assert sents[0].tags == ["B-PER", "O", "B-PER", "B-LOC"]
    bioes = "a B-PER\nb O\nc S-LOC\nd E-LOC\n"
    p = write(tmp_path, bioes)
    with pytest.raises(DataFormatError, match=rf"^{p}:1: invalid BIOES transition: B-PER followed by O"):
        read_conll(p)
    rep = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_conll(p, lenient=True, report=rep)[0].tags == ["B-PER", "O", "B-LOC", "B-LOC"]
    assert rep[0].repairs == 2


def test_empty_and_encoding(tmp_path):
    for text in ("", "\n\n", "-DOCSTART- O\n\n"):
        p = write(tmp_path, text)
        with pytest.raises(DataFormatError, match=rf"^{p}:1: empty file"):
            read_conll(p)
    p = write(tmp_path, None, raw="a O\n\nb\xe9 O\n".encode("latin-1"))
    with pytest.raises(DataFormatError, match=rf"^{p}:3: cannot decode byte 0xe9 at column 2 as utf-8"):
        read_conll(p)
    assert read_conll(p, encoding="latin-1")[1].tokens == ["b\xe9"]
    with pytest.raises(UserError, match="no such file"):
        read_conll(tmp_path / "missing.txt")


def test_read_text_and_write(tmp_path):
    p = write(tmp_path, "Hello  world\n\n中国 人\n")
    assert read_text(p)[0] == Sentence(["Hello", "world"], None)
    assert read_text(p, lang="zh")[1].tokens == ["中", "国", "人"]
    out = tmp_path / "out.txt"
    s = [Sentence(["a", "b"], ["B-PER", "I-PER"]), Sentence(["c"], None)]
    write_conll(s, out)
    assert read_conll(out) == [s[0], Sentence(["c"], ["O"])]


def test_load_sentences_local(tmp_path):
    d = tmp_path / "corpus"
    d.mkdir()
    write(d, "a B-PER\n", "train.txt")
    write(d, "b B-LOC\n", "valid.txt")
    assert load_sentences(str(d), "train")[0].tags == ["B-PER"]
    assert load_sentences(str(d), "dev", lang="de")[0] == Sentence(["b"], ["B-LOC"], "de")
    with pytest.raises(UserError, match="no test file"):
        load_sentences(str(d), "test")
    with pytest.raises(UserError, match="unknown split"):
        load_sentences(str(d), "foo")
    with pytest.raises(UserError, match="neither a file"):
        load_sentences("no-such-set")
    with pytest.raises(UserError, match="needs a language"):
        load_sentences("wikiann")


def test_hf_unreachable_is_user_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", os.devnull + "-none")
    with pytest.raises(UserError, match="cannot load the Hugging Face dataset"):
        load_sentences("wikiann:de", "test")


def test_report_type():
    assert ReadReport("p", "iob2", 1, 2).repairs == 0


def test_hf_mapping_with_fake_hub(monkeypatch):
    """Names -> hub repositories/configs, ClassLabel ids -> tags, and the parquet-export retry for
    sets that still have a loading script (datasets >= 4 refuses scripts)."""
    import datasets

    calls = []

    def fake_load(path, config=None, split=None, revision=None):
        calls.append((path, config, split, revision))
        if path == "eriktks/conll2003" and revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found conll2003.py")
        feats = datasets.Features({
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=["O", "B-PER", "I-PER", "B-LOC", "I-LOC"])),
        })
        return datasets.Dataset.from_dict({"tokens": [["Angela", "Merkel", "in", "Berlin"]],
                                           "ner_tags": [[1, 2, 0, 4]]}, features=feats)

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    s = load_sentences("xtreme:PAN-X.de", "dev")
    assert calls[-1] == ("google/xtreme", "PAN-X.de", "validation", None)
    # I-LOC after O is repaired to B-LOC (hub copies are IOB2 but not always strictly)
    assert s == [Sentence(["Angela", "Merkel", "in", "Berlin"], ["B-PER", "I-PER", "O", "B-LOC"], "de")]
    assert load_sentences("wikiann", "test", lang="nl")[0].lang == "nl"
    assert calls[-1] == ("unimelb-nlp/wikiann", "nl", "test", None)
    load_sentences("conll2003", "train")
    assert calls[-2:] == [("eriktks/conll2003", None, "train", None),
                          ("eriktks/conll2003", None, "train", "refs/convert/parquet")]
