"""The embedded sources: registry bookkeeping (offline) and the real downloads (network)."""

import zipfile

import pytest

from mclner.cli import main
from mclner.data import sources
from mclner.data.grid import iob2_to_entities
from mclner.data.readers import load_sentences
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
def test_real_sources_sizes(capsys):
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
    with pytest.warns(UserWarning, match="repaired 17"):
        test = load_sentences("msra-zh", "test")
    assert len(test) == 4631 and sum(len(s) for s in test) == 172601
    assert all(s.lang == "zh" for s in test[:10])
    with pytest.warns(UserWarning):
        assert len(load_sentences("msra-zh", "train")) == 55289 - 4631
    with pytest.raises(UserError, match="no dev split"):
        load_sentences("msra-zh", "dev")
