"""IOB2 tag sequences and entities ``(start, end, type)`` (word indices, ``end`` inclusive): the one
conversion every reader, method, scorer and plot uses."""

from __future__ import annotations

from typing import Iterable, List, Optional, Sequence, Tuple

Entity = Tuple[int, int, str]


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


def flat_tags(entities: Sequence[Entity], n: int) -> List[str]:
    """IOB2 tags of ``entities`` in a sentence of ``n`` words; an entity that overlaps one already
    placed (in order of start, longer first) is left out (IOB2 cannot hold nested entities)."""
    tags = ["O"] * n
    for s, e, t in sorted(entities, key=lambda x: (x[0], -x[1])):
        if 0 <= s <= e < n and all(tags[k] == "O" for k in range(s, e + 1)):
            tags[s] = f"B-{t}"
            for k in range(s + 1, e + 1):
                tags[k] = f"I-{t}"
    return tags


def repair_iob2(tags: Sequence[str]) -> List[str]:
    """Valid IOB2: an ``I-X`` that does not continue an X entity becomes ``B-X``."""
    out: List[str] = []
    prev = "O"
    for t in tags:
        if t.startswith("I-") and prev[2:] != t[2:]:
            t = "B-" + t[2:]
        out.append(t)
        prev = t
    return out
