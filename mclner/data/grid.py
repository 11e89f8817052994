"""The word-pair relation grid (docs/METHOD.md §2) and IOB2 conversions.

Classes: ``0 NONE``, ``1 NNW`` at (i, i+1) for consecutive words of one entity (upper triangle), and
``2+t THW_t`` at (e, s) for an entity of type t spanning words s..e (row = tail, column = head, on or
below the diagonal). Entities are ``(start, end, type)`` with ``end`` inclusive.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:
    import torch

from mclner.schema import NNW, NONE, THW_BASE  # noqa: F401 (re-exported)

Entity = Tuple[int, int, str]


class LabelMap:
    """Entity types <-> grid class ids (``THW_t`` = 2 + index of t in ``types``)."""

    def __init__(self, types: Sequence[str]):
        types = list(types)
        if len(set(types)) != len(types):
            raise ValueError(f"duplicate entity types in {types}")
        for t in types:
            if not t or t == "O":
                raise ValueError(f"invalid entity type {t!r}")
        self.types: List[str] = types
        self._index: Dict[str, int] = {t: i for i, t in enumerate(types)}

    @classmethod
    def from_tags(cls, tag_sequences: Iterable[Optional[Sequence[str]]]) -> LabelMap:
        """The sorted entity types seen in IOB2 tag sequences (``None`` sequences are skipped)."""
        seen = set()
        for tags in tag_sequences:
            if tags is None:
                continue
            for tag in tags:
                if tag != "O":
                    seen.add(tag[2:])
        return cls(sorted(seen))

    @property
    def num_classes(self) -> int:
        return THW_BASE + len(self.types)

    def thw(self, type_: str) -> int:
        try:
            return THW_BASE + self._index[type_]
        except KeyError:
            raise KeyError(f"entity type {type_!r} is not in the label map {self.types}") from None

    def type_of(self, cls: int) -> Optional[str]:
        """The entity type of a THW class id; ``None`` for NONE and NNW."""
        cls = int(cls)
        if cls < THW_BASE:
            return None
        if cls >= self.num_classes:
            raise ValueError(f"class id {cls} out of range for {self.num_classes} classes")
        return self.types[cls - THW_BASE]

    def class_names(self) -> List[str]:
        return ["NONE", "NNW"] + [f"THW-{t}" for t in self.types]

    def to_dict(self) -> dict:
        return {"types": list(self.types)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelMap:
        return cls(d["types"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and self.types == other.types

    def __repr__(self) -> str:
        return f"LabelMap({self.types!r})"


def iob2_to_entities(tags: Sequence[str]) -> List[Entity]:
    """Entities of an IOB2 sequence. An ``I-X`` that does not continue an X entity starts one (the
    conlleval convention); readers reject or repair such tags before they get here."""
    entities: List[Entity] = []
    start = -1
    cur: Optional[str] = None
    for i, tag in enumerate(tags):
        if tag == "O" or tag is None:
            prefix, typ = "O", None
        else:
            prefix, typ = tag[:1], tag[2:]
            if tag[1:2] != "-" or prefix not in ("B", "I") or not typ:
                raise ValueError(f"not an IOB2 tag: {tag!r} at position {i}")
        continues = prefix == "I" and cur == typ
        if cur is not None and not continues:
            entities.append((start, i - 1, cur))
            cur = None
        if prefix == "B" or (prefix == "I" and not continues):
            start, cur = i, typ
    if cur is not None:
        entities.append((start, len(tags) - 1, cur))
    return entities


def entities_to_iob2(entities: Iterable[Entity], n: int) -> List[str]:
    """IOB2 tags of length n for non-overlapping entities (overlaps raise ValueError)."""
    tags = ["O"] * n
    for s, e, t in sorted(entities):
        if not (0 <= s <= e < n):
            raise ValueError(f"entity {(s, e, t)} outside a sentence of {n} words")
        if any(tags[k] != "O" for k in range(s, e + 1)):
            raise ValueError(f"entity {(s, e, t)} overlaps another entity")
        tags[s] = f"B-{t}"
        for k in range(s + 1, e + 1):
            tags[k] = f"I-{t}"
    return tags


def encode_grid(tags: Sequence[str], label_map: LabelMap) -> np.ndarray:
    """The ``(N, N)`` int64 grid of class ids of an IOB2 sentence."""
    n = len(tags)
    grid = np.zeros((n, n), dtype=np.int64)
    for s, e, t in iob2_to_entities(tags):
        for k in range(s, e):
            grid[k, k + 1] = NNW
        grid[e, s] = label_map.thw(t)
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
    if a.shape[2] != label_map.num_classes:
        raise ValueError(f"scores have {a.shape[2]} classes, the label map {label_map.num_classes}")
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
        candidates.append((s, e, label_map.type_of(cls), score))
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
