"""Translations of labelled source sentences without a translation service (docs/METHOD.md §8.2).

From the bilingual lexicon, keeping the source word order: ``full`` replaces every word and entity
phrase the lexicon knows (phrases first; unknown words stay), ``entities`` only the entity phrases,
``context`` only the other words; entity labels move onto the replacing words. Or real translations
from a CoNLL file in the source's order, checked to line up with the source sentences.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, List, Optional, Sequence

from mclner.data.codeswitch import CodeSwitcher, SwitchResult
from mclner.data.iob2 import iob2_to_entities
from mclner.errors import DataFormatError

MODES = ("full", "entities", "context")


def lexicon_translations(sentences: Sequence[Any], lexicon: Any, target_lang: str, mode: str = "full",
                         segmentation: Optional[str] = None) -> List[Any]:
    """One :class:`SwitchResult` (translated sentence, labels, word alignment) per source sentence.
    ``segmentation``: ``char``/``word`` split of the translated words (see :class:`CodeSwitcher`)."""
    if mode not in MODES:
        raise ValueError(f"translation mode must be one of {MODES}, got {mode!r}")
    word_ratio = 0.0 if mode == "entities" else 1.0
    entity_ratio = 0.0 if mode == "context" else 1.0
    # ratios of 0 and 1 make the switcher deterministic: every known word/phrase, or none
    sw = CodeSwitcher(lexicon, target_lang=target_lang, word_ratio=word_ratio, entity_ratio=entity_ratio, seed=0,
                      segmentation=segmentation)
    return [sw.switch_detailed(s) for s in sentences]


def _entity_counts(tags: Sequence[str]) -> Counter:
    return Counter(t for _, _, t in iob2_to_entities(tags))


def file_translations(path: str, sources: Sequence[Any], source_index: Sequence[int], source_total: int,
                      target_lang: str) -> List[Any]:
    """Translations read from a CoNLL file holding one labelled sentence per source sentence of the
    training split, in the same order (``source_index[k]``: the position in that split of
    ``sources[k]``). Every sentence must have as many entities of each type as its source (entities
    are matched by their order among those of the same type); the first one that does not line up is
    a one-line error naming its line. No word alignment is known: ``spans`` are None."""
    from mclner.data.conll import read_conll

    first: List[int] = []
    tr = read_conll(path, lang=target_lang, first_lines=first)
    if len(tr) != source_total:
        raise DataFormatError(f"{path}: {len(tr)} sentences, but the source training split has {source_total} "
                              "(one translation per source sentence, in order)")
    out = []
    for src, k in zip(sources, source_index):
        t = tr[k]
        want, got = _entity_counts(src.tags), _entity_counts(t.tags or [])
        if want != got:
            def show(c: Counter) -> str:
                return ", ".join(f"{n} {ty}" for ty, n in sorted(c.items())) or "no entities"

            raise DataFormatError(f"{path}:{first[k]}: sentence {k + 1} has {show(got)}, its source sentence "
                                  f"has {show(want)}")
        out.append(SwitchResult(type(t)(list(t.tokens), list(t.tags), target_lang), [-1] * len(src.tokens),
                                [None] * len(src.tokens)))
    return out

