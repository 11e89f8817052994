"""Shared fixtures of the training tests: a synthetic en→zh NER task with its own small lexicon and
code-switcher (deterministic, independent of CC-CEDICT coverage), and a tiny tokenizer/encoder built
offline (hidden 32: many short training runs stay fast on 2 CPU cores)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, List, Optional

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
    from mclner.data.readers import Sentence

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
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted(set(PER_EN + LOC_EN + ORG_EN + FILL + ["-DOCSTART-"]))
    chars = sorted({c for w in words + list(LEX.values()) + ZH_FILL for c in w} | set("abcdefghijklmnopqrstuvwxyz"))
    vocab = specials + words + chars + ["##" + c for c in chars if c.isascii()]
    tok = Tokenizer(models.WordPiece({w: i for i, w in enumerate(vocab)}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()  # as a real BERT tokenizer (older pipelines join pieces with it)
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


def make_tiny_encoder_dir(path) -> str:
    """A Hugging Face folder (tokenizer + 1-layer BERT, hidden 32) that `load_encoder(path)` reads;
    much lighter than `tiny-multilingual` (250k-piece embedding) for many short training runs."""
    from pathlib import Path

    path = Path(path)
    if not (path / "config.json").is_file():
        tok = tiny_tokenizer()
        tok.save_pretrained(str(path))
        tiny_encoder(len(tok)).save_pretrained(str(path))
    return str(path)


# ----------------------------------------------------------------------------- stand-ins


class _Lexicon:
    """The synthetic task's lexicon (interface of mclner.data.lexicon.Lexicon.translate)."""

    def __init__(self, table) -> None:
        self.table = table

    def translate(self, phrase: str, entity: bool = False):
        return self.table.get(phrase)


class TableLexicon(_Lexicon):
    """The synthetic task's table with the interface the real CodeSwitcher and the translation code
    use (translate -> list of words, target_lang)."""

    def __init__(self) -> None:
        super().__init__(LEX)
        self.target_lang = "zh"

    def translate(self, phrase: str, entity: bool = False):
        t = self.table.get(phrase)
        return [t] if t else None


class _CodeSwitcher:
    """Code-switcher of the synthetic task (interface of mclner.data.codeswitch.CodeSwitcher):
    dictionary words become their characters (segmentation "word": stay whole)."""

    def __init__(self, lexicon, target_lang: str = "zh", word_ratio: float = 0.3, entity_ratio: float = 1.0,
                 seed: int = 0, segmentation=None) -> None:
        self.lexicon, self.rng, self.ratio = lexicon, random.Random(seed), word_ratio
        self.segmentation = segmentation

    def switch_detailed(self, sentence):
        from mclner.data.codeswitch import SwitchResult

        toks, tags, spans = [], [], []
        for w, t in zip(sentence.tokens, sentence.tags):
            tr = self.lexicon.translate(w)
            if tr and (t != "O" or self.rng.random() < self.ratio):
                chars = [tr] if self.segmentation == "word" else list(tr)
                spans.append((len(toks), len(toks) + len(chars) - 1))
                toks += chars
                if t == "O":
                    tags += ["O"] * len(chars)
                else:
                    tags += [t] + ["I-" + t[2:]] * (len(chars) - 1)
            else:
                spans.append((len(toks), len(toks)))
                toks.append(w)
                tags.append(t)
        cs = type(sentence)(toks, tags, "zh")
        return SwitchResult(cs, [sp[0] for sp in spans], spans)

    def switch(self, sentence):
        r = self.switch_detailed(sentence)
        return r.sentence, r.alignment

    def report(self) -> str:
        return "the synthetic task's table"


def patch_training_data(monkeypatch, n_train: int = 32, n_dev: int = 8, n_test: int = 8, *,
                        target: Optional[List[Any]] = None, real_codeswitcher: bool = False) -> None:
    """Make the trainer read the synthetic task whatever --source/--target say. ``target``: these
    sentences as the target test set and unlabelled text instead of synthetic zh ones;
    ``real_codeswitcher``: code-switch with the real CodeSwitcher (still on the synthetic lexicon)."""
    from mclner.training import rundata

    data = {("src", "train"): synthetic_en(n_train, 0), ("src", "dev"): synthetic_en(n_dev, 1),
            ("tgt", "test"): synthetic_zh(n_test, 2) if target is None else target,
            ("tgt", "train"): synthetic_zh(3 * n_test, 3) if target is None else target}

    def fake_load(spec, split, lang=None):
        key = ("tgt" if "zh" in spec else "src", split)
        if key not in data:
            raise KeyError(split)
        return [type(s)(list(s.tokens), list(s.tags) if s.tags else None, s.lang) for s in data[key]]

    monkeypatch.setattr(rundata, "load_split", fake_load)
    # The synthetic task code-switches with its own table (the real lexicon is tested elsewhere).
    import mclner.data.codeswitch as cs_mod
    import mclner.data.lexicon as lex_mod

    monkeypatch.setattr(lex_mod, "load_lexicon", lambda spec, target_lang=None: _Lexicon(LEX))
    if not real_codeswitcher:
        monkeypatch.setattr(cs_mod, "CodeSwitcher", _CodeSwitcher)


def write_conll(path, sentences) -> None:
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        for s in sentences:
            for t, g in zip(s.tokens, s.tags):
                f.write(f"{t}\t{g}\n")
            f.write("\n")


def small_run_config(tmp_path, encoder: str, **kw):
    """A short mCL-NER run on the synthetic task (4 steps, checkpoints every 2, tiny heads) in
    ``tmp_path/run``; ``kw`` override any option (the checkpoint, resume and record tests share it)."""
    base = dict(source="synthetic-en", target="synthetic-zh", lexicon="synthetic", encoder=encoder,
                output_dir=str(Path(tmp_path) / "run"), batch_size=8, effective_batch_size=8, max_steps=4,
                eval_every=100, save_every=2, biaffine_dim=8, cln_hidden=8, proj_dim=8, progress=False, patience=0,
                seed=3, codeswitch=False, max_eval_sentences=4)
    base.update(kw)
    return train_config(**base)


def train_config(**kw):
    """A TrainConfig from keywords: those that are not TrainConfig fields are the method's options
    (mCL-NER runs the source stage only unless self_training_rounds is given)."""
    import dataclasses

    from mclner.training.config import TrainConfig

    common = {f.name for f in dataclasses.fields(TrainConfig)}
    opts = {k: kw.pop(k) for k in list(kw) if k not in common}
    if kw.get("method", "mclner") == "mclner":
        opts = {"self_training_rounds": 0, **opts}
    return TrainConfig(**kw, method_options=opts)


def relation_model(encoder_dir: str, label_map, **options):
    """(method, model, tokenizer): an untrained mCL-NER model on an encoder folder, as `mclner train`
    builds it (small heads unless options say otherwise)."""
    from mclner.methods.mclner import MCLNERConfig, MCLNERMethod
    from mclner.training.build import build_model

    method = MCLNERMethod(MCLNERConfig(**{"biaffine_dim": 8, "cln_hidden": 8, "proj_dim": 8, **options}))
    model, tok = build_model(train_config(encoder=encoder_dir), method, label_map)
    return method, model, tok
