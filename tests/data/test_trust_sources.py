"""The cache under MCLNER_HOME is checked when it is used, not only at download (issue 25 item 3):
extracted sources against their recorded size (each use) and SHA-256 (once per process), converted
encoders against the checksum list written at conversion, and a cache others can write is warned
about."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import pytest

from mclner.data import sources
from mclner.errors import UserError

CONLL = "EU B-ORG\nrejects O\nGerman B-MISC\ncall O\n\nPeter B-PER\nBlackburn I-PER\n\n"


def _plant_source(home: Path, monkeypatch) -> Path:
    """A fetched conll2003-en under ``home`` whose recorded hashes are those of small stand-in files."""
    src = sources.SOURCES["conll2003-en"]
    d = home / "sources" / src.name
    hashes = []
    for m in src.members:
        (d / m).parent.mkdir(parents=True, exist_ok=True)
        (d / m).write_text(CONLL, encoding="utf-8")
        hashes.append((len(CONLL.encode()), hashlib.sha256(CONLL.encode()).hexdigest()))
    (d / ".complete").write_text("stand-in\n")
    monkeypatch.setitem(sources.SOURCES, src.name, dataclasses.replace(src, member_hashes=tuple(hashes)))
    monkeypatch.setenv("MCLNER_HOME", str(home))
    return d / src.members[1]  # the dev file


def test_a_changed_cached_source_is_refused(tmp_path, monkeypatch):
    from mclner.data.readers import load_sentences

    dev = _plant_source(tmp_path / "home", monkeypatch)
    assert len(load_sentences("conll2003-en", "dev")) == 2
    # another size: caught at once
    dev.write_text(CONLL + "x O\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"{dev}: .* bytes, but .* holds"):
        load_sentences("conll2003-en", "dev")
    # the same size, other labels (a new file version): the hash is checked again
    dev.write_text(CONLL.replace("B-PER", "B-LOC"), encoding="utf-8")
    with pytest.raises(UserError, match=f"{dev}: SHA-256 differs.*mclner data fetch conll2003-en --force"):
        load_sentences("conll2003-en", "dev")


def test_the_real_recorded_hashes_match_the_cache():
    """Where the real sources are cached, the recorded member hashes are theirs."""
    for src in sources.SOURCES.values():
        assert len(src.member_hashes) == len(src.members)
        if not sources.is_fetched(src.name):
            continue
        for m in src.members:
            sources.verify_member(src, m, sources.source_dir(src.name) / m)


@pytest.fixture()
def converted(tmp_path, monkeypatch):
    """``tiny-multilingual`` converted under a fresh MCLNER_HOME from a synthetic E5 file."""
    from test_encoders import write_synthetic

    from mclner import encoders

    src = write_synthetic(tmp_path / "e5.bin")
    monkeypatch.setenv("MCLNER_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(sources, "source_file", lambda name, member=None: src)
    encoders._VERIFIED.clear()
    d = encoders.encoder_path("tiny-multilingual")
    assert (d / "checksums.json").is_file()
    return d


def test_a_changed_converted_encoder_is_refused(converted):
    from mclner import encoders
    from mclner.encoders import load_encoder

    tok, _ = load_encoder("tiny-multilingual")
    f = converted / "tokenizer.json"
    data = f.read_bytes()
    i = data.index(b"hello")
    f.write_bytes(data[:i] + b"HELLO" + data[i + 5:])  # same size, other tokenisation
    encoders._VERIFIED.clear()  # a new process
    with pytest.raises(UserError, match=f"{f}: SHA-256 differs.*delete {converted}"):
        load_encoder("tiny-multilingual")
    f.write_bytes(data + b" ")
    with pytest.raises(UserError, match=f"{f}: .* bytes"):
        load_encoder("tiny-multilingual")


def test_an_unlisted_file_in_a_converted_encoder_is_refused(converted):
    from mclner.encoders import load_encoder

    (converted / "special_tokens_map.json").write_text('{"cls_token": "hello"}')
    with pytest.raises(UserError, match="special_tokens_map.json: not listed"):
        load_encoder("tiny-multilingual")


def test_an_old_conversion_without_checksums_is_converted_again(converted):
    from mclner.encoders import encoder_path

    (converted / "checksums.json").unlink()
    (converted / "planted.txt").write_text("x")
    assert encoder_path("tiny-multilingual") == converted
    assert (converted / "checksums.json").is_file() and not (converted / "planted.txt").exists()


def test_a_cache_others_can_write_is_warned_about(tmp_path, monkeypatch, caplog):
    home = tmp_path / "shared-home"
    (home / "sources").mkdir(parents=True)
    os.chmod(home, 0o777)
    monkeypatch.setenv("MCLNER_HOME", str(home))
    sources._WARNED_HOMES.clear()
    with caplog.at_level(logging.WARNING, logger="mclner"):
        sources.source_dir("conll2003-en")
        sources.source_dir("msra-zh")
    warned = [r.getMessage() for r in caplog.records if "can be written" in r.getMessage()]
    assert len(warned) == 1 and str(home) in warned[0] and "every user" in warned[0], warned
    caplog.clear()
    os.chmod(home, 0o755)
    sources._WARNED_HOMES.clear()
    with caplog.at_level(logging.WARNING, logger="mclner"):
        sources.source_dir("conll2003-en")
    assert not [r for r in caplog.records if "can be written" in r.getMessage()]
