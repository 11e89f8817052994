"""Double backward: every fused implementation refuses it with a clear error; the reference supports it.

The fused backward passes compute gradients outside autograd, so a gradient of a gradient through
them used to come out None or wrong without a word (biaffine cpu/triton, cln_head triton, info_nce
cpu/triton).
"""

from __future__ import annotations

import pytest
import torch
from mclner_helpers import impl_device

from mclner.ops import (
    biaffine,
    biaffine_reference,
    cln_head,
    cln_head_reference,
    info_nce,
    info_nce_reference,
    sup_con,
    sup_con_reference,
)

# "cuda" runs the CUDA kernels under emulation without a GPU (skips where neither is available).
IMPLS = ["cpu", "triton", "cuda"]
MESSAGE = "do not support double backward"


def _rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


def biaffine_inputs(g, B=2, N=5, Db=6, C=3):
    return {"hs": _rand(g, B, N, Db), "he": _rand(g, B, N, Db), "U": _rand(g, C, Db, Db, scale=0.3),
            "W": _rand(g, C, 2 * Db, scale=0.3), "b": _rand(g, C)}


def cln_inputs(g, B=2, N=5, D=6, H=7, C=3):
    return {"h": _rand(g, B, N, D), "W_alpha": _rand(g, D, D, scale=0.4), "b_alpha": 1 + _rand(g, D, scale=0.1),
            "W_beta": _rand(g, D, D, scale=0.4), "b_beta": _rand(g, D, scale=0.1), "W1": _rand(g, H, D, scale=0.4),
            "b1": _rand(g, H, scale=0.1), "W2": _rand(g, C, H, scale=0.4), "b2": _rand(g, C, scale=0.1)}


def nce_inputs(g, M=9, P=5):
    za = _rand(g, M, P)
    return {"za": za, "zb": 0.6 * za + 0.8 * _rand(g, M, P)}


def supcon_one(g, M=9, P=5):
    return {"z": _rand(g, M, P)}


def supcon_two(g, M=7, M2=6, P=5):
    return {"z": _rand(g, M, P), "z2": _rand(g, M2, P)}


def _with_labels(fn):
    """sup_con with fixed labels made on the features' device (its only float inputs are z, z2)."""

    def call(z, z2=None, **kwargs):
        labels = torch.tensor([0, 1, 0, 2, 1, -1, 0, 2, 1][: z.shape[0]], device=z.device)
        extra = {} if z2 is None else {"z2": z2, "labels2": torch.arange(z2.shape[0], device=z.device) % 3}
        return fn(z, labels, **extra, **kwargs)

    return call


# op name -> (fused op, reference, inputs, extra keyword arguments)
OPS = {
    "biaffine": (biaffine, biaffine_reference, biaffine_inputs, {}),
    "cln_head": (cln_head, cln_head_reference, cln_inputs, {"eps": 1e-5}),
    "info_nce": (info_nce, info_nce_reference, nce_inputs, {"temperature": 0.5, "reduction": "none"}),
    "info_nce symmetric mean": (
        info_nce, info_nce_reference, nce_inputs, {"temperature": 0.5, "symmetric": True, "reduction": "mean"}
    ),
    "sup_con": (_with_labels(sup_con), _with_labels(sup_con_reference), supcon_one, {"temperature": 0.5,
                                                                                     "reduction": "none"}),
    "sup_con two sets mean": (
        _with_labels(sup_con), _with_labels(sup_con_reference), supcon_two, {"temperature": 0.5}
    ),
}


def _first_order(op: str, impl: str, square: bool):
    """Inputs (leaves) and their first-order gradients taken with create_graph=True."""
    device = impl_device(impl)
    fused, _, make, kwargs = OPS[op]
    x = make(torch.Generator().manual_seed(0))
    leaves = {k: v.to(device, torch.float32).requires_grad_(True) for k, v in x.items()}
    out = fused(**leaves, **kwargs, impl=impl)
    # square=False: the upstream gradient is a constant (does not require grad), the case that
    # torch.autograd.function.once_differentiable lets through.
    loss = (out**2).sum() if square else out.sum()
    grads = torch.autograd.grad(loss, list(leaves.values()), create_graph=True)
    return leaves, grads, loss


@pytest.mark.parametrize("square", [True, False], ids=["squared", "linear"])
@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", list(OPS))
def test_fused_double_backward_raises(op, impl, square):
    leaves, grads, _ = _first_order(op, impl, square)
    second = sum((g**2).sum() for g in grads)
    with pytest.raises(RuntimeError, match=MESSAGE) as err:
        second.backward(retain_graph=True)
    assert op.split()[0] in str(err.value)
    # Asking for one input at a time, unused ones allowed: the error still comes, never a silent None.
    for x in leaves.values():
        with pytest.raises(RuntimeError, match=MESSAGE):
            torch.autograd.grad(second, [x], allow_unused=True, retain_graph=True)
        # The same for the second derivative of a single first-order gradient.
        for g in grads:
            with pytest.raises(RuntimeError, match=MESSAGE):
                torch.autograd.grad(g.sum(), [x], allow_unused=True, retain_graph=True)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", list(OPS))
def test_first_order_gradients_unchanged_under_create_graph(op, impl):
    """create_graph=True still gives the ordinary first-order gradients, bit for bit."""
    leaves, grads, loss = _first_order(op, impl, True)
    plain = torch.autograd.grad(loss, list(leaves.values()))
    for g, p in zip(grads, plain):
        assert torch.equal(g.detach(), p)


@pytest.mark.parametrize("op", list(OPS))
def test_reference_supports_double_backward(op):
    _, reference, make, kwargs = OPS[op]
    x = make(torch.Generator().manual_seed(1))
    names = list(x)
    leaves = [v.requires_grad_(True) for v in x.values()]

    def fn(*args):
        return reference(**dict(zip(names, args)), **kwargs)

    assert torch.autograd.gradgradcheck(fn, leaves, eps=1e-6, atol=1e-5, rtol=1e-4)


def _weighted_first_order(op: str, impl: str):
    """g = d(Σ S·w)/dx for the op's first input x with create_graph=True, w a weight that requires grad."""
    device = impl_device(impl)
    fn, reference, make, kwargs = OPS[op]
    x = make(torch.Generator().manual_seed(2))
    dtype = torch.float64 if impl == "reference" else torch.float32
    leaves = {k: v.to(device, dtype).requires_grad_(True) for k, v in x.items()}
    if impl == "reference":
        out = reference(**leaves, **kwargs)
    else:
        out = fn(**leaves, **kwargs, impl=impl)
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(3), dtype=dtype).to(device).requires_grad_(True)
    first = next(iter(leaves.values()))
    g = torch.autograd.grad((out * w).sum(), first, create_graph=True)[0]
    return g, w


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("op", list(OPS))
def test_fused_double_backward_through_upstream_weight_raises(op, impl):
    """The second derivative taken for a weight of the upstream gradient (not an input of the op) used to
    come out None; the float64 reference gives a real gradient there."""
    g, w = _weighted_first_order(op, impl)
    with pytest.raises(RuntimeError, match=MESSAGE) as err:
        torch.autograd.grad((g**2).sum(), w, allow_unused=True)
    assert op.split()[0] in str(err.value)


@pytest.mark.parametrize("op", list(OPS))
def test_reference_double_backward_through_upstream_weight(op):
    g, w = _weighted_first_order(op, "reference")
    (dw,) = torch.autograd.grad((g**2).sum(), w, allow_unused=True)
    assert dw is not None and dw.abs().sum() > 0
