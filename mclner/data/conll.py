"""Reading CoNLL-style column files (any of the IOB1, IOB2, BIOES and BMES schemes, converted to IOB2)
and raw text files into :class:`mclner.data.sentence.Sentence`. Malformed files raise
:class:`mclner.errors.DataFormatError` whose message starts with ``path:line:``."""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, List, Optional, Sequence, Tuple, Union

from mclner.data.lines import MAX_SENTENCE_WORDS, check_sentence
from mclner.data.sentence import CHAR_LANGS, Sentence
from mclner.errors import DataFormatError, UserError

SCHEMES = ("auto", "iob1", "iob2", "bioes", "bmes")
_TAG_RE = re.compile(r"^([BIESM])[-_](.+)$")


def _read_lines(path: Path, encoding: str) -> List[str]:
    """The file's lines, decoded and bounded in length (:mod:`mclner.data.lines`); a decoding error
    names the line where it happens."""
    from mclner.data.lines import read_lines

    return read_lines(path, encoding)


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
        if len(tokens) >= MAX_SENTENCE_WORDS:  # no sentence grows without bound (mclner.data.lines)
            check_sentence(len(tokens) + 1, f"{path}:{i}")
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
    from mclner.data.load import _embedded_name, load_sentences

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
