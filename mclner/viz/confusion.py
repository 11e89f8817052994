"""Entity-type confusion on a labelled set: which gold types were found with which predicted type,
missed, or predicted where there is no gold entity."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

Entity = Tuple[int, int, str]  # (start word, end word inclusive, type)
OUTSIDE = "O"


@dataclass
class EntityConfusion:
    """``counts[i, j]``: gold entities of type ``labels[i]`` predicted as ``labels[j]``.

    The last label is ``"O"``: row ``O`` counts spurious predictions (no gold entity there), column
    ``O`` counts missed gold entities (no prediction); ``counts[O, O]`` is always 0. Both axes use the
    same labels in the same order.
    """

    labels: List[str]
    counts: np.ndarray
    match: str

    def row_normalized(self) -> np.ndarray:
        """Each gold row divided by its total (rows without entities stay 0)."""
        tot = self.counts.sum(axis=1, keepdims=True)
        return np.divide(self.counts, tot, out=np.zeros(self.counts.shape, dtype=float), where=tot > 0)


def _check(ents: Sequence[Entity], n: int, k: int) -> List[Entity]:
    out = []
    for e in ents:
        a, b, t = int(e[0]), int(e[1]), str(e[2])
        if not 0 <= a <= b < n:
            raise ValueError(f"sentence {k}: predicted entity {tuple(e)!r} is outside its {n} word(s)")
        out.append((a, b, t))
    return out


def entity_confusion(
    gold_tags: Sequence[Sequence[str]],
    pred_entities: Sequence[Sequence[Entity]],
    match: str = "exact",
    types: Optional[Sequence[str]] = None,
) -> EntityConfusion:
    """Type confusion between gold IOB2 tag sequences and predicted entities ``(start, end, type)``
    (end inclusive), sentence by sentence.

    ``match="exact"``: a prediction pairs with the gold entity of exactly the same words (a boundary
    error then counts as one missed and one spurious entity). ``match="overlap"``: after the exact pairs,
    each remaining gold entity pairs with the unpaired prediction that shares most words with it.
    ``types`` fixes the order of the type labels (default: sorted union of gold and predicted types).
    """
    from mclner.data.iob2 import iob2_to_entities

    if match not in ("exact", "overlap"):
        raise ValueError(f"match must be 'exact' or 'overlap', got {match!r}")
    if len(gold_tags) != len(pred_entities):
        raise ValueError(f"{len(gold_tags)} gold sentences but {len(pred_entities)} predictions")
    pairs: List[Tuple[str, str]] = []
    for k, (tags, preds) in enumerate(zip(gold_tags, pred_entities)):
        try:
            gold = iob2_to_entities(list(tags))
        except ValueError as exc:
            raise ValueError(f"sentence {k}: {exc}") from None
        preds = _check(preds, len(tags), k)
        free = list(range(len(preds)))
        unpaired_gold = []
        for g in gold:
            hit = next((p for p in free if preds[p][:2] == g[:2]), None)
            if hit is None:
                unpaired_gold.append(g)
            else:
                free.remove(hit)
                pairs.append((g[2], preds[hit][2]))
        for g in unpaired_gold:
            best, best_ov = None, 0
            if match == "overlap":
                for p in free:
                    ov = min(g[1], preds[p][1]) - max(g[0], preds[p][0]) + 1
                    if ov > best_ov:
                        best, best_ov = p, ov
            if best is None:
                pairs.append((g[2], OUTSIDE))
            else:
                free.remove(best)
                pairs.append((g[2], preds[best][2]))
        pairs.extend((OUTSIDE, preds[p][2]) for p in free)
    seen = sorted({t for pair in pairs for t in pair} - {OUTSIDE})
    if types is None:
        labels = seen + [OUTSIDE]
    else:
        missing = [t for t in seen if t not in types]
        if missing:
            raise ValueError(f"types {missing} occur but are not in types={list(types)}")
        labels = [t for t in types if t != OUTSIDE] + [OUTSIDE]
    index = {t: i for i, t in enumerate(labels)}
    counts = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for g, p in pairs:
        counts[index[g], index[p]] += 1
    return EntityConfusion(labels, counts, match)
