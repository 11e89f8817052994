"""Training examples and batches: source sentences, their code-switched counterparts and alignments,
pseudo-labelled target sentences; all through `mclner.data.collate.RelationCollator`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from mclner.data.collate import pad_spans

IGNORE = -100


def entity_types(sentences: Sequence[Any]) -> List[str]:
    """Entity types of IOB2-tagged sentences, in first-seen order of a sorted scan (stable across runs)."""
    types = set()
    for s in sentences:
        for t in s.tags or ():
            if t != "O" and "-" in t:
                types.add(t.split("-", 1)[1])
    return sorted(types)


@dataclass
class Example:
    src: Any  # mclner.data.readers.Sentence
    cs: Optional[Any] = None  # code-switched counterpart
    # src word -> (first, last) code-switched word of its translation; None where it has none.
    spans: Optional[List[Optional[Tuple[int, int]]]] = None


def build_examples(sentences: Sequence[Any], switcher: Optional[Any]) -> List[Example]:
    """Pair every source sentence with its code-switched copy (made once, so that runs and resumes
    see the same data)."""
    out = []
    for s in sentences:
        if switcher is None:
            out.append(Example(s))
        else:
            r = switcher.switch_detailed(s)
            out.append(Example(s, r.sentence, list(r.spans)))
    return out


def tag_labels(sentences: Sequence[Any], tag_to_id: Dict[str, int], width: int) -> torch.Tensor:
    """IOB2 tag ids ``[B, width]`` for the token-classification baseline (-100 on padding; tags of
    types the model does not know count as O)."""
    out = torch.full((len(sentences), width), IGNORE, dtype=torch.long)
    for b, s in enumerate(sentences):
        for k, t in enumerate((s.tags or [])[:width]):
            out[b, k] = tag_to_id.get(t, 0)
    return out


class BatchBuilder:
    """Turns lists of examples into the tensors `MCLNERModel.forward` takes."""

    def __init__(self, collator: Any, tag_to_id: Optional[Dict[str, int]] = None) -> None:
        self.collator = collator
        self.tag_to_id = tag_to_id

    def sentences(self, sentences: Sequence[Any]) -> Dict[str, torch.Tensor]:
        batch = dict(self.collator(list(sentences)))
        if self.tag_to_id is not None:
            width = batch["word_mask"].shape[1]
            labels = tag_labels(sentences, self.tag_to_id, width)
            labels[~batch["word_mask"].bool()] = IGNORE
            batch["tag_labels"] = labels
        return batch

    def examples(self, examples: Sequence[Example]) -> Dict[str, Any]:
        src = self.sentences([e.src for e in examples])
        out: Dict[str, Any] = {"src": src}
        if examples and examples[0].cs is not None:
            cs = self.sentences([e.cs for e in examples])
            N = src["word_mask"].shape[1]
            # [B, N, 2]: first and last code-switched word of each source word, -1 where there is
            # none or where truncation cut either side (pad_spans drops counterparts past `lengths`).
            align = pad_spans([e.spans or [] for e in examples], N, cs["lengths"].tolist())
            align[~src["word_mask"].bool()] = -1
            out["cs"] = cs
            out["alignment"] = align
        return out


def to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj
