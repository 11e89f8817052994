"""The fused CPU ops are deterministic: the same bits on every call and for any thread count.

Their backward sums over work items in a fixed order (fixed chunks reduced in chunk order), never in
the order an OpenMP dynamic schedule happens to hand the items out; a --fused training run is then
reproducible.
"""

from __future__ import annotations

import pytest
import torch
from mclner_helpers import impl_device

from mclner import _native
from mclner.ops import biaffine, cln_head, info_nce, sup_con


def _rand(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


# Sizes give every kernel several chunks (cln_head: 87 items; info_nce: 12 row blocks) and odd tails.
def biaffine_inputs(g):
    B, N, Db, C = 2, 33, 24, 5
    return {"hs": _rand(g, B, N, Db), "he": _rand(g, B, N, Db), "U": _rand(g, C, Db, Db, scale=0.2),
            "W": _rand(g, C, 2 * Db, scale=0.2), "b": _rand(g, C)}


def cln_inputs(g):
    B, N, D, H, C = 3, 29, 40, 24, 4
    return {"h": _rand(g, B, N, D), "W_alpha": _rand(g, D, D, scale=0.2), "b_alpha": 1 + _rand(g, D, scale=0.1),
            "W_beta": _rand(g, D, D, scale=0.2), "b_beta": _rand(g, D, scale=0.1), "W1": _rand(g, H, D, scale=0.2),
            "b1": _rand(g, H, scale=0.1), "W2": _rand(g, C, H, scale=0.2), "b2": _rand(g, C, scale=0.1)}


def nce_inputs(g):
    M, P = 710, 24
    za = _rand(g, M, P)
    return {"za": za, "zb": 0.6 * za + 0.8 * _rand(g, M, P)}


def supcon_one(g):
    return {"z": _rand(g, 710, 24)}


def supcon_two(g):
    return {"z": _rand(g, 300, 24), "z2": _rand(g, 530, 24)}


def _labels(n, k):
    """n labels over k classes, every 13th ignored (-1)."""
    lab = torch.arange(n) * 7 % k
    return torch.where(torch.arange(n) % 13 == 0, -1, lab)


CASES = {
    "biaffine": (biaffine, biaffine_inputs, {}),
    "cln_head": (cln_head, cln_inputs, {"eps": 1e-5}),
    "info_nce mean": (info_nce, nce_inputs, {"temperature": 0.1}),
    "info_nce symmetric none": (info_nce, nce_inputs, {"temperature": 0.1, "symmetric": True, "reduction": "none"}),
    "info_nce symmetric sum": (info_nce, nce_inputs, {"temperature": 0.1, "symmetric": True, "reduction": "sum"}),
    "sup_con one set mean": (sup_con, supcon_one, {"labels": _labels(710, 9), "temperature": 0.1}),
    "sup_con two sets none": (
        sup_con, supcon_two, {"labels": _labels(300, 5), "labels2": _labels(530, 7), "reduction": "none"}
    ),
}


@pytest.fixture
def threads():
    """Sets torch's (and so the kernels') thread count; restores it afterwards."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def _run(case: str, dtype: torch.dtype):
    op, make, kwargs = CASES[case]
    x = make(torch.Generator().manual_seed(0))
    leaves = {k: v.to(dtype).requires_grad_(True) for k, v in x.items()}
    out = op(**leaves, **kwargs, impl="cpu")
    upstream = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
    out.backward(upstream)
    return [out.detach()] + [v.grad for v in leaves.values()]


def _assert_same_bits(got, want, what):
    names = ["output"] + [f"grad {k}" for k in range(len(want) - 1)]
    for name, a, b in zip(names, got, want):
        assert torch.equal(a, b), f"{what}: {name} differs (max |diff| {(a - b).abs().max().item():.3g})"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", list(CASES))
def test_ten_calls_under_two_threads_are_bit_identical(case, dtype, threads):
    impl_device("cpu")
    threads(2)
    first = _run(case, dtype)
    for k in range(9):
        _assert_same_bits(_run(case, dtype), first, f"call {k + 2}")


@pytest.mark.parametrize("case", list(CASES))
def test_native_kernels_same_bits_for_any_thread_count(case, threads, monkeypatch):
    """The native kernels give the same bits with 1, 2 or 3 threads. (torch's own matmuls and sums in
    the O(B·N·D) prologue and epilogue may group their sums by thread count, so torch stays at one
    thread here and only the kernels' thread count changes.)"""
    impl_device("cpu")
    threads(1)
    one = _run(case, torch.float32)
    for n in (2, 3):
        monkeypatch.setattr(_native, "num_threads", lambda n=n: n)
        _assert_same_bits(_run(case, torch.float32), one, f"kernels on {n} threads vs 1")
