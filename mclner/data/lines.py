"""Reading text input line by line with a bound on what one line (and one sentence) may hold.

Every text mclner reads (CoNLL files, raw text, ``--translations``, `mclner predict` input, lexicon
files) is read one line at a time, never whole into one string, and a line longer than
:data:`MAX_LINE_CHARS` characters, or a sentence of more than :data:`MAX_SENTENCE_WORDS` words, is a
one-line error naming the file and line. So ``-i /dev/zero`` or a 1 GB line fails after reading a
few hundred kB instead of filling the memory (a sentence's cost grows with its length: about 20 kB
per word with multilingual-e5-small). The corpora's longest sentences have about 120 words.
Lines end at ``\\n`` only (a ``\\r`` before it is dropped, as is a byte-order mark at the start).
"""

from __future__ import annotations

import codecs
import io
import os
from pathlib import Path
from typing import IO, Iterator, List, Tuple, Union

from mclner.errors import DataFormatError, UserError

MAX_LINE_CHARS = 100_000
MAX_SENTENCE_WORDS = 10_000
_BYTES_PER_CHAR = 4  # UTF-8's longest encoding of a character


def _ascii_compatible(encoding: str) -> bool:
    """Whether ``\\n`` is the byte 0x0A in ``encoding`` and never inside another character (UTF-8,
    Latin-1, GBK, ...; not UTF-16/32): then lines can be cut in the bytes and decoded one by one."""
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UserError(f"unknown text encoding {encoding!r}") from None
    return "\n".encode(encoding) == b"\n" and "A".encode(encoding) == b"A"


def too_long(where: str, max_chars: int = MAX_LINE_CHARS) -> DataFormatError:
    return DataFormatError(f"{where}: line longer than {max_chars} characters, the most mclner reads in one line "
                           "(one sentence per line)")


def check_sentence(words: int, where: str) -> None:
    """A DataFormatError naming ``where`` when a sentence has more words than :data:`MAX_SENTENCE_WORDS`."""
    if words > MAX_SENTENCE_WORDS:
        raise DataFormatError(f"{where}: a sentence of {words} words, more than the {MAX_SENTENCE_WORDS} mclner reads "
                              "in one sentence")


def iter_lines(stream: IO, name: str, encoding: str = "utf-8",
               max_chars: int = MAX_LINE_CHARS) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` from a binary or text stream, each line without its ``\\n``; see the
    module doc for the bound. ``name`` (a path, ``stdin``) starts every error message."""
    binary = not isinstance(stream, io.TextIOBase) and not hasattr(stream, "encoding")
    if binary and not _ascii_compatible(encoding):
        stream = io.TextIOWrapper(stream, encoding=encoding, newline="\n")
        binary = False
    limit = (_BYTES_PER_CHAR * max_chars if binary else max_chars) + 1
    k = 0
    while True:
        try:
            raw = stream.readline(limit)
        except UnicodeDecodeError as exc:
            raise DataFormatError(f"{name}:{k + 1}: cannot decode as {encoding} ({exc.reason}); pass the file's "
                                  "encoding") from None
        if not raw:
            return
        k += 1
        newline = b"\n" if binary else "\n"
        if not raw.endswith(newline) and len(raw) == limit:
            raise too_long(f"{name}:{k}", max_chars)
        body = raw[:-1] if raw.endswith(newline) else raw
        if binary:
            try:
                line = body.decode(encoding)
            except UnicodeDecodeError as exc:
                col = len(body[: exc.start].decode(encoding, errors="replace")) + 1
                raise DataFormatError(f"{name}:{k}: cannot decode byte {body[exc.start]:#04x} at column {col} as "
                                      f"{encoding} (pass the file's encoding)") from None
        else:
            line = body
        if len(line) > max_chars:
            raise too_long(f"{name}:{k}", max_chars)
        if k == 1 and line.startswith("\ufeff"):
            line = line[1:]
        yield k, line[:-1] if line.endswith("\r") else line


def read_lines(path: Union[str, os.PathLike], encoding: str = "utf-8", opener=open) -> List[str]:
    """The lines of a file (:func:`iter_lines`); a missing file or a folder is a one-line error.
    ``opener``: e.g. ``gzip.open`` for a compressed file."""
    path = Path(path)
    try:
        with opener(path, "rb") as f:
            return [line for _, line in iter_lines(f, str(path), encoding)]
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a directory, expected a file") from None
    except PermissionError:
        raise UserError(f"{path}: permission denied") from None
    except OSError as exc:  # e.g. a damaged gzip file
        raise UserError(f"{path}: cannot read ({exc.strerror or exc})") from None
