"""Triton implementation of the conditional-layer-norm relation head (docs/METHOD.md §3, §6).

S[b,i,j,:] = W2 GELU(W1 (γ_i ⊙ n_j + λ_i) + b1) + b2 with γ = h W_αᵀ + b_α, λ = h W_βᵀ + b_β and
n = LayerNorm(h) without affine.

Split of the work:
- the per-word parts (γ, λ, n from mclner.ops.cln_head.cln_prologue, and u_i = W1 λ_i + b1) are
  O(B·N·(D+H)) and computed with torch, in float32 (float64 for float64 inputs), so torch autograd
  chains their gradients;
- the pair grid, pre_ij = W1 (γ_i ⊙ n_j) + u_i, g = GELU(pre), S = g W2ᵀ + b2, runs in Triton tile
  by tile: a program owns BLOCK_I × BLOCK_J pairs (flattened to rows of a matrix) and never writes
  anything of size N²·D or N²·H. The backward recomputes pre and g per tile and reduces the
  cross-tile sums (dγ over j, dn over i, du over j, dW1 and dW2 over all pairs) with fp32 atomics
  into O(B·N·(D+H) + H·D) buffers. The order of those atomic adds is not fixed on a GPU, so the
  gradients are not bitwise deterministic there (as with any atomic split-K reduction).

Under TRITON_INTERPRET=1 (the CPU test path) the interpreter's cost is per program and per op, so
the launchers pick a few large tiles there and GPU-sized tiles otherwise.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mclner.ops._autograd import no_double_backward
from mclner.ops.cln_head import cln_prologue

from ._common import _interpreting, launch

__all__ = ["cln_head_triton"]

# Globals a compiled kernel reads must be constexprs (the interpreter accepts plain floats; a GPU
# compile failed on them before kernels/_resources.py compiled these kernels).
_SQRT1_2 = tl.constexpr(0.7071067811865476)
_INV_SQRT_2PI = tl.constexpr(0.3989422804014327)


@triton.jit
def _load_pair_operand(G, Nn, row_g, row_n, rmask, d0, D, BLOCK_D: tl.constexpr):
    """γ rows, n rows and their product A = γ_i ⊙ n_j for the columns d0 .. d0+BLOCK_D."""
    ds = d0 + tl.arange(0, BLOCK_D)
    m = rmask[:, None] & (ds < D)[None, :]
    gam = tl.load(G + row_g[:, None] * D + ds[None, :], mask=m, other=0.0)
    nn = tl.load(Nn + row_n[:, None] * D + ds[None, :], mask=m, other=0.0)
    return ds, gam, nn, gam * nn


@triton.jit
def _pre_activation(G, Nn, U, W1, row_g, row_n, rmask, hs, hmask, D, H,
                    BLOCK_D: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr):
    """pre[:, hs] = (γ_i ⊙ n_j) W1[hs]ᵀ + u_i[hs] for the tile's rows, reduced over D in chunks."""
    pre = tl.load(U + row_g[:, None] * H + hs[None, :], mask=rmask[:, None] & hmask[None, :], other=0.0)
    for d0 in range(0, D, BLOCK_D):
        ds, gam, nn, a = _load_pair_operand(G, Nn, row_g, row_n, rmask, d0, D, BLOCK_D)
        # W1ᵀ tile [BLOCK_D, BLOCK_H] read straight from the [H, D] weight.
        w1t = tl.load(W1 + hs[None, :] * D + ds[:, None], mask=(ds < D)[:, None] & hmask[None, :], other=0.0)
        pre = tl.dot(a.to(DOT), w1t.to(DOT), pre, input_precision=PREC)
    return pre


@triton.jit
def _cln_grid_fwd_kernel(
    G, Nn, U, W1, W2, B2, S,
    N, D, H, C,
    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_C: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_i = tl.program_id(1)
    pid_j = tl.program_id(2)
    r = tl.arange(0, BLOCK_I * BLOCK_J)
    ii = pid_i * BLOCK_I + r // BLOCK_J
    jj = pid_j * BLOCK_J + r % BLOCK_J
    rmask = (ii < N) & (jj < N)
    row_g = pid_b * N + ii
    row_n = pid_b * N + jj
    cs = tl.arange(0, BLOCK_C)
    cmask = cs < C

    acc = tl.zeros((BLOCK_I * BLOCK_J, BLOCK_C), dtype=G.dtype.element_ty)
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        hmask = hs < H
        pre = _pre_activation(G, Nn, U, W1, row_g, row_n, rmask, hs, hmask, D, H, BLOCK_D, PREC, DOT)
        g = 0.5 * pre * (1.0 + tl.math.erf(pre * _SQRT1_2))
        w2t = tl.load(W2 + cs[None, :] * H + hs[:, None], mask=hmask[:, None] & cmask[None, :], other=0.0)
        acc = tl.dot(g.to(DOT), w2t.to(DOT), acc, input_precision=PREC)
    acc += tl.load(B2 + cs, mask=cmask, other=0.0).to(acc.dtype)[None, :]
    # B·N²·C can pass 2³¹ at long sentences and large batches: 64-bit offsets into S and dS.
    out = S + (row_g.to(tl.int64) * N + jj)[:, None] * C + cs[None, :]
    tl.store(out, acc.to(S.dtype.element_ty), mask=rmask[:, None] & cmask[None, :])


@triton.jit
def _cln_grid_bwd_kernel(
    G, Nn, U, W1, W2, dS, dG, dN, dU, dW1, dW2,
    N, D, H, C,
    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_H: tl.constexpr,
    BLOCK_C: tl.constexpr, PREC: tl.constexpr, DOT: tl.constexpr,
):
    pid_b = tl.program_id(0)
    pid_i = tl.program_id(1)
    pid_j = tl.program_id(2)
    r = tl.arange(0, BLOCK_I * BLOCK_J)
    ii = pid_i * BLOCK_I + r // BLOCK_J
    jj = pid_j * BLOCK_J + r % BLOCK_J
    rmask = (ii < N) & (jj < N)
    row_g = pid_b * N + ii
    row_n = pid_b * N + jj
    # Row indices of the tile's distinct i and j (for the per-word gradient sums).
    i_idx = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    j_idx = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    i_mask = i_idx < N
    j_mask = j_idx < N
    cs = tl.arange(0, BLOCK_C)
    cmask = cs < C
    acc_ty = G.dtype.element_ty

    ds_tile = tl.load(dS + (row_g.to(tl.int64) * N + jj)[:, None] * C + cs[None, :],
                      mask=rmask[:, None] & cmask[None, :], other=0.0)
    for h0 in range(0, H, BLOCK_H):
        hs = h0 + tl.arange(0, BLOCK_H)
        hmask = hs < H
        pre = _pre_activation(G, Nn, U, W1, row_g, row_n, rmask, hs, hmask, D, H, BLOCK_D, PREC, DOT)
        cdf = 0.5 * (1.0 + tl.math.erf(pre * _SQRT1_2))
        g = pre * cdf
        gelu_grad = cdf + pre * tl.exp(-0.5 * pre * pre) * _INV_SQRT_2PI
        w2 = tl.load(W2 + cs[:, None] * H + hs[None, :], mask=cmask[:, None] & hmask[None, :], other=0.0)
        dg = tl.dot(ds_tile.to(DOT), w2.to(DOT), input_precision=PREC, out_dtype=acc_ty)
        # Padded rows/columns carry dS = 0 and W2 = 0, so dpre is already 0 there; the where keeps
        # it exact even if a padded pre overflowed.
        dpre = tl.where(rmask[:, None] & hmask[None, :], dg * gelu_grad, 0.0)

        dw2 = tl.dot(tl.trans(ds_tile.to(DOT)), g.to(DOT), input_precision=PREC, out_dtype=acc_ty)
        tl.atomic_add(dW2 + cs[:, None] * H + hs[None, :], dw2,
                      mask=cmask[:, None] & hmask[None, :], sem="relaxed")
        du = tl.sum(tl.reshape(dpre, (BLOCK_I, BLOCK_J, BLOCK_H)), axis=1)
        tl.atomic_add(dU + (pid_b * N + i_idx)[:, None] * H + hs[None, :], du,
                      mask=i_mask[:, None] & hmask[None, :], sem="relaxed")

        dpre_w = dpre.to(DOT)
        for d0 in range(0, D, BLOCK_D):
            ds, gam, nn, a = _load_pair_operand(G, Nn, row_g, row_n, rmask, d0, D, BLOCK_D)
            dmask = ds < D
            w1 = tl.load(W1 + hs[:, None] * D + ds[None, :], mask=hmask[:, None] & dmask[None, :], other=0.0)
            # E = dpre W1 is the gradient of the pair feature A = γ_i ⊙ n_j.
            e = tl.dot(dpre_w, w1.to(DOT), input_precision=PREC, out_dtype=acc_ty)
            dgam = tl.sum(tl.reshape(e * nn, (BLOCK_I, BLOCK_J, BLOCK_D)), axis=1)
            tl.atomic_add(dG + (pid_b * N + i_idx)[:, None] * D + ds[None, :], dgam,
                          mask=i_mask[:, None] & dmask[None, :], sem="relaxed")
            dn = tl.sum(tl.reshape(e * gam, (BLOCK_I, BLOCK_J, BLOCK_D)), axis=0)
            tl.atomic_add(dN + (pid_b * N + j_idx)[:, None] * D + ds[None, :], dn,
                          mask=j_mask[:, None] & dmask[None, :], sem="relaxed")
            dw1 = tl.dot(tl.trans(dpre_w), a.to(DOT), input_precision=PREC, out_dtype=acc_ty)
            tl.atomic_add(dW1 + hs[:, None] * D + ds[None, :], dw1,
                          mask=hmask[:, None] & dmask[None, :], sem="relaxed")


# ----------------------------------------------------------------------------- launchers


def _pow2(x: int, lo: int = 16) -> int:
    return max(lo, triton.next_power_of_2(x))


def _blocks(N: int, D: int, H: int, C: int, backward: bool, dtype: torch.dtype = torch.float32) -> dict:
    """Default tile sizes. tl.dot needs every dimension ≥ 16 (C is padded to BLOCK_C)."""
    if _interpreting():
        # Few, large programs: the interpreter pays per program and per op, numpy does the rest.
        bj = min(_pow2(N), 128)
        bi = min(_pow2(N, 1), max(1, 4096 // bj))
        return dict(BLOCK_I=bi, BLOCK_J=bj, BLOCK_D=min(_pow2(D), 128), BLOCK_H=min(_pow2(H), 128),
                    BLOCK_C=_pow2(C))
    # GPU: 64-128 pair rows per program keep the [rows, BLOCK_H] accumulators in registers; fp32
    # weights (FMA dots, operands in registers) take a 32-wide H chunk forward so as not to spill.
    bj = min(_pow2(N), 32)
    if backward:
        return dict(BLOCK_I=max(1, 64 // bj), BLOCK_J=bj, BLOCK_D=32, BLOCK_H=32, BLOCK_C=_pow2(C))
    bh = 32 if dtype == torch.float32 else 64
    return dict(BLOCK_I=max(1, 128 // bj), BLOCK_J=bj, BLOCK_D=32, BLOCK_H=bh, BLOCK_C=_pow2(C))


# Default num_warps, num_stages (forward / backward, 16-bit / fp32 weights) and autotune candidates
# ((BLOCK_I·BLOCK_J pair rows, BLOCK_D, BLOCK_H), num_warps, num_stages).
_DEFAULT_WARPS = {(False, False): (8, 3), (True, False): (4, 3), (False, True): (8, 3), (True, True): (8, 2)}
_CANDIDATES = {
    (False, False): [(64, 32, 64, 4, 3), (128, 64, 64, 8, 3), (128, 32, 32, 8, 3)],
    (True, False): [(64, 32, 32, 8, 2), (64, 32, 32, 4, 2)],
    (False, True): [],
    (True, True): [],
}


def _configs(N: int, D: int, H: int, C: int, backward: bool, dtype: torch.dtype, blocks: dict | None = None) -> list:
    """Launch configurations, the default (or the given `blocks`) first."""
    key = (backward, dtype == torch.float32)
    warps, stages = _DEFAULT_WARPS[key]
    default = blocks or _blocks(N, D, H, C, backward, dtype)
    out = [{**default, "num_warps": warps, "num_stages": stages}]
    if blocks is not None or _interpreting():
        return out
    bj = default["BLOCK_J"]
    for rows, bd, bh, w, s in _CANDIDATES[key]:
        c = dict(BLOCK_I=max(1, rows // bj), BLOCK_J=bj, BLOCK_D=bd, BLOCK_H=bh, BLOCK_C=default["BLOCK_C"],
                 num_warps=w, num_stages=s)
        if c not in out:
            out.append(c)
    return out


_TL_DTYPES = {torch.float32: tl.float32, torch.float64: tl.float64, torch.float16: tl.float16,
              torch.bfloat16: tl.bfloat16}


def _dot_args(dtype: torch.dtype) -> dict:
    """tl.dot operand dtype and precision for weights of `dtype` (accumulation is fp32/fp64)."""
    if dtype == torch.bfloat16 and _interpreting():
        # The interpreter multiplies bf16 dot operands as raw bits (garbage); numpy has no bf16.
        return dict(PREC="ieee", DOT=tl.float32)
    # float32 operands must not be rounded to TF32 on the GPU; 16-bit operands use the tensor cores.
    prec = "ieee" if dtype in (torch.float32, torch.float64) else "tf32"
    return dict(PREC=prec, DOT=_TL_DTYPES[dtype])


def _grid(B: int, N: int):
    return lambda meta: (B, triton.cdiv(N, meta["BLOCK_I"]), triton.cdiv(N, meta["BLOCK_J"]))


def _device_ctx(t: torch.Tensor):
    # Launch on the tensors' GPU, not the current one.
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def cln_grid_forward(gamma, n, u, W1, W2, b2, blocks: dict | None = None) -> torch.Tensor:
    """S[B,N,N,C] from the per-word tensors γ, n [B,N,D] and u [B,N,H] (all contiguous)."""
    B, N, D = gamma.shape
    H, C = W1.shape[0], W2.shape[0]
    S = torch.empty((B, N, N, C), device=gamma.device, dtype=W1.dtype)
    with _device_ctx(gamma):
        launch(
            _cln_grid_fwd_kernel,
            _grid(B, N),
            (gamma, n, u, W1, W2, b2, S, N, D, H, C),
            _dot_args(W1.dtype),
            _configs(N, D, H, C, False, W1.dtype, blocks),
            key=("D", "H", "C"),
        )
    return S


def cln_grid_backward(gamma, n, u, W1, W2, dS, blocks: dict | None = None):
    """dγ, dn, du (in γ's dtype) and dW1, dW2 (accumulation dtype) for the upstream gradient dS."""
    B, N, D = gamma.shape
    H, C = W1.shape[0], W2.shape[0]
    acc = gamma.dtype
    dG = torch.zeros_like(gamma)
    dN = torch.zeros_like(n)
    dU = torch.zeros_like(u)
    dW1 = torch.zeros((H, D), device=gamma.device, dtype=acc)
    dW2 = torch.zeros((C, H), device=gamma.device, dtype=acc)
    with _device_ctx(gamma):
        launch(
            _cln_grid_bwd_kernel,
            _grid(B, N),
            (gamma, n, u, W1, W2, dS, dG, dN, dU, dW1, dW2, N, D, H, C),
            _dot_args(W1.dtype),
            _configs(N, D, H, C, True, W1.dtype, blocks),
            key=("D", "H", "C"),
            reset=("dG", "dN", "dU", "dW1", "dW2"),  # atomically accumulated: zeroed before each timed run
        )
    return dG, dN, dU, dW1, dW2


@no_double_backward("cln_head")
class _ClnGridFunction(torch.autograd.Function):
    """S = GELU((γ_i ⊙ n_j) W1ᵀ + u_i) W2ᵀ + b2 over all pairs, fused; grads for every input."""

    @staticmethod
    def forward(ctx, gamma, n, u, W1, W2, b2):
        W1c, W2c = W1.contiguous(), W2.contiguous()
        S = cln_grid_forward(gamma, n, u, W1c, W2c, b2.contiguous())
        ctx.save_for_backward(gamma, n, u, W1c, W2c)
        return S

    @staticmethod
    def backward(ctx, dS):
        gamma, n, u, W1, W2 = ctx.saved_tensors
        dS = dS.contiguous()
        dG, dN, dU, dW1, dW2 = cln_grid_backward(gamma, n, u, W1, W2, dS)
        db2 = dS.sum(dim=(0, 1, 2), dtype=gamma.dtype)
        return dG, dN, dU, dW1.to(W1.dtype), dW2.to(W2.dtype), db2.to(W2.dtype)


def cln_head_triton(
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
    """Relation logits ``S[B,N,N,C]`` in h's dtype; extra memory O(B·N·(D+H)) forward and backward."""
    # The per-word prologue runs in fp32 (fp64 for fp64 inputs) even for 16-bit inputs: it is
    # O(B·N·D²), and rounding γ, n, u to 16 bit before the N² grid only adds error.
    cdt = torch.float64 if h.dtype == torch.float64 else torch.float32
    gamma, lam, n, _ = cln_prologue(
        h.to(cdt), W_alpha.to(cdt), b_alpha.to(cdt), W_beta.to(cdt), b_beta.to(cdt), eps
    )
    u = F.linear(lam, W1.to(cdt), b1.to(cdt))  # W1 λ_i + b1: the pair-independent part of pre
    return _ClnGridFunction.apply(gamma.contiguous(), n.contiguous(), u.contiguous(), W1, W2, b2)
