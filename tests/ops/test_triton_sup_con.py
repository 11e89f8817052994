"""Triton sup_con: multi-tile sweeps with small forced tiles, fp64 exactness, half precisions, extreme
logits, and (GPU) memory that stays O(M·P) where M² would not fit."""

import importlib

import pytest
import torch
from mclner_helpers import compare_to_reference, impl_device
from test_op_sup_con import make_inputs, split

from mclner.ops import sup_con, sup_con_reference

kn = importlib.import_module("mclner.kernels.sup_con")


@pytest.fixture
def small_tiles(monkeypatch):
    # Several row and column tiles with ragged tails, P split into several logit and output chunks.
    monkeypatch.setattr(kn, "_blocks", lambda M, N, P, dtype, kind: (16, 16, 16, 16))


def _check(shape, dtype, reduction, temperature=0.2, atol=2e-4, device=None):
    device = device or impl_device("triton")
    feats, fixed = split(make_inputs(*shape, device=device))
    kw = dict(fixed, temperature=temperature, reduction=reduction)
    compare_to_reference(
        lambda **k: sup_con(**k, **kw, impl="triton"),
        lambda **k: sup_con_reference(**k, **kw),
        feats,
        dtype,
        atol=atol,
        rtol=1e-5 if dtype != torch.float64 else 0.0,
    )


@pytest.mark.parametrize(
    "shape", [(1, 0, 5), (16, 0, 16), (17, 0, 40), (37, 0, 40), (33, 5, 5), (16, 47, 33)],
    ids=lambda s: "M{}M2{}P{}".format(*s),
)
def test_small_tiles_fp32(small_tiles, shape):
    """(17, 0): the last column tile of row 16 holds only its own (left-out) pair."""
    _check(shape, torch.float32, "none")


@pytest.mark.parametrize("m2", [0, 29])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fp64_tight(small_tiles, m2, reduction):
    if impl_device("triton").type == "cuda":
        pytest.skip("fp64 is checked in the interpreter, where it is exact numpy arithmetic")
    _check((35, m2, 24), torch.float64, reduction, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("m2", [0, 50])
def test_half_precisions(dtype, m2):
    """bf16/fp16 tiles with fp32 LSE/accumulation are at least as accurate as the same-precision reference."""
    _check((70, m2, 24), dtype, "mean", atol=1e-2)


def test_extreme_logits_small_tiles(small_tiles):
    """τ = 1e-3 (logits ~ ±1e3) and a zero row across tile boundaries: forward and grads stay finite."""
    device = impl_device("triton")
    feats, fixed = split(make_inputs(45, 20, 16, device=device, dtype=torch.float32))
    feats["z"][20] = 0.0
    leaves = {k: v.clone().requires_grad_(True) for k, v in feats.items()}
    got = sup_con(**leaves, **fixed, temperature=1e-3, reduction="sum", impl="triton")
    got.backward()
    ref_in = {k: v.double().requires_grad_(True) for k, v in feats.items()}
    want = sup_con_reference(**ref_in, **fixed, temperature=1e-3, reduction="sum")
    want.backward()
    assert torch.isfinite(got) and all(torch.isfinite(v.grad).all() for v in leaves.values())
    torch.testing.assert_close(got.double(), want.detach(), atol=5e-2, rtol=1e-5)
    for k in leaves:
        scale = ref_in[k].grad.abs().max().item()
        assert (leaves[k].grad.double() - ref_in[k].grad).abs().max().item() <= 1e-3 * scale + 1e-3, k


def test_zero_upstream_gives_zero_grads():
    device = impl_device("triton")
    feats, fixed = split(make_inputs(20, 11, 8, device=device, dtype=torch.float32))
    x = {k: v.requires_grad_(True) for k, v in feats.items()}
    loss = sup_con(**x, **fixed, temperature=0.1, reduction="none", impl="triton")
    loss.backward(torch.zeros_like(loss))
    assert all((v.grad == 0).all() for v in x.values())


@pytest.mark.gpu
@pytest.mark.parametrize("impl", ["triton", "cuda"])
def test_memory_is_linear_in_m(impl):
    """At M = 65536 the logits alone would take M²·4 B = 16 GiB; the fused op needs O(M·P)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    impl_device(impl)
    M, P = 65536, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    z = torch.randn(M, P, device="cuda", generator=g, requires_grad=True)
    labels = torch.randint(0, 10, (M,), device="cuda", generator=g)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = sup_con(z, labels, temperature=0.1, impl=impl)
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    mp_bytes = M * P * 4
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()
    assert extra <= 16 * mp_bytes, f"peak extra {extra / 2**20:.0f} MiB > {16 * mp_bytes / 2**20:.0f} MiB"
    assert extra < (M * M * 4) // 100
