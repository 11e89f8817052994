"""Triton supervised contrastive loss over cosine similarities without the M×M (M×M2) matrix.

torch normalises the features (``F.normalize``, eps 1e-12) and chains that backward; the Triton
Function works on the unit rows: anchors x [M, P], candidates y [N, P] (y = x in the one-set form,
where the pair i = k is left out), logits l[i, k] = x_i·y_k / τ, and compact int32 label ids (equal
labels equal ids, −1 never an anchor nor a positive; ``mclner.ops.sup_con.compact_labels``).

* forward: one program per block of anchor rows sweeps the candidates with an online log-sum-exp
  (running max and running sum, fp32) and sums the positive logits and their count. Only these three
  [M] vectors are saved; the O(M) loss and reduction are torch ops.
* backward: with per-anchor weights w, c = w / |P(i)| and lse (+inf for anchors that do not count),
  dl[i, k] = w_i·exp(l[i, k] − lse_i) − c_i·[k positive of i]; dX = dl Y / τ by a program per block of
  X's rows sweeping Y, for X = anchors (row terms) and X = candidates (column terms, the kernel reads
  the logits transposed). The one-set form needs one launch with both terms, since l is symmetric.
  Every program owns its output rows (no atomics) and the logits are recomputed.

Extra memory is O((M + N)·P) (the normalised features) plus O(M) vectors.
"""

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from mclner.ops._autograd import no_double_backward
from mclner.ops.sup_con import anchor_weights, compact_labels, loss_from_stats

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

OP = "sup_con"


def _blocks(M: int, N: int, P: int, dtype: torch.dtype, kind: str) -> Tuple[int, int, int, int]:
    """Default (BLOCK_O own rows, BLOCK_T other rows, BLOCK_K logit chunk of P, BLOCK_D output chunk of
    P) of the "stats" or "bwd" kernel, as for info_nce: large tiles and the whole P at once in the
    interpreter, tl.dot-friendly ones on a GPU, narrower fp32 (FMA) tiles that do not spill."""
    if _interpreting():
        full = _pow2(P, 16, 256)
        return _pow2(M, 16, 1024), _pow2(N, 16, 1024), full, full
    if dtype == torch.float32:  # its label masks cost registers: 32 other rows, and 32 own rows backward
        return _pow2(M, 16, 64 if kind == "stats" else 32), _pow2(N, 16, 32), _pow2(P, 16, 32), _pow2(P, 16, 128)
    return _pow2(M, 16, 64), _pow2(N, 16, 64), _pow2(P, 16, 64), _pow2(P, 16, 128)


# Default num_warps, num_stages and autotune candidates, as in kernels/info_nce.py (checked the same way).
_DEFAULT_WARPS = {("stats", False): (4, 3), ("bwd", False): (8, 3), ("stats", True): (8, 3), ("bwd", True): (8, 2)}
_CANDIDATES = {
    ("stats", False): [(128, 64, 64, 0, 8, 3), (64, 64, 64, 0, 8, 3), (64, 64, 128, 0, 4, 2)],
    ("bwd", False): [(64, 64, 32, 128, 8, 2), (64, 32, 64, 128, 4, 3)],
    ("stats", True): [(64, 64, 32, 0, 8, 2)],
    ("bwd", True): [(64, 32, 32, 64, 8, 2)],
}


def _configs(kind: str, M: int, N: int, P: int, dtype: torch.dtype, arch: int) -> list:
    """Launch configurations of the "stats" or "bwd" kernel on sm_`arch`, the default first."""
    names = ("BLOCK_O", "BLOCK_T", "BLOCK_K") + (("BLOCK_D",) if kind == "bwd" else ())
    key = (kind, dtype == torch.float32)
    caps = (_pow2(M, 16, 1024), _pow2(N, 16, 1024), _pow2(P, 16, 256), _pow2(P, 16, 256))
    return tile_configs(names, _blocks(M, N, P, dtype, kind), _DEFAULT_WARPS[key], _CANDIDATES[key], caps)


# ----------------------------------------------------------------------------- kernels


@triton.jit
def _sc_stats_kernel(
    X_ptr,  # [M, P] anchors
    Y_ptr,  # [N, P] candidates
    LX_ptr,  # [M] int32 label ids of the anchors
    LY_ptr,  # [N] int32 label ids of the candidates
    lse_ptr,  # [M] acc dtype: LSE over the candidates
    pos_ptr,  # [M] acc dtype: sum of the positive logits
    cnt_ptr,  # [M] acc dtype: number of positives
    M,
    N,
    P,
    inv_tau,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    ONE_SET: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    om = o < M
    lx = tl.load(LX_ptr + o, mask=om, other=-1)
    tt = tl.arange(0, BLOCK_T)
    run_max = tl.full([BLOCK_O], float("-inf"), dtype=ACC)
    run_sum = tl.zeros([BLOCK_O], dtype=ACC)
    pos = tl.zeros([BLOCK_O], dtype=ACC)
    cnt = tl.zeros([BLOCK_O], dtype=ACC)
    for t0 in range(0, N, BLOCK_T):
        t = t0 + tt
        tm = t < N
        ly = tl.load(LY_ptr + t, mask=tm, other=-2)
        l = _logits_tile(X_ptr, Y_ptr, o, t, om, tm, P, inv_tau, ACC, UPCAST, IEEE, BLOCK_O, BLOCK_T, BLOCK_K)
        valid = om[:, None] & tm[None, :]
        if ONE_SET:
            valid = valid & (o[:, None] != t[None, :])
        l = tl.where(valid, l, float("-inf"))
        match = valid & (lx[:, None] >= 0) & (lx[:, None] == ly[None, :])
        pos += tl.sum(tl.where(match, l, 0.0), axis=1)
        cnt += tl.sum(tl.where(match, 1.0, 0.0), axis=1)
        new_max = tl.maximum(run_max, tl.max(l, axis=1))
        # A tile may hold no valid column for a row (the one-set diagonal alone): keep exp() off -inf - -inf.
        ref = tl.where(new_max == float("-inf"), 0.0, new_max)
        run_sum = run_sum * tl.exp(run_max - ref) + tl.sum(tl.exp(l - ref[:, None]), axis=1)
        run_max = new_max
    # No valid candidate at all (one set, M = 1; padding rows): lse = -inf, without log(0).
    lse = tl.where(run_sum > 0, run_max + tl.log(tl.where(run_sum > 0, run_sum, 1.0)), float("-inf"))
    tl.store(lse_ptr + o, lse, mask=om)
    tl.store(pos_ptr + o, pos, mask=om)
    tl.store(cnt_ptr + o, cnt, mask=om)


@triton.jit
def _sc_bwd_kernel(
    X_ptr,  # [M, P] own rows (their gradient is computed)
    Y_ptr,  # [N, P] other rows
    LX_ptr,  # [M] int32 label ids of X
    LY_ptr,  # [N] int32 label ids of Y
    wx_ptr,  # [M] anchor weights of X's rows (ROW)
    cx_ptr,  # [M]
    lx_ptr,  # [M] anchor lse of X's rows
    wy_ptr,  # [N] anchor weights of Y's rows (COL)
    cy_ptr,  # [N]
    ly_ptr,  # [N]
    dX_ptr,  # [M, P] output, input dtype
    M,
    N,
    P,
    inv_tau,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    ONE_SET: tl.constexpr,
    ROW: tl.constexpr,
    COL: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """dX[o, d-chunk] = Σ_t dl[o, t] Y[t, d-chunk] / τ with dl the sum of the anchor terms that apply:
    ROW: w_x[o] e^(l − lse_x[o]) − c_x[o]·match; COL: w_y[t] e^(l − lse_y[t]) − c_y[t]·match."""
    o = tl.program_id(0) * BLOCK_O + tl.arange(0, BLOCK_O)
    d = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    om = o < M
    dm = d < P
    labx = tl.load(LX_ptr + o, mask=om, other=-2)
    tt = tl.arange(0, BLOCK_T)
    if ROW:
        w_x = tl.load(wx_ptr + o, mask=om, other=0.0)
        c_x = tl.load(cx_ptr + o, mask=om, other=0.0)
        lse_x = tl.load(lx_ptr + o, mask=om, other=float("inf"))
    acc = tl.zeros([BLOCK_O, BLOCK_D], dtype=ACC)
    for t0 in range(0, N, BLOCK_T):
        t = t0 + tt
        tm = t < N
        laby = tl.load(LY_ptr + t, mask=tm, other=-3)
        l = _logits_tile(X_ptr, Y_ptr, o, t, om, tm, P, inv_tau, ACC, UPCAST, IEEE, BLOCK_O, BLOCK_T, BLOCK_K)
        valid = om[:, None] & tm[None, :]
        if ONE_SET:
            valid = valid & (o[:, None] != t[None, :])
        # Left-out pairs and padding get -inf logits: their exp terms vanish instead of overflowing.
        l = tl.where(valid, l, float("-inf"))
        match = valid & (labx[:, None] == laby[None, :])
        g = tl.zeros([BLOCK_O, BLOCK_T], dtype=ACC)
        if ROW:
            g += w_x[:, None] * tl.exp(l - lse_x[:, None]) - tl.where(match, c_x[:, None], 0.0)
        if COL:
            w_y = tl.load(wy_ptr + t, mask=tm, other=0.0)
            c_y = tl.load(cy_ptr + t, mask=tm, other=0.0)
            lse_y = tl.load(ly_ptr + t, mask=tm, other=float("inf"))
            g += w_y[None, :] * tl.exp(l - lse_y[None, :]) - tl.where(match, c_y[None, :], 0.0)
        y = tl.load(Y_ptr + t[:, None] * P + d[None, :], mask=tm[:, None] & dm[None, :], other=0.0)
        acc = _mma(acc, g.to(Y_ptr.dtype.element_ty), y, ACC, UPCAST, IEEE)
    acc = acc * inv_tau
    tl.store(dX_ptr + o[:, None] * P + d[None, :], acc.to(dX_ptr.dtype.element_ty), mask=om[:, None] & dm[None, :])


# ----------------------------------------------------------------------------- launchers


def sc_stats(
    X: torch.Tensor, Y: torch.Tensor, lx: torch.Tensor, ly: torch.Tensor, temperature: float, one_set: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor: (lse, sum of positive logits, positive count), in the accumulation dtype."""
    M, P = X.shape
    N = Y.shape[0]
    acc = _acc_dtype(X.dtype)
    lse, pos, cnt = (torch.empty(M, device=X.device, dtype=acc) for _ in range(3))
    launch(
        _sc_stats_kernel,
        lambda meta: (triton.cdiv(M, meta["BLOCK_O"]),),
        (X, Y, lx, ly, lse, pos, cnt, M, N, P, 1.0 / temperature),
        dict(ACC=_tl_acc(X.dtype), UPCAST=_upcast(X.dtype), IEEE=_ieee(X.dtype), ONE_SET=one_set),
        _configs("stats", M, N, P, X.dtype, _arch(X)),
        key=("P",),
    )
    return lse, pos, cnt


def sc_grad(
    X: torch.Tensor,
    Y: torch.Tensor,
    lx: torch.Tensor,
    ly: torch.Tensor,
    temperature: float,
    one_set: bool,
    row: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
    col: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Gradient w.r.t. the rows of X; row/col = (w, c, lse) of the anchors on X's / Y's side, or None."""
    M, P = X.shape
    N = Y.shape[0]
    dX = torch.empty_like(X)
    some = row if row is not None else col
    r = row if row is not None else some
    c = col if col is not None else some
    launch(
        _sc_bwd_kernel,
        lambda meta: (triton.cdiv(M, meta["BLOCK_O"]), triton.cdiv(P, meta["BLOCK_D"])),
        (X, Y, lx, ly, *r, *c, dX, M, N, P, 1.0 / temperature),
        dict(ACC=_tl_acc(X.dtype), UPCAST=_upcast(X.dtype), IEEE=_ieee(X.dtype), ONE_SET=one_set,
             ROW=row is not None, COL=col is not None),
        _configs("bwd", M, N, P, X.dtype, _arch(X)),
        key=("P",),
    )  # fmt: skip
    return dX


# ----------------------------------------------------------------------------- autograd


@no_double_backward(OP)
class SupConTriton(torch.autograd.Function):
    """sup_con on already normalised rows a [M, P] (and b [N, P], None in the one-set form); saves the
    rows, the label ids and three [M] vectors only."""

    @staticmethod
    def forward(ctx, a, b, la, lb, temperature: float, reduction: str):
        one_set = b is None
        a = a.contiguous()
        b = a if one_set else b.contiguous()
        lse, pos, cnt = sc_stats(a, b, la, lb, temperature, one_set)
        loss, counted = loss_from_stats(lse, pos, cnt, reduction, a.dtype)
        ctx.save_for_backward(a, *(() if one_set else (b,)), la, lb, lse, cnt, counted)
        ctx.info = (temperature, reduction, one_set)
        return loss

    @staticmethod
    def backward(ctx, grad):
        temperature, reduction, one_set = ctx.info
        if one_set:
            a, la, lb, lse, cnt, counted = ctx.saved_tensors
        else:
            a, b, la, lb, lse, cnt, counted = ctx.saved_tensors
        terms = anchor_weights(grad, lse, cnt, counted, reduction)
        if one_set:
            return sc_grad(a, a, la, la, temperature, True, terms, terms), None, None, None, None, None
        da = sc_grad(a, b, la, lb, temperature, False, terms, None)
        db = sc_grad(b, a, lb, la, temperature, False, None, terms)
        return da, db, None, None, None, None


def sup_con_triton(
    z: torch.Tensor,
    labels: torch.Tensor,
    z2: Optional[torch.Tensor],
    labels2: Optional[torch.Tensor],
    temperature: float,
    reduction: str,
) -> torch.Tensor:
    """Triton provider of :func:`mclner.ops.sup_con` (inputs validated by the op)."""
    a = F.normalize(z, dim=-1, eps=1e-12)
    b = None if z2 is None else F.normalize(z2, dim=-1, eps=1e-12)
    la, lb = compact_labels(labels, labels2)
    return SupConTriton.apply(a, b, la, lb, float(temperature), reduction)
