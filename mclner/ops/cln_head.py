"""Conditional-layer-norm relation head (paper Eq. 5, docs/METHOD.md §3, §6).

r'_ij = γ_i ⊙ n_j + λ_i with γ = h W_αᵀ + b_α, λ = h W_βᵀ + b_β, n_j = LayerNorm(h_j) (no affine,
biased variance); S_ij = W_2 GELU(W_1 r'_ij + b_1) + b_2 (exact erf GELU).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mclner.ops._common import (
    CPU_DTYPES,
    GPU_DTYPES,
    REFERENCE_DTYPES,
    TRITON_DTYPES,
    check_positive_dim,
    check_same,
    check_scalar,
    check_tensor,
    lazy,
    resolve_impl,
)

OP = "cln_head"


# The CLN prologue (γ, λ, the layer norm n) is written here once; the reference, the native and Triton
# providers and the model's pair features all call it.


def cln_condition(
    h: torch.Tensor, W_alpha: torch.Tensor, b_alpha: torch.Tensor, W_beta: torch.Tensor, b_beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The conditional scale and shift of each word: γ = h W_αᵀ + b_α, λ = h W_βᵀ + b_β (``[..., D]``)."""
    return F.linear(h, W_alpha, b_alpha), F.linear(h, W_beta, b_beta)


def cln_normalize(h: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer norm over the last dim without affine, biased variance: ``n = (h − μ) / σ`` and ``σ``
    (``[..., 1]``, σ = sqrt(var + eps); the fused backward needs it)."""
    mu = h.mean(dim=-1, keepdim=True)
    var = h.var(dim=-1, unbiased=False, keepdim=True)
    std = torch.sqrt(var + eps)
    return (h - mu) / std, std


def cln_prologue(
    h: torch.Tensor,
    W_alpha: torch.Tensor,
    b_alpha: torch.Tensor,
    W_beta: torch.Tensor,
    b_beta: torch.Tensor,
    eps: float = 1e-5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The per-word part of the CLN head, O(B·N·D²): ``(γ, λ, n, σ)`` with γ, λ, n ``[B, N, D]`` and σ
    ``[B, N, 1]``, so that r'_ij = γ_i ⊙ n_j + λ_i."""
    gamma, lam = cln_condition(h, W_alpha, b_alpha, W_beta, b_beta)
    n, std = cln_normalize(h, eps)
    return gamma, lam, n, std


def cln_pair_features(
    h: torch.Tensor,
    W_alpha: torch.Tensor,
    b_alpha: torch.Tensor,
    W_beta: torch.Tensor,
    b_beta: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """The pair features r'[b,i,j,:] = γ_i ⊙ n_j + λ_i, materialised ``[B, N, N, D]`` (reference only)."""
    gamma, lam, n, _ = cln_prologue(h, W_alpha, b_alpha, W_beta, b_beta, eps)
    return gamma.unsqueeze(2) * n.unsqueeze(1) + lam.unsqueeze(2)


def cln_pair_features_at(
    h: torch.Tensor,
    W_alpha: torch.Tensor,
    b_alpha: torch.Tensor,
    W_beta: torch.Tensor,
    b_beta: torch.Tensor,
    b: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """r'_ij = γ_i ⊙ n_j + λ_i for the listed pairs only: ``[M, D]`` for index tensors b, i, j ``[M]``
    into h ``[B, N, D]`` (the same γ, λ, n as the head, computed for those rows only)."""
    gamma, lam = cln_condition(h[b, i], W_alpha, b_alpha, W_beta, b_beta)
    n, _ = cln_normalize(h[b, j], eps)
    return gamma * n + lam


def cln_head_reference(
    h: torch.Tensor,
    W_alpha: torch.Tensor,
    b_alpha: torch.Tensor,
    W_beta: torch.Tensor,
    b_beta: torch.Tensor,
    W1: torch.Tensor,
    b1: torch.Tensor,
    W2: torch.Tensor,
    b2: torch.Tensor,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Pure PyTorch oracle: materialises ``[B, N, N, D]`` and ``[B, N, N, H]`` (what W2NER does)."""
    r = cln_pair_features(h, W_alpha, b_alpha, W_beta, b_beta, eps)
    return F.linear(F.gelu(F.linear(r, W1, b1)), W2, b2)


PROVIDERS = {
    "reference": lambda: cln_head_reference,
    "cpu": lazy("mclner.ops._native_cln_head", "cln_head_cpu"),
    "cuda": lazy("mclner.ops._native_cln_head", "cln_head_cuda"),
    "triton": lazy("mclner.kernels.cln_head", "cln_head_triton"),
}
DTYPES = {"reference": REFERENCE_DTYPES, "cpu": CPU_DTYPES, "cuda": GPU_DTYPES, "triton": TRITON_DTYPES}
GPU_ORDER = ("triton", "cuda")


def validate(h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, eps) -> tuple[torch.device, torch.dtype]:
    check_tensor(OP, "h", h, (None, None, None), "[B, N, D]")
    B, N, D = h.shape
    for name, v in (("B", B), ("N", N), ("D", D)):
        check_positive_dim(OP, name, v)
    check_tensor(OP, "W_alpha", W_alpha, (D, D), "[D, D]")
    check_tensor(OP, "b_alpha", b_alpha, (D,), "[D]")
    check_tensor(OP, "W_beta", W_beta, (D, D), "[D, D]")
    check_tensor(OP, "b_beta", b_beta, (D,), "[D]")
    check_tensor(OP, "W1", W1, (None, D), "[H, D]")
    H = W1.shape[0]
    check_positive_dim(OP, "H", H)
    check_tensor(OP, "b1", b1, (H,), "[H]")
    check_tensor(OP, "W2", W2, (None, H), "[C, H]")
    C = W2.shape[0]
    check_positive_dim(OP, "C", C)
    check_tensor(OP, "b2", b2, (C,), "[C]")
    check_scalar(OP, "eps", eps)
    return check_same(
        OP,
        {"h": h, "W_alpha": W_alpha, "b_alpha": b_alpha, "W_beta": W_beta, "b_beta": b_beta,
         "W1": W1, "b1": b1, "W2": W2, "b2": b2},
    )


def cln_head(
    h: torch.Tensor,
    W_alpha: torch.Tensor,
    b_alpha: torch.Tensor,
    W_beta: torch.Tensor,
    b_beta: torch.Tensor,
    W1: torch.Tensor,
    b1: torch.Tensor,
    W2: torch.Tensor,
    b2: torch.Tensor,
    *,
    eps: float = 1e-5,
    impl: str = "auto",
) -> torch.Tensor:
    """Relation logits of the conditional-layer-norm head, ``S`` of shape ``[B, N, N, C]``.

    Args:
        h: word states ``[B, N, D]``.
        W_alpha, b_alpha, W_beta, b_beta: the conditional scale/shift projections ``[D, D]``, ``[D]``.
        W1, b1: first layer of the grid MLP ``[H, D]``, ``[H]``; W2, b2: second layer ``[C, H]``, ``[C]``.
        eps: layer-norm epsilon (biased variance).
        impl: ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"`` or ``"cuda"``. The fused
            implementations never allocate O(B·N²·D) or O(B·N²·H); the backward recomputes tiles.
    """
    device, dtype = validate(h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, eps)
    _, fn = resolve_impl(OP, impl, device, dtype, PROVIDERS, DTYPES, GPU_ORDER)
    return fn(h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, float(eps))
