"""Native (C++ CPU and CUDA) providers of ``cln_head`` (docs/METHOD.md §3, §6).

One autograd Function per backend. The O(B·N·D) prologue runs in torch: γ = h W_αᵀ + b_α,
λ = h W_βᵀ + b_β and n = LayerNorm(h) without affine (``mclner.ops.cln_head.cln_prologue``), and
u = λ W1ᵀ + b1 (the pair-independent part of the first MLP layer). The native kernels do the
O(B·N²·D·H) core S_ij = W2 GELU(W1 (γ_i ⊙ n_j) + u_i) + b2 tile by tile and recompute it in the backward, returning
dγ, du, dn, dW1 (core part) and dW2; the backward of the prologue is written out here by hand, so
the Function returns every input gradient and saves only O(B·N·D) tensors.

On CUDA, bfloat16/float16 inputs run the prologue and the kernels in float32 (the N²-sized S and dS
stay in the input dtype); gradients are returned in the input dtype.
"""

from __future__ import annotations

from typing import Callable, Tuple

import torch
import torch.nn.functional as F

from mclner import _native
from mclner.ops._autograd import no_double_backward
from mclner.ops.cln_head import cln_prologue

OP = "cln_head"
# Bytes of float32 chunk workspace the CUDA backward may use (pre-activations of a block of rows i).
CUDA_WORKSPACE_BYTES = 64 << 20


def _cpu_forward(gamma, u, n, W1, W2, b2, S) -> None:
    mod = _native.require_module(OP, "cpu")
    B, N, D = n.shape
    H, C = W1.shape[0], W2.shape[0]
    mod.cln_head_forward(
        gamma.data_ptr(), u.data_ptr(), n.data_ptr(), W1.data_ptr(), W2.data_ptr(), b2.data_ptr(),
        S.data_ptr(), B, N, D, H, C, _native.dtype_code(n), _native.num_threads(),
    )


def _cpu_backward(gamma, u, n, W1, W2, dS, dgamma, du, dn, dW1, dW2) -> None:
    mod = _native.require_module(OP, "cpu")
    B, N, D = n.shape
    H, C = W1.shape[0], W2.shape[0]
    mod.cln_head_backward(
        gamma.data_ptr(), u.data_ptr(), n.data_ptr(), W1.data_ptr(), W2.data_ptr(), dS.data_ptr(),
        dgamma.data_ptr(), du.data_ptr(), dn.data_ptr(), dW1.data_ptr(), dW2.data_ptr(),
        B, N, D, H, C, _native.dtype_code(n), _native.num_threads(),
    )


def _cuda_chunk(B: int, N: int, H: int, buffers: int) -> int:
    """Rows i per chunk so that `buffers` float32 [B, chunk, N, H] buffers fit the workspace budget."""
    per_i = B * N * H * 4 * buffers
    return max(1, min(N, CUDA_WORKSPACE_BYTES // max(per_i, 1)))


def _cuda_forward(gamma, u, n, W1, W2, b2, S) -> None:
    mod = _native.require_module(OP, "cuda")
    B, N, D = n.shape
    H, C = W1.shape[0], W2.shape[0]
    chunk = _cuda_chunk(B, N, H, 1)
    ws = torch.empty(B * chunk * N * H, device=n.device, dtype=torch.float32)
    # The entry point runs on the tensors' device and restores the caller's current device.
    mod.cln_head_forward(
        gamma.data_ptr(), u.data_ptr(), n.data_ptr(), W1.data_ptr(), W2.data_ptr(), b2.data_ptr(),
        S.data_ptr(), ws.data_ptr(), B, N, D, H, C, chunk, _native.dtype_code(S), *_native.cuda_launch_args(n.device),
    )


def _cuda_backward(gamma, u, n, W1, W2, dS, dgamma, du, dn, dW1, dW2) -> None:
    mod = _native.require_module(OP, "cuda")
    B, N, D = n.shape
    H, C = W1.shape[0], W2.shape[0]
    chunk = _cuda_chunk(B, N, H, 2)
    ws = torch.empty(2 * B * chunk * N * H, device=n.device, dtype=torch.float32)
    mod.cln_head_backward(
        gamma.data_ptr(), u.data_ptr(), n.data_ptr(), W1.data_ptr(), W2.data_ptr(), dS.data_ptr(),
        dgamma.data_ptr(), du.data_ptr(), dn.data_ptr(), dW1.data_ptr(), dW2.data_ptr(), ws.data_ptr(),
        B, N, D, H, C, chunk, _native.dtype_code(dS), *_native.cuda_launch_args(n.device),
    )


def _prologue(h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, eps):
    gamma, lam, n, std = cln_prologue(h, W_alpha, b_alpha, W_beta, b_beta, eps)
    u = F.linear(lam, W1, b1).contiguous()  # the pair-independent part of the first MLP layer
    return gamma.contiguous(), lam, u, n.contiguous(), std.reciprocal()


@no_double_backward(OP)
class _ClnHeadFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, backend, h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, eps):
        fwd, _ = backend
        io_dtype = h.dtype
        # float32 compute for the half types (only the CUDA backend accepts them).
        cdt = torch.float32 if io_dtype in (torch.bfloat16, torch.float16) else io_dtype
        h_, Wa, ba, Wb, bb, W1_, b1_, W2_, b2_ = (
            t.to(cdt).contiguous() for t in (h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2)
        )
        gamma, lam, u, n, rstd = _prologue(h_, Wa, ba, Wb, bb, W1_, b1_, eps)
        B, N, _ = h.shape
        S = torch.empty(B, N, N, W2.shape[0], device=h.device, dtype=io_dtype)
        fwd(gamma, u, n, W1_, W2_, b2_, S)
        ctx.backend = backend
        ctx.io_dtype = io_dtype
        ctx.save_for_backward(h_, Wa, Wb, W1_, W2_, gamma, lam, u, n, rstd)
        return S

    @staticmethod
    def backward(ctx, dS):
        _, bwd = ctx.backend
        h, Wa, Wb, W1, W2, gamma, lam, u, n, rstd = ctx.saved_tensors
        dS = dS.to(ctx.io_dtype).contiguous()
        B, N, D = h.shape
        H = W1.shape[0]
        dgamma = torch.empty_like(gamma)
        du = torch.empty_like(u)
        dn = torch.empty_like(n)
        dW1 = torch.empty_like(W1)
        dW2 = torch.empty_like(W2)
        bwd(gamma, u, n, W1, W2, dS, dgamma, du, dn, dW1, dW2)
        db2 = dS.sum(dim=(0, 1, 2), dtype=h.dtype)
        # u = λ W1ᵀ + b1, γ = h W_αᵀ + b_α, λ = h W_βᵀ + b_β, n = (h − μ)·rstd.
        du2, lam2, h2 = du.reshape(-1, H), lam.reshape(-1, D), h.reshape(-1, D)
        dgamma2 = dgamma.reshape(-1, D)
        dlam2 = du2 @ W1
        dW1 = dW1 + du2.t() @ lam2
        db1 = du2.sum(0)
        dWb, dbb = dlam2.t() @ h2, dlam2.sum(0)
        dWa, dba = dgamma2.t() @ h2, dgamma2.sum(0)
        # Layer-norm backward in place on dn (ours): rstd·(dn − mean(dn) − n·mean(dn ⊙ n)).
        dnn_mean = (dn * n).mean(dim=-1, keepdim=True)
        dh = dn.sub_(dn.mean(dim=-1, keepdim=True)).addcmul_(n, dnn_mean, value=-1).mul_(rstd).view(-1, D)
        dh = dh.addmm_(dgamma2, Wa).addmm_(dlam2, Wb).view(B, N, D)
        out = (dh, dWa, dba, dWb, dbb, dW1, db1, dW2, db2)
        out = tuple(g.to(ctx.io_dtype) for g in out)
        return (None, *out, None)


Backend = Tuple[Callable[..., None], Callable[..., None]]
_CPU: Backend = (_cpu_forward, _cpu_backward)
_CUDA: Backend = (_cuda_forward, _cuda_backward)


def _apply(backend: Backend, h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, eps) -> torch.Tensor:
    return _ClnHeadFunction.apply(backend, h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, float(eps))


def cln_head_cpu(
    h: torch.Tensor,
    W_alpha: torch.Tensor,
    b_alpha: torch.Tensor,
    W_beta: torch.Tensor,
    b_beta: torch.Tensor,
    W1: torch.Tensor,
    b1: torch.Tensor,
    W2: torch.Tensor,
    b2: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Fused CPU cln_head (float32/float64): ``S[B, N, N, C]``, differentiable in every input."""
    return _apply(_CPU, h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, eps)


def cln_head_cuda(
    h: torch.Tensor,
    W_alpha: torch.Tensor,
    b_alpha: torch.Tensor,
    W_beta: torch.Tensor,
    b_beta: torch.Tensor,
    W1: torch.Tensor,
    b1: torch.Tensor,
    W2: torch.Tensor,
    b2: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Fused CUDA cln_head (float32; bfloat16/float16 computed in float32): ``S[B, N, N, C]``."""
    return _apply(_CUDA, h, W_alpha, b_alpha, W_beta, b_beta, W1, b1, W2, b2, eps)


__all__ = ["cln_head_cpu", "cln_head_cuda"]
