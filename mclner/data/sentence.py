"""The sentence every reader returns and every method reads, and which languages are written without
spaces."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import List, Optional


@dataclass
class Sentence:
    """One sentence: words, IOB2 tags (``None`` when unlabelled) and its language code."""

    tokens: List[str]
    tags: Optional[List[str]]
    lang: str = "en"

    def __len__(self) -> int:
        return len(self.tokens)


CHAR_LANGS = ("zh", "ja")
# Han and kana: scripts written without spaces, which the corpora (MSRA, code-switched text) tokenise
# one character per word.
CJK_CHAR = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
