"""Raw text to words the way a model's target corpus is tokenised.

A model learns on the target's own tokens: per-character corpora (MSRA, WikiANN zh/ja) give it one word
per Han/kana character, word- or morpheme-segmented corpora give it words (``東京``, ``ニューヨーク``).
Raw text handed to ``predict``, ``NERPredictor`` or ``train --target-unlabeled-format text`` must be
split the same way, or a name the model knows as one word arrives as characters it never saw as such.

Segmenters (every one splits text of space-separated scripts, punctuation and numbers by the rules
of `mclner.data.text.tokenize_line`; they differ only on runs of Han/kana characters):

- ``char``: one word per character (the per-character corpora; the default of old checkpoints).
- ``space``: a run of Han/kana between spaces or punctuation is one word (text already segmented
  with spaces, as a word-segmented corpus is written).
- ``fugashi``: Japanese words from MeCab with UniDic (``pip install "mclner[ja]"``: fugashi + unidic-lite).
- ``sudachipy``: Japanese words from Sudachi, short units (``pip install "mclner[ja-sudachi]"``:
  sudachipy + sudachidict-core).
- ``jieba``: Chinese words from jieba (``pip install "mclner[zh]"``).

A checkpoint records the segmenter of its target (``config.json["text"]``, :func:`text_record`);
:func:`checkpoint_segmenter` reads it back, and for checkpoints written before it was recorded
derives it from the run's resolved target segmentation (``char`` when unknown, as before).
"""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from mclner.errors import UserError

# name -> (pip extra, the modules it needs, what it segments)
EXTERNAL: Dict[str, tuple] = {
    "fugashi": ("ja", ("fugashi", "unidic_lite"), "Japanese words (MeCab + UniDic)"),
    "sudachipy": ("ja-sudachi", ("sudachipy", "sudachidict_core"), "Japanese words (Sudachi, short units)"),
    "jieba": ("zh", ("jieba",), "Chinese words (jieba)"),
}
BUILTIN = ("char", "space")
SEGMENTERS = BUILTIN + tuple(EXTERNAL)
# The segmenter of a word-segmented target when none is named (ja: MeCab/UniDic short units, the
# segmentation most Japanese NER corpora use; zh: jieba).
WORD_DEFAULTS = {"ja": "fugashi", "zh": "jieba"}


def default_segmenter(mode: str, lang: Optional[str]) -> str:
    """The segmenter of raw target text for a target segmentation ``mode`` (``char``/``word``)."""
    if mode == "char":
        return "char"
    return WORD_DEFAULTS.get((lang or "").split("-")[0].lower(), "space")


def _require(name: str) -> None:
    extra, modules, what = EXTERNAL[name]
    for mod in modules:
        try:
            importlib.import_module(mod)
        except ImportError:
            raise UserError(f"splitting raw text into {what} needs the {name!r} segmenter: "
                            f'pip install "mclner[{extra}]" (or pass another segmenter: {", ".join(BUILTIN)})'
                            ) from None


@functools.cache
def _splitter(name: str) -> Optional[Callable[[str], List[str]]]:
    """The function that splits one run of Han/kana characters (None: one word per character)."""
    if name == "char":
        return None
    if name == "space":
        return lambda run: [run]
    _require(name)
    if name == "fugashi":
        import fugashi

        tagger = fugashi.Tagger()
        return lambda run: [w.surface for w in tagger(run)]
    if name == "sudachipy":
        from sudachipy import Dictionary, SplitMode

        d = Dictionary()
        tok = d.tokenizer() if hasattr(d, "tokenizer") else d.create()  # create(): sudachipy < 0.7
        return lambda run: [m.surface() for m in tok.tokenize(run, SplitMode.A)]
    if name == "jieba":
        import logging

        import jieba

        jieba.setLogLevel(logging.WARNING)  # no "Building prefix dict" lines on stderr
        return lambda run: list(jieba.cut(run, HMM=True))
    raise AssertionError(name)  # pragma: no cover


def check_segmenter(name: str) -> str:
    """``name`` when it is a known segmenter whose packages are installed, else a one-line UserError."""
    if name not in SEGMENTERS:
        raise UserError(f"unknown segmenter {name!r}; choose one of {', '.join(SEGMENTERS)}")
    if name in EXTERNAL:
        _require(name)
    return name


class Segmenter:
    """``segmenter(line)`` -> `mclner.data.text.TextWords` (words with their character offsets)."""

    def __init__(self, name: str) -> None:
        self.name = check_segmenter(name)
        self._split = _splitter(self.name)

    def __call__(self, line: str) -> Any:
        from mclner.data.text import tokenize_line

        return tokenize_line(line, self._split)

    def words(self, line: str) -> List[str]:
        return self(line).words

    def __repr__(self) -> str:
        return f"Segmenter({self.name!r})"


def get_segmenter(name: str) -> Segmenter:
    return Segmenter(name)


def text_record(mode: str, lang: Optional[str], segmenter: Optional[str] = None) -> Dict[str, Any]:
    """What a checkpoint records about raw text (``config.json["text"]``): the target's segmentation
    (``char``/``word``), its language and the segmenter that splits raw text like it."""
    seg = segmenter or default_segmenter(mode, lang)
    if seg not in SEGMENTERS:
        raise UserError(f"unknown segmenter {seg!r}; choose one of {', '.join(SEGMENTERS)}")
    return {"segmentation": mode, "lang": lang, "segmenter": seg}


def checkpoint_segmenter(path: Any, cfg: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The raw-text record of a checkpoint folder (see :func:`text_record`), with ``"recorded"`` saying
    whether the checkpoint wrote it or it was derived (older checkpoints: from the run's options and
    results; ``char`` when nothing says otherwise)."""
    from mclner.data.segmentation import recorded_mode

    if path is None:  # a model loaded without its folder: only what config.json says
        rec = (cfg or {}).get("text") if isinstance(cfg, dict) else None
        if isinstance(rec, dict) and rec.get("segmenter") in SEGMENTERS:
            return {**rec, "recorded": True}
        return {**text_record("char", None), "recorded": False}
    path = Path(path)
    if cfg is None:
        try:
            cfg = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            cfg = {}
    rec = cfg.get("text") if isinstance(cfg, dict) else None
    if isinstance(rec, dict) and rec.get("segmenter") in SEGMENTERS:
        return {**rec, "recorded": True}
    try:
        args = json.loads((path / "training_args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        args = {}
    args = args if isinstance(args, dict) else {}
    mode = recorded_mode(args, path.resolve().parent) or "char"
    return {**text_record(mode, args.get("target_lang"), args.get("target_segmenter")), "recorded": False}


def segment_lines(lines: Sequence[str], segmenter: Segmenter, lang: str) -> List[Any]:
    """Unlabelled `Sentence` objects of raw lines (blank lines skipped)."""
    from mclner.data.readers import Sentence

    out = []
    for line in lines:
        words = segmenter.words(line)
        if words:
            out.append(Sentence(words, None, lang))
    return out


def read_raw_text(path: Any, lang: str, segmentation: Optional[str], segmenter: Optional[str],
                  target_sentences: Sequence[Any] = ()) -> List[Any]:
    """Unlabelled sentences of a raw text file (one sentence per line), split like the target corpus:
    with ``segmenter``, else the default one for the target's segmentation (``segmentation`` given, or
    inferred from ``target_sentences``, the labelled target text)."""
    from mclner.data.segmentation import resolve_segmentation
    from mclner.data.text import split_records

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{p}: is a folder, expected a raw text file") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{p}: not UTF-8 text ({exc.reason})") from None
    if segmenter is None:
        mode = resolve_segmentation(segmentation or "auto", lang, target_sentences).mode
        segmenter = default_segmenter(mode, lang)
    out = segment_lines(split_records(text), Segmenter(segmenter), lang)
    if not out:
        raise UserError(f"{p}: no sentences (every line is blank)")
    return out
