"""Raw text to words with character offsets, and word-level entities back to character spans.

``tokenize_line`` splits one line of raw text the way the training corpora are tokenised: punctuation
apart from words (``"United Nations."`` -> ``United``, ``Nations``, ``.``; CoNLL-2003 is tokenised
so), runs of CJK characters into single characters (MSRA is tokenised per character), and keeps for
every word its ``(start, end)`` character offsets into the line, so that entities found on the words
can be reported on the original text (``entity_dicts``), in the field names of the Hugging Face
token-classification pipeline's aggregated output.

Kept together as one word: letters, digits and combining marks of any script (``naïve``, ``हिन्दी``);
a hyphen or apostrophe between two of them (``Japan-based``, ``O'Neill``); ``.``, ``,``, ``:`` or ``/``
between two digits (``3.5``, ``1,000``, ``12:30``); dotted abbreviations (``U.S.``); runs of ``.`` or ``-``
(``...``). A trailing possessive ``'s`` is its own word (``Germany's`` -> ``Germany``, ``'s``), as in
CoNLL-2003. Every other non-space character is a word by itself.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from mclner.data.sentence import CJK_CHAR

Span = Tuple[int, int]  # [start, end) character offsets

# Characters that separate words without being one: whitespace, and the byte-order mark / zero-width
# characters an editor may leave in a file (a BOM at the start of the first line is common). ZWNJ and ZWJ
# are part of a word between two letters (Persian, Indic scripts) and separators elsewhere.
_ZERO_WIDTH_JOINERS = "\u200c\u200d"
_INVISIBLE = frozenset("\ufeff\u200b\u2060" + _ZERO_WIDTH_JOINERS)
_APOSTROPHES = "'\u2019"
_DIGIT_JOINERS = ".,:/"


@dataclass(frozen=True)
class TextWords:
    """A line and its words; ``spans[i]`` are word i's character offsets: ``text[s:e] == words[i]``."""

    text: str
    words: List[str]
    spans: List[Span]

    def __len__(self) -> int:
        return len(self.words)


# Letters of scripts written without spaces beyond the Han/kana blocks of CJK_CHAR: the iteration and
# closing marks (々 〆 〇), small katakana for Ainu and halfwidth katakana.
_CJK_EXTRA = frozenset("\u3005\u3006\u3007") | frozenset(chr(c) for c in range(0x31F0, 0x3200)) \
    | frozenset(chr(c) for c in range(0xFF66, 0xFFA0))


def _is_cjk(ch: str) -> bool:
    return CJK_CHAR.match(ch) is not None or ch in _CJK_EXTRA


def is_unspaced(ch: str) -> bool:
    """A character of a script written without spaces between words (Han, kana, 々) or its punctuation
    (、。「」, fullwidth forms): two such characters are written next to each other."""
    if _is_cjk(ch):
        return True
    o = ord(ch)
    return 0x3001 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF


def _is_word_char(ch: str) -> bool:
    """Letters, digits and combining marks of any script (CJK is handled before this)."""
    return unicodedata.category(ch)[0] in "LNM"


def _is_sep(ch: str) -> bool:
    return ch.isspace() or ch in _INVISIBLE


def _abbreviation_end(line: str, i: int) -> int:
    """End of a dotted abbreviation (``U.S.``, ``e.g.``) starting at i: two or more single letters each
    followed by a dot, and not followed by another word character; i when there is none."""
    j, n, count = i, len(line), 0
    while j + 1 < n and line[j].isalpha() and not _is_cjk(line[j]) and line[j + 1] == ".":
        j += 2
        count += 1
    if count >= 2 and (j >= n or not _is_word_char(line[j])):
        return j
    return i


def _word_end(line: str, i: int) -> int:
    """End of the word of letters/digits/marks starting at i, with the joiners the module doc lists."""
    n = len(line)
    j = i
    while j < n:
        ch = line[j]
        if _is_cjk(ch):
            break
        if _is_word_char(ch):
            j += 1
            continue
        # A joiner stays inside the word only between two word characters (ZWNJ/ZWJ: Persian, Indic).
        if j + 1 < n and j > i:
            prev, nxt = line[j - 1], line[j + 1]
            if _is_cjk(nxt) or not _is_word_char(nxt):
                break
            if ch == "-" or ch in _APOSTROPHES or ch in _ZERO_WIDTH_JOINERS:
                j += 1
                continue
            if ch in _DIGIT_JOINERS and prev.isdigit() and nxt.isdigit():
                j += 1
                continue
        break
    return j


def tokenize_line(line: str, split_cjk: Optional[Callable[[str], Sequence[str]]] = None) -> TextWords:
    """Words of one line of raw text with their character offsets into ``line`` (see the module doc).

    Whitespace of any kind (spaces, tabs, several in a row) and a byte-order mark separate words and
    are never part of one; offsets always index ``line`` as given, so ``line[s:e]`` is the word.
    ``split_cjk`` splits each maximal run of Han/kana characters into words (a word segmenter,
    `mclner.data.segmenters`); default: one word per character. Pieces it returns that do not spell
    the run in order fall back to single characters from there on.
    """
    words: List[str] = []
    spans: List[Span] = []

    def emit(s: int, e: int) -> None:
        words.append(line[s:e])
        spans.append((s, e))

    i, n = 0, len(line)
    while i < n:
        ch = line[i]
        if _is_sep(ch):
            i += 1
        elif _is_cjk(ch):
            if split_cjk is None:
                emit(i, i + 1)
                i += 1
                continue
            j = i
            while j < n and _is_cjk(line[j]):
                j += 1
            pos = i
            for piece in split_cjk(line[i:j]):
                piece = "".join(c for c in piece if not _is_sep(c))
                if not piece:
                    continue
                if not line.startswith(piece, pos) or pos + len(piece) > j:
                    break
                emit(pos, pos + len(piece))
                pos += len(piece)
            for k in range(pos, j):  # what the segmenter did not account for: per character
                emit(k, k + 1)
            i = j
        elif _is_word_char(ch):
            j = _abbreviation_end(line, i)
            if j > i:
                emit(i, j)
                i = j
                continue
            j = _word_end(line, i)
            # CoNLL-2003 writes the possessive as its own word: "Germany 's".
            if j - i > 2 and line[j - 2] in _APOSTROPHES and line[j - 1] in "sS" and _is_word_char(line[j - 3]):
                emit(i, j - 2)
                emit(j - 2, j)
            else:
                emit(i, j)
            i = j
        else:
            j = i + 1
            if ch in ".-":  # "...", "--"
                while j < n and line[j] == ch:
                    j += 1
            emit(i, j)
            i = j
    return TextWords(line, words, spans)


def split_words(line: str) -> List[str]:
    """The words of ``tokenize_line(line)``."""
    return tokenize_line(line).words


def split_lines(text: str) -> List[str]:
    """The non-blank lines of a text (:func:`split_records`), one sentence each."""
    return [line for line in split_records(text) if not all(_is_sep(c) for c in line)]


def split_records(text: str) -> List[str]:
    """The lines of a text, blank ones included, split at ``\\n`` and ``\\r\\n`` only: a vertical tab,
    form feed, file separator, U+0085 or U+2028 inside a line is whitespace within that line, not a line
    break (``str.splitlines`` would split there, and output line k would no longer belong to input
    line k). A leading byte-order mark is dropped; a final newline ends the last line."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if not text:
        return []
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def words_to_text(words: Sequence[str]) -> TextWords:
    """A text for already tokenised words (a CoNLL file): words joined by one space, except between two
    characters of scripts written without spaces or their punctuation (:func:`is_unspaced`), which are
    joined directly (``東 京 都`` -> ``東京都``, ``佐 々 木`` -> ``佐々木``, ``東京 、 大阪`` -> ``東京、大阪``),
    as they are written."""
    parts: List[str] = []
    spans: List[Span] = []
    pos = 0
    for k, w in enumerate(words):
        if not w:
            raise ValueError(f"word {k} is empty")
        if k and not (is_unspaced(words[k - 1][-1]) and is_unspaced(w[0])):
            parts.append(" ")
            pos += 1
        parts.append(w)
        spans.append((pos, pos + len(w)))
        pos += len(w)
    return TextWords("".join(parts), list(words), spans)


def entity_dicts(
    text: str,
    spans: Sequence[Span],
    entities: Iterable[Sequence[Any]],
) -> List[Dict[str, Any]]:
    """Word-level entities as Hugging Face token-classification-pipeline aggregated dicts.

    ``entities`` are ``(start_word, end_word, type)`` or ``(start_word, end_word, type, score)`` with
    ``end_word`` inclusive (the toolkit's entity convention); ``spans`` are the words' character
    offsets into ``text`` (``TextWords.spans``). Each dict has ``entity_group`` (type), ``score``
    (float, ``None`` when the entity has none), ``word`` (the surface string ``text[start:end]``,
    exactly as written), ``start`` and ``end`` (character offsets, end exclusive, as in the pipeline),
    and ``word_start``/``word_end`` (word indices, end inclusive) for the word-level view. Sorted by
    position. A word index outside the sentence raises ValueError naming it.
    """
    n = len(spans)
    out: List[Dict[str, Any]] = []
    for ent in entities:
        if len(ent) not in (3, 4):
            raise ValueError(f"an entity is (start_word, end_word, type[, score]), got {tuple(ent)!r}")
        a, b, typ = int(ent[0]), int(ent[1]), str(ent[2])
        score: Optional[float] = None if len(ent) == 3 or ent[3] is None else float(ent[3])
        if not 0 <= a <= b < n:
            raise ValueError(f"entity {tuple(ent)!r}: word span [{a}, {b}] is outside the {n} word(s) of the text")
        start, end = spans[a][0], spans[b][1]
        out.append({"entity_group": typ, "score": score, "word": text[start:end], "start": start, "end": end,
                    "word_start": a, "word_end": b})
    out.sort(key=lambda d: (d["start"], d["end"]))
    return out
