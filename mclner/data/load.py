"""The one entry point of the data sets: :func:`load_sentences` resolves a name or a path (embedded
sources, Hugging Face sets, local files and folders) and a split to its sentences; the embedded
corpora are parsed once per process."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from mclner.data.conll import read_conll
from mclner.data.sentence import Sentence
from mclner.errors import UserError

_SPLIT_ALIASES = {
    "train": ("train",),
    "dev": ("dev", "valid", "validation", "testa"),
    "test": ("test", "testb"),
}


def _canonical_split(split: str) -> str:
    for canon, names in _SPLIT_ALIASES.items():
        if split in names:
            return canon
    raise UserError(f"unknown split {split!r}; expected train, dev (valid/validation) or test")


# The files come from mclner.data.sources, which only fetches and locates them: it imports no reader.
_PARSED: Dict[tuple, list] = {}  # (file, read options) -> sentences: MSRA is 2.4M lines, parse it once
_NOTED: set = set()  # repair notes already printed in this process


def _note_repairs(path: Path, repairs: int, scheme: str) -> None:
    """One line per embedded file and process (not a Python warning with its source line): the repairs
    of an embedded corpus are known and nothing the user can change. Logged on the "mclner" logger, which
    prints bare messages to stderr when logging is not configured."""
    import logging

    key = (str(path), repairs)
    if key in _NOTED:
        return
    _NOTED.add(key)
    logging.getLogger("mclner.data").warning(
        "note: %s: repaired %d invalid %s transition(s) (an I- tag opening a sentence starts the entity)",
        path, repairs, scheme.upper())


def _read_cached(path: Path, **kw) -> list:
    import warnings

    report = kw.pop("report", None)
    key = (str(path), path.stat().st_mtime_ns, tuple(sorted(kw.items())))
    if key not in _PARSED:
        rep: list = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported below, once per process
            _PARSED[key] = (read_conll(path, report=rep, **kw), rep[0])
    sents, rep0 = _PARSED[key]
    if report is not None:
        report.append(rep0)
    if rep0.repairs:
        _note_repairs(path, rep0.repairs, rep0.scheme)
    # Fresh Sentence objects: callers may edit theirs without touching the cache.
    return [Sentence(list(x.tokens), None if x.tags is None else list(x.tags), x.lang) for x in sents]


def load_dataset(name: str, split: str, **kw) -> list:
    """Sentences of an embedded data set; ``split`` is ``train``, ``dev`` or ``test``."""

    from mclner.data.sources import MSRA_TEST_SENTENCES, get_source, source_file

    src = get_source(name)
    if src.kind != "dataset":
        raise UserError(f"{name!r} is a {src.kind}, not a data set")
    if name == "conll2003-en":
        member = {"train": src.members[0], "dev": src.members[1], "test": src.members[2]}[split]
        return _read_cached(source_file(name, member), lang="en", **kw)
    if name == "msra-zh":
        if split == "dev":
            raise UserError("msra-zh has no dev split (train and test only); select models on the source dev set")
        # The file splits 17 sentences inside a name (an I- tag opens the next sentence): repaired by
        # default (the entity starts there), and the count is noted once per process.
        kw.setdefault("lenient", True)
        sents = _read_cached(source_file(name), lang="zh", **kw)
        cut = len(sents) - MSRA_TEST_SENTENCES
        return sents[:cut] if split == "train" else sents[cut:]
    raise AssertionError(name)  # pragma: no cover


def _embedded_name(spec: str) -> Optional[Tuple[str, str]]:
    """``(name, split)`` when spec is an embedded data set name, optionally ``name:split``."""
    from mclner.data.sources import DATASETS

    name, _, split = spec.partition(":")
    if name not in DATASETS:
        return None
    if split and not any(split in names for names in _SPLIT_ALIASES.values()):
        return None
    return name, split or "train"


def _local(path: Path, split: str, lang: str, **kw) -> List[Sentence]:
    if path.is_dir():
        canon = _canonical_split(split)
        for name in _SPLIT_ALIASES[canon]:
            for ext in (".txt", ".conll", ".tsv", ".bio", ".iob", ""):
                cand = path / f"{name}{ext}"
                if cand.is_file():
                    return read_conll(cand, lang=lang, **kw)
        raise UserError(f"{path}: no {canon} file (looked for {', '.join(_SPLIT_ALIASES[canon])} .txt/.conll/...)")
    return read_conll(path, lang=lang, **kw)


def load_sentences(spec: str, split: str = "train", lang: Optional[str] = None, **kw) -> List[Sentence]:
    """Sentences of a data set given by name or path.

    ``spec`` is an embedded source (``conll2003-en``, ``msra-zh``, or ``msra-zh:test`` naming the
    split; fetched on first use), a Hugging Face set (``conll2003``, ``conll2002:es``, ``xtreme:de`` =
    PAN-X.de, ``wikiann:de``; needs the hub or a local ``datasets`` cache), or a local file or folder
    (a folder holds train/dev/test files). ``read_conll`` accepts the embedded names too.
    ``split`` is ``train``, ``dev`` or ``test``; extra keywords go to :func:`read_conll`.
    """
    from mclner.data import sources

    canon = _canonical_split(split)
    if spec in sources.DATASETS:
        return load_dataset(spec, canon, **kw)
    embedded = _embedded_name(spec)
    if embedded and not Path(spec).exists():  # "msra-zh:test" names the split itself
        return load_dataset(embedded[0], _canonical_split(embedded[1]), **kw)
    path = Path(spec).expanduser()
    if path.exists():
        return _local(path, canon, lang or "en", **kw)
    name, _, sub = spec.partition(":")
    from mclner.data.hf import HF_SETS, load_hf

    if name in HF_SETS:
        if sub.startswith("PAN-X."):
            sub = sub[len("PAN-X.") :]
        return load_hf(name, sub or lang, canon)
    known = ", ".join(list(sources.DATASETS) + list(HF_SETS))
    raise UserError(f"{spec!r} is neither a file/folder nor a known data set ({known})")
