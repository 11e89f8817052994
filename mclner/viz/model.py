"""What a checkpoint has learned, as data for plots: entity representations (any method), the
relation-similarity maps of the relation-level contrastive views (mCL-NER), and the entity-type
confusion on a labelled set (any method).

- ``entity_representations``: per gold entity the mean of the model's word states (the method's
  ``WordEncoder``: encoder, sub-word pooling, fusion) over the entity's words, with its language
  and type, for the t-SNE/PCA figure (colour = language, marker = type).
- ``relation_similarity``: view A of a relation (i, j) is ``proj_a([hs_i ⊙ he_j; hs_i; he_j])``, view
  B is ``proj_b`` of the CLN pair features r'_ij (docs/METHOD.md §4; the method's ``loss``). The map
  ``S[i, j] = cos(A_x(i, j), B_y(π(i), π(j)))`` compares the source sentence x's view A with view B
  of its counterpart y at the aligned pair, as the relation-level InfoNCE pairs them (row word i →
  the last word of its translation, column word j → the first; NaN where a word has no
  counterpart). Panels: the source against itself (y = x, π = identity), and against its
  code-switched copy; for a target sentence, which has no word alignment, the target's own map.
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
    """Word states ``[B, N, d]`` of any method's model: its ``entity_states`` when it has several
    encoders and says which one represents entities (DLBri), else its ``words``
    (`mclner.nn.WordEncoder`) or, failing that, its ``word_states``."""
    if hasattr(model, "entity_states"):
        return model.entity_states(batch)
    if hasattr(model, "words"):
        return model.words(batch)
    if hasattr(model, "word_states"):
        return model.word_states(batch)
    raise UserError(f"{type(model).__name__} has no word encoder (.words) to take entity representations from")


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
    from mclner.data.grid import iob2_to_entities

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


def _require_views(model: torch.nn.Module) -> None:
    if not all(hasattr(model, a) for a in ("proj_a", "proj_b", "relation", "relation_logits")):
        raise UserError(f"the relation-similarity heatmap needs a relation model with contrastive views "
                        f"(mCL-NER); this checkpoint's model is {type(model).__name__}")


@torch.no_grad()
def relation_views(model: torch.nn.Module, batch: Any, impl: str = "reference") -> Tuple[torch.Tensor, torch.Tensor]:
    """View A and view B of every word pair of the batch's first sentence: ``[n, n, p]`` each."""
    _require_views(model)
    h = word_states(model, batch)
    rel = model.relation_logits(h, impl)
    n = int(batch["lengths"][0])
    hs, he = rel["hs"][0, :n], rel["he"][0, :n]
    hi = hs.unsqueeze(1).expand(n, n, -1)
    hj = he.unsqueeze(0).expand(n, n, -1)
    za = model.proj_a(torch.cat([hi * hj, hi, hj], -1))
    ii, jj = torch.meshgrid(torch.arange(n, device=h.device), torch.arange(n, device=h.device), indexing="ij")
    b = torch.zeros(n * n, dtype=torch.long, device=h.device)
    zb = model.proj_b(model.relation.pair_features_at(h[:1], b, ii.reshape(-1), jj.reshape(-1))).reshape(n, n, -1)
    return za.float().cpu(), zb.float().cpu()


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
                 impl: str = "reference", none_bias: Optional[float] = None) -> Any:
    """The entity-type confusion (`mclner.viz.confusion.entity_confusion`) of a model's predictions
    on labelled ``sentences``."""
    from mclner.evaluation import predict_entities
    from mclner.viz.confusion import entity_confusion

    gold = [s for s in sentences if s.tags is not None]
    if not gold:
        raise UserError("no labelled sentences to compare the predictions with")
    preds = predict_entities(model, gold, collator, label_map, batch_size=batch_size, device=device, impl=impl,
                             none_bias=none_bias)
    return entity_confusion([s.tags for s in gold], preds, match=match)
