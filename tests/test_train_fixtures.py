"""Shared fixtures of the training tests: a synthetic en→zh NER task, a tiny tokenizer/encoder built
offline, and small stand-ins for data-layer pieces when this checkout lacks them.

The stand-ins are used only when `mclner.data.collate` / `mclner.encoders` / `mclner.data.codeswitch`
cannot be imported; with the data layer present the tests run against the real modules.
"""

from __future__ import annotations

import importlib
import random
import sys
import types
from dataclasses import dataclass
from typing import List, Optional

import numpy as np
import torch

PER_EN = ["John", "Mary", "Peter", "Anna", "Smith", "Lee"]
LOC_EN = ["London", "Paris", "Berlin", "China", "Tokyo"]
ORG_EN = ["Google", "Reuters", "UN", "Apple"]
FILL = ["the", "a", "said", "went", "to", "in", "on", "with", "visited", "met", "at", "today", "and", "of"]
LEX = {"John": "约翰", "Mary": "玛丽", "Peter": "彼得", "Anna": "安娜", "Smith": "史密斯", "Lee": "李",
       "London": "伦敦", "Paris": "巴黎", "Berlin": "柏林", "China": "中国", "Tokyo": "东京",
       "Google": "谷歌", "Reuters": "路透社", "UN": "联合国", "Apple": "苹果", "said": "说", "went": "去",
       "visited": "访问", "met": "见", "today": "今天"}
ZH_FILL = list("的了在是我有和人这中大为上个国说们到")


def sentence_cls():
    try:
        from mclner.data.readers import Sentence

        return Sentence
    except ImportError:
        @dataclass
        class Sentence:  # noqa: D401 - stand-in with the data layer's fields
            tokens: List[str]
            tags: Optional[List[str]]
            lang: str = "en"

        return Sentence


def synthetic_en(n: int, seed: int = 0) -> list:
    S = sentence_cls()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        toks, tags = [], []
        for _ in range(rng.randint(2, 4)):
            toks += rng.sample(FILL, rng.randint(1, 2))
            tags += ["O"] * (len(toks) - len(tags))
            kind = rng.choice(["PER", "LOC", "ORG"])
            pool = {"PER": PER_EN, "LOC": LOC_EN, "ORG": ORG_EN}[kind]
            words = rng.sample(pool, 2 if kind == "PER" and rng.random() < 0.4 else 1)
            toks += words
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(words) - 1)
        out.append(S(toks, tags, "en"))
    return out


def synthetic_zh(n: int, seed: int = 1, labelled: bool = True) -> list:
    S = sentence_cls()
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        toks, tags = [], []
        for _ in range(rng.randint(1, 3)):
            fill = rng.sample(ZH_FILL, rng.randint(1, 3))
            toks += fill
            tags += ["O"] * len(fill)
            kind = rng.choice(["PER", "LOC", "ORG"])
            pool = {"PER": PER_EN, "LOC": LOC_EN, "ORG": ORG_EN}[kind]
            chars = list(LEX[rng.choice(pool)])
            toks += chars
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(chars) - 1)
        out.append(S(toks, tags if labelled else None, "zh"))
    return out


def tiny_tokenizer():
    """A WordPiece tokenizer over the synthetic vocabulary (every character too), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(set(PER_EN + LOC_EN + ORG_EN + FILL + ["-DOCSTART-"]))
    chars = sorted({c for w in words + list(LEX.values()) + ZH_FILL for c in w} | set("abcdefghijklmnopqrstuvwxyz"))
    vocab = specials + words + chars + ["##" + c for c in chars if c.isascii()]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")


def tiny_encoder(vocab_size: int, seed: int = 0, hidden: int = 32):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    cfg = BertConfig(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=256)
    return BertModel(cfg, add_pooling_layer=False)


# ----------------------------------------------------------------------------- stand-ins


class _Collator:
    """Stand-in for mclner.data.collate.RelationCollator (same output keys)."""

    def __init__(self, tokenizer, label_map, max_length: int = 512) -> None:
        self.tokenizer, self.label_map, self.max_length = tokenizer, label_map, max_length

    def __call__(self, sentences):
        from mclner.data.grid import encode_grid

        enc = self.tokenizer([list(s.tokens) for s in sentences], is_split_into_words=True, truncation=True,
                             max_length=self.max_length, padding=True, return_tensors="pt")
        B, L = enc["input_ids"].shape
        word_index = torch.full((B, L), -1, dtype=torch.long)
        lengths = []
        for b in range(B):
            ids = [w if w is not None else -1 for w in enc.word_ids(b)]
            word_index[b] = torch.tensor(ids)
            lengths.append(max(ids) + 1 if max(ids) >= 0 else 0)
        N = max(1, max(lengths))
        word_mask = torch.zeros(B, N, dtype=torch.bool)
        grid = torch.full((B, N, N), -100, dtype=torch.long)
        for b, s in enumerate(sentences):
            n = lengths[b]
            word_mask[b, :n] = True
            if s.tags is not None and n:
                grid[b, :n, :n] = torch.from_numpy(np.asarray(encode_grid(list(s.tags)[:n], self.label_map)))
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "word_index": word_index,
                "word_mask": word_mask, "grid_labels": grid, "lengths": torch.tensor(lengths)}


class _Lexicon:
    def __init__(self, table) -> None:
        self.table = table

    def translate(self, phrase: str):
        return self.table.get(phrase)


class _CodeSwitcher:
    """Stand-in for mclner.data.codeswitch.CodeSwitcher: dictionary words become their characters."""

    def __init__(self, lexicon, target_lang: str = "zh", word_ratio: float = 0.3, seed: int = 0) -> None:
        self.lexicon, self.rng, self.ratio = lexicon, random.Random(seed), word_ratio

    def switch(self, sentence):
        toks, tags, align = [], [], []
        for w, t in zip(sentence.tokens, sentence.tags):
            tr = self.lexicon.translate(w)
            if tr and (t != "O" or self.rng.random() < self.ratio):
                align.append(len(toks))
                chars = list(tr)
                toks += chars
                if t == "O":
                    tags += ["O"] * len(chars)
                else:
                    tags += [t] + ["I-" + t[2:]] * (len(chars) - 1)
            else:
                align.append(len(toks))
                toks.append(w)
                tags.append(t)
        return type(sentence)(toks, tags, "zh"), align


def install_stand_ins() -> None:
    """Register stand-in modules for data-layer pieces this checkout does not have yet."""
    def missing(name: str) -> bool:
        try:
            importlib.import_module(name)
            return False
        except ImportError:
            return True

    if missing("mclner.data.collate"):
        m = types.ModuleType("mclner.data.collate")
        m.RelationCollator = _Collator
        sys.modules["mclner.data.collate"] = m
    if missing("mclner.data.codeswitch"):
        m = types.ModuleType("mclner.data.codeswitch")
        m.CodeSwitcher = _CodeSwitcher
        sys.modules["mclner.data.codeswitch"] = m
    if missing("mclner.data.lexicon"):
        m = types.ModuleType("mclner.data.lexicon")
        m.load_lexicon = lambda spec: _Lexicon(LEX)
        sys.modules["mclner.data.lexicon"] = m
    if missing("mclner.encoders"):
        m = types.ModuleType("mclner.encoders")

        def load_encoder(name):
            if name != "tiny-multilingual":
                raise FileNotFoundError(f"unknown encoder {name!r}")
            tok = tiny_tokenizer()
            return tok, tiny_encoder(len(tok))

        m.load_encoder = load_encoder
        sys.modules["mclner.encoders"] = m


def patch_training_data(monkeypatch, n_train: int = 48, n_dev: int = 16, n_test: int = 16) -> None:
    """Make the trainer read the synthetic task whatever --source/--target say."""
    from mclner.training import trainer

    data = {("src", "train"): synthetic_en(n_train, 0), ("src", "dev"): synthetic_en(n_dev, 1),
            ("tgt", "test"): synthetic_zh(n_test, 2), ("tgt", "train"): synthetic_zh(3 * n_test, 3)}

    def fake_load(spec, split, lang=None):
        key = ("tgt" if "zh" in spec else "src", split)
        if key not in data:
            raise KeyError(split)
        return [type(s)(list(s.tokens), list(s.tags) if s.tags else None, s.lang) for s in data[key]]

    monkeypatch.setattr(trainer, "_load", fake_load)
