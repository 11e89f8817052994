"""ConCNER: its losses equal their formulas on a hand-built batch, its stages follow the ablation
flags, and translations (lexicon or file) line up with the source or fail in one line."""

from __future__ import annotations

import pytest
import torch
from mclner_fixtures import TableLexicon, synthetic_en, tiny_encoder, tiny_tokenizer, write_conll

from mclner.data.labels import LabelMap
from mclner.errors import UserError
from mclner.methods.base import Context
from mclner.methods.concner import ConCNERConfig, ConCNERMethod


def _direct_sup_con(z, labels, tau):
    """ℓ_i = −mean_{p: y_p = y_i, p ≠ i} log softmax_{k ≠ i}(s_ik/τ)[p], averaged over anchors with a positive."""
    zn = torch.nn.functional.normalize(z.double(), dim=-1)
    s = zn @ zn.T / tau
    M = len(labels)
    losses = []
    for i in range(M):
        others = [k for k in range(M) if k != i]
        lse = torch.logsumexp(s[i, others], 0)
        pos = [p for p in others if labels[p] == labels[i]]
        if pos:
            losses.append(-sum(s[i, p] - lse for p in pos) / len(pos))
    return torch.stack(losses).mean()


@pytest.fixture(scope="module")
def setup():
    from mclner.data.translations import lexicon_translations

    tok = tiny_tokenizer()
    sents = synthetic_en(5, seed=2)
    lm = LabelMap.from_tags([s.tags for s in sents])
    method = ConCNERMethod(ConCNERConfig())
    torch.manual_seed(0)
    model = method.build_model(tiny_encoder(len(tok)), lm).eval()
    from mclner.data.batches import Example

    tr = lexicon_translations(sents, TableLexicon(), "zh", "full")
    ex = [Example(s, r.sentence, list(r.spans)) for s, r in zip(sents, tr)]
    batch = method.collate(method.make_collator(tok, lm, 128), ex, None, method.stages()[0])
    return method, model, batch, sents, lm


def test_lcl_and_tcl_equal_their_formulas(setup):
    method, model, batch, _, _ = setup
    stage = method.stages()[0]
    out = method.loss(model, batch, stage, "reference")
    src, tr = batch["src"], batch["cs"]
    with torch.no_grad():
        hs, ht = model.words(src), model.words(tr)
        ms, mt = src["word_mask"].bool(), tr["word_mask"].bool()
        z = torch.cat([hs[ms], ht[mt]])
        y = torch.cat([src["tag_labels"][ms], tr["tag_labels"][mt]]).tolist()
        lcl = _direct_sup_con(z, y, 0.1)
        sv = torch.cat([(hs * ms[..., None]).sum(1) / ms.sum(1, keepdim=True),
                        (ht * mt[..., None]).sum(1) / mt.sum(1, keepdim=True)])
        n = hs.shape[0]
        tcl = _direct_sup_con(sv, list(range(n)) * 2, 0.1)
    assert float(out["lcl"].detach()) == pytest.approx(float(lcl), rel=1e-4)
    assert float(out["tcl"].detach()) == pytest.approx(float(tcl), rel=1e-4)
    want = 0.5 * float(out["ce"].detach()) + 0.25 * (float(lcl) + float(tcl))
    assert float(out["loss"].detach()) == pytest.approx(want, rel=1e-4)
    # TCL by hand: anchor i's only positive is its translation i + n among the 2n - 1 others
    zn = torch.nn.functional.normalize(sv.double(), dim=-1)
    s = zn @ zn.T / 0.1
    rows = []
    for i in range(2 * n):
        others = torch.tensor([k for k in range(2 * n) if k != i])
        rows.append(torch.logsumexp(s[i, others], 0) - s[i, (i + n) % (2 * n)])
    assert float(out["tcl"].detach()) == pytest.approx(float(torch.stack(rows).mean()), rel=1e-4)


def test_ablation_flags_shape_the_stages():
    assert [s.name for s in ConCNERMethod().stages()] == ["teacher", "kd"]
    assert [s.name for s in ConCNERMethod(ConCNERConfig(kd=False)).stages()] == ["teacher"]
    w = ConCNERMethod(ConCNERConfig(lcl=False, tcl=False)).stages()[0].weights
    assert w["lcl"] == 0 and w["tcl"] == 0 and w["alpha"] == 0.5
    kd = ConCNERMethod().stages()[1]
    assert kd.teacher and kd.streams == ("target",)


def test_ablated_losses_are_absent(setup):
    _, model, batch, _, _ = setup
    m = ConCNERMethod(ConCNERConfig(lcl=False, tcl=False))
    out = m.loss(model, batch, m.stages()[0], "reference")
    assert "lcl" not in out and "tcl" not in out
    assert float(out["loss"].detach()) == pytest.approx(0.5 * float(out["ce"].detach()))


def test_full_translation_keeps_the_entities(setup):
    from mclner.data.iob2 import iob2_to_entities
    from mclner.data.translations import lexicon_translations

    _, _, _, sents, _ = setup
    for s, r in zip(sents, lexicon_translations(sents, TableLexicon(), "zh", "full")):
        a = [t for *_, t in iob2_to_entities(s.tags)]
        b = [t for *_, t in iob2_to_entities(r.sentence.tags)]
        assert a == b  # same entities, same order (the source word order is kept)
    ents = lexicon_translations(sents, TableLexicon(), "zh", "entities")
    ctx = lexicon_translations(sents, TableLexicon(), "zh", "context")
    for s, e, c in zip(sents, ents, ctx):
        for (i, j, _), (i2, j2, _) in zip(iob2_to_entities(s.tags), iob2_to_entities(c.sentence.tags)):
            assert c.sentence.tokens[i2 : j2 + 1] == s.tokens[i : j + 1]  # context mode keeps entities
        # entities mode keeps the context: the words tagged O are the source's, in order
        assert [w for w, t in zip(e.sentence.tokens, e.sentence.tags) if t == "O"] == \
            [w for w, t in zip(s.tokens, s.tags) if t == "O"]


def test_translation_file_must_line_up(tmp_path):
    from mclner.data.translations import file_translations

    sents = synthetic_en(4, seed=1)
    good = [type(s)(list(s.tokens), list(s.tags), "zh") for s in sents]
    write_conll(tmp_path / "ok.txt", good)
    res = file_translations(str(tmp_path / "ok.txt"), sents[1:3], [1, 2], 4, "zh")
    assert [r.sentence.tokens for r in res] == [s.tokens for s in sents[1:3]]
    bad = [type(s)(list(s.tokens), list(s.tags), "zh") for s in sents]
    bad[2] = type(bad[2])(list(bad[2].tokens), ["O"] * len(bad[2].tokens), "zh")  # its entities are gone
    write_conll(tmp_path / "bad.txt", bad)
    with pytest.raises(UserError) as exc:
        file_translations(str(tmp_path / "bad.txt"), sents, [0, 1, 2, 3], 4, "zh")
    msg = str(exc.value)
    assert "\n" not in msg and "sentence 3" in msg and "bad.txt:" in msg and "no entities" in msg
    with pytest.raises(UserError, match="3 sentences, but the source training split has 4"):
        write_conll(tmp_path / "short.txt", good[:3])
        file_translations(str(tmp_path / "short.txt"), sents, [0, 1, 2, 3], 4, "zh")


def test_prepare_examples_reads_the_file_for_the_training_subset(tmp_path):
    from mclner.training.config import TrainConfig

    sents = synthetic_en(4, seed=1)
    write_conll(tmp_path / "tr.txt", [type(s)(list(s.tokens), list(s.tags), "zh") for s in sents])
    m = ConCNERMethod(ConCNERConfig(translations=str(tmp_path / "tr.txt")))
    ctx = Context(TrainConfig(target_lang="zh"), torch.device("cpu"), "reference", None, False,
                  source_index=[3, 0], source_total=4)
    ex = m.prepare_examples([sents[3], sents[0]], ctx)
    assert [e.cs.tokens for e in ex] == [sents[3].tokens, sents[0].tokens]
