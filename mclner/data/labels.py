"""The entity types a model knows (:class:`LabelMap`), saved with every checkpoint. What a method
makes of them (tag ids, relation classes) is the method's."""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence


class LabelMap:
    """The ordered entity types of a run (``types``; sorted when read from data)."""

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

    def index(self, type_: str) -> int:
        """The position of an entity type (a KeyError naming the known types otherwise)."""
        try:
            return self._index[type_]
        except KeyError:
            raise KeyError(f"entity type {type_!r} is not in the label map {self.types}") from None

    def to_dict(self) -> dict:
        return {"types": list(self.types)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelMap:
        return cls(d["types"])

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LabelMap) and self.types == other.types

    def __repr__(self) -> str:
        return f"LabelMap({self.types!r})"
