"""The CC-CEDICT cache is plain data checked by a recorded hash: a planted pickle never runs, a
damaged cache is rebuilt (issue 10 items 2, 3); the MUSE language error names a real option."""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle

import pytest
from test_data_lexicon import CEDICT

from mclner.data import lexicon as L
from mclner.data import sources
from mclner.errors import UserError


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.fixture
def home(tmp_path, monkeypatch):
    """MCLNER_HOME with a fetched (tiny) cc-cedict."""
    monkeypatch.setenv("MCLNER_HOME", str(tmp_path / "h"))
    d = sources.source_dir("cc-cedict")
    member = d / sources.SOURCES["cc-cedict"].members[0]
    member.parent.mkdir(parents=True)
    member.write_bytes(gzip.compress(CEDICT.encode("utf-8")))
    (d / ".complete").write_text("test\n")
    # the stand-in's size and hash as the recorded ones (a cached source is checked against them at use)
    src = sources.SOURCES["cc-cedict"]
    recorded = ((member.stat().st_size, sources.sha256_file(member)),)
    monkeypatch.setitem(sources.SOURCES, "cc-cedict", dataclasses.replace(src, member_hashes=recorded))
    return d


def _cache_files(d):
    return sorted(p.name for p in d.iterdir() if p.is_file() and p.name != ".complete")


def test_cache_is_json_with_a_recorded_hash(home):
    lex = L.load_lexicon("cc-cedict")
    assert _cache_files(home) == [f"en-zh.v{L.PARSER_VERSION}.json", f"en-zh.v{L.PARSER_VERSION}.json.sha256"]
    cache = home / f"en-zh.v{L.PARSER_VERSION}.json"
    assert cache.read_bytes()[:1] == b"{"
    again = L.load_lexicon("cc-cedict")
    assert again._entries == lex._entries and again.translate("Beijing", entity=True) == ["北京"]


def test_planted_pickles_never_run(home, tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(Evil(str(marker)))
    # the pickle cache of older mclner versions, newer than the source (the old loader trusted it)
    legacy = home / f"en-zh.v{L.PARSER_VERSION}.pkl"
    legacy.write_bytes(payload)
    lex = L.load_lexicon("cc-cedict")
    assert not marker.exists() and not legacy.exists()
    assert lex.translate("new york", entity=True) == ["纽约"]
    # a pickle planted as the JSON cache, with a matching hash beside it: read as data, rebuilt
    import hashlib

    cache = home / f"en-zh.v{L.PARSER_VERSION}.json"
    cache.write_bytes(payload)
    (home / (cache.name + ".sha256")).write_text(hashlib.sha256(payload).hexdigest() + "\n")
    assert L.load_lexicon("cc-cedict").translate("new york", entity=True) == ["纽约"]
    assert not marker.exists() and cache.read_bytes()[:1] == b"{"


def test_damaged_or_stale_cache_is_rebuilt(home, monkeypatch):
    L.load_lexicon("cc-cedict")
    cache = home / f"en-zh.v{L.PARSER_VERSION}.json"
    good = cache.read_bytes()
    # a changed entry (the hash no longer matches): not used, rebuilt
    cache.write_bytes(good.replace("纽约".encode(), "伦敦".encode()))
    assert L.load_lexicon("cc-cedict").translate("new york", entity=True) == ["纽约"]
    assert cache.read_bytes() == good
    # a new source file: the cache (recorded for the old one) is rebuilt from it
    member = home / sources.SOURCES["cc-cedict"].members[0]
    member.write_bytes(gzip.compress((CEDICT + "倫敦 伦敦 [Lun2 dun1] /London/\n").encode("utf-8")))
    os.utime(member, ns=(10**18, 10**18))
    src = sources.SOURCES["cc-cedict"]  # the new file is the fetched one: its size and hash recorded
    recorded = ((member.stat().st_size, sources.sha256_file(member)),)
    monkeypatch.setitem(sources.SOURCES, "cc-cedict", dataclasses.replace(src, member_hashes=recorded))
    assert L.load_lexicon("cc-cedict").translate("London", entity=True) == ["伦敦"]


def test_muse_language_error_names_a_real_option(tmp_path):
    from mclner.cli import build_parser

    f = tmp_path / "dict.txt"
    f.write_text("house Haus\n", encoding="utf-8")
    with pytest.raises(UserError) as exc:
        L.load_lexicon(str(f))
    msg = str(exc.value)
    assert "--lexicon-lang" not in msg and "--target-lang" in msg
    assert "--target-lang" in build_parser()._subparsers._group_actions[0].choices["train"].format_help()
