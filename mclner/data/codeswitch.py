"""Code-switching (docs/METHOD.md §4): translate entity phrases (and a fraction of other words) of a labelled
source sentence with a bilingual lexicon, project the labels and keep a word alignment."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from mclner.data.iob2 import iob2_to_entities
from mclner.data.lexicon import Lexicon
from mclner.data.readers import Sentence
from mclner.data.segmentation import default_mode, segment_translation

Span = Optional[Tuple[int, int]]


@dataclass
class SwitchResult:
    """A code-switched sentence and its alignment to the source.

    ``alignment[i]``: index of the first code-switched word that source word i became (-1: none).
    ``spans[i]``: ``(first, last)`` code-switched words of source word i (``None``: none). For an entity
    translated as a whole phrase the words in between are not individually aligned: the first source
    word gets the first target word, the last source word the last one (so the THW pair (e, s) maps to
    the translated entity's own THW pair), middle words get -1 — unless source and translation have
    the same number of words, which are then aligned one to one."""

    sentence: Sentence
    alignment: List[int]
    spans: List[Span]
    entities: int = 0
    switched_phrase: int = 0
    switched_words: int = 0


@dataclass
class SwitchStats:
    sentences: int = 0
    entities: int = 0
    switched_phrase: int = 0  # entities translated as a whole phrase
    switched_words: int = 0  # entities translated word by word
    other_words: int = 0  # non-entity words
    other_switched: int = 0
    missing: dict = field(default_factory=dict)  # untranslatable entity phrase -> count

    @property
    def entity_coverage(self) -> float:
        return (self.switched_phrase + self.switched_words) / self.entities if self.entities else 0.0

    def report(self, top: int = 5) -> str:
        miss = sorted(self.missing.items(), key=lambda kv: -kv[1])[:top]
        return (
            f"code-switched {self.sentences} sentences: {self.switched_phrase + self.switched_words}/{self.entities} "
            f"entities ({100 * self.entity_coverage:.1f}%; {self.switched_phrase} as a phrase, "
            f"{self.switched_words} word by word), {self.other_switched}/{self.other_words} other words"
            + (f"; most frequent untranslated: {', '.join(f'{k} ({v})' for k, v in miss)}" if miss else "")
        )


class CodeSwitcher:
    """Seeded code-switcher. ``word_ratio``: chance that a non-entity word with a translation is
    replaced; ``entity_ratio``: chance that an entity is attempted (1.0: all). ``segmentation``:
    ``char`` splits translations into characters, ``word`` keeps the lexicon's words
    (`mclner.data.segmentation`); None: char for zh/ja, word otherwise."""

    def __init__(self, lexicon: Lexicon, target_lang: Optional[str] = None, word_ratio: float = 0.3,
                 entity_ratio: float = 1.0, seed: int = 0, segmentation: Optional[str] = None):
        if not 0.0 <= word_ratio <= 1.0 or not 0.0 <= entity_ratio <= 1.0:
            raise ValueError("word_ratio and entity_ratio must lie in [0, 1]")
        self.lexicon = lexicon
        self.target_lang = target_lang or lexicon.target_lang
        self.segmentation = segmentation or default_mode(self.target_lang)
        segment_translation([], self.segmentation)  # an unknown mode fails here, not at the first entity
        self.word_ratio = word_ratio
        self.entity_ratio = entity_ratio
        self.rng = random.Random(seed)
        self.stats = SwitchStats()

    def _words(self, translation: Sequence[str]) -> List[str]:
        """Target words as the target corpus tokenises them (``self.segmentation``)."""
        return segment_translation(translation, self.segmentation)

    def _translate_entity(self, words: Sequence[str]) -> Tuple[Optional[List[List[str]]], str]:
        """Per source word target words (whole phrase: one group), and how: 'phrase', 'words', ''."""
        whole = self.lexicon.translate(" ".join(words), entity=True)
        if whole and self._words(whole):
            return [self._words(whole)], "phrase"
        if len(words) > 1:
            per = [self.lexicon.translate(w, entity=True) for w in words]
            if all(p and self._words(p) for p in per):
                return [self._words(p) for p in per], "words"
        return None, ""

    def switch_detailed(self, sentence: Sentence) -> SwitchResult:
        if sentence.tags is None:
            raise ValueError("code-switching needs a labelled sentence (tags)")
        n = len(sentence.tokens)
        ents = {s: (e, t) for s, e, t in iob2_to_entities(sentence.tags)}
        out_tokens: List[str] = []
        out_tags: List[str] = []
        spans: List[Span] = [None] * n
        res_counts = {"entities": 0, "phrase": 0, "words": 0}
        self.stats.sentences += 1
        i = 0
        while i < n:
            if i in ents:
                e, t = ents[i]
                src = sentence.tokens[i : e + 1]
                res_counts["entities"] += 1
                self.stats.entities += 1
                attempted = self.rng.random() < self.entity_ratio
                groups, how = self._translate_entity(src) if attempted else (None, "")
                if groups is None:
                    if attempted:
                        key = " ".join(src)
                        self.stats.missing[key] = self.stats.missing.get(key, 0) + 1
                    groups = [[w] for w in src]
                first = len(out_tokens)
                if how == "phrase":
                    tgt = groups[0]
                    last = first + len(tgt) - 1
                    if len(tgt) == len(src):
                        for k in range(len(src)):
                            spans[i + k] = (first + k, first + k)
                    elif i == e:
                        spans[i] = (first, last)
                    else:
                        spans[i], spans[e] = (first, first), (last, last)
                    out_tokens.extend(tgt)
                else:
                    for k, g in enumerate(groups):
                        if g:
                            spans[i + k] = (len(out_tokens), len(out_tokens) + len(g) - 1)
                        out_tokens.extend(g)
                m = len(out_tokens) - first
                out_tags.extend([f"B-{t}"] + [f"I-{t}"] * (m - 1))
                if how:
                    res_counts[how] += 1
                    setattr(self.stats, f"switched_{how}", getattr(self.stats, f"switched_{how}") + 1)
                i = e + 1
                continue
            word = sentence.tokens[i]
            self.stats.other_words += 1
            tgt = None
            if self.word_ratio > 0 and self.rng.random() < self.word_ratio:
                tr = self.lexicon.translate(word, entity=False)
                tgt = self._words(tr) if tr else None
            if tgt:
                self.stats.other_switched += 1
                spans[i] = (len(out_tokens), len(out_tokens) + len(tgt) - 1)
                out_tokens.extend(tgt)
                out_tags.extend(["O"] * len(tgt))
            else:
                spans[i] = (len(out_tokens), len(out_tokens))
                out_tokens.append(word)
                out_tags.append("O")
            i += 1
        alignment = [sp[0] if sp is not None else -1 for sp in spans]
        cs = Sentence(out_tokens, out_tags, self.target_lang)
        return SwitchResult(cs, alignment, spans, res_counts["entities"], res_counts["phrase"], res_counts["words"])

    def switch(self, sentence: Sentence) -> Tuple[Sentence, List[int]]:
        """``(code-switched sentence, alignment)``; see :class:`SwitchResult`."""
        r = self.switch_detailed(sentence)
        return r.sentence, r.alignment

    def switch_all(self, sentences: Sequence[Sentence]) -> List[SwitchResult]:
        return [self.switch_detailed(s) for s in sentences]

    def report(self) -> str:
        return self.stats.report()
