"""Training examples with an optional second view (a code-switched or translated copy and the word
alignment to it), and their batches through a collator (`mclner.data.collate.RelationCollator`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from mclner.data.collate import pad_spans


@dataclass
class Example:
    src: Any  # mclner.data.readers.Sentence
    cs: Optional[Any] = None  # the second view (code-switched counterpart)
    # src word -> (first, last) word of its translation in the second view; None where it has none.
    spans: Optional[List[Optional[Tuple[int, int]]]] = None


def build_examples(sentences: Sequence[Any], switcher: Optional[Any]) -> List[Example]:
    """Pair every source sentence with its code-switched copy (made once, so that runs and resumes
    see the same data); without a switcher the examples have no second view."""
    out = []
    for s in sentences:
        if switcher is None:
            out.append(Example(s))
        else:
            r = switcher.switch_detailed(s)
            out.append(Example(s, r.sentence, list(r.spans)))
    return out


def collate_examples(collator: Any, examples: Sequence[Example]) -> Dict[str, Any]:
    """``{"src": batch}`` plus, when the examples have a second view, ``"cs"`` and ``"alignment"``
    ``[B, N, 2]`` (first and last second-view word of each source word, -1 where there is none or
    where truncation cut either side)."""
    src = collator([e.src for e in examples])
    out: Dict[str, Any] = {"src": src}
    if examples and examples[0].cs is not None:
        cs = collator([e.cs for e in examples])
        N = src["word_mask"].shape[1]
        align = pad_spans([e.spans or [] for e in examples], N, cs["lengths"].tolist())
        align[~src["word_mask"].bool()] = -1
        out["cs"] = cs
        out["alignment"] = align
    return out


def to_device(obj: Any, device: torch.device) -> Any:
    """Tensors (also inside dicts) moved to ``device``."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    return obj
