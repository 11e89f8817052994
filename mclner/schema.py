"""Label conventions shared by every method: the ignore index and the IOB2 tag vocabulary
(docs/METHOD.md §2)."""

from __future__ import annotations

from typing import Any, List, Sequence

# Target id that cross-entropy skips (padding, cut words, unlabelled sentences): PyTorch's default.
IGNORE = -100


def tag_vocabulary(types: Sequence[str]) -> List[str]:
    """IOB2 tags of a type list: ``O``, then ``B-t``, ``I-t`` for each type in order."""
    tags = ["O"]
    for t in types:
        tags += [f"B-{t}", f"I-{t}"]
    return tags


def entity_types(sentences: Sequence[Any]) -> List[str]:
    """The sorted entity types of IOB2-tagged sentences (unlabelled ones are skipped)."""
    types = set()
    for s in sentences:
        for t in s.tags or ():
            if t != "O" and "-" in t:
                types.add(t.split("-", 1)[1])
    return sorted(types)
