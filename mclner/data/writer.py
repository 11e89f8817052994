"""Writing sentences as a CoNLL file (``word<TAB>tag`` lines, a blank line between sentences)."""

from __future__ import annotations

import os
from typing import Sequence, Union

from mclner.data.sentence import Sentence


def write_conll(sentences: Sequence[Sentence], path: Union[str, os.PathLike]) -> None:
    """Write ``token tag`` lines (tab-separated) with blank lines between sentences."""
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            tags = s.tags if s.tags is not None else ["O"] * len(s.tokens)
            for tok, tag in zip(s.tokens, tags):
                f.write(f"{tok}\t{tag}\n")
            f.write("\n")
