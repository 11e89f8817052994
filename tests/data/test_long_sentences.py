"""Sentences longer than the encoder takes (issue 10, item 12): prediction windows them with overlap and
merges the windows word by word for every method; no entity is lost at a window boundary; nothing
ever exceeds the encoder's position table (a 256-position encoder and a 5,000-word sentence)."""

from __future__ import annotations

import json
import random

import pytest
import torch
from mclner_fixtures import FILL, LOC_EN, PER_EN, make_tiny_encoder_dir, tiny_tokenizer

from mclner.cli import main
from mclner.data.collate import SentenceCollator, window_sentences
from mclner.data.labels import LabelMap
from mclner.data.readers import Sentence
from mclner.evaluation import predict_entities
from mclner.methods import registry
from mclner.methods.base import NERModel
from mclner.methods.mclner.grid import GridLabels

LM = LabelMap(["LOC", "PER"])


class EdgeBlindStub(NERModel):
    """Deterministic decoding from the words alone: a run of names is a PER entity, a run of places a
    LOC entity; but, like a real model short of context, it misses every entity touching an edge of its
    input. Scores: one row per word (name, place, other) in one-hot."""

    method = "stub"

    def __init__(self, tokenizer) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(1))
        self.kind = {tokenizer.convert_tokens_to_ids(w): "PER" for w in PER_EN}
        self.kind.update({tokenizer.convert_tokens_to_ids(w): "LOC" for w in LOC_EN})
        self.inputs = []  # the length of every input row, to check what the encoder would see

    def decode(self, batch, label_map, *, impl="reference", return_scores=False, **_):
        out = []
        self.inputs.append(int(batch["input_ids"].shape[1]))
        for r, n in enumerate(batch["word_mask"].sum(1).tolist()):
            first = {}
            for pos, w in enumerate(batch["word_index"][r].tolist()):
                if w >= 0 and w not in first:
                    first[w] = int(batch["input_ids"][r, pos])
            kinds = [self.kind.get(first[w]) for w in range(n)]
            ents, s = [], 0
            while s < n:
                e = s
                while kinds[s] and e + 1 < n and kinds[e + 1] == kinds[s]:
                    e += 1
                if kinds[s] and s > 0 and e < n - 1:
                    ents.append((s, e, kinds[s]))
                s = e + 1
            scores = torch.tensor([[k == "PER", k == "LOC", k is None] for k in kinds], dtype=torch.float32)
            out.append((ents, scores if return_scores else None))
        return out


def _long_sentence(n_words: int, tok, max_length: int):
    """A sentence of filler words with entities placed across every window boundary: over the first
    word of each window, over the middle of each overlap and over the last word of each window, plus
    one long entity per overlap; returns the sentence and its gold entities."""
    rng = random.Random(0)
    words = [rng.choice(FILL) for _ in range(n_words)]
    wins, where = window_sentences([Sentence(words, None, "en")], tok, max_length)
    assert len(wins) > 10
    gold = []
    taken = [False] * n_words

    def place(s: int, e: int, typ: str) -> None:
        if s < 1 or e > n_words - 2 or any(taken[max(0, s - 1) : e + 2]):
            return  # keep entities apart (a run of names is one entity) and off the sentence's edges
        pool = PER_EN if typ == "PER" else LOC_EN
        for k in range(s, e + 1):
            words[k] = rng.choice(pool)
            taken[k] = True
        gold.append((s, e, typ))

    for (_, a0), (_, b0), win in zip(where, where[1:], wins):
        a1 = a0 + len(win.tokens)  # the first window ends before a1; the next one starts at b0
        mid = (b0 + a1 - 1) // 2
        place(b0 - 1, b0 + 1, "PER")  # over the next window's first word
        place(mid - 1, mid + 1, "LOC")  # over the middle of the overlap
        place(a1 - 2, a1, "PER")  # over the window's last word
        place(mid + 3, mid + 6, "LOC") if a1 - b0 > 14 else None
    for _ in range(30):  # and some anywhere
        s = rng.randrange(n_words - 3)
        place(s, s + rng.randint(0, 2), rng.choice(["PER", "LOC"]))
    # entity words are single pieces like the fillers: the windows are where they were
    assert window_sentences([Sentence(words, None, "en")], tok, max_length)[1] == where
    return Sentence(words, None, "en"), sorted(gold)


def test_no_entity_lost_at_a_window_boundary():
    tok = tiny_tokenizer()
    collator = SentenceCollator(tok, max_length=64, labels={"grid_labels": GridLabels(LM)})
    long, gold = _long_sentence(3000, tok, 64)
    assert len(gold) > 100
    short = Sentence(["the", "John", "Smith", "went", "to", "Paris", "today"], None, "en")
    model = EdgeBlindStub(tok)
    preds, probs = predict_entities(model, [short, long, short], collator, LM, batch_size=8, return_probs=True)
    assert max(model.inputs) <= 64
    assert preds[1] == gold
    assert preds[0] == preds[2] == [(1, 2, "PER"), (5, 5, "LOC")]
    # scores only for sentences decoded whole (documented: a windowed sentence has none)
    assert probs[1] is None and probs[0].shape == (7, 3) and torch.equal(probs[0], probs[2])


def _checkpoint(tmp_path, name: str) -> str:
    """An untrained checkpoint of method ``name`` on a 256-position tiny encoder, trained (as the
    args say) with the default max_length 512."""
    from mclner.encoders import load_encoder
    from mclner.methods.base import config_from_dict
    from mclner.training.checkpoint import save_checkpoint

    enc_dir = make_tiny_encoder_dir(tmp_path / "enc")
    tok, encoder = load_encoder(enc_dir)
    assert encoder.config.max_position_embeddings == 256
    cls = registry()[name]
    small = {"biaffine_dim": 8, "cln_hidden": 8, "proj_dim": 8}
    method = cls(config_from_dict(cls, {k: v for k, v in small.items() if hasattr(cls.Config(), k)}))
    model = method.build_model(encoder, LM)
    out = tmp_path / f"ckpt-{name}"
    save_checkpoint(out, model, tok, LM, {"max_length": 512}, method=method)
    return str(out)


@pytest.mark.parametrize("name", sorted(registry()))
def test_evaluate_and_predict_a_5000_word_sentence_on_a_256_position_encoder(tmp_path, capsys, name):
    ckpt = _checkpoint(tmp_path, name)
    rng = random.Random(1)
    words = [rng.choice(FILL + PER_EN + LOC_EN + ["Washington", "unbelievably"]) for _ in range(5000)]
    tags = ["B-PER" if w in PER_EN else "B-LOC" if w in LOC_EN else "O" for w in words]
    data = tmp_path / "long.txt"
    data.write_text("".join(f"{w} {t}\n" for w, t in zip(words, tags)) + "\nthe O\nJohn B-PER\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["evaluate", ckpt, str(data), "--lang", "en", "--json", "--batch-size", "4"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sentences"] == 2 and res["support"] == sum(t != "O" for t in tags) + 1
    text = tmp_path / "in.txt"
    text.write_text(" ".join(words) + "\nJohn went to Paris\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert main(["predict", ckpt, "-i", str(text), "-o", str(out), "--batch-size", "4"]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [len(r["tokens"]) for r in rows] == [5000, 4]
    for r in rows:  # word indices into the tokens, character offsets into the input line
        assert all(0 <= e["word_start"] <= e["word_end"] < len(r["tokens"]) for e in r["entities"])
        assert all(0 <= e["start"] < e["end"] <= len(r["text"]) for e in r["entities"])
        assert all(r["text"][e["start"] : e["end"]] == e["word"] for e in r["entities"])


def test_training_collator_respects_the_encoder(tmp_path, capsys):
    """Training keeps cutting what does not fit (with its warning), but to the encoder's 256 positions
    even with --max-length 512: the batch runs through the encoder."""
    from mclner.encoders import load_encoder
    from mclner.methods import get_method

    tok, encoder = load_encoder(make_tiny_encoder_dir(tmp_path / "enc"))
    for name in sorted(registry()):
        collator = get_method(name)().make_collator(tok, LM, 512)
        assert "more than the encoder takes; using 256" in capsys.readouterr().err
        long = Sentence(["John"] + ["the"] * 600, ["B-PER"] + ["O"] * 600, "en")
        with pytest.warns(UserWarning, match="cut to the words that fit"):
            batch = collator([long])
        assert batch["input_ids"].shape == (1, 256) and batch["lengths"].tolist() == [254]
        encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
