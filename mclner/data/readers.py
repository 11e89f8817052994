"""Readers: CoNLL-style column files, Hugging Face ``datasets`` sets and the embedded sources.

Every reader returns a list of :class:`Sentence` with IOB2 tags (or ``None`` tags for unlabelled
text). Malformed files raise :class:`mclner.errors.DataFormatError` whose message starts with
``path:line:``.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from mclner.errors import DataFormatError, UserError

SCHEMES = ("auto", "iob1", "iob2", "bioes", "bmes")
_TAG_RE = re.compile(r"^([BIESM])[-_](.+)$")


@dataclass
class Sentence:
    """One sentence: words, IOB2 tags (``None`` when unlabelled) and its language code."""

    tokens: List[str]
    tags: Optional[List[str]]
    lang: str = "en"

    def __len__(self) -> int:
        return len(self.tokens)


# ----------------------------------------------------------------------------------------- CoNLL files
def _read_lines(path: Path, encoding: str) -> List[str]:
    """The file's lines, decoded; a decoding error names the line where it happens."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise DataFormatError(
            f"{path}:{line}: cannot decode byte {data[exc.start]:#04x} at column {col} as {encoding} "
            f"(pass the file's encoding)"
        ) from None
    out = text.split("\n")
    if text.endswith("\n"):
        out.pop()
    if "\r" in text:
        out = [ln.rstrip("\r") for ln in out]
    if out and out[0].startswith("\ufeff"):
        out[0] = out[0][1:]
    return out


@functools.lru_cache(maxsize=4096)
def _split_tag(tag: str) -> Tuple[str, Optional[str]]:
    if tag == "O":
        return "O", None
    m = _TAG_RE.match(tag)
    if not m:
        return "?", None
    return m.group(1), m.group(2)


@dataclass
class _Block:
    tokens: List[str]
    tags: Optional[List[str]]
    lines: List[int]


def _blocks(path: Path, lines: Sequence[str], token_col: int, tag_col: Optional[int]) -> Iterator[_Block]:
    ncols: Optional[int] = None
    ncols_line = 0
    tokens: List[str] = []
    tags: List[str] = []
    linenos: List[int] = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            if tokens:
                yield _Block(tokens, tags if tag_col is not None else None, linenos)
                tokens, tags, linenos = [], [], []
            continue
        # Tab-separated files may hold spaces (or U+3000) inside a token: split on tabs only there.
        cols = line.split("\t") if "\t" in line else line.split()
        if cols[0].strip() == "-DOCSTART-":
            if tokens:
                yield _Block(tokens, tags if tag_col is not None else None, linenos)
                tokens, tags, linenos = [], [], []
            continue
        if ncols is None:
            ncols, ncols_line = len(cols), i
            for name, col in (("token", token_col), ("tag", tag_col)):
                if col is not None and not -ncols <= col < ncols:
                    raise DataFormatError(
                        f"{path}:{i}: {ncols} column(s), but the {name} column is {col} (count from 0)"
                    )
        elif len(cols) != ncols:
            raise DataFormatError(
                f"{path}:{i}: {len(cols)} column(s), expected {ncols} as on line {ncols_line}"
            )
        tokens.append(cols[token_col].strip(" "))
        if tag_col is not None:
            tags.append(cols[tag_col].strip())
        linenos.append(i)
    if tokens:
        yield _Block(tokens, tags if tag_col is not None else None, linenos)


def _detect_scheme(blocks: Sequence[_Block]) -> str:
    """BIOES/BMES when S-/E-/M- prefixes occur; IOB1 when entities start with I- and B- only ever
    separates two adjacent entities of one type; IOB2 otherwise (where an entity-initial I- is then an
    invalid transition)."""
    prefixes = set()
    i_starts = 0
    b_after_other = 0
    for b in blocks:
        prev_p, prev_t = "O", None
        for tag in b.tags or ():
            p, t = _split_tag(tag)
            prefixes.add(p)
            if p == "I" and (prev_p == "O" or prev_t != t):
                i_starts += 1
            if p == "B" and (prev_p == "O" or prev_t != t):
                b_after_other += 1
            prev_p, prev_t = p, t
    if "M" in prefixes:
        return "bmes"
    if prefixes & {"S", "E"}:
        return "bioes"
    if i_starts and not b_after_other:
        return "iob1"
    return "iob2"


def _to_iob2(path: Path, block: _Block, scheme: str, lenient: bool, types: Optional[set]) -> Tuple[List[str], int]:
    """IOB2 tags of one block and the number of repaired transitions."""
    allowed = {"iob1": "BI", "iob2": "BI", "bioes": "BIES", "bmes": "BMES"}[scheme]
    out: List[str] = []
    repairs = 0
    assert block.tags is not None
    parsed = []
    for tag, line in zip(block.tags, block.lines):
        p, t = _split_tag(tag)
        if p == "?" or (p != "O" and p not in allowed):
            raise DataFormatError(f"{path}:{line}: unknown tag {tag!r} for the {scheme.upper()} scheme")
        if types is not None and t is not None and t not in types:
            raise DataFormatError(f"{path}:{line}: unknown entity type {t!r} (expected one of {sorted(types)})")
        parsed.append((p, t))
    inside = {"I", "M", "E"}  # prefixes that continue an entity
    for k, (p, t) in enumerate(parsed):
        prev_p, prev_t = parsed[k - 1] if k else ("O", None)
        next_p, next_t = parsed[k + 1] if k + 1 < len(parsed) else ("O", None)
        open_before = prev_p in ("B", "I", "M") and prev_t == t if scheme in ("bioes", "bmes") else (
            prev_p in ("B", "I") and prev_t == t
        )
        problem = None
        if p == "O":
            out.append("O")
            continue
        if p in inside:
            if open_before:
                out.append(f"I-{t}")
            elif scheme == "iob1":
                out.append(f"B-{t}")
            else:
                problem = f"{p}-{t} after {'O' if prev_p == 'O' else f'{prev_p}-{prev_t}'}"
                out.append(f"B-{t}")  # the repair: the entity starts here
        else:  # B or S (IOB1 uses B- only between adjacent entities of one type; elsewhere it is harmless)
            out.append(f"B-{t}")
        if scheme in ("bioes", "bmes") and problem is None:
            # B/I/M must be followed by the same entity; E/S must not be.
            continues = next_p in inside and next_t == t
            if p in ("B", "I", "M") and not continues:
                problem = f"{p}-{t} followed by {'O' if next_p == 'O' else f'{next_p}-{next_t}'}"
        if problem is not None:
            if not lenient:
                raise DataFormatError(
                    f"{path}:{block.lines[k]}: invalid {scheme.upper()} transition: {problem} "
                    f"(use lenient=True / --lenient to repair)"
                )
            repairs += 1
    return out, repairs


@dataclass
class ReadReport:
    """What a reader did: the scheme it used and how many transitions it repaired."""

    path: str
    scheme: str
    sentences: int
    tokens: int
    repairs: int = 0


def read_conll(
    path: Union[str, os.PathLike],
    token_col: int = 0,
    tag_col: Optional[int] = -1,
    scheme: str = "auto",
    lenient: bool = False,
    lang: str = "en",
    encoding: str = "utf-8",
    types: Optional[Sequence[str]] = None,
    report: Optional[List[ReadReport]] = None,
    first_lines: Optional[List[int]] = None,
) -> List[Sentence]:
    """Read a CoNLL-style column file (blank lines between sentences, ``-DOCSTART-`` lines skipped).

    ``tag_col=None`` reads unlabelled text (tags ``None``). ``scheme`` is one of ``auto``, ``iob1``,
    ``iob2``, ``bioes``, ``bmes``; tags are converted to IOB2. Invalid transitions (e.g. ``I-X`` after
    ``O`` in IOB2) raise unless ``lenient``, which repairs them (the entity starts there) and records
    the count in ``report`` (a list that receives one :class:`ReadReport`). ``types`` restricts the
    entity types accepted. ``first_lines``, a list, receives each sentence's first line number (for
    messages that name a sentence of the file).
    """
    if not Path(path).exists() and _embedded_name(str(path)):
        # An embedded source name (optionally ``name:split``, default train) stands for its file.
        name, split = _embedded_name(str(path))
        kw = {"lenient": True} if lenient else {}
        return load_sentences(name, split, **kw)
    path = Path(path)
    scheme = scheme.lower()
    if scheme not in SCHEMES:
        raise UserError(f"unknown tagging scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    lines = _read_lines(path, encoding)
    blocks = list(_blocks(path, lines, token_col, tag_col))
    if not blocks:
        raise DataFormatError(f"{path}:1: empty file: no sentences")
    used = _detect_scheme(blocks) if scheme == "auto" and tag_col is not None else scheme
    used = "iob2" if used == "auto" else used
    type_set = set(types) if types is not None else None
    sentences = []
    repairs = 0
    for b in blocks:
        if first_lines is not None:
            first_lines.append(b.lines[0] if b.lines else 0)
        tags = None
        if b.tags is not None:
            tags, r = _to_iob2(path, b, used, lenient, type_set)
            repairs += r
        sentences.append(Sentence(b.tokens, tags, lang))
    if report is not None:
        report.append(ReadReport(str(path), used, len(sentences), sum(len(s) for s in sentences), repairs))
    if repairs:
        import warnings

        warnings.warn(f"{path}: repaired {repairs} invalid {used.upper()} transition(s)", stacklevel=2)
    return sentences


def read_text(path: Union[str, os.PathLike], lang: str = "en", encoding: str = "utf-8") -> List[Sentence]:
    """Unlabelled raw text, one sentence per line: split on whitespace, or into characters for
    scripts written without spaces (zh, ja)."""
    path = Path(path)
    lines = _read_lines(path, encoding)
    out = []
    for line in lines:
        if not line.strip():
            continue
        toks = [c for c in line if not c.isspace()] if lang in CHAR_LANGS else line.split()
        out.append(Sentence(toks, None, lang))
    if not out:
        raise DataFormatError(f"{path}:1: empty file: no sentences")
    return out


CHAR_LANGS = ("zh", "ja")
# Han and kana: scripts written without spaces, which the corpora (MSRA, code-switched text) tokenise
# one character per word.
CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def write_conll(sentences: Sequence[Sentence], path: Union[str, os.PathLike]) -> None:
    """Write ``token tag`` lines (tab-separated) with blank lines between sentences."""
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            tags = s.tags if s.tags is not None else ["O"] * len(s.tokens)
            for tok, tag in zip(s.tokens, tags):
                f.write(f"{tok}\t{tag}\n")
            f.write("\n")


# ------------------------------------------------------------------------------ Hugging Face datasets
# name -> (hub path, config template, default language); the config takes the language.
HF_SETS = {
    "conll2003": ("eriktks/conll2003", None, "en"),
    "conll2002": ("eriktks/conll2002", "{lang}", "es"),
    "xtreme": ("google/xtreme", "PAN-X.{lang}", None),
    "wikiann": ("unimelb-nlp/wikiann", "{lang}", None),
}
# Tag ids of these sets, for copies whose features lost the ClassLabel names.
_CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
HF_TAG_NAMES = {
    "conll2003": _CONLL_TAGS, "conll2002": _CONLL_TAGS, "xtreme": _CONLL_TAGS[:7], "wikiann": _CONLL_TAGS[:7],
}
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


def _load_hf(name: str, lang: Optional[str], split: str) -> List[Sentence]:
    hub, config_t, default_lang = HF_SETS[name]
    lang = lang or default_lang
    if config_t and lang is None:
        raise UserError(f"the dataset {name!r} needs a language: write {name}:<lang>, e.g. {name}:de")
    config = config_t.format(lang=lang) if config_t else None
    hf_split = {"train": "train", "dev": "validation", "test": "test"}[split]
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise UserError("reading Hugging Face datasets needs the `datasets` package") from None
    from mclner.data.hub import offline_unless_reachable

    offline = False
    try:
        with offline_unless_reachable() as offline:
            ds = _hf_load(datasets, hub, config, hf_split)
    except Exception as exc:  # the hub or the local datasets cache is unreachable / has no such set
        where = ("the hub cannot be reached and the local datasets cache has no copy" if offline else
                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise UserError(
            f"cannot load the Hugging Face dataset {hub}" + (f" ({config})" if config else "")
            + f" split {hf_split}: {where}. "
            "Without hub access use an embedded source (`mclner data list`) or a local file."
        ) from None
    feature = getattr(ds.features["ner_tags"], "feature", None)
    names = getattr(feature, "names", None) or HF_TAG_NAMES[name]
    out = []
    for ex in ds:
        tags = [t if isinstance(t, str) else names[t] for t in ex["ner_tags"]]
        out.append(Sentence(list(ex["tokens"]), tags, lang or "en"))
    # Some sets (wikiann) already use IOB2; conll2002/2003 on the hub are IOB2 too. Normalise anyway.
    return [_normalise_iob2(s) for s in out]


def _hf_load(datasets: Any, hub: str, config: Optional[str], hf_split: str) -> Any:
    try:
        return datasets.load_dataset(hub, config, split=hf_split)
    except RuntimeError as exc:
        # datasets >= 4 no longer runs loading scripts (conll2002/2003 still have one): the hub's
        # automatic parquet export of the same data is the documented replacement.
        if "script" not in str(exc).lower():
            raise
        return datasets.load_dataset(hub, config, split=hf_split, revision="refs/convert/parquet")


def _normalise_iob2(s: Sentence) -> Sentence:
    from mclner.data.grid import entities_to_iob2, iob2_to_entities

    if s.tags is None:
        return s
    return Sentence(s.tokens, entities_to_iob2(iob2_to_entities(s.tags), len(s.tokens)), s.lang)


# ---------------------------------------------------------------------------------- embedded data sets
# (the files come from mclner.data.sources, which only fetches and locates them: it imports no reader)

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


# ---------------------------------------------------------------------------------- the one entry point
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
    if name in HF_SETS:
        if sub.startswith("PAN-X."):
            sub = sub[len("PAN-X.") :]
        return _load_hf(name, sub or lang, canon)
    known = ", ".join(list(sources.DATASETS) + list(HF_SETS))
    raise UserError(f"{spec!r} is neither a file/folder nor a known data set ({known})")
