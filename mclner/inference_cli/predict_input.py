"""The input of `mclner predict`: raw text (--text, a file or stdin, streamed line by line and split
into words by the checkpoint's segmenter) or a CoNLL file, one record per input line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

from mclner.errors import UserError


def read_predict_input(args: argparse.Namespace) -> List[Any]:
    """The input sentences (see :func:`read_predict_items`)."""
    return [s for s, _, _ in read_predict_items(args)]


def file_lines(src: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a text file, read line by line (mclner.data.lines)."""
    from mclner.data.lines import iter_lines

    try:
        f = open(src, "rb")
    except FileNotFoundError:
        raise UserError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{src}: is a folder, expected a text file") from None
    except OSError as exc:
        raise UserError(f"{src}: cannot read ({exc.strerror})") from None
    with f:
        try:
            yield from iter_lines(f, src)
        except IsADirectoryError:
            raise UserError(f"{src}: is a folder, expected a text file") from None
        except OSError as exc:
            raise UserError(f"{src}: cannot read ({exc.strerror})") from None


def count_records(args: argparse.Namespace) -> Optional[int]:
    """How many records the input holds, where that is known without keeping it (for the progress
    bar): --text, or a raw text file (its lines counted block by block); None for stdin or CoNLL."""
    if getattr(args, "text", None):
        return len(args.text)
    if args.input_format != "text" or args.input == "-" or not Path(args.input).is_file():
        return None
    n, last = 0, b"\n"
    with open(args.input, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def read_predict_items(args: argparse.Namespace, segmenter: Any = None) -> Iterator[Any]:
    """``(sentence, text, spans)`` per input record: the words, the line they come from and each
    word's character offsets in it (a CoNLL file's words are joined as they are written). Raw text
    gives one record per line, blank lines included (an empty record), so that output line k belongs
    to input line k; lines end at ``\\n`` or ``\\r\\n`` only. ``segmenter`` splits raw text
    (`mclner.data.segmenters`; default: one word per Han/kana character). Raw text is read line by
    line, each line and sentence bounded (mclner.data.lines), so that the input is streamed."""
    from mclner.data.lines import MAX_LINE_CHARS, check_sentence, iter_lines, too_long
    from mclner.data.readers import Sentence
    from mclner.data.text import tokenize_line, words_to_text

    fmt = args.input_format
    src = args.input
    split = segmenter if segmenter is not None else tokenize_line
    if getattr(args, "text", None):
        if src != "-" or fmt != "text":
            raise UserError("--text gives the input: it cannot be combined with --input or --input-format conll")
        lines: Iterator[Tuple[Any, str]] = ((f"--text {k}", t) for k, t in enumerate(args.text, 1))
    elif fmt == "conll":
        from mclner.data.readers import read_conll

        if src == "-":
            raise UserError("--input-format conll needs a file path, not stdin")
        # The words are the first column; any other column (tags, known or not) is ignored, and a
        # file of words alone is fine.
        for s in read_conll(src, tag_col=None):
            tw = words_to_text(list(s.tokens))
            yield Sentence(list(s.tokens), None, args.lang or s.lang), tw.text, tw.spans
        return
    elif src == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin  # bytes: decoded line by line
        lines = ((f"stdin:{k}", line) for k, line in iter_lines(stdin, "stdin"))
    else:
        lines = ((f"{src}:{k}", line) for k, line in file_lines(src))
    for where, line in lines:  # iter_lines drops a leading byte order mark: not part of the first word
        if len(line) > MAX_LINE_CHARS:
            raise too_long(where)
        tw = split(line)
        check_sentence(len(tw.words), where)
        yield Sentence(tw.words, None, args.lang or "xx"), tw.text, tw.spans

