"""Pseudo-labelling of unlabelled target sentences for self-training (docs/METHOD.md §5).

A sentence is kept when (1) the teacher decodes at least one entity, (2) every tail-head cell the
teacher predicts is backed by a complete next-neighbour chain (no discontinuous entity candidates),
and (3) the mean probability of the decoded relations (each entity's THW cell and its NNW cells) is at
least the threshold. Each filter's count is reported.
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

import torch

from mclner.data.iob2 import entities_to_iob2
from mclner.evaluation import predict_entities
from mclner.methods.mclner.grid import NNW, THW_BASE, thw


def is_continuous(pred: torch.Tensor) -> bool:
    """Every predicted THW cell (e, s), e ≥ s, has NNW at (k, k+1) for s ≤ k < e."""
    n = pred.shape[0]
    cells = (pred >= THW_BASE) & torch.ones(n, n, dtype=torch.bool).tril()
    for e, s in cells.nonzero().tolist():
        for k in range(s, e):
            if int(pred[k, k + 1]) != NNW:
                return False
    return True


def relation_confidence(probs: torch.Tensor, entities: Sequence[Tuple[int, int, str]], label_map: Any) -> float:
    vals: List[float] = []
    for s, e, t in entities:
        vals.append(float(probs[e, s, thw(label_map, t)]))
        vals.extend(float(probs[k, k + 1, NNW]) for k in range(s, e))
    return sum(vals) / len(vals) if vals else 0.0


def pseudo_label(
    teacher: torch.nn.Module,
    sentences: Sequence[Any],
    collator: Any,
    label_map: Any,
    *,
    threshold: float = 0.9,
    batch_size: int = 32,
    device: Any = None,
    impl: str = "reference",
) -> Tuple[List[Any], Dict[str, int]]:
    """(kept sentences with IOB2 pseudo tags, counts per filter)."""
    preds, probs = predict_entities(
        teacher, sentences, collator, label_map, batch_size=batch_size, device=device, impl=impl, return_probs=True
    )
    counts = {"unlabeled": len(sentences), "has_entity": 0, "continuous": 0, "confident": 0}
    kept = []
    for sent, ents, p in zip(sentences, preds, probs):
        if not ents:
            continue
        counts["has_entity"] += 1
        # a sentence longer than the encoder takes is decoded in windows and has no grid to check
        # (training would cut it anyway)
        if p is None or not is_continuous(p.argmax(-1)):
            continue
        counts["continuous"] += 1
        if relation_confidence(p, ents, label_map) < threshold:
            continue
        counts["confident"] += 1
        tags = list(entities_to_iob2(ents, len(sent.tokens)))
        kept.append(type(sent)(list(sent.tokens), tags, getattr(sent, "lang", None)))
    return kept, counts
