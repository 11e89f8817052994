"""Triton-specific checks of cln_head: tile shapes with ragged tails, dtypes, layouts, GPU memory."""

import pytest
import torch
import torch.nn.functional as F
from mclner_helpers import compare_to_reference, impl_device
from test_op_cln_head import NAMES, make_inputs

from mclner.ops import cln_head, cln_head_reference

pytest.importorskip("triton")
ck = pytest.importorskip("mclner.kernels.cln_head")


def _device() -> torch.device:
    return impl_device("triton")


def _grid_reference(gamma, n, u, W1, W2, b2):
    """The pair grid the kernels compute, materialised (fp64 oracle for the kernel-level tests)."""
    pre = F.linear(gamma.unsqueeze(2) * n.unsqueeze(1), W1) + u.unsqueeze(2)
    return F.linear(F.gelu(pre), W2, b2)


def _blocks(bi, bj, bd, bh, bc):
    return dict(BLOCK_I=bi, BLOCK_J=bj, BLOCK_D=bd, BLOCK_H=bh, BLOCK_C=bc)


# Tiles smaller than N, D, H so every loop runs several times and ends on a ragged tail; BLOCK_I=1
# is the degenerate per-row reshape; BLOCK_C > C pads the output classes.
TILES = [
    _blocks(1, 16, 16, 16, 16),
    _blocks(2, 16, 32, 16, 16),
    _blocks(4, 16, 16, 64, 32),
    _blocks(8, 32, 64, 32, 16),  # one D-chunk with a tail, one j-block
]


def _tile_id(b):
    return "I{BLOCK_I}J{BLOCK_J}D{BLOCK_D}H{BLOCK_H}C{BLOCK_C}".format(**b)


@pytest.mark.parametrize("blocks", TILES, ids=_tile_id)
def test_kernels_tile_edges(blocks):
    _check_kernels(blocks, (1, 19, 36, 20, 5))  # 2 j-blocks, 3 D-chunks, 2 H-chunks at the 16-tiles


def _check_kernels(blocks, shape):
    """Kernel-level forward and grads (γ, n, u, W1, W2) against torch autograd on the grid."""
    device = _device()
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    B, N, D, H, C = shape
    g = torch.Generator().manual_seed(7)
    gamma, n = (torch.randn(B, N, D, generator=g, dtype=torch.float64) for _ in range(2))
    u = torch.randn(B, N, H, generator=g, dtype=torch.float64)
    W1 = torch.randn(H, D, generator=g, dtype=torch.float64) * D**-0.5
    W2 = torch.randn(C, H, generator=g, dtype=torch.float64) * H**-0.5
    b2 = torch.randn(C, generator=g, dtype=torch.float64)
    dS = torch.randn(B, N, N, C, generator=g, dtype=torch.float64)
    ins = [t.to(device, dtype) for t in (gamma, n, u, W1, W2)]

    S = ck.cln_grid_forward(*ins, b2.to(device, dtype), blocks=blocks)
    grads = ck.cln_grid_backward(*ins, dS.to(device, dtype), blocks=blocks)

    leaves = [t.clone().requires_grad_(True) for t in (gamma, n, u, W1, W2)]
    want = _grid_reference(*leaves, b2)
    want.backward(dS)
    tol = dict(atol=1e-10, rtol=1e-10) if dtype == torch.float64 else dict(atol=2e-4, rtol=2e-4)
    torch.testing.assert_close(S.double().cpu(), want.detach(), **tol, msg="forward")
    for name, got, leaf in zip(("gamma", "n", "u", "W1", "W2"), grads, leaves):
        torch.testing.assert_close(got.double().cpu(), leaf.grad, **tol, msg=f"grad {name}")


def test_default_gpu_tiles(monkeypatch):
    """The GPU tile choice (smaller than the interpreter's) is numerically exercised here too."""
    if _device().type == "cpu":
        monkeypatch.setattr(ck, "_interpreting", lambda: False)
    for backward in (False, True):
        blocks = ck._blocks(33, 40, 36, 5, backward=backward)
        assert blocks["BLOCK_I"] * blocks["BLOCK_J"] <= 128 and blocks["BLOCK_C"] >= 16
    _check_kernels(None, (1, 33, 40, 36, 5))  # BLOCK_J=32: a one-row j tail; D, H ragged in 32/64


def test_gradcheck_float64_interpreter():
    if _device().type != "cpu":
        pytest.skip("float64 gradcheck runs under the interpreter")
    x = make_inputs(2, 3, 5, 4, 2)
    args = tuple(x[k].requires_grad_(True) for k in NAMES)
    assert torch.autograd.gradcheck(lambda *a: cln_head(*a, impl="triton"), args, eps=1e-6, atol=1e-6, fast_mode=True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision(dtype):
    device = _device()
    x = make_inputs(1, 20, 24, 20, 6, device=device)
    compare_to_reference(lambda **k: cln_head(**k, impl="triton"), cln_head_reference, x, dtype, atol=1e-3)


def test_non_contiguous_inputs():
    device = _device()
    x = make_inputs(2, 9, 20, 18, 3, device=device, dtype=torch.float32)
    want = cln_head_reference(**{k: v.double() for k, v in x.items()})
    y = dict(x)
    y["h"] = torch.cat([x["h"], x["h"]], dim=-1)[..., ::2]  # strided last dim
    y["h"].copy_(x["h"])
    y["W1"] = x["W1"].t().contiguous().t()
    y["W2"] = x["W2"].t().contiguous().t()
    got = cln_head(**y, impl="triton")
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.gpu
def test_gpu_memory_is_linear_in_pairs():
    """Peak extra memory stays O(B·N·(D+H)) + the N² output/grad, far below one B·N²·D buffer."""
    device = _device()
    B, N, D, H, C = 2, 512, 256, 256, 4
    x = {k: v.requires_grad_(True) for k, v in make_inputs(B, N, D, H, C, device=device,
                                                              dtype=torch.float32).items()}
    dS = torch.randn(B, N, N, C, device=device)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    S = cln_head(**x, impl="triton")
    S.backward(dS)
    torch.cuda.synchronize()
    extra = torch.cuda.max_memory_allocated(device) - base
    grid = B * N * N * C * 4  # S itself (plus dS-sized temporaries of the autograd engine)
    words = B * N * (D + H) * 4
    bound = 4 * grid + 32 * words + 4 * (2 * D * D + H * D)
    one_pair_buffer = B * N * N * D * 4  # what the reference materialises (several times)
    assert bound < one_pair_buffer / 4, "test size does not separate the two regimes"
    assert extra <= bound, f"peak extra {extra / 2**20:.1f} MiB > bound {bound / 2**20:.1f} MiB"
