"""Native (C++ CPU and CUDA) providers of the biaffine op.

The op is split so that every O(N²) term goes through one fused native pass (docs/METHOD.md §3):

    P[b,i,c,:] = U_cᵀ hs_i + W_c[Db:]        r[b,i,c] = W_c[:Db]·hs_i + b_c      (BLAS, here)
    S[b,i,j,c] = P[b,i,c,:]·he_j + r[b,i,c]                                        (native pass)

so the bilinear term and both linear terms come out of one pass written directly in [B,N,N,C]
layout. The backward's native pass gives dP = Σ_j dS·he_j, dr = Σ_j dS and dhe = Σ_{i,c} dS·P;
the remaining maps back to dhs, dU, dW, db are dense GEMMs done here.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from mclner import _native
from mclner.ops._autograd import no_double_backward

OP = "biaffine"


def _launch_args(backend: str, device: torch.device) -> dict:
    """Per-backend trailing arguments: CPU threads, or the CUDA stream torch is using."""
    if backend == "cpu":
        return {"num_threads": _native.num_threads()}
    index, stream = _native.cuda_launch_args(device)
    return {"device": index, "stream": stream}


def _projections(
    hs: torch.Tensor, U: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """U_cat [Db, C·Db] (U_cat[d, c·Db+e] = U[c,d,e]), P [B,N,C,Db] and r [B,N,C]."""
    B, N, Db = hs.shape
    C = U.shape[0]
    hs2 = hs.reshape(B * N, Db)
    u_cat = U.permute(1, 0, 2).reshape(Db, C * Db)
    P = torch.addmm(W[:, Db:].reshape(C * Db), hs2, u_cat).view(B, N, C, Db)
    r = torch.addmm(b, hs2, W[:, :Db].t()).view(B, N, C)
    return u_cat, P, r


@no_double_backward(OP)
class _BiaffineFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hs, he, U, W, b, backend: str):  # type: ignore[override]
        mod = _native.require_module(OP, backend)
        B, N, Db = hs.shape
        C = U.shape[0]
        u_cat, P, r = _projections(hs, U, W, b)
        S = torch.empty((B, N, N, C), dtype=hs.dtype, device=hs.device)
        mod.biaffine_forward(
            P.data_ptr(), P.stride(), r.data_ptr(), r.stride(), he.data_ptr(), he.stride(), S.data_ptr(),
            B, N, Db, C, _native.dtype_code(hs), **_launch_args(backend, hs.device),
        )  # fmt: skip
        ctx.backend = backend
        ctx.save_for_backward(hs, he, W, u_cat, P)
        return S

    @staticmethod
    def backward(ctx, dS):  # type: ignore[override]
        hs, he, W, u_cat, P = ctx.saved_tensors
        need_hs, need_he, need_U, need_W, need_b, _ = ctx.needs_input_grad
        B, N, Db = hs.shape
        C = W.shape[0]
        need_dP = need_hs or need_U or need_W or need_b
        if not (need_dP or need_he):
            return None, None, None, None, None, None
        mod = _native.require_module(OP, ctx.backend)
        dP = torch.empty((B, N, C, Db), dtype=hs.dtype, device=hs.device) if need_dP else None
        dr = torch.empty((B, N, C), dtype=hs.dtype, device=hs.device) if need_dP else None
        dhe = torch.empty((B, N, Db), dtype=hs.dtype, device=hs.device) if need_he else None
        ptr: Callable[[Optional[torch.Tensor]], int] = lambda t: 0 if t is None else t.data_ptr()  # noqa: E731
        mod.biaffine_backward(
            dS.data_ptr(), dS.stride(), P.data_ptr(), P.stride(), he.data_ptr(), he.stride(),
            ptr(dP), ptr(dr), ptr(dhe), B, N, Db, C, _native.dtype_code(hs),
            **_launch_args(ctx.backend, hs.device), need_dP=need_dP, need_dhe=need_he,
        )  # fmt: skip
        d_hs = d_U = d_W = d_b = None
        if need_dP:
            assert dP is not None and dr is not None
            dP2 = dP.view(B * N, C * Db)
            dr2 = dr.view(B * N, C)
            hs2 = hs.reshape(B * N, Db)
            if need_hs:
                d_hs = torch.addmm(dr2 @ W[:, :Db], dP2, u_cat.t()).view(B, N, Db)
            if need_U:
                d_U = (hs2.t() @ dP2).view(Db, C, Db).permute(1, 0, 2)
            if need_W:
                d_W = torch.cat((dr2.t() @ hs2, dP.view(B * N, C, Db).sum(0)), dim=1)
            if need_b:
                d_b = dr2.sum(0)
        return d_hs, dhe, d_U, d_W, d_b, None


def biaffine_cpu(hs: torch.Tensor, he: torch.Tensor, U: torch.Tensor, W: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Native CPU biaffine (float32/float64); inputs validated by mclner.ops.biaffine."""
    return _BiaffineFunction.apply(hs, he, U, W, b, "cpu")


def biaffine_cuda(
    hs: torch.Tensor, he: torch.Tensor, U: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Native CUDA biaffine (float32/bfloat16/float16, fp32 accumulation) on torch's current stream."""
    return _BiaffineFunction.apply(hs, he, U, W, b, "cuda")
