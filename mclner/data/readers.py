"""Readers of sentences, one module per job; this module gathers their public names:

- `mclner.data.sentence`: :class:`Sentence`, the languages written without spaces;
- `mclner.data.conll`: CoNLL column files in any tagging scheme (converted to IOB2), raw text files;
- `mclner.data.writer`: :func:`write_conll`;
- `mclner.data.hf`: Hugging Face hub sets;
- `mclner.data.load`: :func:`load_sentences`, a data set by name or path (the entry point).
"""

from mclner.data.conll import SCHEMES, ReadReport, read_conll, read_text
from mclner.data.hf import HF_SETS
from mclner.data.load import load_dataset, load_sentences
from mclner.data.sentence import CHAR_LANGS, CJK_CHAR, Sentence
from mclner.data.writer import write_conll

__all__ = ["CHAR_LANGS", "CJK_CHAR", "HF_SETS", "SCHEMES", "ReadReport", "Sentence", "load_dataset", "load_sentences",
           "read_conll", "read_text", "write_conll"]
