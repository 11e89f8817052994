"""The mCL-NER method: its model (heads through mclner.ops), L_tc pair sampling and pair features, the
loss of a batch, and fused implementations agreeing with the reference on losses and gradients."""

from __future__ import annotations

import pytest
import torch
from mclner_fixtures import LEX, _CodeSwitcher, _Lexicon, synthetic_en, tiny_encoder, tiny_tokenizer

from mclner import ops
from mclner.data.batches import build_examples, collate_examples
from mclner.data.collate import SentenceCollator
from mclner.data.labels import LabelMap
from mclner.methods import Stage
from mclner.methods.mclner import MCLNERConfig, MCLNERMethod
from mclner.methods.mclner.grid import GridLabels, num_classes
from mclner.methods.mclner.losses import sample_relation_pairs
from mclner.nn import pool_words
from mclner.schema import IGNORE


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    sents = synthetic_en(6, seed=5)
    lm = LabelMap.from_tags([s.tags for s in sents])
    # The fixture's code-switcher: deterministic and independent of lexicon coverage.
    ex = build_examples(sents, _CodeSwitcher(_Lexicon(LEX), "zh", word_ratio=0.3, seed=0))
    batch = collate_examples(SentenceCollator(tok, labels={"grid_labels": GridLabels(lm)}), ex)
    return tok, lm, batch


def make(lm, seed=0, **kw):
    torch.manual_seed(seed)
    enc = tiny_encoder(200, seed=seed)
    method = MCLNERMethod(MCLNERConfig(biaffine_dim=16, cln_hidden=24, proj_dim=8, **kw))
    model = method.build_model(enc, lm)
    for m in model.modules():  # no dropout: every pass sees the same function
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return method, model


def test_pool_words_matches_data_reference():
    from mclner.data.collate import pool_words as ref

    torch.manual_seed(0)
    h = torch.randn(2, 7, 5)
    wi = torch.tensor([[-1, 0, 0, 1, 2, -1, -1], [-1, 0, 1, 1, 1, 2, -1]])
    torch.testing.assert_close(pool_words(h, wi, 3), ref(h, wi, 3))


def test_pair_features_match_cln_head(setup):
    _, lm, _ = setup
    _, m = make(lm)
    r = m.relation
    torch.manual_seed(1)
    h = torch.randn(2, 5, m.words.dim)
    b = torch.tensor([0, 1, 1, 0])
    i = torch.tensor([0, 4, 2, 3])
    j = torch.tensor([1, 0, 2, 3])
    with torch.no_grad():
        r.W_alpha.normal_()
        r.W_beta.normal_()
    full = ops.cln_pair_features(h, r.W_alpha, r.b_alpha, r.W_beta, r.b_beta, eps=r.eps)
    torch.testing.assert_close(r.pair_features_at(h, b, i, j), full[b, i, j])


def test_relation_logits_are_biaffine_plus_cln(setup):
    _, lm, batch = setup
    _, m = make(lm)
    m.eval()
    r = m.relation
    h = m.word_states(batch["src"])
    out = m.relation_logits(h, "reference")
    hs, he = r.mlp_s(h), r.mlp_e(h)
    want = ops.biaffine_reference(hs, he, r.U, r.W_bi, r.b_bi) + ops.cln_head_reference(
        h, r.W_alpha, r.b_alpha, r.W_beta, r.b_beta, r.cln_1.weight, r.cln_1.bias, r.cln_2.weight, r.cln_2.bias
    )
    torch.testing.assert_close(out["logits"], want)


def test_tc_pair_sampling(setup):
    _, lm, batch = setup
    labels, align = batch["src"]["grid_labels"], batch["alignment"]
    p = sample_relation_pairs(labels, batch["src"]["word_mask"], align, none_ratio=2.0, max_pairs=10_000)
    lab = labels[p["b"], p["i"], p["j"]]
    ok = (align >= 0).all(-1)  # [B, N, 2] first/last counterpart
    gold = (labels > 0) & ok.unsqueeze(2) & ok.unsqueeze(1)
    assert int((lab > 0).sum()) == int(gold.sum())  # every aligned gold relation
    assert int((lab == 0).sum()) == 2 * int(gold.sum())  # ratio of NONE pairs
    assert bool((lab != IGNORE).all())
    # rows map to the last word of a translation, columns to the first
    assert torch.equal(p["ai"], align[p["b"], p["i"], 1]) and bool((p["ai"] >= 0).all())
    assert torch.equal(p["aj"], align[p["b"], p["j"], 0]) and bool((p["aj"] >= 0).all())
    capped = sample_relation_pairs(labels, batch["src"]["word_mask"], align, none_ratio=1.0, max_pairs=7)
    assert capped["b"].shape[0] == 7


def _stage(sc=0.5, tc=0.5, ce_cs=1.0, mse=0.0):
    return Stage("source", {"ce_cs": ce_cs, "sc": sc, "tc": tc, "mse": mse})


def _losses_and_grads(method, model, batch, impl):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # same NONE-pair sample
    out = method.loss(model, batch, _stage(), impl)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    stats = out.pop("stats", {})
    return {k: float(v.detach()) for k, v in {**out, **stats}.items()}, grads


def _runnable(impl):
    return ops.available_impls()[impl]["runnable"]


@pytest.mark.parametrize("impl", ["auto", "cpu", "triton"])
def test_fused_matches_reference(setup, impl):
    if impl != "auto" and not _runnable(impl):
        pytest.skip(f"{impl} not runnable here: {ops.available_impls()[impl]['reason']}")
    _, lm, batch = setup
    method, m = make(lm)
    ref_l, ref_g = _losses_and_grads(method, m, batch, "reference")
    got_l, got_g = _losses_and_grads(method, m, batch, impl)
    assert ref_l.keys() == got_l.keys()
    for k in ref_l:
        assert got_l[k] == pytest.approx(ref_l[k], rel=1e-4, abs=1e-5), k
    assert ref_g.keys() == got_g.keys()
    for n in ref_g:
        torch.testing.assert_close(got_g[n], ref_g[n], rtol=1e-3, atol=1e-5, msg=n)


def test_loss_terms_and_grads_flow(setup):
    _, lm, batch = setup
    method, m = make(lm)
    out = method.loss(m, batch, _stage(0.1, 0.1), "reference")
    assert {"ce_src", "ce_cs", "sc", "tc", "loss"} <= out.keys()
    out["loss"].backward()
    for name in ("relation.U", "relation.W_alpha", "proj_a.0.weight", "proj_b.0.weight", "relation.cln_1.weight"):
        g = dict(m.named_parameters())[name].grad
        assert g is not None and float(g.abs().sum()) > 0, name


def test_no_codeswitch_tc_uses_same_sentence(setup):
    _, lm, batch = setup
    method, m = make(lm, codeswitch=False)
    stage = method.stages()[0]
    assert stage.weights["ce_cs"] == 0 and stage.weights["sc"] == 0 and stage.weights["tc"] > 0
    out = method.loss(m, {"src": batch["src"]}, stage, "reference")
    assert "tc" in out and "sc" not in out and "ce_cs" not in out


def test_stages_follow_the_options():
    m = MCLNERMethod(MCLNERConfig(self_training_rounds=2, st_max_steps=7, tc=False))
    stages = m.stages()
    assert [s.name for s in stages] == ["source", "st1", "st2"]
    assert stages[0].weights["tc"] == 0 and not stages[0].teacher
    assert all(s.teacher and "target" in s.streams and s.max_steps == 7 for s in stages[1:])
    assert MCLNERMethod(MCLNERConfig(self_training_rounds=0)).stages()[0].name == "source"
    assert not MCLNERMethod(MCLNERConfig(self_training_rounds=0)).needs_unlabeled()


@pytest.mark.network
def test_real_codeswitcher_batches(setup):
    """With the data layer's code-switcher and CC-CEDICT: alignments stay inside both sentences."""
    from mclner.data.codeswitch import CodeSwitcher
    from mclner.data.lexicon import load_lexicon

    tok, lm, _ = setup
    sw = CodeSwitcher(load_lexicon("cc-cedict", "zh"), "zh", word_ratio=0.3, seed=0)
    ex = build_examples(synthetic_en(6, seed=9), sw)
    b = collate_examples(SentenceCollator(tok, labels={"grid_labels": GridLabels(lm)}), ex)
    a = b["alignment"]
    assert a.shape == (*b["src"]["word_mask"].shape, 2)
    assert bool((a < b["cs"]["word_mask"].shape[1]).all())
    assert bool((a[..., 0] <= a[..., 1]).all())
    _check_tc_pairs(tok, lm, ex)


def test_tc_pairs_land_on_the_code_switched_relation_cells(setup):
    """Every sampled non-NONE source pair maps to a code-switched cell with the same relation class,
    including entities translated word by word into several characters (row -> last, column -> first)."""
    tok, lm, _ = setup
    _check_tc_pairs(tok, lm, build_examples(synthetic_en(12, seed=3), _CodeSwitcher(_Lexicon(LEX), "zh", 0.3)))


def _check_tc_pairs(tok, lm, ex):
    assert any(sp is not None and sp[1] > sp[0] for e in ex for sp in e.spans), "no multi-word translation"
    b = collate_examples(SentenceCollator(tok, labels={"grid_labels": GridLabels(lm)}), ex)
    labels = b["src"]["grid_labels"]
    pairs = sample_relation_pairs(labels, b["src"]["word_mask"], b["alignment"], none_ratio=0.0, max_pairs=4096)
    assert pairs is not None
    src_cls = labels[pairs["b"], pairs["i"], pairs["j"]]
    cs_cls = b["cs"]["grid_labels"][pairs["b"], pairs["ai"], pairs["aj"]]
    assert bool((src_cls > 0).all())
    assert torch.equal(cs_cls, src_cls)


def test_prior_init_sets_the_log_class_prior(setup):
    """--prior-init: the biaffine bias is the log of the (add-one) class frequencies over the training
    grids' cells, so NONE starts as the most likely class by that prior's margin (with the plain-mean
    loss; the weighted prior of the default --none-weight: tests/methods/test_grid_levers.py)."""
    from mclner.methods.mclner.grid import encode_grid

    tok, lm, _ = setup
    sents = synthetic_en(6, seed=5)
    ex = build_examples(sents, None)
    method, m = make(lm, prior_init=True, none_weight=1.0)
    report = method.init_model(m, ex, lm)
    counts = torch.zeros(num_classes(lm), dtype=torch.float64)
    for s in sents:
        g = torch.as_tensor(encode_grid(s.tags, lm))
        counts += torch.bincount(g.flatten(), minlength=num_classes(lm)).double()
    want = ((counts + 1) / (counts + 1).sum()).log()
    torch.testing.assert_close(m.relation.b_bi.double(), want, rtol=1e-6, atol=1e-6)
    assert float(m.relation.cln_2.bias.detach().abs().sum()) == 0.0
    assert report["prior_init"]["NONE"] == pytest.approx(float(want.exp()[0]))
    _, plain = make(lm, prior_init=False)
    before = plain.relation.b_bi.detach().clone()
    assert method.__class__(MCLNERConfig(prior_init=False)).init_model(plain, ex, lm) == {}  # --no-prior-init
    assert torch.equal(plain.relation.b_bi, before)
    assert MCLNERConfig().prior_init  # on by default
