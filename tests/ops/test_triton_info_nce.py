"""Triton info_nce: multi-tile sweeps with small forced tiles, fp64 exactness, half precisions,
extreme logits, and (GPU) memory that stays O(M·P) where M² would not fit."""

import importlib

import pytest
import torch
from mclner_helpers import compare_to_reference, impl_device
from test_op_info_nce import make_inputs

from mclner.ops import info_nce, info_nce_reference

kn = importlib.import_module("mclner.kernels.info_nce")


@pytest.fixture
def small_tiles(monkeypatch):
    # Several row and column tiles with ragged tails, P split into several logit and output chunks.
    monkeypatch.setattr(kn, "_blocks", lambda M, P, dtype, kind: (16, 16, 16, 16))


def _check(shape, dtype, symmetric, reduction, temperature=0.2, atol=2e-4, device=None):
    device = device or impl_device("triton")
    kw = dict(temperature=temperature, symmetric=symmetric, reduction=reduction)
    compare_to_reference(
        lambda **k: info_nce(**k, **kw, impl="triton"),
        lambda **k: info_nce_reference(**k, **kw),
        make_inputs(*shape, device=device),
        dtype,
        atol=atol,
        rtol=1e-5 if dtype != torch.float64 else 0.0,
    )


@pytest.mark.parametrize("shape", [(1, 5), (16, 16), (37, 40), (33, 5)], ids=lambda s: "M{}P{}".format(*s))
@pytest.mark.parametrize("symmetric", [False, True])
def test_small_tiles_fp32(small_tiles, shape, symmetric):
    _check(shape, torch.float32, symmetric, "none")


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_fp64_tight(small_tiles, symmetric, reduction):
    if impl_device("triton").type == "cuda":
        pytest.skip("fp64 is checked in the interpreter, where it is exact numpy arithmetic")
    _check((35, 24), torch.float64, symmetric, reduction, atol=1e-10)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("symmetric", [False, True])
def test_half_precisions(dtype, symmetric):
    """bf16/fp16 tiles with fp32 LSE/accumulation are at least as accurate as the same-precision reference."""
    _check((70, 24), dtype, symmetric, "mean", atol=1e-2)


def test_extreme_logits_small_tiles(small_tiles):
    """τ = 1e-3 (logits ~ ±1e3) and a zero row across tile boundaries: forward and grads stay finite."""
    device = impl_device("triton")
    x = make_inputs(45, 16, device=device, dtype=torch.float32)
    x["za"][20] = 0.0
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    got = info_nce(**leaves, temperature=1e-3, symmetric=True, reduction="sum", impl="triton")
    got.backward()
    ref_in = {k: v.double().requires_grad_(True) for k, v in x.items()}
    want = info_nce_reference(**ref_in, temperature=1e-3, symmetric=True, reduction="sum")
    want.backward()
    assert torch.isfinite(got) and all(torch.isfinite(v.grad).all() for v in leaves.values())
    torch.testing.assert_close(got.double(), want.detach(), atol=5e-2, rtol=1e-4)
    for k in leaves:
        scale = ref_in[k].grad.abs().max().item()
        assert (leaves[k].grad.double() - ref_in[k].grad).abs().max().item() <= 1e-3 * scale + 1e-3, k


def test_zero_upstream_gives_zero_grads():
    device = impl_device("triton")
    x = {k: v.requires_grad_(True) for k, v in make_inputs(20, 8, device=device, dtype=torch.float32).items()}
    loss = info_nce(**x, temperature=0.1, symmetric=True, reduction="none", impl="triton")
    loss.backward(torch.zeros_like(loss))
    assert all((v.grad == 0).all() for v in x.values())


@pytest.mark.gpu
def test_memory_is_linear_in_m():
    """At M = 65536 the logits alone would take M²·4 B = 16 GiB; the fused op needs O(M·P)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    M, P = 65536, 128
    g = torch.Generator(device="cuda").manual_seed(0)
    za = torch.randn(M, P, device="cuda", generator=g, requires_grad=True)
    zb = torch.randn(M, P, device="cuda", generator=g, requires_grad=True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    loss = info_nce(za, zb, temperature=0.1, symmetric=True, impl="triton")
    loss.backward()
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated() - base
    mp_bytes = M * P * 4
    assert torch.isfinite(loss) and torch.isfinite(za.grad).all() and torch.isfinite(zb.grad).all()
    # Normalised views, their grads and the input grads: a handful of [M, P] tensors, never M².
    assert extra <= 16 * mp_bytes, f"peak extra {extra / 2**20:.0f} MiB > {16 * mp_bytes / 2**20:.0f} MiB"
    assert extra < (M * M * 4) // 100
