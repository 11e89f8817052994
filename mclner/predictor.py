"""Inference on raw text for users: entities with scores and character offsets, and the Python API
:class:`NERPredictor` (``from mclner import NERPredictor``).

Scores work for every method through the model-agnostic path of `mclner.evaluation.predict_entities`
(its ``return_probs`` output): for relation models (``[n, n, C]`` probabilities) an entity's score is
the mean probability of the relations that decode it, its THW cell and its NNW links (as
`mclner.data.grid.decode_grid_scored` and self-training compute it); for taggers (``[n, T]``) it is
the mean over the entity's words of each word's highest tag probability. Scores follow the decoding
bias the entities were decoded with.

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

ScoredEntity = Tuple[int, int, str, Optional[float]]
IMPL_CHOICES = ("reference", "cpu", "triton", "cuda", "auto")
# What `train`, `evaluate`, `predict`, the plots and NERPredictor run when no impl is chosen: the best
# runnable implementation per op (the native CPU kernels on a CPU, triton/cuda on a GPU, the reference
# when nothing fused is built). The one place the default is set.
DEFAULT_IMPL = "auto"
IMPL_HELP = ("op implementation: reference (pure PyTorch), cpu (native fused kernels), triton, cuda, or auto (the "
             "best runnable one: the native CPU kernels on a CPU, triton or cuda on a GPU, reference when nothing "
             "fused is built)")
FUSED_HELP = "the same as --impl auto (kept for older scripts)"


def resolve_impl(impl: Optional[str], fused: bool = False) -> str:
    """The op implementation from ``--impl``/``impl=`` and the ``--fused`` alias (= ``auto``);
    :data:`DEFAULT_IMPL` (``auto``) when neither is given."""
    if impl is not None and impl not in IMPL_CHOICES:
        raise UserError(f"impl must be one of {', '.join(IMPL_CHOICES)}, got {impl!r}")
    if fused:
        if impl not in (None, "auto"):
            raise UserError(f"--fused means --impl auto; it contradicts --impl {impl}")
        return "auto"
    return impl or DEFAULT_IMPL


def check_impl(impl: str, device: torch.device) -> None:
    """A one-line error, before any work, when an explicitly chosen implementation cannot run here."""
    if impl in ("auto", "reference"):
        return
    from mclner.ops import available_impls

    status = available_impls()[impl]
    if not status["runnable"]:
        raise UserError(f"--impl {impl} cannot run here: {status['reason']}")
    if impl == "cuda" and torch.device(device).type != "cuda":
        raise UserError(f"--impl cuda needs a CUDA device, got --device {device}")


def entity_scores(entities: Sequence[Tuple[int, int, str]], probs: Optional[torch.Tensor],
                  label_map: Any) -> List[ScoredEntity]:
    """``(start, end, type, score)`` for each decoded entity from the sentence's probabilities as
    `predict_entities(..., return_probs=True)` returns them (see the module doc); score ``None`` when
    the method returned no probabilities."""
    if probs is None:
        return [(s, e, t, None) for s, e, t in entities]
    p = probs.detach().float().cpu()
    out: List[ScoredEntity] = []
    if p.dim() == 3:  # relation grid [n, n, C]
        from mclner.data.grid import NNW

        n = p.shape[0]
        for s, e, t in entities:
            if e >= n:  # a word the model did not see (cut sentence): no score
                out.append((s, e, t, None))
                continue
            links = sum(float(p[k, k + 1, NNW]) for k in range(s, e))
            out.append((s, e, t, (float(p[e, s, label_map.thw(t)]) + links) / (e - s + 1)))
    elif p.dim() == 2:  # tag probabilities [n, T]
        best = p.max(-1).values
        for s, e, t in entities:
            out.append((s, e, t, float(best[s : e + 1].mean()) if e < best.shape[0] else None))
    else:
        raise ValueError(f"expected [n, n, C] or [n, T] probabilities, got shape {tuple(p.shape)}")
    return out


def predict_scored(model: torch.nn.Module, sentences: Sequence[Any], collator: Any, label_map: Any,
                   **options: Any) -> List[List[ScoredEntity]]:
    """`mclner.evaluation.predict_entities` with a score per entity (``options`` are passed on:
    batch_size, device, impl, none_bias)."""
    from mclner.evaluation import predict_entities

    if not sentences:
        return []
    preds, probs = predict_entities(model, sentences, collator, label_map, return_probs=True, **options)
    return [entity_scores(ents, p, label_map) for ents, p in zip(preds, probs)]


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

        chosen = resolve_impl(impl, fused)
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

