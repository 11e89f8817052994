"""The CLN prologue (γ, λ, layer norm) is written once, in mclner.ops.cln_head; these tests pin its
outputs to the formulas each caller used before (bit for bit where the arithmetic is the same)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from mclner_helpers import impl_device

from mclner.ops import cln_head, cln_head_reference, cln_pair_features, cln_pair_features_at, cln_prologue

EPS = 1e-5


def make_inputs(dtype=torch.float32, B=3, N=11, D=20, H=9, C=4, seed=0):
    g = torch.Generator().manual_seed(seed)

    def r(*s, scale=1.0, shift=0.0):
        return (torch.randn(*s, generator=g, dtype=torch.float64) * scale + shift).to(dtype)

    return {"h": r(B, N, D, scale=2.0, shift=0.3), "W_alpha": r(D, D, scale=D**-0.5), "b_alpha": r(D, shift=1.0),
            "W_beta": r(D, D, scale=D**-0.5), "b_beta": r(D, scale=0.1), "W1": r(H, D, scale=D**-0.5),
            "b1": r(H, scale=0.1), "W2": r(C, H, scale=H**-0.5), "b2": r(C, scale=0.1)}


def old_reference_pair_features(h, W_alpha, b_alpha, W_beta, b_beta, eps):
    """mclner.ops.cln_head.cln_pair_features before the prologue was shared."""
    gamma = F.linear(h, W_alpha, b_alpha)
    lam = F.linear(h, W_beta, b_beta)
    mu = h.mean(dim=-1, keepdim=True)
    var = h.var(dim=-1, unbiased=False, keepdim=True)
    n = (h - mu) / torch.sqrt(var + eps)
    return gamma.unsqueeze(2) * n.unsqueeze(1) + lam.unsqueeze(2)


def old_model_pair_features_at(h, W_alpha, b_alpha, W_beta, b_beta, b, i, j, eps):
    """MCLNERModel.cln_pair_features_at before the prologue was shared."""
    hi, hj = h[b, i], h[b, j]
    gamma = F.linear(hi, W_alpha, b_alpha)
    lam = F.linear(hi, W_beta, b_beta)
    mu = hj.mean(-1, keepdim=True)
    var = hj.var(-1, unbiased=False, keepdim=True)
    n = (hj - mu) / torch.sqrt(var + eps)
    return gamma * n + lam


def _cln(x):
    return {k: x[k] for k in ("h", "W_alpha", "b_alpha", "W_beta", "b_beta")}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_reference_is_bit_identical_to_before(dtype):
    x = make_inputs(dtype)
    assert torch.equal(cln_pair_features(**_cln(x), eps=EPS), old_reference_pair_features(**_cln(x), eps=EPS))
    old_S = F.linear(F.gelu(F.linear(old_reference_pair_features(**_cln(x), eps=EPS), x["W1"], x["b1"])),
                     x["W2"], x["b2"])
    assert torch.equal(cln_head_reference(**x, eps=EPS), old_S)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_pair_features_at_is_bit_identical_to_the_model_formula(dtype):
    x = make_inputs(dtype)
    g = torch.Generator().manual_seed(3)
    B, N = x["h"].shape[:2]
    b, i, j = (torch.randint(0, hi, (40,), generator=g) for hi in (B, N, N))
    got = cln_pair_features_at(**_cln(x), b=b, i=i, j=j, eps=EPS)
    assert got.shape == (40, x["h"].shape[2])
    assert torch.equal(got, old_model_pair_features_at(**_cln(x), b=b, i=i, j=j, eps=EPS))
    # and it is the full grid at those pairs (matmuls over a subset may round differently: close only)
    full = cln_pair_features(**_cln(x), eps=EPS)[b, i, j]
    torch.testing.assert_close(got, full, rtol=1e-6 if dtype == torch.float32 else 1e-13, atol=0)


def test_prologue_parts():
    x = make_inputs(torch.float64)
    gamma, lam, n, std = cln_prologue(**_cln(x), eps=EPS)
    h = x["h"]
    torch.testing.assert_close(gamma, h @ x["W_alpha"].T + x["b_alpha"], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(lam, h @ x["W_beta"].T + x["b_beta"], rtol=1e-13, atol=1e-13)
    torch.testing.assert_close(n, F.layer_norm(h, h.shape[-1:], eps=EPS), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(std, torch.sqrt(h.var(-1, unbiased=False, keepdim=True) + EPS), rtol=0, atol=0)


def test_native_forward_moves_by_rounding_only():
    """The native provider used n = (h − μ)·rsqrt(var + eps); the shared prologue divides by σ as the
    reference always did. Its output moves by a few float32 roundings at most."""
    impl_device("cpu")
    x = make_inputs(torch.float32)
    got = cln_head(**x, eps=EPS, impl="cpu")
    want = cln_head_reference(**{k: v.double() for k, v in x.items()}, eps=EPS)
    torch.testing.assert_close(got.double(), want, rtol=2e-6, atol=2e-6)
