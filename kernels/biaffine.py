"""Triton biaffine scores S[b,i,j,c] = hs_iᵀ U_c he_j + W_c·[hs_i ; he_j] + b_c (docs/METHOD.md §3, §6).

The linear terms are folded into the bilinear pass so the pair kernel is one GEMM-like sweep:

    P[b,i,c,:] = U_cᵀ hs_i + W_c[Db:]      (torch matmul, O(B·N·C·Db))
    r[b,i,c]   = W_c[:Db]·hs_i + b_c       (torch matmul, O(B·N·C))
    S[b,i,j,c] = P[b,i,c,:]·he_j + r[b,i,c] (Triton, written directly in the [B,N,N,C] layout)

Rows of the pair kernel are the flattened (i, c) index q = i·C + c of P viewed as [B, N·C, Db], so C
needs no padding: the row mask handles any N·C. Backward (Triton, no N²-sized temporaries besides
the incoming dS):

    dP[b,q,:] = Σ_j dS[b,q,j] he_j     dr[b,q] = Σ_j dS[b,q,j]     dhe_j = Σ_q dS[b,q,j] P[b,q,:]

and torch maps dP, dr back to dhs, dU, dW, db.
"""

from typing import Tuple

import torch
import triton
import triton.language as tl

from mclner.ops._autograd import no_double_backward

from ._common import _acc_dtype, _arch, _ieee, _interpreting, _mma, _pow2, _tl_acc, _upcast, launch, tile_configs


def _blocks(NC: int, N: int, Db: int, dtype: torch.dtype, kind: str) -> Tuple[int, int, int]:
    """Default (BLOCK_Q, BLOCK_J, BLOCK_K) of the "fwd" kernel, (BLOCK_Q, BLOCK_J, BLOCK_D) of the
    backward's "dp" and "dhe" kernels. tl.dot needs every dim >= 16 on GPUs; the interpreter pays per
    program and per op, so there it gets large tiles and the whole Db in one chunk. fp32 tiles are
    multiplied by FMAs with their operands in registers: 32-wide chunks keep them from spilling."""
    if _interpreting():
        return _pow2(NC, 16, 1024), _pow2(N, 16, 512), _pow2(Db, 16, 256)
    if dtype == torch.float32:
        return _pow2(NC, 16, 64), _pow2(N, 16, 64 if kind == "fwd" else 32), _pow2(Db, 16, 64 if kind == "dp" else 32)
    return _pow2(NC, 16, 64), _pow2(N, 16, 64), _pow2(Db, 16, 64)


# Default num_warps, num_stages per kernel and 16-bit or fp32 storage, and the autotune candidates
# ((BLOCK_Q, BLOCK_J, BLOCK_K or BLOCK_D), num_warps, num_stages; clipped like the defaults).
_DEFAULT_WARPS = {("fwd", False): (4, 3), ("dp", False): (4, 3), ("dhe", False): (4, 3),
                  ("fwd", True): (8, 3), ("dp", True): (8, 3), ("dhe", True): (4, 3)}
_CANDIDATES = {
    ("fwd", False): [(128, 64, 64, 8, 3), (64, 128, 64, 8, 3), (64, 64, 32, 4, 4)],
    ("dp", False): [(64, 64, 64, 8, 3), (128, 64, 64, 8, 3)],
    ("dhe", False): [(64, 64, 64, 8, 3), (128, 64, 64, 8, 3)],
    ("fwd", True): [(64, 32, 32, 4, 3)],
    ("dp", True): [],
    ("dhe", True): [(64, 32, 64, 8, 3)],
}


def _configs(kind: str, NC: int, N: int, Db: int, dtype: torch.dtype, arch: int) -> list:
    """Launch configurations of the "fwd", "dp" or "dhe" kernel on sm_`arch`, the default first."""
    names = ("BLOCK_Q", "BLOCK_J", "BLOCK_K" if kind == "fwd" else "BLOCK_D")
    key = (kind, dtype == torch.float32)
    caps = (_pow2(NC, 16, 1024), _pow2(N, 16, 1024), _pow2(Db, 16, 256))
    return tile_configs(names, _blocks(NC, N, Db, dtype, kind), _DEFAULT_WARPS[key], _CANDIDATES[key], caps)


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _biaffine_fwd_kernel(
    P_ptr,  # [B, N*C, Db] contiguous, input dtype
    r_ptr,  # [B, N*C] contiguous, acc dtype
    he_ptr,  # [B, N, Db] contiguous, input dtype
    S_ptr,  # [B, N, N, C] contiguous, input dtype
    N,
    C,
    Db,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    pid_q = tl.program_id(0)
    pid_j = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    NC = N * C
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    k = tl.arange(0, BLOCK_K)
    qm = q < NC
    jm = j < N
    P_b = P_ptr + pid_b * NC * Db
    he_b = he_ptr + pid_b * N * Db

    acc = tl.zeros([BLOCK_Q, BLOCK_J], dtype=ACC)
    for k0 in range(0, Db, BLOCK_K):
        km = (k0 + k) < Db
        p = tl.load(P_b + q[:, None] * Db + (k0 + k)[None, :], mask=qm[:, None] & km[None, :], other=0.0)
        # he loaded already transposed ([K, J]) so the dot needs no tl.trans.
        e = tl.load(he_b + j[None, :] * Db + (k0 + k)[:, None], mask=km[:, None] & jm[None, :], other=0.0)
        acc = _mma(acc, p, e, ACC, UPCAST, IEEE)
    r = tl.load(r_ptr + pid_b * NC + q, mask=qm, other=0.0)
    acc += r[:, None]

    # S[b, i, j, c] with q = i*C + c: row offset i*N*C + c, column offset j*C.
    i = q // C
    c = q - i * C
    row_off = i.to(tl.int64) * NC + c
    S_b = S_ptr + pid_b * N * NC
    tl.store(
        S_b + row_off[:, None] + (j * C)[None, :],
        acc.to(S_ptr.dtype.element_ty),
        mask=qm[:, None] & jm[None, :],
    )


@triton.jit
def _biaffine_bwd_dp_kernel(
    dS_ptr,  # [B, N, N, C] contiguous, input dtype
    he_ptr,  # [B, N, Db] contiguous, input dtype
    dP_ptr,  # [B, N*C, Db] contiguous, acc dtype
    dr_ptr,  # [B, N*C] contiguous, acc dtype
    N,
    C,
    Db,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dP[b,q,d-block] = Σ_j dS[b,q,j] he[b,j,d-block]; the d-block-0 program also writes dr."""
    pid_q = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    NC = N * C
    q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    jj = tl.arange(0, BLOCK_J)
    qm = q < NC
    dm = d < Db
    i = q // C
    c = q - i * C
    row_off = i.to(tl.int64) * NC + c
    dS_b = dS_ptr + pid_b * N * NC
    he_b = he_ptr + pid_b * N * Db

    acc = tl.zeros([BLOCK_Q, BLOCK_D], dtype=ACC)
    rsum = tl.zeros([BLOCK_Q], dtype=ACC)
    for j0 in range(0, N, BLOCK_J):
        j = j0 + jj
        jm = j < N
        g = tl.load(dS_b + row_off[:, None] + (j * C)[None, :], mask=qm[:, None] & jm[None, :], other=0.0)
        e = tl.load(he_b + j[:, None] * Db + d[None, :], mask=jm[:, None] & dm[None, :], other=0.0)
        acc = _mma(acc, g, e, ACC, UPCAST, IEEE)
        rsum += tl.sum(g.to(ACC), axis=1)
    tl.store(dP_ptr + pid_b * NC * Db + q[:, None] * Db + d[None, :], acc, mask=qm[:, None] & dm[None, :])
    if pid_d == 0:
        tl.store(dr_ptr + pid_b * NC + q, rsum, mask=qm)


@triton.jit
def _biaffine_bwd_dhe_kernel(
    dS_ptr,  # [B, N, N, C] contiguous, input dtype
    P_ptr,  # [B, N*C, Db] contiguous, input dtype
    dhe_ptr,  # [B, N, Db] contiguous, acc dtype
    N,
    C,
    Db,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_J: tl.constexpr,
    BLOCK_Q: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dhe[b,j,d-block] = Σ_q dS[b,q,j] P[b,q,d-block]: each program owns its rows, no atomics."""
    pid_j = tl.program_id(0)
    pid_d = tl.program_id(1)
    pid_b = tl.program_id(2).to(tl.int64)
    NC = N * C
    j = pid_j * BLOCK_J + tl.arange(0, BLOCK_J)
    d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    qq = tl.arange(0, BLOCK_Q)
    jm = j < N
    dm = d < Db
    dS_b = dS_ptr + pid_b * N * NC
    P_b = P_ptr + pid_b * NC * Db

    acc = tl.zeros([BLOCK_J, BLOCK_D], dtype=ACC)
    for q0 in range(0, NC, BLOCK_Q):
        q = q0 + qq
        qm = q < NC
        i = q // C
        c = q - i * C
        row_off = i.to(tl.int64) * NC + c
        # dSᵀ tile [J, Q] loaded transposed directly.
        g = tl.load(dS_b + (j * C)[:, None] + row_off[None, :], mask=jm[:, None] & qm[None, :], other=0.0)
        p = tl.load(P_b + q[:, None] * Db + d[None, :], mask=qm[:, None] & dm[None, :], other=0.0)
        acc = _mma(acc, g, p, ACC, UPCAST, IEEE)
    tl.store(dhe_ptr + pid_b * N * Db + j[:, None] * Db + d[None, :], acc, mask=jm[:, None] & dm[None, :])


# ----------------------------------------------------------------------------- launchers


def biaffine_pairs_forward(P: torch.Tensor, r: torch.Tensor, he: torch.Tensor) -> torch.Tensor:
    """S[b,i,j,c] = P[b,i,c,:]·he[b,j,:] + r[b,i,c]. P [B,N,C,Db], r [B,N,C] (acc dtype), he [B,N,Db]."""
    B, N, C, Db = P.shape
    S = torch.empty((B, N, N, C), device=P.device, dtype=P.dtype)
    launch(
        _biaffine_fwd_kernel,
        lambda meta: (triton.cdiv(N * C, meta["BLOCK_Q"]), triton.cdiv(N, meta["BLOCK_J"]), B),
        (P, r, he, S, N, C, Db),
        dict(ACC=_tl_acc(P.dtype), UPCAST=_upcast(P.dtype), IEEE=_ieee(P.dtype)),
        _configs("fwd", N * C, N, Db, P.dtype, _arch(P)),
        key=("C", "Db"),
    )
    return S


def biaffine_pairs_backward(
    dS: torch.Tensor, P: torch.Tensor, he: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dP [B,N,C,Db], dr [B,N,C], dhe [B,N,Db]) in the accumulation dtype."""
    B, N, C, Db = P.shape
    acc = _acc_dtype(P.dtype)
    dP = torch.empty((B, N, C, Db), device=P.device, dtype=acc)
    dr = torch.empty((B, N, C), device=P.device, dtype=acc)
    dhe = torch.empty((B, N, Db), device=P.device, dtype=acc)
    consts = dict(ACC=_tl_acc(P.dtype), UPCAST=_upcast(P.dtype), IEEE=_ieee(P.dtype))
    launch(
        _biaffine_bwd_dp_kernel,
        lambda meta: (triton.cdiv(N * C, meta["BLOCK_Q"]), triton.cdiv(Db, meta["BLOCK_D"]), B),
        (dS, he, dP, dr, N, C, Db),
        consts,
        _configs("dp", N * C, N, Db, P.dtype, _arch(P)),
        key=("C", "Db"),
    )
    launch(
        _biaffine_bwd_dhe_kernel,
        lambda meta: (triton.cdiv(N, meta["BLOCK_J"]), triton.cdiv(Db, meta["BLOCK_D"]), B),
        (dS, P, dhe, N, C, Db),
        consts,
        _configs("dhe", N * C, N, Db, P.dtype, _arch(P)),
        key=("C", "Db"),
    )
    return dP, dr, dhe


# ----------------------------------------------------------------------------- autograd


@no_double_backward("biaffine")
class BiaffineTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hs, he, U, W, b):
        B, N, Db = hs.shape
        C = U.shape[0]
        dtype = hs.dtype
        acc = _acc_dtype(dtype)
        hs_a, U_a, W_a = hs.to(acc), U.to(acc), W.to(acc)
        # P = U_cᵀ hs_i + W_c[Db:] as one [B·N, Db] x [Db, C·Db] matmul; computed in the accumulation
        # dtype and rounded once to the input dtype for the pair GEMM.
        P = (hs_a.reshape(B * N, Db) @ U_a.permute(1, 0, 2).reshape(Db, C * Db)).view(B, N, C, Db)
        P = (P + W_a[:, Db:]).to(dtype).contiguous()
        r = (hs_a @ W_a[:, :Db].t() + b.to(acc)).contiguous()  # [B, N, C]
        he_c = he.contiguous()
        S = biaffine_pairs_forward(P, r, he_c)
        ctx.save_for_backward(hs, he_c, U, W, P)
        return S

    @staticmethod
    def backward(ctx, dS):
        hs, he, U, W, P = ctx.saved_tensors
        B, N, Db = hs.shape
        C = U.shape[0]
        dtype = hs.dtype
        acc = _acc_dtype(dtype)
        dP, dr, dhe = biaffine_pairs_backward(dS.contiguous(), P, he)
        hs_a, U_a, W_a = hs.to(acc), U.to(acc), W.to(acc)
        dP2 = dP.view(B * N, C * Db)
        hs2 = hs_a.reshape(B * N, Db)
        dr2 = dr.view(B * N, C)
        # dhs_i = Σ_c U_c dP[i,c] + Σ_c dr[i,c] W_c[:Db]
        dhs = dP2 @ U_a.permute(0, 2, 1).reshape(C * Db, Db) + dr2 @ W_a[:, :Db]
        dU = (hs2.t() @ dP2).view(Db, C, Db).permute(1, 0, 2)
        dW = torch.cat([dr2.t() @ hs2, dP.sum(dim=(0, 1))], dim=1)
        db = dr2.sum(dim=0)
        return (
            dhs.view(B, N, Db).to(dtype),
            dhe.to(dtype),
            dU.to(dtype).contiguous(),
            dW.to(dtype),
            db.to(dtype),
        )


def biaffine_triton(
    hs: torch.Tensor, he: torch.Tensor, U: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Triton provider of :func:`mclner.ops.biaffine` (inputs validated by the op); S [B,N,N,C]."""
    return BiaffineTriton.apply(hs, he, U, W, b)
