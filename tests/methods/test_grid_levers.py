"""Levers against the NONE majority of the relation grid (issue 15, item 1): NONE-cell weighting, focal
exponent, NONE-cell subsampling and decoded-cells-only L_ce (each against a hand formula on a
hand-built grid), the defaults being the plain mean, the flags reaching the loss of a real run
(reference and fused heads), exact --resume with random subsampling, and --head-warmup-steps holding
the encoder still."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from mclner_golden_losses import make_inputs
from test_method_contract import _args
from test_method_mclner import _losses_and_grads, _runnable, make, setup  # noqa: F401 (setup: a fixture)

from mclner.cli import main
from mclner.methods.mclner import MCLNERConfig
from mclner.methods.mclner.grid import NONE
from mclner.methods.mclner.losses import grid_ce
from mclner.schema import IGNORE
from mclner.training.checkpoint import read_weights

C = 5  # NONE, NNW and three THW types


@pytest.fixture
def grid():
    """Two sentences of 4 and 3 words (the second padded: IGNORE), a few NNW/THW cells, random logits."""
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(2, 4, 4, C, generator=g, dtype=torch.float64) * 2.0
    labels = torch.zeros(2, 4, 4, dtype=torch.long)
    labels[0, 0, 1] = 1  # NNW
    labels[0, 1, 0] = 2  # THW type 0: words 0-1
    labels[0, 3, 3] = 3  # a one-word entity
    labels[1, 2, 2] = 4
    labels[1, 3, :] = IGNORE
    labels[1, :, 3] = IGNORE
    logits[..., NONE] += 2.0  # NONE leads, as after the prior start: NONE cells easy, the others hard
    return logits, labels


def cells(labels):
    """The labelled cells in row-major order: the order grid_ce's random draw follows."""
    return [tuple(x) for x in (labels != IGNORE).nonzero().tolist()]


def cell_loss(logits, labels, cell, gamma):
    z = logits[cell].tolist()
    c = int(labels[cell])
    m = max(z)
    lse = m + math.log(sum(math.exp(v - m) for v in z))
    p = math.exp(z[c] - lse)
    return -(z[c] - lse) * (1.0 - p) ** gamma


def hand(logits, labels, w_none=1.0, gamma=0.0, keep=None):
    num = den = 0.0
    for cell in cells(labels):
        if keep is not None and cell not in keep:
            continue
        w = w_none if int(labels[cell]) == NONE else 1.0
        num += w * cell_loss(logits, labels, cell, gamma)
        den += w
    return num / den


def test_defaults_are_the_plain_mean(grid):
    logits, labels = grid
    want = F.cross_entropy(logits.reshape(-1, C).float(), labels.reshape(-1), ignore_index=IGNORE)
    got = grid_ce(logits, labels)
    assert torch.equal(got, want)  # bit for bit: the golden losses stay
    assert float(got) == pytest.approx(hand(logits, labels), rel=1e-6)
    cfg = MCLNERConfig()
    # the method's default weighs NONE cells 0.1 (docs/TRAINING.md); the other levers are off
    assert (cfg.none_weight, cfg.focal_gamma, cfg.none_keep, cfg.none_sampling) == (0.1, 0.0, 1.0, "random")


@pytest.mark.parametrize("w_none", [0.1, 0.01, 3.0])
def test_none_weight_is_the_weighted_mean(grid, w_none):
    logits, labels = grid
    got = grid_ce(logits, labels, none_weight=w_none)
    assert float(got) == pytest.approx(hand(logits, labels, w_none=w_none), rel=1e-6)
    assert float(got) != pytest.approx(hand(logits, labels), rel=1e-3)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_focal_gamma(grid, gamma):
    logits, labels = grid
    assert float(grid_ce(logits, labels, focal_gamma=gamma)) == pytest.approx(hand(logits, labels, gamma=gamma),
                                                                              rel=1e-6)
    both = grid_ce(logits, labels, focal_gamma=gamma, none_weight=0.2)
    assert float(both) == pytest.approx(hand(logits, labels, w_none=0.2, gamma=gamma), rel=1e-6)


def test_random_none_keep_draws_from_the_global_generator(grid):
    logits, labels = grid
    cs = cells(labels)
    torch.manual_seed(11)
    u = torch.rand(len(cs))
    keep = {c for c, x in zip(cs, u.tolist()) if int(labels[c]) != NONE or x < 0.4}
    assert 0 < sum(int(labels[c]) == NONE for c in keep) < sum(int(labels[c]) == NONE for c in cs)
    torch.manual_seed(11)
    got = grid_ce(logits, labels, none_keep=0.4, none_weight=0.5, focal_gamma=1.0)
    assert float(got) == pytest.approx(hand(logits, labels, w_none=0.5, gamma=1.0, keep=keep), rel=1e-6)
    # every gold relation stays even when (almost) no NONE cell is kept
    torch.manual_seed(11)
    tiny = grid_ce(logits, labels, none_keep=1e-6)
    ents = {c for c in cs if int(labels[c]) != NONE}
    assert float(tiny) == pytest.approx(hand(logits, labels, keep=ents), rel=1e-6)


def test_random_none_keep_gives_dropped_cells_no_gradient(grid):
    logits, labels = grid
    x = logits.clone().requires_grad_(True)
    torch.manual_seed(3)
    grid_ce(x, labels, none_keep=0.3).backward()
    g = x.grad.abs().sum(-1)
    none = labels == NONE
    assert bool((g[labels == IGNORE] == 0).all())
    assert bool((g[(labels != NONE) & (labels != IGNORE)] > 0).all())
    dropped = int((g[none] == 0).sum())
    assert 0 < dropped < int(none.sum())


@pytest.mark.parametrize("keep_frac", [0.25, 0.5])
def test_hard_none_keep_is_ohem(grid, keep_frac):
    logits, labels = grid
    cs = cells(labels)
    none = [c for c in cs if int(labels[c]) == NONE]
    k = math.ceil(keep_frac * len(none))
    hardest = sorted(none, key=lambda c: -cell_loss(logits, labels, c, 2.0))[:k]
    keep = set(hardest) | {c for c in cs if int(labels[c]) != NONE}
    state = torch.get_rng_state()
    got = grid_ce(logits, labels, none_keep=keep_frac, none_sampling="hard", focal_gamma=2.0)
    assert torch.equal(torch.get_rng_state(), state)  # no randomness
    assert float(got) == pytest.approx(hand(logits, labels, gamma=2.0, keep=keep), rel=1e-6)


def test_decoded_only_reads_the_cells_decoding_reads(grid):
    logits, labels = grid
    decoded = {c for c in cells(labels) if c[2] <= c[1] + 1}  # (b, i, j): j <= i + 1
    assert len(decoded) < len(cells(labels))
    got = grid_ce(logits, labels, decoded_only=True)
    assert float(got) == pytest.approx(hand(logits, labels, keep=decoded), rel=1e-6)
    both = grid_ce(logits, labels, decoded_only=True, none_weight=0.3, focal_gamma=1.5)
    assert float(both) == pytest.approx(hand(logits, labels, w_none=0.3, gamma=1.5, keep=decoded), rel=1e-6)
    # every gold relation of a grid is in the decoded cells
    from mclner_fixtures import synthetic_en

    from mclner.data.labels import LabelMap
    from mclner.methods.mclner.grid import encode_grid
    from mclner.methods.mclner.losses import decoded_cells

    sents = synthetic_en(12, seed=2)
    lm = LabelMap.from_tags([s.tags for s in sents])
    for s in sents:
        g = torch.as_tensor(encode_grid(s.tags, lm))
        assert bool((g[~decoded_cells(g.shape[0])] == NONE).all())


@pytest.mark.parametrize("levers", [{"ce_cells": "decoded"}, {"none_weight": 0.1, "none_keep": 0.5},
                                    {"ce_cells": "decoded", "none_weight": 0.02}])
def test_prior_init_is_the_constant_optimum_of_the_loss(setup, levers):  # noqa: F811
    """--prior-init counts the cells the loss reads (--ce-cells), NONE scaled by --none-weight and
    --none-keep: the class distribution that minimises that loss for a constant prediction."""
    from mclner_fixtures import synthetic_en

    from mclner.data.batches import build_examples
    from mclner.methods.mclner.grid import encode_grid, num_classes
    from mclner.methods.mclner.losses import decoded_cells

    _, lm, _ = setup
    sents = synthetic_en(6, seed=5)
    method, m = make(lm, **levers)
    method.init_model(m, build_examples(sents, None), lm)
    counts = torch.zeros(num_classes(lm), dtype=torch.float64)
    for s in sents:
        g = torch.as_tensor(encode_grid(s.tags, lm))
        if levers.get("ce_cells") == "decoded":
            g = g[decoded_cells(g.shape[0])]
        counts += torch.bincount(g.flatten(), minlength=num_classes(lm)).double()
    counts[NONE] *= levers.get("none_weight", MCLNERConfig().none_weight) * levers.get("none_keep", 1.0)
    torch.testing.assert_close(m.relation.b_bi.double(), ((counts + 1) / (counts + 1).sum()).log(),
                               rtol=1e-6, atol=1e-6)


def test_nothing_labelled_or_nothing_kept_is_a_zero_with_a_graph():
    logits = torch.randn(1, 2, 2, C, requires_grad=True)
    for labels, kw in ((torch.full((1, 2, 2), IGNORE), {"none_weight": 0.1}),
                       (torch.zeros(1, 2, 2, dtype=torch.long), {"none_keep": 1e-6})):
        torch.manual_seed(0)
        out = grid_ce(logits, labels, **kw)
        assert float(out.detach()) == 0.0 and out.requires_grad
    with pytest.raises(ValueError, match="none_sampling"):
        grid_ce(logits, torch.zeros(1, 2, 2, dtype=torch.long), none_keep=0.5, none_sampling="top")


LEVERS = {"none_weight": 0.05, "focal_gamma": 2.0, "none_keep": 0.3, "ce_cells": "decoded"}


@pytest.mark.parametrize("impl", ["cpu", "triton"])
def test_fused_heads_with_levers_match_reference(setup, impl):  # noqa: F811
    """The levers act on the logits whichever implementation made them (ops.biaffine + ops.cln_head):
    fused losses and gradients equal the reference ones with every lever on."""
    if not _runnable(impl):
        pytest.skip(f"{impl} not runnable here")
    _, lm, batch = setup
    method, m = make(lm, **LEVERS)
    ref_l, ref_g = _losses_and_grads(method, m, batch, "reference")  # seeds the NONE-cell draw
    got_l, got_g = _losses_and_grads(method, m, batch, impl)
    plain_method, plain_m = make(lm)
    plain_l, _ = _losses_and_grads(plain_method, plain_m, batch, "reference")
    for k in ("ce_src", "ce_cs"):
        assert got_l[k] == pytest.approx(ref_l[k], rel=1e-4, abs=1e-5), k
        assert ref_l[k] != pytest.approx(plain_l[k], rel=1e-3), k
    for n in ref_g:
        torch.testing.assert_close(got_g[n], ref_g[n], rtol=1e-3, atol=1e-5, msg=n)


def _first(out: Path, key: str = "ce_src") -> float:
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    return next(r[key] for r in rows if r.get("stage") == "source" and "loss" in r)


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("levers")
    return root, make_inputs(root)


def _run(task, name, *extra):
    root, paths = task
    out = root / name
    args = _args(paths, out, "mclner", "--self-training-rounds", "0", "--biaffine-dim", "16", "--cln-hidden", "16",
                 "--proj-dim", "8", *extra)
    args[args.index("--max-steps") + 1] = "1"
    assert main(args) == 0
    return out


@pytest.fixture(scope="module")
def plain_first_loss(task):
    return _first(_run(task, "plain"))


@pytest.mark.parametrize("flags", [("--none-weight", "1"), ("--focal-gamma", "2"), ("--none-keep", "0.2"),
                                   ("--none-keep", "0.2", "--none-sampling", "hard"), ("--ce-cells", "decoded")],
                         ids=["none-weight", "focal", "keep-random", "keep-hard", "decoded-cells"])
def test_flags_reach_the_loss_of_a_run(task, plain_first_loss, flags):
    got = _first(_run(task, "-".join(flags), *flags))
    assert got != pytest.approx(plain_first_loss, rel=1e-3), flags


def test_resume_is_exact_with_random_none_subsampling(tmp_path):
    paths = make_inputs(tmp_path)
    extra = ("--self-training-rounds", "0", "--none-keep", "0.3", "--save-every", "2", "--eval-every", "100")
    assert main(_args(paths, tmp_path / "full", "mclner", *extra)) == 0
    cut = _args(paths, tmp_path / "cut", "mclner", *extra)
    from mclner.cli import build_parser
    from mclner.training.cli import config_from_args
    from mclner.training.trainer import train

    cfg = config_from_args(build_parser().parse_args(cut))
    cfg.stop_after_steps = 5
    assert train(cfg).get("interrupted")
    cfg.stop_after_steps = None
    train(cfg, resume=True)
    a = read_weights(tmp_path / "full" / "stages" / "source" / "last")
    b = read_weights(tmp_path / "cut" / "stages" / "source" / "last")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_head_warmup_holds_the_encoder_then_warms_it_up():
    from mclner.training.build import make_scheduler

    torch.manual_seed(0)
    enc, head = torch.nn.Linear(3, 3), torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW([{"params": enc.parameters(), "lr": 1e-2, "name": "encoder", "weight_decay": 0.1},
                             {"params": head.parameters(), "lr": 1e-1, "name": "head"}])
    sched = make_scheduler(opt, total=20, warmup_ratio=0.1, encoder_delay=5)  # warm-up 2 steps
    enc0 = [p.detach().clone() for p in enc.parameters()]
    head0 = [p.detach().clone() for p in head.parameters()]
    lrs = []
    for step in range(20):
        lrs.append((opt.param_groups[0]["lr"], opt.param_groups[1]["lr"]))
        head(enc(torch.randn(4, 3))).square().sum().backward()
        opt.step()
        opt.zero_grad()
        sched.step()
        if step == 4:  # after 5 steps: the encoder exactly as it was (no update, no decay), the head moved
            assert all(torch.equal(a, b) for a, b in zip(enc.parameters(), enc0))
            assert not all(torch.equal(a, b) for a, b in zip(head.parameters(), head0))
    assert [e for e, _ in lrs[:5]] == [0.0] * 5
    assert lrs[5][0] == pytest.approx(1e-2 / 3) and lrs[6][0] == pytest.approx(2e-2 / 3)  # its own warm-up
    assert lrs[10][0] == pytest.approx(1e-2 * 10 / 18)  # then the common decay
    assert [h for _, h in lrs[:3]] == pytest.approx([1e-1 / 3, 2e-1 / 3, 1e-1])  # the head's schedule as before
    plain = make_scheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), 20, 0.1)
    assert len(plain.lr_lambdas) == 1  # --head-warmup-steps 0: today's schedule


def test_head_warmup_only_in_the_first_stage(task):
    out = _run(task, "head-warmup", "--head-warmup-steps", "2", "--self-training-rounds", "1",
               "--st-threshold", "0", "--st-max-steps", "2")
    rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines()]
    enc = {(r["stage"], r["step"]): r["lr_encoder"] for r in rows if "lr_encoder" in r}
    assert enc[("source", 1)] == 0.0
    assert enc[("st1", 1)] > 0.0


@pytest.mark.parametrize("flag,value,msg", [("--none-weight", "0", "--none-weight must be >="),
                                            ("--none-keep", "1.5", "--none-keep must be <="),
                                            ("--focal-gamma", "-1", "--focal-gamma must be >="),
                                            ("--focal-gamma", "nan", "finite number"),
                                            ("--head-warmup-steps", "-2", "--head-warmup-steps must be >="),
                                            ("--none-sampling", "top", "invalid choice"),
                                            ("--ce-cells", "upper", "invalid choice")])
def test_bad_lever_values_are_one_line_errors(tmp_path, capsys, flag, value, msg):
    try:
        rc = main(["train", "--output-dir", str(tmp_path / "x"), flag, value])
    except SystemExit as exc:  # argparse: choices
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert msg in err[-1] and "Traceback" not in "".join(err)
    assert not (tmp_path / "x").exists()
