"""No input grows memory without bound (issue 25 item 10): one long line (a 5 MB line, /dev/zero) in
`predict` input, --translations, CoNLL files or a lexicon is a one-line error naming the line after
reading a bounded amount, and so is a sentence of too many words."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mclner.data.lines import MAX_LINE_CHARS, MAX_SENTENCE_WORDS
from mclner.errors import DataFormatError, UserError

ZERO = Path("/dev/zero")
needs_dev_zero = pytest.mark.skipif(not ZERO.exists(), reason="no /dev/zero")


class CountingReader:
    """A stream of NUL bytes without end that counts what was read from it."""

    def __init__(self) -> None:
        self.read = 0

    def readline(self, size: int = -1) -> bytes:
        assert size > 0, "an unbounded readline"
        self.read += size
        return b"\0" * size


def test_a_line_without_end_is_read_a_bounded_amount():
    from mclner.data.lines import iter_lines

    stream = CountingReader()
    with pytest.raises(DataFormatError, match=f"stdin:1: line longer than {MAX_LINE_CHARS} characters"):
        list(iter_lines(stream, "stdin"))
    assert stream.read <= 4 * MAX_LINE_CHARS + 1


@needs_dev_zero
def test_dev_zero_as_data_or_translations_is_one_line():
    from mclner.data.readers import read_conll, read_text
    from mclner.data.translations import file_translations

    for call in (lambda: read_conll(ZERO), lambda: read_text(ZERO),
                 lambda: file_translations(str(ZERO), [], [], 0, "zh")):
        with pytest.raises(UserError, match="/dev/zero:1: line longer than"):
            call()


def test_a_long_lexicon_line_is_one_line(tmp_path):
    from mclner.data.lexicon import load_lexicon

    f = tmp_path / "en-de.txt"
    f.write_text("house Haus\n" + "x" * (MAX_LINE_CHARS + 1) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=f"{f}:2: line longer than"):
        load_lexicon(str(f))


def test_a_sentence_of_too_many_words_is_one_line(tmp_path):
    from mclner.data.readers import read_conll

    f = tmp_path / "long.conll"
    f.write_text("a O\nb O\n\n" + "w O\n" * (MAX_SENTENCE_WORDS + 5), encoding="utf-8")
    with pytest.raises(DataFormatError, match=f"{f}:{MAX_SENTENCE_WORDS + 4}: a sentence of {MAX_SENTENCE_WORDS + 1} "
                                              "words"):
        read_conll(f)
    f.write_text("w O\n" * MAX_SENTENCE_WORDS, encoding="utf-8")
    assert len(read_conll(f)[0]) == MAX_SENTENCE_WORDS  # the maximum itself is read


def test_lines_keep_their_meaning(tmp_path):
    """Bounded reading changes nothing else: \\r\\n, a byte order mark, no newline at the end, a
    decoding error named by line and column, an ASCII-incompatible encoding."""
    from mclner.data.conll import _read_lines

    f = tmp_path / "t.txt"
    f.write_bytes(b"\xef\xbb\xbfa b\r\nc\n\nd")
    assert _read_lines(f, "utf-8") == ["a b", "c", "", "d"]
    f.write_bytes(b"ok\nab\xffc\n")
    with pytest.raises(DataFormatError, match=r":2: cannot decode byte 0xff at column 3 as utf-8"):
        _read_lines(f, "utf-8")
    f.write_text("x y\nz\n", encoding="utf-16")
    assert _read_lines(f, "utf-16") == ["x y", "z"]


def _predict(args, stdin=None, timeout=300):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("PYTHONPATH", None)
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "mclner", "predict", *args], input=stdin, capture_output=True,
                          text=True, env=env, timeout=timeout, cwd=Path(args[0]).parent)
    return proc, time.time() - t


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    import torch
    from mclner_fixtures import make_tiny_encoder_dir, relation_model

    from mclner.data.labels import LabelMap
    from mclner.training.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("bounds")
    lm = LabelMap(["LOC", "ORG", "PER"])
    torch.manual_seed(0)
    method, model, tok = relation_model(make_tiny_encoder_dir(root / "enc"), lm)
    return save_checkpoint(root / "best", model, tok, lm, {}, method=method)


def test_predict_refuses_a_5mb_line_quickly_and_small(ckpt, tmp_path):
    """A 5 MB line took gigabytes and minutes: now a one-line error naming it, in the time and memory
    of loading the model."""
    f = tmp_path / "in.txt"
    f.write_text("Angela Merkel visited Paris .\n" + "Angela Merkel visited Paris . " * 170_000 + "\n",
                 encoding="utf-8")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    proc, secs = _predict([str(ckpt), "-i", str(f), "-o", str(tmp_path / "out.jsonl")])
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and f"{f}:2: line longer than" in lines[0], proc.stderr[-2000:]
    assert not (tmp_path / "out.jsonl").exists()
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    assert peak_mb < 3000 or before / 1024 >= 3000, peak_mb  # loading torch and the model is most of it


@needs_dev_zero
def test_predict_from_dev_zero_is_one_line(ckpt):
    proc, _ = _predict([str(ckpt), "-i", str(ZERO)])
    assert proc.returncode == 2 and "/dev/zero:1: line longer than" in proc.stderr.strip().splitlines()[-1]
    proc, _ = _predict([str(ckpt), "--text", "w " * (MAX_SENTENCE_WORDS + 1)])
    assert proc.returncode == 2 and f"--text 1: a sentence of {MAX_SENTENCE_WORDS + 1} words" in proc.stderr


def test_predict_streams_its_input(ckpt, tmp_path):
    """Many lines on stdin: every one is answered, in order (the input is read in chunks)."""
    import json

    n = 64 * 32 + 5  # more than one chunk of the default batch size
    text = "".join(f"Angela Merkel visited Paris {k} .\n" for k in range(n))
    proc, _ = _predict([str(ckpt)], stdin=text)
    assert proc.returncode == 0, proc.stderr[-2000:]
    recs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert [r["tokens"][4] for r in recs] == [str(k) for k in range(n)]
