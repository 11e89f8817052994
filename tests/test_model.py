"""The mCL-NER model: pooling, heads through mclner.ops, L_tc pair sampling and pair features, and
fused implementations agreeing with the reference on losses and gradients."""

from __future__ import annotations

import pytest
import torch
from test_train_fixtures import synthetic_en, tiny_encoder, tiny_tokenizer

from mclner import ops
from mclner.data.collate import RelationCollator
from mclner.data.grid import LabelMap
from mclner.model import IGNORE, LossWeights, MCLNERModel, ModelConfig, pool_words
from mclner.training.batches import BatchBuilder, build_examples


def _lexicon():
    from mclner.data.lexicon import load_lexicon

    try:
        return load_lexicon("cc-cedict", "zh")
    except Exception:  # no network/cache: the synthetic table of the fixtures
        from test_train_fixtures import LEX, _Lexicon

        return _Lexicon(LEX)


@pytest.fixture(scope="module")
def setup():
    tok = tiny_tokenizer()
    sents = synthetic_en(6, seed=5)
    lm = LabelMap.from_tags([s.tags for s in sents])
    from test_train_fixtures import LEX, _CodeSwitcher, _Lexicon

    # The fixture's code-switcher: deterministic and independent of lexicon coverage.
    ex = build_examples(sents, _CodeSwitcher(_Lexicon(LEX), "zh", word_ratio=0.3, seed=0))
    batch = BatchBuilder(RelationCollator(tok, lm)).examples(ex)
    return tok, lm, batch


def make_model(lm, seed=0, **kw):
    torch.manual_seed(seed)
    enc = tiny_encoder(200, seed=seed)
    cfg = ModelConfig(num_classes=lm.num_classes, biaffine_dim=16, cln_hidden=24, proj_dim=8, dropout=0.0, **kw)
    return MCLNERModel(enc, cfg)


def test_pool_words_matches_data_reference():
    from mclner.data.collate import pool_words as ref

    torch.manual_seed(0)
    h = torch.randn(2, 7, 5)
    wi = torch.tensor([[-1, 0, 0, 1, 2, -1, -1], [-1, 0, 1, 1, 1, 2, -1]])
    torch.testing.assert_close(pool_words(h, wi, 3), ref(h, wi, 3))


def test_pair_features_match_cln_head(setup):
    _, lm, batch = setup
    m = make_model(lm)
    torch.manual_seed(1)
    h = torch.randn(2, 5, m.d)
    b = torch.tensor([0, 1, 1, 0])
    i = torch.tensor([0, 4, 2, 3])
    j = torch.tensor([1, 0, 2, 3])
    with torch.no_grad():
        m.W_alpha.normal_()
        m.W_beta.normal_()
    full = ops.cln_pair_features(h, m.W_alpha, m.b_alpha, m.W_beta, m.b_beta, eps=m.config.cln_eps)
    got = m.cln_pair_features_at(h, b, i, j)
    torch.testing.assert_close(got, full[b, i, j])


def test_relation_logits_are_biaffine_plus_cln(setup):
    _, lm, batch = setup
    m = make_model(lm).eval()
    h = m.word_states(batch["src"])
    out = m.relation_logits(h, "reference")
    hs, he = m.mlp_s(h), m.mlp_e(h)
    want = ops.biaffine_reference(hs, he, m.U, m.W_bi, m.b_bi) + ops.cln_head_reference(
        h, m.W_alpha, m.b_alpha, m.W_beta, m.b_beta, m.cln_1.weight, m.cln_1.bias, m.cln_2.weight, m.cln_2.bias
    )
    torch.testing.assert_close(out["logits"], want)


def test_tc_pair_sampling(setup):
    _, lm, batch = setup
    m = make_model(lm)
    labels, align = batch["src"]["grid_labels"], batch["alignment"]
    w = LossWeights(tc_none_ratio=2.0, tc_max_pairs=10_000)
    p = m.sample_tc_pairs(labels, batch["src"]["word_mask"], align, w)
    lab = labels[p["b"], p["i"], p["j"]]
    ok = (align >= 0).all(-1)  # [B, N, 2] first/last counterpart
    gold = (labels > 0) & ok.unsqueeze(2) & ok.unsqueeze(1)
    assert int((lab > 0).sum()) == int(gold.sum())  # every aligned gold relation
    assert int((lab == 0).sum()) == 2 * int(gold.sum())  # ratio of NONE pairs
    assert bool((lab != IGNORE).all())
    # rows map to the last word of a translation, columns to the first
    assert torch.equal(p["ai"], align[p["b"], p["i"], 1]) and bool((p["ai"] >= 0).all())
    assert torch.equal(p["aj"], align[p["b"], p["j"], 0]) and bool((p["aj"] >= 0).all())
    capped = m.sample_tc_pairs(labels, batch["src"]["word_mask"], align, LossWeights(tc_max_pairs=7))
    assert capped["b"].shape[0] == 7


def _losses_and_grads(model, batch, impl):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(123)  # same NONE-pair sample
    out = model(batch["src"], batch["cs"], batch["alignment"], weights=LossWeights(sc=0.5, tc=0.5), impl=impl)
    out["loss"].backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return {k: float(v.detach()) for k, v in out.items()}, grads


def _runnable(impl):
    return ops.available_impls()[impl]["runnable"]


@pytest.mark.parametrize("impl", ["auto", "cpu", "triton"])
def test_fused_matches_reference(setup, impl):
    if impl != "auto" and not _runnable(impl):
        pytest.skip(f"{impl} not runnable here: {ops.available_impls()[impl]['reason']}")
    _, lm, batch = setup
    m = make_model(lm).eval()  # no dropout: both passes see the same function
    ref_l, ref_g = _losses_and_grads(m, batch, "reference")
    try:
        got_l, got_g = _losses_and_grads(m, batch, impl)
    except RuntimeError as exc:  # an op of this backend is not there yet (branches merge one by one)
        if "cannot run here" in str(exc):
            pytest.skip(str(exc))
        raise
    assert ref_l.keys() == got_l.keys()
    for k in ref_l:
        assert got_l[k] == pytest.approx(ref_l[k], rel=1e-4, abs=1e-5), k
    assert ref_g.keys() == got_g.keys()
    for n in ref_g:
        torch.testing.assert_close(got_g[n], ref_g[n], rtol=1e-3, atol=1e-5, msg=n)


def test_loss_terms_and_grads_flow(setup):
    _, lm, batch = setup
    m = make_model(lm)
    out = m(batch["src"], batch["cs"], batch["alignment"], weights=LossWeights(), impl="reference")
    assert {"ce_src", "ce_cs", "sc", "tc", "loss"} <= out.keys()
    out["loss"].backward()
    for name in ("U", "W_alpha", "proj_a.0.weight", "proj_b.0.weight", "cln_1.weight"):
        g = dict(m.named_parameters())[name].grad
        assert g is not None and float(g.abs().sum()) > 0, name


def test_no_codeswitch_tc_uses_same_sentence(setup):
    _, lm, batch = setup
    m = make_model(lm)
    out = m(batch["src"], weights=LossWeights(), impl="reference")
    assert "tc" in out and "sc" not in out and "ce_cs" not in out


def test_real_codeswitcher_batches(setup):
    """With the data layer's code-switcher: alignments stay inside both sentences."""
    from mclner.data.codeswitch import CodeSwitcher

    tok, lm, _ = setup
    sw = CodeSwitcher(_lexicon(), "zh", word_ratio=0.3, seed=0)
    ex = build_examples(synthetic_en(6, seed=9), sw)
    b = BatchBuilder(RelationCollator(tok, lm)).examples(ex)
    a = b["alignment"]
    assert a.shape == (*b["src"]["word_mask"].shape, 2)
    assert bool((a < b["cs"]["word_mask"].shape[1]).all())
    assert bool((a[..., 0] <= a[..., 1]).all())


def test_tc_pairs_land_on_the_code_switched_relation_cells(setup):
    """Every sampled non-NONE source pair maps to a code-switched cell with the same relation class,
    including entities translated word by word into several characters (row -> last, column -> first)."""
    from test_train_fixtures import LEX, _CodeSwitcher, _Lexicon

    from mclner.data.codeswitch import CodeSwitcher

    tok, lm, _ = setup
    model = make_model(lm)
    # The real code-switcher and the fixture's (whose translations are always several characters).
    for sw in (CodeSwitcher(_lexicon(), "zh", word_ratio=0.3, seed=0), _CodeSwitcher(_Lexicon(LEX), "zh", 0.3)):
        _check_tc_pairs(tok, lm, model, build_examples(synthetic_en(12, seed=3), sw))


def _check_tc_pairs(tok, lm, model, ex):
    assert any(sp is not None and sp[1] > sp[0] for e in ex for sp in e.spans), "no multi-word translation"
    b = BatchBuilder(RelationCollator(tok, lm)).examples(ex)
    labels = b["src"]["grid_labels"]
    pairs = model.sample_tc_pairs(labels, b["src"]["word_mask"], b["alignment"], LossWeights(tc_none_ratio=0.0))
    assert pairs is not None
    src_cls = labels[pairs["b"], pairs["i"], pairs["j"]]
    cs_cls = b["cs"]["grid_labels"][pairs["b"], pairs["ai"], pairs["aj"]]
    assert bool((src_cls > 0).all())
    assert torch.equal(cs_cls, src_cls)
