"""One process skips StepModule's DDP zero term and fills the unused parameters' zero gradients after
the backward passes instead: the gradients and the AdamW update are bit-identical to the term's."""

from __future__ import annotations

import copy

import torch

from mclner.methods.base import Stage
from mclner.training.step import StepModule, fill_unused_grads


class _Model(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.used = torch.nn.Linear(5, 3)
        self.shared = torch.nn.Linear(3, 3)  # used twice: its gradients arrive from two paths
        self.unused = torch.nn.Linear(3, 2)  # e.g. a head of another stage
        self.frozen = torch.nn.Linear(3, 3)
        self.frozen.requires_grad_(False)


class _Method:
    def loss(self, model, batch, stage, impl):
        h = model.shared(model.used(batch["x"]).tanh())
        loss = model.shared(h).pow(2).mean() + model.frozen(h).mean()
        return {"loss": loss, "ce_src": loss.detach()}


def _train(ddp: bool, batches):
    torch.manual_seed(0)
    model = _Model()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    step = StepModule(model, _Method(), zero_term=ddp)
    losses = []
    for group in batches:
        for batch in group:
            out = step(batch, Stage("source"), "reference")
            (out["loss"] / len(group)).backward()
            losses.append(float(out["loss"].detach()))
        if not ddp:
            fill_unused_grads(model)
        grads = {n: p.grad.clone() if p.grad is not None else None for n, p in model.named_parameters()}
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return model, grads, losses


def test_one_process_without_the_zero_term_is_bit_identical():
    g = torch.Generator().manual_seed(1)
    batches = [[{"x": torch.randn(4, 5, generator=g)} for _ in range(2)] for _ in range(3)]
    m_ddp, g_ddp, l_ddp = _train(True, copy.deepcopy(batches))
    m_one, g_one, l_one = _train(False, batches)
    assert l_ddp == l_one
    assert g_ddp.keys() == g_one.keys()
    for n in g_ddp:
        if g_ddp[n] is None:
            assert g_one[n] is None and n.startswith("frozen"), n
            continue
        assert torch.equal(g_ddp[n], g_one[n]), n
    assert torch.equal(g_one["unused.weight"], torch.zeros(2, 3))  # it got a zero gradient, not None
    for (n, a), (_, b) in zip(m_ddp.named_parameters(), m_one.named_parameters()):
        assert torch.equal(a, b), n
    # weight decay moved the unused head in both (AdamW saw its zero gradient)
    torch.manual_seed(0)
    assert not torch.equal(m_one.unused.weight, _Model().unused.weight)


def test_fill_unused_grads_keeps_existing_and_frozen():
    model = _Model()
    model.used.weight.grad = torch.ones_like(model.used.weight)
    fill_unused_grads(model)
    assert torch.equal(model.used.weight.grad, torch.ones_like(model.used.weight))
    assert model.frozen.weight.grad is None
    assert torch.equal(model.unused.bias.grad, torch.zeros(2))
