"""How the target corpus tokenises its text, and translations split to match it.

Code-switched and translated sentences (mCL-NER's code-switching, ConCNER's translations, DLBri's
oriented pairs) should look like the target's own tokens. Corpora of scripts written without spaces
come two ways: per character (MSRA, WikiANN zh/ja) or word/morpheme-segmented (many Chinese and most
Japanese NER sets). ``char`` splits a translated phrase into its characters; ``word`` keeps the
lexicon's words (a CC-CEDICT entry is one word: ``美国``, not ``美 国``).

``auto`` decides from target text: among the tokens made only of CJK characters (Han, kana), the
share of tokens with more than one character. Per-character corpora give 0 (MSRA test: 0 of 153,120);
word-segmented Chinese gives well over half (the first 1,000 MSRA test sentences re-segmented by greedy
longest match over the CC-CEDICT headwords: 61.6 %); morpheme-segmented Japanese has many one-kana particles, so its
share is lower than Chinese, but its content words mostly have several characters. :data:`WORD_SHARE`
= 0.3 sits between the two with room on both sides (a few multi-character tokens in a per-character
corpus, a particle-heavy Japanese corpus). Text with (almost) no CJK tokens is a space-separated script:
``word``; no text at all: per character for zh/ja (the embedded corpora), else word.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, List, Optional, Sequence, Tuple

from mclner.data.sentence import CHAR_LANGS, CJK_CHAR

SEGMENTATIONS = ("auto", "char", "word")
# auto: above this share of multi-character tokens among the CJK tokens the target is word-segmented
WORD_SHARE = 0.3
# auto: text whose CJK tokens are fewer than this share of all its tokens is a space-separated script
# (e.g. German with a few Chinese names); its CJK share says nothing about the corpus.
MIN_CJK_SHARE = 0.2


def _is_cjk_token(token: str) -> bool:
    return bool(token) and all(CJK_CHAR.match(ch) for ch in token)


def cjk_token_counts(sentences: Iterable[Any]) -> Tuple[int, int, int]:
    """``(tokens, CJK tokens, multi-character CJK tokens)`` of sentences (objects with ``tokens``)."""
    total = cjk = multi = 0
    for s in sentences:
        for t in s.tokens:
            total += 1
            if _is_cjk_token(t):
                cjk += 1
                multi += len(t) > 1
    return total, cjk, multi


@dataclass(frozen=True)
class Segmentation:
    """The segmentation used for translations (``char`` or ``word``), what was asked for (``auto``,
    ``char``, ``word``) and how it was decided, for the line the trainer prints and the run's log."""

    mode: str
    requested: str
    how: str
    mismatch: bool = False  # a given mode the target text contradicts

    def describe(self) -> str:
        return f"{self.mode} ({self.how})"

    def to_dict(self) -> dict:
        return {"mode": self.mode, "requested": self.requested, "how": self.how, "mismatch": self.mismatch}


def infer_segmentation(sentences: Sequence[Any], lang: str, text_name: str = "the target text") -> Segmentation:
    """``auto``: char or word from the target text (see the module doc)."""
    return resolve_segmentation("auto", lang, sentences, text_name)


def resolve_segmentation(requested: str, lang: str, sentences: Optional[Sequence[Any]] = None,
                         text_name: str = "the target text") -> Segmentation:
    """The segmentation for ``--target-segmentation requested``. ``auto`` infers it from ``sentences``
    (target text); a given ``char``/``word`` is kept, and flagged as a mismatch (``how`` says so)
    when the text clearly says otherwise."""
    if requested not in SEGMENTATIONS:
        raise ValueError(f"target segmentation must be one of {', '.join(SEGMENTATIONS)}, got {requested!r}")
    total, cjk, multi = cjk_token_counts(sentences or ())
    inferred: Optional[str] = None
    if total and cjk >= MIN_CJK_SHARE * total:
        share = multi / cjk
        inferred = "word" if share > WORD_SHARE else "char"
        evidence = (f"{100 * share:.1f}% of {cjk:,} CJK tokens of {text_name} have several characters "
                    f"({'>' if inferred == 'word' else '<='} {100 * WORD_SHARE:.0f}%)")
    elif total:
        inferred = "word"
        evidence = f"{text_name} is not CJK ({cjk:,} of {total:,} tokens are CJK)"
    else:
        evidence = "no target text"
    if requested == "auto":
        if inferred is None:
            mode = default_mode(lang)
            return Segmentation(mode, "auto", f"auto: no target text; {lang} assumed "
                                              f"{'per character' if mode == 'char' else 'space-separated'}")
        return Segmentation(inferred, "auto", f"auto: {evidence}")
    if inferred is not None and inferred != requested:
        return Segmentation(requested, requested, f"given; MISMATCH: {evidence}, which suggests {inferred}",
                            mismatch=True)
    return Segmentation(requested, requested, "given" + (f"; {evidence}" if inferred is not None else ""))


def segment_translation(words: Sequence[str], mode: str) -> List[str]:
    """A translation's target words as the target tokenises them: ``char``, every character (spaces
    dropped, as in per-character corpora, which split Latin letters and digits too); ``word``, the
    lexicon's words as they are (whitespace inside a word splits it). A string is one word."""
    if isinstance(words, str):
        words = [words]
    if mode == "char":
        return [ch for w in words for ch in w if not ch.isspace()]
    if mode == "word":
        return [p for w in words for p in w.split()]
    raise ValueError(f"segmentation must be 'char' or 'word', got {mode!r}")


def run_segmentation(ctx: Any) -> Segmentation:
    """The segmentation the trainer resolved for the run (``ctx.segmentation``), or, for a context made
    without one, the configured mode decided without target text."""
    seg = getattr(ctx, "segmentation", None)
    if seg is not None:
        return seg
    return resolve_segmentation(getattr(ctx.train, "target_segmentation", "auto") or "auto", ctx.train.target_lang)


def recorded_mode(train_args: dict, run_dir: Optional[Any] = None) -> Optional[str]:
    """The split a finished or running training run used (for figures that rebuild its code-switched
    sentences): the given ``char``/``word`` of its ``training_args.json``, or for ``auto`` what the run
    resolved (``results.json``, else the ``data`` event of ``log.jsonl`` in ``run_dir``); None when unknown."""
    import json
    from pathlib import Path

    given = train_args.get("target_segmentation")
    if given in ("char", "word"):
        return given
    if run_dir is None:
        return None
    run = Path(run_dir)
    try:
        rec = json.loads((run / "results.json").read_text(encoding="utf-8")).get("target_segmentation")
        if isinstance(rec, dict) and rec.get("mode") in ("char", "word"):
            return rec["mode"]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        for line in (run / "log.jsonl").read_text(encoding="utf-8").splitlines():
            if '"event": "data"' in line:
                rec = json.loads(line).get("target_segmentation")
                if isinstance(rec, dict) and rec.get("mode") in ("char", "word"):
                    return rec["mode"]
    except (OSError, ValueError, AttributeError):
        pass
    return None


def default_mode(lang: Optional[str]) -> str:
    """Without a decision from target text: per character for zh/ja (the embedded corpora), else word."""
    return "char" if lang in CHAR_LANGS else "word"
