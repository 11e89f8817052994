"""Inference on raw text for users: entities with scores and character offsets, and the Python API
:class:`NERPredictor` (``from mclner import NERPredictor``).

Scores work for every method: the model's ``entity_scores`` turns the scores its ``decode`` returned
(`mclner.evaluation.predict_entities` with ``return_probs``) into one per entity (e.g. for taggers
the mean over the entity's words of each word's highest tag probability). Scores follow the decoding
options the entities were decoded with.

Entities come as the Hugging Face token-classification pipeline's aggregated output
(`mclner.data.text.entity_dicts`): ``entity_group``, ``score``, ``word`` (exactly as in the input),
``start``/``end`` (character offsets, end exclusive), plus ``word_start``/``word_end`` (word indices,
end inclusive) for the word-level view.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple, Union

import torch

from mclner.errors import UserError
from mclner.ops.impl import DEFAULT_IMPL, check_impl, choose_impl

ScoredEntity = Tuple[int, int, str, Optional[float]]


def entity_scores(model: Any, entities: Sequence[Tuple[int, int, str]], probs: Optional[torch.Tensor],
                  label_map: Any) -> List[ScoredEntity]:
    """``(start, end, type, score)`` for each decoded entity from the sentence's scores as
    `predict_entities(..., return_probs=True)` returns them, scored by the model (its
    ``entity_scores``); score ``None`` when the method returned no scores."""
    return [(s, e, t, x) for (s, e, t), x in zip(entities, model.entity_scores(entities, probs, label_map))]


def predict_scored(model: torch.nn.Module, sentences: Sequence[Any], collator: Any, label_map: Any,
                   **options: Any) -> List[List[ScoredEntity]]:
    """`mclner.evaluation.predict_entities` with a score per entity (``options`` are passed on:
    batch_size, device, impl and the method's decoding options)."""
    from mclner.evaluation import predict_entities

    if not sentences:
        return []
    preds, probs = predict_entities(model, sentences, collator, label_map, return_probs=True, **options)
    return [entity_scores(model, ents, p, label_map) for ents, p in zip(preds, probs)]


class NERPredictor:
    """Named entities in raw text with a trained checkpoint of any method::

        from mclner import NERPredictor
        ner = NERPredictor.from_pretrained("runs/mclner/best", device="cpu")
        for ent in ner("Angela Merkel visited Paris.", lang="en"):
            print(ent["entity_group"], ent["word"], ent["start"], ent["end"], round(ent["score"], 3))

    Calling it with one string gives that text's entities (a list of dicts); with a list of strings, a
    list per text. Each text is one sentence (a line), split into words and punctuation as the
    training corpora are (CJK characters one by one); the texts are predicted in batches.
    """

    def __init__(self, loaded: Any, impl: str = DEFAULT_IMPL, batch_size: int = 32,
                 none_bias: Optional[float] = None) -> None:
        self.loaded = loaded
        self.impl = impl
        self.batch_size = int(batch_size)
        self.none_bias = none_bias

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
                        fused: bool = False, impl: Optional[str] = None, batch_size: int = 32,
                        none_bias: Optional[float] = None) -> NERPredictor:
        """Load a checkpoint folder written by `mclner train` (e.g. ``runs/x/best``). ``device``:
        default cuda when available; ``impl`` (``reference``, ``cpu``, ``triton``, ``cuda``, ``auto``;
        default ``auto``, the best runnable one) or ``fused=True`` (= ``auto``) choose the op
        implementations; ``none_bias``: the relation models' decoding bias (default: the checkpoint's
        calibrated one)."""
        from mclner.inference import load_model

        chosen = choose_impl(impl, fused)
        loaded = load_model(path, device)
        check_impl(chosen, loaded.device)
        return cls(loaded, chosen, batch_size, none_bias)

    @property
    def types(self) -> List[str]:
        """The entity types the model predicts."""
        return list(self.loaded.label_map.types)

    def predict_words(self, sentences: Sequence[Sequence[str]], lang: Optional[str] = None,
                      types: Optional[Sequence[str]] = None) -> List[List[ScoredEntity]]:
        """Word-level view: ``(start_word, end_word_inclusive, type, score)`` per already tokenised sentence."""
        from mclner.data.readers import Sentence

        sents = [Sentence(list(words), None, lang or "xx") for words in sentences]
        for k, s in enumerate(sents):
            if any(not w or any(c.isspace() for c in w) for w in s.tokens):
                raise UserError(f"sentence {k}: words must be non-empty and without whitespace")
        lm = self.loaded
        preds = predict_scored(lm.model, [s for s in sents if s.tokens], lm.collator, lm.label_map,
                               batch_size=self.batch_size, device=lm.device, impl=self.impl, none_bias=self.none_bias)
        it = iter(preds)
        out = [next(it) if s.tokens else [] for s in sents]
        if types is not None:
            keep = set(types)
            out = [[e for e in ents if e[2] in keep] for ents in out]
        return out

    def __call__(self, texts: Union[str, Sequence[str]], lang: Optional[str] = None,
                 types: Optional[Sequence[str]] = None) -> Any:
        """Entities of each text as pipeline-style dicts (see the module doc); ``types`` keeps only
        those entity types."""
        from mclner.data.text import entity_dicts, tokenize_line

        single = isinstance(texts, str)
        items = [texts] if single else list(texts)
        for k, t in enumerate(items):
            if not isinstance(t, str):
                raise UserError(f"text {k}: expected a string, got {type(t).__name__}")
        tw = [tokenize_line(t) for t in items]
        preds = self.predict_words([w.words for w in tw], lang=lang, types=types)
        out = [entity_dicts(w.text, w.spans, ents) for w, ents in zip(tw, preds)]
        return out[0] if single else out

