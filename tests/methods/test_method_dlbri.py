"""DLBri: entity ids across the oriented pairs, its loss terms equal their formulas on hand-built
inputs, the decoding rule, the stage list and trained parts follow the ablation flags, and a short run
trains only each stage's parts."""

from __future__ import annotations

import json

import pytest
import torch
from mclner_fixtures import TableLexicon, synthetic_en, tiny_encoder, tiny_tokenizer

from mclner.data.iob2 import iob2_to_entities
from mclner.data.labels import LabelMap
from mclner.methods.base import Stage
from mclner.methods.dlbri import (
    DLBriConfig,
    DLBriMethod,
    decode_entities,
    entity_keys,
    pair_entity_ids,
    split_labels,
)
from mclner.methods.dlbri.model import (
    BoundaryScorer,
    adaptive_delta,
    boundary_consistency,
    bridging_loss,
    confidence_terms,
)


def _variants(sents):
    from mclner.data.translations import lexicon_translations

    lex = TableLexicon()
    return {m: [r.sentence for r in lexicon_translations(sents, lex, "zh", m)] for m in ("entities", "context", "full")}


# ----------------------------------------------------------------------------- oriented pairs


def test_entity_ids_are_shared_across_variants():
    sents = synthetic_en(6, seed=3)
    var = _variants(sents)
    for a, b in (("src", "entities"), ("entities", "context"), ("context", "full")):
        sa = sents if a == "src" else var[a]
        sb = var[b]
        n = max(len(s.tokens) for s in sa + sb)
        ia, ib = pair_entity_ids(sa, sb, n, n)
        seen = set()
        for r, (x, y) in enumerate(zip(sa, sb)):
            ex, ey = iob2_to_entities(x.tags), iob2_to_entities(y.tags)
            assert [t for *_, t in ex] == [t for *_, t in ey]
            for (i, j, _), (i2, j2, _) in zip(ex, ey):
                ids = set(ia[r, i : j + 1].tolist())
                assert len(ids) == 1 and ids == set(ib[r, i2 : j2 + 1].tolist())  # one id, both sentences
                assert ids.isdisjoint(seen)  # not shared with any other entity or pair
                seen |= ids
            outside = [w for w, t in enumerate(x.tags) if t == "O"]
            assert all(ia[r, w] == -1 for w in outside)
            assert ia[r, len(x.tokens):].eq(-1).all()  # padding
    # the same type twice in a sentence: ranked in order
    keys = entity_keys(["B-PER", "O", "B-PER", "I-PER", "B-LOC"])
    assert keys == [("PER", 0), None, ("PER", 1), ("PER", 1), ("LOC", 0)]


def test_split_labels():
    types = ["LOC", "PER"]
    # tag vocabulary: O, B-LOC, I-LOC, B-PER, I-PER
    tags = torch.tensor([[0, 1, 2, 3, 4, -100]])
    sp, tp = split_labels(tags, types)
    assert sp.tolist() == [[0, 1, 2, 1, 2, -100]]
    assert tp.tolist() == [[0, 1, 1, 2, 2, -100]]


# ----------------------------------------------------------------------------- losses


def _direct_bridging(h_a, ids_a, m_a, h_b, ids_b, m_b, tau):
    """Eq. 6 per anchor (averaged over its positives), both directions, candidates = all words of the
    other side of the batch; mean over the anchors that have a positive."""
    za = torch.nn.functional.normalize(h_a[m_a].double(), dim=-1)
    zb = torch.nn.functional.normalize(h_b[m_b].double(), dim=-1)
    ya, yb = ids_a[m_a].tolist(), ids_b[m_b].tolist()
    terms = []
    for z1, y1, z2, y2 in ((za, ya, zb, yb), (zb, yb, za, ya)):
        s = z1 @ z2.T / tau
        for i, y in enumerate(y1):
            pos = [j for j, v in enumerate(y2) if v == y and y >= 0]
            if pos:
                lse = torch.logsumexp(s[i], 0)
                terms.append(-sum(s[i, p] - lse for p in pos) / len(pos))
    return torch.stack(terms).mean()


def test_bridging_loss_equals_the_formula():
    torch.manual_seed(1)
    h_a, h_b = torch.randn(2, 5, 8), torch.randn(2, 6, 8)
    m_a = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()
    m_b = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]).bool()
    ids_a = torch.tensor([[0, 0, -1, 1, -1], [-1, 2, -1, 3, 3]])
    ids_b = torch.tensor([[-1, 0, 1, 1, -1, -1], [2, -1, -1, -1, -1, -1]])  # entity 3 has no counterpart
    got = bridging_loss(h_a, ids_a, m_a, h_b, ids_b, m_b, 0.1)
    assert float(got) == pytest.approx(float(_direct_bridging(h_a, ids_a, m_a, h_b, ids_b, m_b, 0.1)), rel=1e-5)


def test_adaptive_delta_is_mean_plus_std():
    x = torch.tensor([0.2, 0.5, 0.9, 0.4])
    mean = sum(x.tolist()) / 4
    std = (sum((v - mean) ** 2 for v in x.tolist()) / 4) ** 0.5
    assert float(adaptive_delta(x)) == pytest.approx(mean + std, rel=1e-6)


def test_co_matching_and_self_penalisation_masks():
    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 0.1, 0.0], [0.0, 0.0, 3.0], [5.0, 0.0, 0.0]]])
    peer = torch.tensor([[[0.9, 0.05, 0.05], [0.2, 0.5, 0.3], [0.1, 0.1, 0.8], [1.0, 0.0, 0.0]]])
    mask = torch.tensor([[True, True, True, False]])  # the last word is padding
    p = logits.softmax(-1)
    for delta in (0.6, None):
        out = confidence_terms(logits, peer, mask, delta)
        words = range(3)
        pm = [float(peer[0, w].max()) for w in words]
        om = [float(p[0, w].max()) for w in words]
        if delta is None:
            d_peer = float(torch.tensor(pm).mean() + torch.tensor(pm).std(correction=0))
            d_own = float(torch.tensor(om).mean() + torch.tensor(om).std(correction=0))
        else:
            d_peer = d_own = delta
        com = -sum(float(p[0, w, int(peer[0, w].argmax())].log()) for w in words if pm[w] > d_peer) / 3
        pen = -sum(float(torch.log(1 - p[0, w].max())) for w in words if om[w] < d_own) / 3
        assert float(out["com"]) == pytest.approx(com, rel=1e-5, abs=1e-7)
        assert float(out["p"]) == pytest.approx(pen, rel=1e-5, abs=1e-7)
        assert float(out["delta_peer"]) == pytest.approx(d_peer, rel=1e-5)
    # with δ = 0.6: the peer is confident on words 0 and 2 only, the model unconfident on word 1 only
    out = confidence_terms(logits, peer, mask, 0.6)
    assert float(out["com"]) > 0 and float(out["p"]) == pytest.approx(-float(torch.log(1 - p[0, 1].max())) / 3)
    # the co-matching gradient reaches only the words the peer is confident on
    lg = logits.clone().requires_grad_(True)
    confidence_terms(lg, peer, mask, 0.6)["com"].backward()
    assert lg.grad[0, 1].abs().sum() == 0 and lg.grad[0, 3].abs().sum() == 0 and lg.grad[0, 0].abs().sum() > 0


def test_self_penalisation_on_the_lower_tail():
    """--lp-threshold lower: L_P selects the words whose max probability is below mean − std of the
    student's own max probabilities; co-matching keeps δ = mean + std of the peer's. With confident
    teachers (as after the source stage) δ = mean + std exceeds 1: 'delta' then penalises every word."""
    torch.manual_seed(4)
    logits = torch.randn(2, 7, 5) * 3
    logits[0, :4, 0] += 8  # confident words
    peer = torch.randn(2, 7, 5).mul(3).softmax(-1)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, 5:] = False
    p = logits.softmax(-1)[mask]
    om, pm = p.max(-1).values, peer[mask].max(-1).values
    low = float(om.mean() - om.std(correction=0))
    out = confidence_terms(logits, peer, mask, None, "lower")
    sel = om < low
    assert 0 < int(sel.sum()) < sel.numel()
    want = -float(torch.log(1 - om[sel]).sum()) / om.numel()
    assert float(out["p"]) == pytest.approx(want, rel=1e-5)
    assert float(out["delta_own"]) == pytest.approx(low, rel=1e-5)
    assert float(out["p_share"]) == pytest.approx(float(sel.float().mean()))
    assert float(out["com_share"]) == pytest.approx(float((pm > pm.mean() + pm.std(correction=0)).float().mean()))
    same = confidence_terms(logits, peer, mask, None)  # the recipe's single δ
    assert float(same["com"]) == pytest.approx(float(out["com"])) and float(same["p_share"]) > float(out["p_share"])
    # a confident batch (as after the source stage): δ = mean + std > 1, so the recipe's single δ
    # penalises every word and co-matches none, while the lower tail is the one unsure word
    sure = torch.full((1, 6, 3), -4.0)
    sure[0, :, 0] = 4.0
    sure[0, 5, 0] = 0.0
    one = torch.ones(1, 6, dtype=torch.bool)
    t = confidence_terms(sure, sure.softmax(-1), one, None)
    assert float(t["delta_own"]) > 1 and float(t["p_share"]) == 1.0 and float(t["com_share"]) == 0.0
    t = confidence_terms(sure, sure.softmax(-1), one, None, "lower")
    assert float(t["p_share"]) == pytest.approx(1 / 6)
    with pytest.raises(ValueError, match="lp_threshold"):
        confidence_terms(logits, peer, mask, None, "upper")


def test_co_matching_above_the_peer_mean():
    """--com-threshold mean: co-matching follows the peer's argmax on the words whose peer max
    probability is above the batch mean of the peer's max probabilities. With a confident peer (as after
    the source stage) δ = mean + std is above 1 and 'delta' co-matches no word; 'mean' still does."""
    sure = torch.full((1, 6, 3), -4.0)
    sure[0, :, 0] = 4.0
    sure[0, 4, 0], sure[0, 5, 0] = 1.0, 0.0
    one = torch.ones(1, 6, dtype=torch.bool)
    torch.manual_seed(5)
    logits = torch.randn(1, 6, 3, requires_grad=True)
    peer = sure.softmax(-1)
    t = confidence_terms(logits, peer, one, None)
    assert float(t["com_share"]) == 0.0 and float(t["com"].detach()) == 0.0
    m = confidence_terms(logits, peer, one, None, "lower", "mean")
    pm, pa = peer[0].max(-1)
    sel = pm > pm.mean()
    assert int(sel.sum()) == 4 and float(m["com_share"]) == pytest.approx(4 / 6)
    want = -float(logits[0].log_softmax(-1).gather(1, pa[:, None]).squeeze(1)[sel].sum().detach()) / 6
    assert float(m["com"].detach()) == pytest.approx(want, rel=1e-5)
    assert float(m["delta_peer"]) == pytest.approx(float(pm.mean()), rel=1e-6)
    # the self-penalisation threshold does not depend on the co-matching one
    p_alone = confidence_terms(logits, peer, one, None, "lower")["p"]
    assert float(m["p"].detach()) == pytest.approx(float(p_alone.detach()))
    m["com"].backward()
    assert logits.grad[0, ~sel].abs().sum() == 0 and logits.grad[0, sel].abs().sum() > 0
    with pytest.raises(ValueError, match="com_threshold"):
        confidence_terms(logits, peer, one, None, "lower", "upper")


def test_boundary_score_and_consistency_formulas():
    torch.manual_seed(2)
    sc = BoundaryScorer(6, 4)
    h = torch.randn(2, 3, 6)
    with torch.no_grad():
        s = sc(h)
        q, k = sc.q(h), sc.k(h)
    for b in range(2):
        for i in range(3):
            for j in range(3):
                want = q[b, i] @ k[b, j] + (sc.w.weight @ (h[b, i] + h[b, j])).squeeze()
                assert float(s[b, i, j]) == pytest.approx(float(want.detach()), rel=1e-5, abs=1e-6)
    s1, s2 = torch.randn(2, 3, 3), torch.randn(2, 3, 3)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]]).bool()
    cells = [(b, i, j) for b in range(2) for i in range(3) for j in range(i, 3) if mask[b, i] and mask[b, j]]
    want = sum(float(s1[c] - s2[c]) ** 2 for c in cells) / len(cells)
    assert float(boundary_consistency(s1, s2, mask)) == pytest.approx(want, rel=1e-6)
    assert len(cells) == 3 + 6


def test_combination_ignores_padding():
    from mclner.methods.dlbri.model import Combination

    torch.manual_seed(3)
    comb = Combination(8, 3, 4)
    h_sp, h_tp = torch.randn(1, 5, 8), torch.randn(1, 5, 8)
    mask = torch.tensor([[1, 1, 1, 0, 0]]).bool()
    w_sp, w_tp = torch.randn(3, 8), torch.randn(4, 8)
    a = comb(h_sp, h_tp, w_sp, w_tp, mask)
    h_sp2, h_tp2 = h_sp.clone(), h_tp.clone()
    h_sp2[:, 3:] += 10.0
    h_tp2[:, 3:] -= 7.0
    b = comb(h_sp2, h_tp2, w_sp, w_tp, mask)
    for x, y in zip(a, b):
        assert torch.allclose(x[:, :3], y[:, :3], atol=1e-6)
    assert a[0].shape == (1, 5, 3) and a[1].shape == (1, 5, 4)


def test_combination_starts_from_student_pair_1():
    """The combine stage starts its classifiers as student pair 1's heads on the label-attended own
    features (the co-attended half at zero), and every part of them still gets a gradient."""
    from mclner.methods.dlbri.model import Combination

    tok = tiny_tokenizer()
    sents = synthetic_en(3, seed=6)
    lm = LabelMap.from_tags([s.tags for s in sents])
    m = DLBriMethod()
    torch.manual_seed(1)
    model = m.build_model(tiny_encoder(len(tok)), lm).eval()
    batch = m.make_collator(tok, lm, 128)(sents)
    before = model.comb.span_out.weight.detach().clone()
    m.prepare_stage(model, Stage("combine", {"kd": 1.0}, streams=("target",), teacher=True))
    assert model.config.decode_with == "combination" and not torch.equal(before, model.comb.span_out.weight)
    h_sp, h_tp = model.words(0, batch), model.words(2, batch)
    sp, tp = model.combined_logits(batch)
    for got, h, head in ((sp, h_sp, model.span_head[0]), (tp, h_tp, model.type_head[0])):
        want = head(Combination.label_attention(h, head.weight))
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # like a zero-initialised residual branch: the co-attended half gets a gradient at once, and the
    # co-attention scores (U) once that half has moved
    (sp.square().sum() + tp.square().sum()).backward()
    d = model.span_head[0].in_features
    assert model.comb.span_out.weight.grad[:, d:].abs().sum() > 0 and model.comb.U.grad.abs().sum() == 0
    with torch.no_grad():
        for out in (model.comb.span_out, model.comb.type_out):
            out.weight -= 0.1 * out.weight.grad
    model.zero_grad()
    sp, tp = model.combined_logits(batch)
    (sp.square().sum() + tp.square().sum()).backward()
    assert model.comb.U.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- decoding


def test_inference_rule():
    types = ["LOC", "PER"]
    # span ids O=0 B=1 I=2; type ids 0 = O, 1 = LOC, 2 = PER
    span = [1, 2, 0, 1, 0, 2, 2, 1, 1]
    typ = [1, 2, 0, 0, 0, 1, 1, 2, 1]
    # [0,1]: type of word 1 (PER), not of word 0; [3,3]: type O → dropped; [5,6]: I after O starts a span;
    # [7,7], [8,8]: two B's are two entities
    assert decode_entities(span, typ, types) == [(0, 1, "PER"), (5, 6, "LOC"), (7, 7, "PER"), (8, 8, "LOC")]
    assert decode_entities([0, 0], [1, 2], types) == []


def test_decode_uses_the_chosen_student_or_the_combination():
    tok = tiny_tokenizer()
    sents = synthetic_en(3, seed=4)
    lm = LabelMap.from_tags([s.tags for s in sents])
    m = DLBriMethod()
    torch.manual_seed(0)
    model = m.build_model(tiny_encoder(len(tok)), lm).eval()
    batch = m.make_collator(tok, lm, 128)(sents)
    with torch.no_grad():
        for who in ("1", "2", "combination"):
            if who == "combination":
                model.config.decode_with = "combination"
                sp, tp = model.combined_logits(batch)
            else:
                model.config.decode_with, model.config.student = "student", float(who)
                sp, tp = model.student_logits(int(who) - 1, batch)
            got = model.decode(batch, lm, return_scores=True)
            for r, (ents, scores) in enumerate(got):
                n = len(sents[r].tokens)
                want = decode_entities(sp[r, :n].argmax(-1).tolist(), tp[r, :n].argmax(-1).tolist(), lm.types)
                assert ents == want
                assert scores.shape == (n, 1 + 2 * len(lm.types))
                assert torch.allclose(scores.sum(-1), torch.ones(n), atol=1e-5)
                ps, pt = sp[r, :n].softmax(-1), tp[r, :n].softmax(-1)
                k = 1 + lm.types.index(lm.types[-1])  # the last type: B and I columns
                assert torch.allclose(scores[:, 2 * k - 1], ps[:, 1] * pt[:, k], atol=1e-6)
                assert torch.allclose(scores[:, 2 * k], ps[:, 2] * pt[:, k], atol=1e-6)


# ----------------------------------------------------------------------------- stages and flags


def _names(**kw):
    return [s.name for s in DLBriMethod(DLBriConfig(**kw)).stages()]


def test_stage_list_follows_the_flags():
    assert _names() == ["bridge1", "bridge2", "bridge3", "source", "students", "combine"]
    assert _names(bridging=False) == ["source", "students", "combine"]
    assert _names(combination=False) == ["bridge1", "bridge2", "bridge3", "source", "students"]
    st = {s.name: s for s in DLBriMethod().stages()}
    assert not st["bridge1"].select_best and st["source"].select_best
    assert st["students"].teacher and st["students"].streams == ("source", "target")
    assert st["combine"].teacher and st["combine"].streams == ("target",)
    nb = {s.name: s for s in DLBriMethod(DLBriConfig(boundary=False, lp=False)).stages()}
    assert nb["students"].streams == ("target",) and nb["students"].weights["sbc"] == 0
    assert nb["students"].weights["p"] == 0
    steps = {s.name: s.max_steps for s in DLBriMethod(DLBriConfig(**{k: v for k, v in DLBriMethod.presets[
        "quick"].items() if k.endswith("_max_steps")})).stages()}
    assert sum(steps.values()) == 350  # as mCL-NER's quick run (250 + 100)


def test_only_the_student_stage_calibrates_and_only_without_combination():
    """Calibration (choosing the decoding student pair) belongs to the student stage: the trainer
    reloads a finished stage's best to calibrate it, so no other stage may claim to."""
    for combination in (True, False):
        m = DLBriMethod(DLBriConfig(combination=combination, bridging=False))
        got = {}
        for st in m.stages():
            if st.name != "combine":
                got[st.name] = m.calibrates(st)
        assert got == {"source": False, "students": not combination}


def test_trained_parts_per_stage():
    names = ["enc.0.encoder.x", "enc.1.encoder.x", "enc.2.encoder.x", "enc.3.encoder.x", "span_head.0.weight",
             "span_head.1.weight", "type_head.1.bias", "boundary.0.q.weight", "comb.U"]

    def trained(stage, **kw):
        m = DLBriMethod(DLBriConfig(**kw))
        keep = m.trainable(Stage(stage))
        return [n for n in names if keep(n)]

    assert trained("bridge1") == ["enc.0.encoder.x", "enc.1.encoder.x"]
    assert trained("bridge2", bridges=1) == ["enc.0.encoder.x"]
    assert trained("source") == names[:7]
    assert trained("students") == names[:8]
    assert trained("students", boundary=False) == names[:7]
    assert trained("combine") == ["enc.0.encoder.x", "enc.2.encoder.x", "span_head.0.weight", "comb.U"]


@pytest.mark.parametrize("bridges", [1, 2])
def test_bridged_encoders_initialise_the_students(bridges):
    tok = tiny_tokenizer()
    lm = LabelMap(["LOC", "PER"])
    m = DLBriMethod(DLBriConfig(bridges=bridges))
    model = m.build_model(tiny_encoder(len(tok)), lm)
    with torch.no_grad():
        for k, enc in enumerate(model.enc):
            for p in enc.parameters():
                p.fill_(float(k))
    m.prepare_stage(model, Stage("source"))
    first = [float(next(enc.parameters()).detach().flatten()[0]) for enc in model.enc]
    assert first == ([0.0, 0.0, 0.0, 0.0] if bridges == 1 else [0.0, 1.0, 0.0, 1.0])
    assert model.config.decode_with == "student"
    m.prepare_stage(model, Stage("combine"))
    assert model.config.decode_with == "combination"


def test_a_short_run_trains_only_each_stages_parts(tmp_path):
    """Bridging with one bridge leaves encoders 2–4 at their pretrained weights; the run ends with the
    better student pair chosen on the dev set (no combination)."""
    from mclner_golden_losses import make_inputs

    from mclner.cli import main
    from mclner.training.checkpoint import read_weights

    paths = make_inputs(tmp_path)
    out = tmp_path / "run"
    args = ["train", "--method", "dlbri", "--source", paths["en"], "--target", paths["zh"], "--target-lang", "zh",
            "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out), "--max-steps", "2",
            "--batch-size", "4", "--effective-batch-size", "4", "--encoder-lr", "1e-2", "--no-progress",
            "--dlbri-bridges", "1", "--no-combination", "--delta", "0.5", "--no-lp", "--freeze-embeddings"]
    assert main(args) == 0
    w = read_weights(out / "stages" / "bridge3" / "best")  # model.safetensors + encoder/
    key = "encoder.encoder.layer.0.attention.self.query.weight"
    assert torch.equal(w[f"enc.1.{key}"], w[f"enc.3.{key}"]) and torch.equal(w[f"enc.2.{key}"], w[f"enc.3.{key}"])
    assert not torch.equal(w[f"enc.0.{key}"], w[f"enc.1.{key}"])  # the bridge trained
    # a stage's narrowing keeps what the run froze: with --freeze-embeddings no stage trains them
    emb = "encoder.embeddings.word_embeddings.weight"
    final = read_weights(out / "best")
    assert all(torch.equal(final[f"enc.{k}.{emb}"], w[f"enc.3.{emb}"]) for k in range(4))
    assert not torch.equal(final[f"enc.2.{key}"], w[f"enc.2.{key}"])  # the type encoders trained later
    assert torch.equal(w["comb.U"], read_weights(out / "stages" / "source" / "best")["comb.U"])
    res = json.loads((out / "results.json").read_text())
    assert list(res["stages"]) == ["bridge1", "bridge2", "bridge3", "source", "students"]
    assert res["stages"]["students"]["student"] in (1.0, 2.0)
    cfg = json.loads((out / "best" / "config.json").read_text())
    assert cfg["model"]["decode_with"] == "student" and cfg["model"]["student"] == res["stages"]["students"]["student"]
    log = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    students = [r for r in log if r.get("stage") == "students" and "loss" in r]
    assert students and "sbc_src" in students[0] and all(r["delta_span1"] == 0.5 for r in students)


def test_resume_inside_the_student_stage_is_exact(tmp_path):
    """Killed at step 7 of `students` (after three bridging stages and `source` finished), resumed:
    every checkpoint equals the uninterrupted run's, and the final model decodes with the combination."""
    from mclner_golden_losses import make_inputs

    from mclner.cli import build_parser
    from mclner.training.checkpoint import read_weights
    from mclner.training.cli import config_from_args
    from mclner.training.trainer import train

    paths = make_inputs(tmp_path)

    def cfg(out):
        args = ["train", "--method", "dlbri", "--source", paths["en"], "--target", paths["zh"], "--target-lang",
                "zh", "--lexicon", paths["lex"], "--encoder", paths["enc"], "--output-dir", str(out),
                "--max-steps", "8", "--bridge-max-steps", "2", "--source-max-steps", "2", "--combine-max-steps", "2",
                "--batch-size", "4", "--effective-batch-size", "4", "--eval-every", "4", "--save-every", "2",
                "--no-progress", "--seed", "3"]
        return config_from_args(build_parser().parse_args(args))

    full, cut = tmp_path / "full", tmp_path / "cut"
    train(cfg(full))
    c = cfg(cut)
    c.stop_after_steps = 7
    assert train(c).get("interrupted")
    assert sorted(p.name for p in (cut / "stages").iterdir()) == ["bridge1", "bridge2", "bridge3", "source",
                                                                   "students"]
    c.stop_after_steps = None
    train(c, resume=True)
    for ckpt in ["stages/students/last", "stages/combine/last", "best"]:
        a, b = read_weights(full / ckpt), read_weights(cut / ckpt)
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), (ckpt, k)
    assert json.loads((cut / "best" / "config.json").read_text())["model"]["decode_with"] == "combination"


@pytest.mark.parametrize("impl", ["cpu", "triton"])
def test_fused_ops_give_the_reference_losses_and_gradients(impl):
    """The bridging loss (sup_con, two sets, sum reduction) and the combination (biaffine, one class)
    through a fused implementation: same values and gradients as the reference."""
    from mclner import _native
    from mclner.methods.dlbri.model import Combination

    if impl == "cpu" and _native.cpu_module() is None:
        pytest.skip("native CPU module not built")
    torch.manual_seed(5)
    h_a, h_b = torch.randn(3, 7, 16, requires_grad=True), torch.randn(3, 9, 16, requires_grad=True)
    m_a, m_b = torch.rand(3, 7) > 0.2, torch.rand(3, 9) > 0.2
    ia, ib = torch.randint(-1, 4, (3, 7)), torch.randint(-1, 4, (3, 9))
    comb = Combination(16, 3, 4)
    w_sp, w_tp = torch.randn(3, 16), torch.randn(4, 16)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[0, 5:] = False

    def run(which):
        loss = bridging_loss(h_a, ia, m_a, h_b, ib, m_b, 0.1, which)
        sp, tp = comb(h_a, h_a.flip(1), w_sp, w_tp, mask, which)
        total = loss + (sp.sin() * mask[..., None]).sum() + (tp.cos() * mask[..., None]).sum()
        return [loss, sp, tp] + list(torch.autograd.grad(total, [h_a, h_b, comb.U, comb.W]))

    for x, y in zip(run("reference"), run(impl)):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5)
