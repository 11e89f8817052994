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

import math
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

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
    list per text; :meth:`pipe` streams the results of an iterable of texts. Each text is one sentence
    (a line), split into words the way the model's target corpus was tokenised (the segmenter recorded
    in the checkpoint, `mclner.data.segmenters`: one word per Han/kana character for a per-character
    target, Japanese or Chinese words for a word-segmented one); the texts are predicted in batches.
    """

    def __init__(self, loaded: Any, impl: str = DEFAULT_IMPL, batch_size: int = 32,
                 none_bias: Optional[float] = None, segmenter: Optional[str] = None) -> None:
        from mclner.data.segmenters import Segmenter, checkpoint_segmenter

        self.loaded = loaded
        self.impl = impl
        self.batch_size = _check_batch_size(batch_size)
        self.none_bias = _check_none_bias(none_bias)
        self.text = checkpoint_segmenter(getattr(loaded, "path", None), getattr(loaded, "config", None))
        self.segmenter = Segmenter(segmenter or self.text["segmenter"])

    @classmethod
    def from_pretrained(cls, path: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
                        fused: bool = False, impl: Optional[str] = None, batch_size: int = 32,
                        none_bias: Optional[float] = None, segmenter: Optional[str] = None) -> NERPredictor:
        """Load a checkpoint folder written by `mclner train` (e.g. ``runs/x/best``). ``device``:
        default cuda when available; ``impl`` (``reference``, ``cpu``, ``triton``, ``cuda``, ``auto``;
        default ``auto``, the best runnable one) or ``fused=True`` (= ``auto``) choose the op
        implementations; ``none_bias``: the relation models' decoding bias (default: the checkpoint's
        calibrated one); ``segmenter``: how raw text is split into words (default: the checkpoint's,
        see `mclner.data.segmenters`)."""
        from mclner.inference import load_model
        from mclner.training.guards import check_device

        chosen = choose_impl(impl, fused)
        _check_batch_size(batch_size)
        _check_none_bias(none_bias)
        if device is not None and not isinstance(device, torch.device):
            if not isinstance(device, str):
                raise UserError(f"device must be a string such as 'cpu' or 'cuda', got {type(device).__name__}")
            device = check_device(device)
        elif isinstance(device, torch.device):
            device = check_device(str(device))
        loaded = load_model(path, device)
        check_impl(chosen, loaded.device)
        return cls(loaded, chosen, batch_size, none_bias, segmenter)

    @property
    def types(self) -> List[str]:
        """The entity types the model predicts."""
        return list(self.loaded.label_map.types)

    def _keep(self, types: Any) -> Optional[set]:
        """``types`` as a set of known types: a string is one type; unknown ones are an error."""
        if types is None:
            return None
        if isinstance(types, str):
            types = [types]
        try:
            wanted = list(types)
        except TypeError:
            raise UserError(f"types must be a type name or a list of them, got {type(types).__name__}") from None
        bad = [t for t in wanted if not isinstance(t, str)]
        if bad:
            raise UserError(f"types must be strings, got {type(bad[0]).__name__}")
        if not wanted:
            raise UserError(f"types is empty; the model predicts {', '.join(self.types)}")
        unknown = sorted(set(wanted) - set(self.types))
        if unknown:
            raise UserError(f"unknown type(s) {', '.join(unknown)}; the model predicts {', '.join(self.types)}")
        return set(wanted)

    def predict_words(self, sentences: Sequence[Sequence[str]], lang: Optional[str] = None,
                      types: Optional[Union[str, Sequence[str]]] = None) -> List[List[ScoredEntity]]:
        """Word-level view: ``(start_word, end_word_inclusive, type, score)`` per already tokenised sentence."""
        from mclner.data.readers import Sentence

        keep = self._keep(types)
        if isinstance(sentences, (str, bytes)) or sentences is None:
            raise UserError("predict_words takes a list of sentences, each a list of words")
        sents = [Sentence(list(words), None, lang or "xx") for words in sentences]
        for k, s in enumerate(sents):
            if any(not isinstance(w, str) or not w or any(c.isspace() for c in w) for w in s.tokens):
                raise UserError(f"sentence {k}: words must be non-empty strings without whitespace")
        lm = self.loaded
        preds = predict_scored(lm.model, [s for s in sents if s.tokens], lm.collator, lm.label_map,
                               batch_size=self.batch_size, device=lm.device, impl=self.impl, none_bias=self.none_bias)
        it = iter(preds)
        out = [next(it) if s.tokens else [] for s in sents]
        if keep is not None:
            out = [[e for e in ents if e[2] in keep] for ents in out]
        return out

    def words(self, text: str) -> Any:
        """``text`` split into words as the model's target corpus is (`mclner.data.text.TextWords`)."""
        return self.segmenter(_check_text(text, 0))

    def __call__(self, texts: Union[str, Sequence[str]], lang: Optional[str] = None,
                 types: Optional[Union[str, Sequence[str]]] = None) -> Any:
        """Entities of each text as pipeline-style dicts (see the module doc); ``types`` keeps only
        those entity types (one name or a list)."""
        from mclner.data.text import entity_dicts

        single = isinstance(texts, str)
        if texts is None or isinstance(texts, (bytes, bytearray)):
            _check_text(texts, 0)
        try:
            items = [texts] if single else list(texts)
        except TypeError:
            raise UserError(f"expected a string or a list of strings, got {type(texts).__name__}") from None
        for k, t in enumerate(items):
            _check_text(t, k)
        tw = [self.segmenter(t) for t in items]
        preds = self.predict_words([w.words for w in tw], lang=lang, types=types)
        out = [entity_dicts(w.text, w.spans, ents) for w, ents in zip(tw, preds)]
        return out[0] if single else out

    def pipe(self, texts: Iterable[str], batch_size: Optional[int] = None, lang: Optional[str] = None,
             types: Optional[Union[str, Sequence[str]]] = None) -> Iterator[List[Dict[str, Any]]]:
        """The entities of each text of an iterable, yielded in order as they are predicted: texts are
        read ``batch_size`` at a time (default: the predictor's), so a large input (a file, a
        generator) never has to be in memory at once."""
        bs = self.batch_size if batch_size is None else _check_batch_size(batch_size)
        self._keep(types)  # a bad filter fails before any text is read
        chunk: List[str] = []
        for text in texts:
            chunk.append(text)
            if len(chunk) == bs:
                yield from self(chunk, lang=lang, types=types)
                chunk = []
        if chunk:
            yield from self(chunk, lang=lang, types=types)


def _check_text(text: Any, k: int) -> str:
    if isinstance(text, str):
        return text
    if isinstance(text, (bytes, bytearray)):
        raise UserError(f"text {k}: expected a string, got {type(text).__name__} (decode it first, e.g. "
                        "text.decode('utf-8'))")
    raise UserError(f"text {k}: expected a string, got {'None' if text is None else type(text).__name__}")


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch_size must be a positive integer, got {batch_size!r}")
    return batch_size


def _check_none_bias(none_bias: Any) -> Optional[float]:
    if none_bias is None:
        return None
    if isinstance(none_bias, bool) or not isinstance(none_bias, (int, float)) or not math.isfinite(none_bias):
        raise UserError(f"none_bias must be a finite number, got {none_bias!r}")
    return float(none_bias)
