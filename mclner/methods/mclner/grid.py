"""mCL-NER's word-pair relation grid (docs/METHOD.md §2): its classes, the grid labels the collator
makes from IOB2 tags (:class:`GridLabels`), and decoding a grid of scores into entities.

Classes: ``0 NONE``, ``1 NNW`` at (i, i+1) for consecutive words of one entity (upper triangle), and
``2+t THW_t`` at (e, s) for an entity of type t spanning words s..e (row = tail, column = head, on or
below the diagonal), t the index of the type in the run's `mclner.data.labels.LabelMap`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, List, Optional, Sequence, Tuple, Union

import numpy as np

from mclner.data.iob2 import Entity, iob2_to_entities
from mclner.data.labels import LabelMap

if TYPE_CHECKING:
    import torch

# Relation classes: NONE, NNW (next-neighbouring word), then THW_t = THW_BASE + index of type t.
NONE = 0
NNW = 1
THW_BASE = 2


def num_classes(label_map: LabelMap) -> int:
    return THW_BASE + len(label_map.types)


def thw(label_map: LabelMap, type_: str) -> int:
    """The THW class of an entity type."""
    return THW_BASE + label_map.index(type_)


def type_of(label_map: LabelMap, cls: int) -> Optional[str]:
    """The entity type of a THW class id; ``None`` for NONE and NNW."""
    cls = int(cls)
    if cls < THW_BASE:
        return None
    if cls >= num_classes(label_map):
        raise ValueError(f"class id {cls} out of range for {num_classes(label_map)} classes")
    return label_map.types[cls - THW_BASE]


def class_names(label_map: LabelMap) -> List[str]:
    return ["NONE", "NNW"] + [f"THW-{t}" for t in label_map.types]


class GridLabels:
    """The collator's ``grid_labels`` of a sentence: its ``[n, n]`` class grid (:func:`encode_grid`)."""

    ndim = 2

    def __init__(self, label_map: LabelMap) -> None:
        self.label_map = label_map

    def __call__(self, tags: Sequence[str]) -> np.ndarray:
        return encode_grid(tags, self.label_map)


def encode_grid(tags: Sequence[str], label_map: LabelMap) -> np.ndarray:
    """The ``(N, N)`` int64 grid of class ids of an IOB2 sentence."""
    n = len(tags)
    grid = np.zeros((n, n), dtype=np.int64)
    for s, e, t in iob2_to_entities(tags):
        for k in range(s, e):
            grid[k, k + 1] = NNW
        grid[e, s] = thw(label_map, t)
    return grid


def _as_probs(scores: np.ndarray) -> np.ndarray:
    """Probabilities along the class axis: the input as is when it already is a distribution,
    otherwise its softmax (logits)."""
    if scores.size and scores.min() >= 0.0 and scores.max() <= 1.0 and np.allclose(scores.sum(-1), 1.0, atol=1e-3):
        return scores
    z = scores - scores.max(-1, keepdims=True)
    ez = np.exp(z)
    return ez / ez.sum(-1, keepdims=True)


def _to_numpy(x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x.astype(np.float64, copy=False)
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().to("cpu", torch.float64).numpy()
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x, dtype=np.float64)


def decode_grid_scored(
    scores: Union[np.ndarray, torch.Tensor],
    label_map: LabelMap,
    length: Optional[int] = None,
) -> List[Tuple[int, int, str, float]]:
    """Entities ``(start, end, type, score)`` of one sentence's ``(N, N, C)`` logits or probabilities.

    A candidate (s, e, t) needs argmax THW_t at (e, s) and argmax NNW at every (k, k+1), s ≤ k < e.
    Its score is the mean probability of those relations (the THW cell and its NNW links), which is
    also the self-training confidence of docs/METHOD.md §5. Overlapping candidates are resolved greedily: the
    highest score wins (ties: the longer, then the earlier span), then the next that does not overlap.
    """
    a = _to_numpy(scores)
    if a.ndim != 3 or a.shape[0] != a.shape[1]:
        raise ValueError(f"expected (N, N, C) scores, got shape {a.shape}")
    if a.shape[2] != num_classes(label_map):
        raise ValueError(f"scores have {a.shape[2]} classes, the label map {num_classes(label_map)}")
    n = a.shape[0] if length is None else int(length)
    a = a[:n, :n]
    if n == 0:
        return []
    probs = _as_probs(a)
    arg = probs.argmax(-1)
    nnw = np.zeros(max(n - 1, 0), dtype=bool)
    nnw_p = np.zeros(max(n - 1, 0))
    if n > 1:
        idx = np.arange(n - 1)
        nnw = arg[idx, idx + 1] == NNW
        nnw_p = probs[idx, idx + 1, NNW]
    candidates = []
    tails, heads = np.nonzero(np.tril(arg >= THW_BASE))
    for e, s in zip(tails.tolist(), heads.tolist()):
        if not nnw[s:e].all():
            continue
        cls = int(arg[e, s])
        score = (float(probs[e, s, cls]) + float(nnw_p[s:e].sum())) / (e - s + 1)
        candidates.append((s, e, type_of(label_map, cls), score))
    candidates.sort(key=lambda c: (-c[3], -(c[1] - c[0]), c[0]))
    taken = np.zeros(n, dtype=bool)
    out = []
    for s, e, t, score in candidates:
        if taken[s : e + 1].any():
            continue
        taken[s : e + 1] = True
        out.append((s, e, t, score))
    out.sort()
    return out


def decode_grid(
    scores: Union[np.ndarray, torch.Tensor],
    label_map: LabelMap,
    length: Optional[int] = None,
) -> List[Entity]:
    """Entities ``(start, end, type)`` (end inclusive) of one sentence's ``(N, N, C)`` scores; see
    :func:`decode_grid_scored`. ``length`` restricts decoding to the first ``length`` words."""
    return [(s, e, t) for s, e, t, _ in decode_grid_scored(scores, label_map, length)]


def decode_batch(scores, label_map: LabelMap, lengths: Sequence[int]) -> List[List[Entity]]:
    """:func:`decode_grid` for each sentence of a ``(B, N, N, C)`` batch."""
    a = _to_numpy(scores)
    return [decode_grid(a[b], label_map, int(lengths[b])) for b in range(a.shape[0])]
