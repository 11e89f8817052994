"""What a checkpoint has learned, as data for plots: entity representations, the similarity maps of
pair-level contrastive views, and the entity-type confusion on a labelled set. Each reads what the
model offers through its hooks (`mclner.methods.base.NERModel`), for any method.

- ``entity_representations``: per gold entity the mean of the model's ``entity_states`` over the
  entity's words, with its language and type, for the t-SNE/PCA figure (colour = language, marker =
  type).
- ``relation_similarity``: the model's ``pair_views`` give view A and view B of every word pair (for
  mCL-NER the relation-level contrastive views, docs/METHOD.md §4). The map
  ``S[i, j] = cos(A_x(i, j), B_y(π(i), π(j)))`` compares the source sentence x's view A with view B
  of its counterpart y at the aligned pair, as a pair-level InfoNCE pairs them (row word i → the last
  word of its translation, column word j → the first; NaN where a word has no counterpart). Panels:
  the source against itself (y = x, π = identity), and against its code-switched copy; for a target
  sentence, which has no word alignment, the target's own map.
All computations run in eval mode under no_grad; they are deterministic.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from mclner.errors import UserError


def word_states(model: torch.nn.Module, batch: Any) -> torch.Tensor:
    """Word states ``[B, N, d]`` that represent entities: the model's ``entity_states``."""
    try:
        return model.entity_states(batch)
    except NotImplementedError as exc:
        raise UserError(f"{exc}: no entity representations to plot") from None


def _to(batch: Any, device: torch.device) -> Any:
    from mclner.data.batches import to_device

    return to_device(batch, device)


def _unlabelled(sentences: Sequence[Any]) -> List[Any]:
    return [dataclasses.replace(s, tags=None) for s in sentences]


@torch.no_grad()
def entity_representations(model: torch.nn.Module, collator: Any, sentences: Sequence[Any],
                           batch_size: int = 32, device: Optional[torch.device] = None,
                           ) -> Tuple[np.ndarray, List[str], List[str]]:
    """``(points [n, d], languages, types)``: one point per gold entity of the labelled
    ``sentences`` (the mean word state over its words; entities past the words the model saw are
    skipped)."""
    from mclner.data.iob2 import iob2_to_entities

    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    points: List[np.ndarray] = []
    langs: List[str] = []
    types: List[str] = []
    try:
        for k in range(0, len(sentences), batch_size):
            part = [s for s in sentences[k : k + batch_size] if s.tags is not None and s.tokens]
            if not part:
                continue
            batch = _to(collator(_unlabelled(part)), device)
            h = word_states(model, batch).float().cpu()
            lengths = batch["lengths"].tolist()
            for r, s in enumerate(part):
                for a, b, t in iob2_to_entities(list(s.tags)):
                    if b < lengths[r]:
                        points.append(h[r, a : b + 1].mean(0).numpy())
                        langs.append(str(s.lang))
                        types.append(t)
    finally:
        model.train(was)
    if not points:
        raise UserError("the sentences have no gold entities (within the words the model sees) to plot")
    return np.stack(points).astype(np.float64), langs, types


@torch.no_grad()
def relation_views(model: torch.nn.Module, batch: Any, impl: str = "reference") -> Tuple[torch.Tensor, torch.Tensor]:
    """View A and view B of every word pair of the batch's first sentence: ``[n, n, p]`` each (the
    model's ``pair_views``)."""
    views = model.pair_views(batch, impl)
    if views is None:
        raise UserError(f"the relation-similarity heatmap needs a relation model with pair-level contrastive "
                        f"views (mCL-NER); this checkpoint's model is {type(model).__name__}")
    return views


@dataclass
class SimilarityMap:
    """``matrix[i, j]`` for row word i and column word j of ``words``; ``title`` says what it compares."""

    matrix: np.ndarray
    words: List[str]
    title: str


def _cos(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1)


@torch.no_grad()
def relation_similarity(model: torch.nn.Module, collator: Any, sentence: Any, counterpart: Optional[Any] = None,
                        spans: Optional[Sequence[Optional[Tuple[int, int]]]] = None, impl: str = "reference",
                        device: Optional[torch.device] = None) -> List[SimilarityMap]:
    """The relation-similarity maps of the module doc. ``counterpart`` with ``spans`` (per source
    word the first and last counterpart word, None where it has none: a code-switched copy, see
    `mclner.data.codeswitch.SwitchResult.spans`) gives the cross map; ``counterpart`` without spans
    (a target sentence) gives its own map."""
    device = device or next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        za, zb = relation_views(model, _to(collator(_unlabelled([sentence])), device), impl)
        n = za.shape[0]
        words = list(sentence.tokens[:n])
        out = [SimilarityMap(_cos(za, zb).numpy().astype(np.float64), words,
                             "source: view A vs view B")]
        if counterpart is None:
            return out
        ya, yb = relation_views(model, _to(collator(_unlabelled([counterpart])), device), impl)
        m = ya.shape[0]
        if spans is None:
            out.append(SimilarityMap(_cos(ya, yb).numpy().astype(np.float64), list(counterpart.tokens[:m]),
                                     f"{counterpart.lang}: view A vs view B"))
            return out
        sim = np.full((n, n), np.nan)
        for i in range(n):
            si = spans[i] if i < len(spans) else None
            if si is None or si[1] >= m:
                continue
            for j in range(n):
                sj = spans[j] if j < len(spans) else None
                if sj is None or sj[0] >= m:
                    continue
                # row word -> last word of its translation, column word -> first (as L_tc pairs them)
                sim[i, j] = float(_cos(za[i, j], yb[si[1], sj[0]]))
        out.append(SimilarityMap(sim, words, f"source view A vs code-switched view B ({counterpart.lang})"))
        return out
    finally:
        model.train(was)


def confusion_of(model: torch.nn.Module, collator: Any, label_map: Any, sentences: Sequence[Any],
                 match: str = "exact", batch_size: int = 32, device: Optional[torch.device] = None,
                 impl: str = "reference", **decode_options: Any) -> Any:
    """The entity-type confusion (`mclner.viz.confusion.entity_confusion`) of a model's predictions
    on labelled ``sentences`` (``decode_options``: the method's decoding options)."""
    from mclner.evaluation import predict_entities
    from mclner.viz.confusion import entity_confusion

    gold = [s for s in sentences if s.tags is not None]
    if not gold:
        raise UserError("no labelled sentences to compare the predictions with")
    preds = predict_entities(model, gold, collator, label_map, batch_size=batch_size, device=device, impl=impl,
                             **decode_options)
    return entity_confusion([s.tags for s in gold], preds, match=match)
