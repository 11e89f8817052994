"""Triton InfoNCE over cosine similarities without the M×M matrix (docs/METHOD.md §4, §6; Inf-CL style).

torch normalises the two views (``F.normalize``, eps 1e-12) and chains that backward; the Triton
Function works on the unit rows a, b [M, P] with logits l[m,k] = a_m·b_k / τ, one tile at a time:

* forward: one program per block of "own" rows sweeps the "other" rows with an online log-sum-exp
  (running max and running sum, fp32). Run with (own, other) = (a, b) it gives the row LSE and the
  positive logits; with (b, a) the column LSE (symmetric only). Only these [M] vectors are saved.
* backward: with per-row weights w from the reduction (w_r, w_c for the row and the column loss),
  dl[m,k] = w_r[m]·exp(l[m,k] − lse_r[m]) + w_c[k]·exp(l[m,k] − lse_c[k]) − δ_mk (w_r[m] + w_c[m]);
  da = dl b / τ by a program per block of a's rows sweeping b, db = dlᵀ a / τ by the same kernel with
  the roles swapped, so every program owns its output rows (no atomics) and the logits are recomputed.

Extra memory is O(M·P) (the normalised views) plus O(M) vectors.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mclner.ops._autograd import no_double_backward

from ._common import (
    _acc_dtype,
    _arch,
    _ieee,
    _interpreting,
    _logits_tile,
    _mma,
    _pow2,
    _tl_acc,
    _upcast,
    launch,
    tile_configs,
)


def _blocks(M: int, P: int, dtype: torch.dtype, kind: str) -> Tuple[int, int, int, int]:
    """Default (BLOCK_O own rows, BLOCK_T other rows, BLOCK_K logit chunk of P, BLOCK_D output chunk
    of P) of the "lse" or "bwd" kernel. tl.dot needs every dim >= 16 on GPUs; the interpreter pays per
    program and per op, so there it gets large tiles and the whole P at once. On a GPU P <= 128 is one
    output chunk, so the logits are computed once per tile in the backward; fp32 tiles are multiplied
    by FMAs (IEEE, no tensor cores), whose operands live in registers: a 32-wide logit chunk (and 32
    other rows in the backward) keeps them from spilling (kernels/_resources.py measures it)."""
    if _interpreting():
        full = _pow2(P, 16, 256)
        return _pow2(M, 16, 1024), _pow2(M, 16, 1024), full, full
    if dtype == torch.float32:
        return _pow2(M, 16, 64), _pow2(M, 16, 64 if kind == "lse" else 32), _pow2(P, 16, 32), _pow2(P, 16, 128)
    return _pow2(M, 16, 64), _pow2(M, 16, 64), _pow2(P, 16, 64), _pow2(P, 16, 128)


# num_warps, num_stages of the default configuration, and the autotune candidates (BLOCK_O, BLOCK_T,
# BLOCK_K, BLOCK_D, num_warps, num_stages; clipped to the problem like the defaults). All compile without
# spills on sm_80 and sm_90 at the benchmark shapes (tests/ops/test_triton_compile.py, the full sweep in
# scripts/gpu_resources.py); the 16-bit backward needs 8 warps for its [64, 128] fp32 accumulator.
_DEFAULT_WARPS = {("lse", False): (4, 3), ("bwd", False): (8, 3), ("lse", True): (8, 3), ("bwd", True): (8, 2)}
_CANDIDATES = {
    ("lse", False): [(64, 64, 64, 0, 8, 3), (128, 128, 64, 0, 8, 2), (64, 64, 128, 0, 4, 2)],
    ("bwd", False): [(64, 64, 32, 128, 8, 2), (64, 32, 64, 128, 4, 3), (128, 64, 64, 128, 8, 2)],
    ("lse", True): [],
    ("bwd", True): [],
}


def _configs(kind: str, M: int, P: int, dtype: torch.dtype, arch: int) -> list:
    """Launch configurations of the "lse" or "bwd" kernel on sm_`arch`, the default first."""
    names = ("BLOCK_O", "BLOCK_T", "BLOCK_K") + (("BLOCK_D",) if kind == "bwd" else ())
    key = (kind, dtype == torch.float32)
    caps = (_pow2(M, 16, 1024), _pow2(M, 16, 1024), _pow2(P, 16, 256), _pow2(P, 16, 256))
    return tile_configs(names, _blocks(M, P, dtype, kind), _DEFAULT_WARPS[key], _CANDIDATES[key], caps)


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _nce_lse_kernel(
    X_ptr,  # [M, P] own rows
    Y_ptr,  # [M, P] other rows
    lse_ptr,  # [M] acc dtype: LSE_t l[o, t]
    pos_ptr,  # [M] acc dtype: l[o, o] (written when STORE_POS)
    M,
    P,
    inv_tau,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    STORE_POS: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    om = o < M
    tt = tl.arange(0, BLOCK_T)
    run_max = tl.full([BLOCK_O], float("-inf"), dtype=ACC)
    run_sum = tl.zeros([BLOCK_O], dtype=ACC)
    pos = tl.zeros([BLOCK_O], dtype=ACC)
    for t0 in range(0, M, BLOCK_T):
        t = t0 + tt
        tm = t < M
        l = _logits_tile(X_ptr, Y_ptr, o, t, om, tm, P, inv_tau, ACC, UPCAST, IEEE, BLOCK_O, BLOCK_T, BLOCK_K)
        l = tl.where(tm[None, :], l, float("-inf"))
        # Every tile holds at least one valid column, so new_max is finite and no inf - inf occurs.
        new_max = tl.maximum(run_max, tl.max(l, axis=1))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(l - new_max[:, None]), axis=1)
        run_max = new_max
        if STORE_POS:
            pos += tl.sum(tl.where(o[:, None] == t[None, :], l, 0.0), axis=1)
    tl.store(lse_ptr + o, run_max + tl.log(run_sum), mask=om)
    if STORE_POS:
        tl.store(pos_ptr + o, pos, mask=om)


@triton.jit
def _nce_bwd_kernel(
    X_ptr,  # [M, P] own rows (their gradient is computed)
    Y_ptr,  # [M, P] other rows
    lse_own_ptr,  # [M] LSE of the loss whose softmax runs over the other rows (HAS_OWN)
    w_own_ptr,  # [M] its per-row weights
    lse_oth_ptr,  # [M] LSE of the loss whose softmax runs over the own rows (HAS_OTH)
    w_oth_ptr,  # [M] its per-row weights
    dX_ptr,  # [M, P] output, input dtype
    M,
    P,
    inv_tau,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    HAS_OWN: tl.constexpr,
    HAS_OTH: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dX[o, d-chunk] = Σ_t dl[o, t] Y[t, d-chunk] / τ with
    dl[o,t] = w_own[o] e^(l−lse_own[o]) + w_oth[t] e^(l−lse_oth[t]) − δ_ot (w_own[o] + w_oth[o])."""
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    om = o < M
    dm = d < P
    tt = tl.arange(0, BLOCK_T)
    diag_w = tl.zeros([BLOCK_O], dtype=ACC)
    if HAS_OWN:
        lse_own = tl.load(lse_own_ptr + o, mask=om, other=0.0)
        w_own = tl.load(w_own_ptr + o, mask=om, other=0.0)
        diag_w += w_own
    if HAS_OTH:
        diag_w += tl.load(w_oth_ptr + o, mask=om, other=0.0)
    acc = tl.zeros([BLOCK_O, BLOCK_D], dtype=ACC)
    for t0 in range(0, M, BLOCK_T):
        t = t0 + tt
        tm = t < M
        l = _logits_tile(X_ptr, Y_ptr, o, t, om, tm, P, inv_tau, ACC, UPCAST, IEEE, BLOCK_O, BLOCK_T, BLOCK_K)
        # Padding rows/columns get -inf logits: their softmax terms vanish instead of overflowing.
        l = tl.where(om[:, None] & tm[None, :], l, float("-inf"))
        g = tl.zeros([BLOCK_O, BLOCK_T], dtype=ACC)
        if HAS_OWN:
            g += w_own[:, None] * tl.exp(l - lse_own[:, None])
        if HAS_OTH:
            lse_oth = tl.load(lse_oth_ptr + t, mask=tm, other=0.0)
            w_oth = tl.load(w_oth_ptr + t, mask=tm, other=0.0)
            g += w_oth[None, :] * tl.exp(l - lse_oth[None, :])
        g = tl.where(o[:, None] == t[None, :], g - diag_w[:, None], g)
        y = tl.load(Y_ptr + t[:, None] * P + d[None, :], mask=tm[:, None] & dm[None, :], other=0.0)
        acc = _mma(acc, g.to(Y_ptr.dtype.element_ty), y, ACC, UPCAST, IEEE)
    acc = acc * inv_tau
    tl.store(dX_ptr + o[:, None] * P + d[None, :], acc.to(dX_ptr.dtype.element_ty), mask=om[:, None] & dm[None, :])


# ----------------------------------------------------------------------------- launchers


def nce_lse(
    X: torch.Tensor, Y: torch.Tensor, temperature: float, with_pos: bool
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """lse[o] = logsumexp_t X[o]·Y[t]/τ (and l[o,o] when with_pos), in the accumulation dtype."""
    M, P = X.shape
    acc = _acc_dtype(X.dtype)
    lse = torch.empty(M, device=X.device, dtype=acc)
    pos = torch.empty(M, device=X.device, dtype=acc) if with_pos else lse
    launch(
        _nce_lse_kernel,
        lambda meta: (triton.cdiv(M, meta["BLOCK_O"]),),
        (X, Y, lse, pos, M, P, 1.0 / temperature),
        dict(ACC=_tl_acc(X.dtype), UPCAST=_upcast(X.dtype), IEEE=_ieee(X.dtype), STORE_POS=with_pos),
        _configs("lse", M, P, X.dtype, _arch(X)),
        key=("P",),
    )
    return lse, (pos if with_pos else None)


def nce_grad(
    X: torch.Tensor,
    Y: torch.Tensor,
    temperature: float,
    lse_own: Optional[torch.Tensor],
    w_own: Optional[torch.Tensor],
    lse_oth: Optional[torch.Tensor],
    w_oth: Optional[torch.Tensor],
) -> torch.Tensor:
    """Gradient of the weighted losses with respect to the own rows X (see _nce_bwd_kernel)."""
    M, P = X.shape
    dX = torch.empty_like(X)
    some = lse_own if lse_own is not None else lse_oth
    launch(
        _nce_bwd_kernel,
        lambda meta: (triton.cdiv(M, meta["BLOCK_O"]), triton.cdiv(P, meta["BLOCK_D"])),
        (
            X, Y,
            lse_own if lse_own is not None else some, w_own if w_own is not None else some,
            lse_oth if lse_oth is not None else some, w_oth if w_oth is not None else some,
            dX, M, P, 1.0 / temperature,
        ),
        dict(ACC=_tl_acc(X.dtype), UPCAST=_upcast(X.dtype), IEEE=_ieee(X.dtype),
             HAS_OWN=lse_own is not None, HAS_OTH=lse_oth is not None),
        _configs("bwd", M, P, X.dtype, _arch(X)),
        key=("P",),
    )  # fmt: skip
    return dX


# ----------------------------------------------------------------------------- autograd


@no_double_backward("info_nce")
class InfoNCETriton(torch.autograd.Function):
    """InfoNCE on already normalised rows a, b [M, P]; saves a, b and the [M] LSE vectors only."""

    @staticmethod
    def forward(ctx, a, b, temperature: float, symmetric: bool, reduction: str):
        a = a.contiguous()
        b = b.contiguous()
        lse_r, pos = nce_lse(a, b, temperature, with_pos=True)
        loss = lse_r - pos
        lse_c = None
        if symmetric:
            lse_c, _ = nce_lse(b, a, temperature, with_pos=False)
            loss = 0.5 * (loss + (lse_c - pos))
        ctx.save_for_backward(a, b, lse_r, lse_c if symmetric else lse_r)
        ctx.temperature, ctx.symmetric, ctx.reduction = temperature, symmetric, reduction
        if reduction == "mean":
            loss = loss.mean()
        elif reduction == "sum":
            loss = loss.sum()
        return loss.to(a.dtype)

    @staticmethod
    def backward(ctx, grad):
        a, b, lse_r, lse_c = ctx.saved_tensors
        M = a.shape[0]
        acc = lse_r.dtype
        g = grad.to(acc)
        if ctx.reduction == "mean":
            w = (g / M).expand(M).contiguous()
        elif ctx.reduction == "sum":
            w = g.expand(M).contiguous()
        else:
            w = g.contiguous()
        tau = ctx.temperature
        if ctx.symmetric:
            w = 0.5 * w
            da = nce_grad(a, b, tau, lse_r, w, lse_c, w)
            db = nce_grad(b, a, tau, lse_c, w, lse_r, w)
        else:
            da = nce_grad(a, b, tau, lse_r, w, None, None)
            db = nce_grad(b, a, tau, None, None, lse_r, w)
        return da, db, None, None, None


def info_nce_triton(
    za: torch.Tensor, zb: torch.Tensor, temperature: float, symmetric: bool, reduction: str
) -> torch.Tensor:
    """Triton provider of :func:`mclner.ops.info_nce` (inputs validated by the op)."""
    a = F.normalize(za, dim=-1, eps=1e-12)
    b = F.normalize(zb, dim=-1, eps=1e-12)
    return InfoNCETriton.apply(a, b, float(temperature), bool(symmetric), reduction)
