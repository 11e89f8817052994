"""Bilingual lexicons (English -> target) for code-switching.

Sources: CC-CEDICT inverted to English->Chinese (embedded ``cc-cedict``, or a CEDICT file), MUSE-style
text files (``source target`` per line, best translation first), and FreeDict dictd files
(``freedict-eng-XXX.index`` + ``.dict.dz``, e.g. from Debian's ``dict-freedict-eng-*`` packages).
Lookups are case-insensitive; ``translate(phrase, entity=True)`` prefers proper-noun translations.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

from mclner.errors import DataFormatError, UserError

# FreeDict uses ISO 639-3 codes; the rest of mclner uses the two-letter ones.
ISO3_TO_2 = {
    "deu": "de", "spa": "es", "nld": "nl", "hin": "hi", "ara": "ar", "fra": "fr", "ita": "it", "por": "pt",
    "rus": "ru", "jpn": "ja", "zho": "zh", "tur": "tr", "pol": "pl", "swe": "sv", "fin": "fi", "ell": "el",
    "hun": "hu", "ces": "cs", "dan": "da", "nor": "no", "ron": "ro", "bul": "bg", "hrv": "hr", "srp": "sr",
    "ukr": "uk", "vie": "vi", "tha": "th", "ind": "id", "kor": "ko", "gle": "ga", "cym": "cy", "lit": "lt",
    "lat": "la", "afr": "af", "swh": "sw", "fas": "fa", "heb": "he", "est": "et", "lav": "lv", "slk": "sk",
}


@dataclass(frozen=True)
class Candidate:
    target: str
    proper: bool  # a proper-noun translation (CEDICT marks them with capitalised pinyin)
    rank: Tuple  # smaller is better, among candidates of the same kind


def _key(phrase: str) -> str:
    """Lookup key: lower case, single spaces, dots of abbreviations dropped (U.S. = US)."""
    return re.sub(r"(?<=\w)\.(?=\w|$)", "", " ".join(phrase.lower().split()))


class Lexicon:
    """A source-phrase -> ranked target candidates map."""

    def __init__(self, entries: Dict[str, List[Candidate]], target_lang: str, name: str = ""):
        self.target_lang = target_lang
        self.name = name
        self._entries = {k: sorted(v, key=lambda c: c.rank) for k, v in entries.items()}

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, phrase: str) -> bool:
        return _key(phrase) in self._entries

    def candidates(self, phrase: str) -> List[Candidate]:
        return list(self._entries.get(_key(phrase), ()))

    def translate(self, phrase: str, entity: bool = False) -> Optional[List[str]]:
        """Target words of the best translation, or ``None``. ``entity=True`` prefers proper-noun
        translations, otherwise common-word ones are preferred."""
        cands = self._entries.get(_key(phrase))
        if not cands:
            return None
        best = min(cands, key=lambda c: (c.proper != entity, c.rank))
        words = best.target.split()
        return words or None

    def __repr__(self) -> str:
        return f"Lexicon({self.name!r}, en->{self.target_lang}, {len(self)} entries)"


# ---------------------------------------------------------------------------------------------- CEDICT
_CEDICT_LINE = re.compile(r"^(\S+) (\S+) \[([^\]]*)\] /(.*)/\s*$")
_SKIP_GLOSS = re.compile(
    r"^(CL:|variant of|old variant of|see |see also|abbr\. for|abbr\. of|used in|erhua variant|"
    r"Japanese variant|Korean variant|also written|also pr\.|archaic variant|\(old\))",
    re.IGNORECASE,
)
_PARENS = re.compile(r"\([^)]*\)|\[[^\]]*\]")


def _clean_gloss(g: str, proper: bool = False) -> List[str]:
    """English keys of one CEDICT gloss: parentheticals and pinyin references removed, ``to `` of
    verbs dropped, ``a; b`` split into both."""
    if _SKIP_GLOSS.match(g):
        return []
    out = []
    for part in g.split(";"):
        part = _PARENS.sub("", part)
        part = re.sub(r"[A-Za-z0-9\u4e00-\u9fff]+\|[\u4e00-\u9fff]+", "", part)  # trad|simp references
        part = " ".join(part.split()).strip(" ,.")
        if part.startswith("to "):
            part = part[3:]
        if part.lower().startswith("surname "):
            part = part[len("surname ") :]
        if proper and ", " in part:  # "Beijing, capital of China": the name alone is a key too
            head = part.split(", ")[0]
            if len(head.split()) <= 5:
                out.append(head)
        if not part or len(part.split()) > 5 or not re.search(r"[A-Za-z]", part):
            continue
        out.append(part)
        if part.lower().startswith("the ") and len(part) > 4:  # "the Netherlands": "Netherlands" too
            out.append(part[4:])
    return out


_NEUTRAL_NOTES = {"name", "language", "country", "city", "place", "person", "company", "state", "province",
                  "river", "island", "mountain", "surname", "capital", "organization", "region", "county"}


def _noted(g: str) -> bool:
    """A gloss with a usage note such as (loanword), (Tw), (slang), (old): a less common rendering."""
    notes = re.findall(r"\(([^)]*)\)", g)
    return any(not n.startswith("CL:") and not (set(n.lower().split()) & _NEUTRAL_NOTES) for n in notes)


def parse_cedict(lines: Iterable[str], source: str = "cedict") -> Lexicon:
    """Invert CC-CEDICT (``Trad Simp [pin1 yin1] /gloss/gloss/``) to English -> simplified Chinese.

    An entry is a proper noun when its pinyin is capitalised. CEDICT has no frequencies, so candidates
    rank by: no usage note such as ``(loanword)``/``(Tw)``/``(old)``, the gloss matching the whole key
    (not one ``;`` part of it), the gloss's position in its entry, a surname gloss last, then how
    common the characters are (mean log count of headwords that contain each character: 美国 before
    米国, 彼得 before 伯多禄), then file order."""
    parsed = []
    char_count: Dict[str, int] = {}
    for lineno, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line or line.startswith("#"):
            continue
        m = _CEDICT_LINE.match(line)
        if not m:
            raise DataFormatError(f"{source}:{lineno}: not a CEDICT entry (Trad Simp [pinyin] /gloss/): {line[:60]!r}")
        _trad, simp, pinyin, glosses = m.groups()
        parsed.append((simp, pinyin[:1].isupper(), [g for g in glosses.split("/") if g]))
        for ch in set(simp):
            char_count[ch] = char_count.get(ch, 0) + 1
    entries: Dict[str, List[Candidate]] = {}
    for n, (simp, proper, gl) in enumerate(parsed):
        rarity = -sum(math.log(char_count[ch]) for ch in simp) / max(len(simp), 1)
        for gi, g in enumerate(gl):
            parts = _clean_gloss(g, proper)
            surname = g.lower().startswith("surname ")
            for part in parts:
                rank = (_noted(g), len(parts) > 1, surname, gi, round(rarity, 3), n)
                entries.setdefault(_key(part), []).append(Candidate(simp, proper, rank))
    if not entries:
        raise DataFormatError(f"{source}:1: no CEDICT entries")
    return Lexicon(entries, "zh", source)


# ------------------------------------------------------------------------------------------------ MUSE
def parse_muse(lines: Iterable[str], target_lang: str, source: str = "muse") -> Lexicon:
    """MUSE bilingual dictionary: ``source target`` per line (space or tab); a source word's first line
    is its best translation."""
    entries: Dict[str, List[Candidate]] = {}
    n = 0
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        cols = line.split("\t") if "\t" in line else line.split()
        if len(cols) != 2:
            raise DataFormatError(f"{source}:{lineno}: expected 'source target', got {len(cols)} field(s)")
        src, tgt = cols[0].strip(), cols[1].strip()
        entries.setdefault(_key(src), []).append(Candidate(tgt, False, (n,)))
        n += 1
    if not entries:
        raise DataFormatError(f"{source}:1: empty dictionary")
    return Lexicon(entries, target_lang, source)


# --------------------------------------------------------------------------------------------- dictd
_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64num(s: str) -> int:
    v = 0
    for ch in s:
        v = v * 64 + _B64.index(ch)
    return v


_DICTD_NOISE = re.compile(r"/[^/]*/|<[^>]*>|\[[^\]]*\]|\([^)]*\)|\{[^}]*\}")


def _dictd_translations(body: str, headword: str) -> List[str]:
    """Translations in a FreeDict entry body: the lines after the headword line, numbering,
    pronunciations (``/…/``) and grammar marks (``<…>``) removed; the first of ``a, b; c`` alternatives
    on each line. Lines that are notes or examples (quotes, ``see``) are skipped."""
    lines = body.split("\n")
    if lines and lines[0].strip().lower().startswith(headword.lower()):
        lines = lines[1:]
    out = []
    for ln in lines:
        s = ln.strip()
        if not s or s.startswith(('"', "Note:", "see", "Synonym", "SYN", "ANT", "Antonym", "Example")):
            continue
        s = re.sub(r"^\d+\.\s*", "", s)
        s = _DICTD_NOISE.sub("", s)
        s = re.split(r"[;,]", s)[0].strip(" .:")
        if s and not s.startswith("-") and s.lower() != headword.lower():
            out.append(s)
    return out


def parse_dictd(index_path: Union[str, os.PathLike], target_lang: Optional[str] = None) -> Lexicon:
    """FreeDict dictd pair: ``X.index`` (``headword<TAB>offset<TAB>length``, dictd base64 numbers) and
    ``X.dict.dz`` (dictzip, readable as gzip) or ``X.dict``."""
    index_path = Path(index_path)
    stem = index_path.name[: -len(".index")] if index_path.name.endswith(".index") else index_path.stem
    base = index_path.with_name(stem)
    data_path = next((p for p in (base.with_name(stem + ".dict.dz"), base.with_name(stem + ".dict")) if p.is_file()),
                     None)
    if data_path is None:
        raise UserError(f"{index_path}: no {stem}.dict.dz or {stem}.dict next to it")
    raw = gzip.open(data_path).read() if data_path.suffix == ".dz" else data_path.read_bytes()
    if target_lang is None:
        m = re.search(r"-([a-z]{3})$", stem)
        target_lang = ISO3_TO_2.get(m.group(1), m.group(1)) if m else "xx"
    entries: Dict[str, List[Candidate]] = {}
    n = 0
    with open(index_path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            cols = line.rstrip("\n").split("\t")
            if len(cols) < 3:
                raise DataFormatError(f"{index_path}:{lineno}: expected 'headword<TAB>offset<TAB>length'")
            head = cols[0]
            if head.startswith("00-database") or head.startswith("00database"):
                continue
            try:
                off, size = _b64num(cols[1]), _b64num(cols[2])
            except ValueError:
                raise DataFormatError(
                    f"{index_path}:{lineno}: bad dictd offset/length {cols[1]!r} {cols[2]!r}"
                ) from None
            body = raw[off : off + size].decode("utf-8", errors="replace")
            for i, t in enumerate(_dictd_translations(body, head)):
                entries.setdefault(_key(head), []).append(Candidate(t, head[:1].isupper(), (i, n)))
            n += 1
    if not entries:
        raise DataFormatError(f"{index_path}:1: no dictionary entries")
    return Lexicon(entries, target_lang, str(index_path))


# ----------------------------------------------------------------------------------------- dispatcher
PARSER_VERSION = 1  # bump when parsing/ranking changes: cached lexicons are rebuilt


CACHE_FORMAT = "mclner-lexicon-cache"


def _lexicon_to_json(lex: Lexicon, source_id: Dict[str, int]) -> bytes:
    entries = {k: [[c.target, c.proper, list(c.rank)] for c in v] for k, v in lex._entries.items()}
    doc = {"format": CACHE_FORMAT, "parser_version": PARSER_VERSION, "source": source_id,
           "target_lang": lex.target_lang, "name": lex.name, "entries": entries}
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def _lexicon_from_json(data: bytes, source_id: Dict[str, int]) -> Optional[Lexicon]:
    """The cached lexicon, or None when the cache is for another source file / parser version or is
    not what this function writes (data only: nothing in it is executed)."""
    try:
        doc = json.loads(data.decode("utf-8"))
        if (doc.get("format") != CACHE_FORMAT or doc.get("parser_version") != PARSER_VERSION
                or doc.get("source") != source_id):
            return None
        entries = {str(k): [Candidate(str(t), bool(p), tuple(r)) for t, p, r in v] for k, v in doc["entries"].items()}
        return Lexicon(entries, str(doc["target_lang"]), str(doc["name"]))
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _cached_cedict() -> Lexicon:
    """The embedded CC-CEDICT, parsed once and cached as JSON next to the source (parsing 120k
    entries takes seconds). The cache is plain data, never a pickle (whoever can write it must not
    be able to run code in later runs); its SHA-256 is recorded in a file beside it, and a cache that
    does not match it, or is for another source file or parser version, is rebuilt."""
    from mclner.data.sources import source_dir, source_file

    path = source_file("cc-cedict")
    folder = source_dir("cc-cedict")
    for legacy in folder.glob("en-zh.v*.pkl"):  # caches of older mclner versions are never loaded
        legacy.unlink(missing_ok=True)
    cache = folder / f"en-zh.v{PARSER_VERSION}.json"
    digest_file = cache.with_name(cache.name + ".sha256")
    st = path.stat()
    source_id = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if cache.is_file() and digest_file.is_file():
        try:
            recorded = digest_file.read_text(encoding="ascii").split()[0]
            data = cache.read_bytes()
        except (OSError, UnicodeDecodeError, IndexError):
            recorded, data = "", b""
        if hashlib.sha256(data).hexdigest() == recorded:
            lex = _lexicon_from_json(data, source_id)
            if lex is not None:
                return lex
    lex = parse_cedict(_open_text(path), str(path))
    data = _lexicon_to_json(lex, source_id)
    try:
        digest = f"{hashlib.sha256(data).hexdigest()}  {cache.name}\n".encode()
        for f, content in ((cache, data), (digest_file, digest)):
            tmp = f.with_name(f".{f.name}.tmp-{os.getpid()}")
            tmp.write_bytes(content)
            os.replace(tmp, f)
    except OSError:  # a read-only cache folder: use the parsed lexicon without caching it
        pass
    return lex


DICTD_DIR = Path("/usr/share/dictd")


def _open_text(path: Path) -> List[str]:
    from mclner.data.lines import read_lines

    # line by line, each bounded (mclner.data.lines): a lexicon of /dev/zero does not fill the memory
    return read_lines(path, opener=gzip.open if path.suffix == ".gz" else open)


def load_lexicon(spec: str, target_lang: Optional[str] = None) -> Lexicon:
    """A lexicon by name or path.

    - ``cc-cedict``: the embedded CC-CEDICT, inverted to English -> Chinese;
    - ``freedict:deu`` / ``freedict-eng-deu``: the installed FreeDict dictd files in /usr/share/dictd;
    - a path: ``*.index`` (dictd), a CEDICT file (``.txt``/``.txt.gz`` whose lines are CEDICT entries),
      or a MUSE text file (``target_lang`` given, or taken from a name like ``en-de.txt``).
    """
    if spec == "cc-cedict":
        return _cached_cedict()
    if spec.startswith("freedict:") or spec.startswith("freedict-eng-"):
        code = spec.split(":", 1)[1] if ":" in spec else spec[len("freedict-eng-") :]
        idx = DICTD_DIR / f"freedict-eng-{code}.index"
        if not idx.is_file():
            raise UserError(
                f"{idx} is not installed; on Debian/Ubuntu: apt-get install dict-freedict-eng-{code}"
            )
        return parse_dictd(idx, target_lang)
    path = Path(spec).expanduser()
    if not path.is_file():
        raise UserError(f"{spec!r} is neither a lexicon name (cc-cedict, freedict:<code>) nor a file")
    if path.name.endswith(".index"):
        return parse_dictd(path, target_lang)
    lines = _open_text(path)
    first = next((ln for ln in lines if ln.strip() and not ln.startswith("#")), "")
    if _CEDICT_LINE.match(first):
        return parse_cedict(lines, str(path))
    if target_lang is None:
        m = re.match(r"^[a-z]{2,3}-([a-z]{2,3})\b", path.name)
        if not m:
            raise UserError(
                f"{path}: give the target language of this MUSE dictionary (--target-lang, e.g. --target-lang de), "
                "or name the file like en-de.txt"
            )
        target_lang = m.group(1)
    return parse_muse(lines, target_lang, str(path))
