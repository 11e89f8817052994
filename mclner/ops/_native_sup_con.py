"""Native (C++ CPU and CUDA) providers of the fused supervised contrastive loss.

The features are normalised here with ``F.normalize`` (eps 1e-12) so that torch's autograd chains the
normalisation's backward; the native kernels see the normalised ``a [M, P]`` (and ``b [M2, P]``) and
compact int32 label ids. The forward keeps, per anchor, an online log-sum-exp over candidate tiles,
the sum of its positive logits and their count, and saves only these [M] vectors; the O(M) loss and
reduction are torch ops. The backward recomputes the logits tile by tile: in the two-set form one call
owns the rows of a (anchor terms), one the rows of b (candidate terms); in the one-set form a single
call owns the rows of a and adds both terms (the logits are symmetric there). Neither stores M×M.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from mclner import _native
from mclner.ops._autograd import no_double_backward
from mclner.ops.sup_con import anchor_weights, compact_labels, loss_from_stats

OP = "sup_con"


def _module(kind: str):
    mod = _native.cpu_module() if kind == "cpu" else _native.cuda_module()
    if mod is None:
        err = _native.cpu_error() if kind == "cpu" else _native.cuda_error()
        raise RuntimeError(f"{OP}: the native {kind} module is not available: {err}")
    return mod


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The kernels take a row stride but need unit column stride."""
    return t if t.stride(1) == 1 and t.stride(0) >= t.shape[1] else t.contiguous()


def _acc_dtype(kind: str, dtype: torch.dtype) -> torch.dtype:
    # CPU kernels accumulate in the input dtype (float32/float64); CUDA always in float32.
    return dtype if kind == "cpu" else torch.float32


def _tail_args(kind: str, device: torch.device, work_numel: Optional[int]) -> tuple[list, object]:
    """(trailing launch arguments, keep-alive). CPU: [num_threads]. CUDA: [fp32 workspace pointer]
    (when work_numel is not None), device index, stream; the workspace tensor is returned to be kept
    alive past the asynchronous launch (torch's caching allocator is stream-ordered). CPU tensors on
    the CUDA path (an emulated CUDA module) get device 0 and the null stream; the launchers set and
    restore the device themselves."""
    if kind == "cpu":
        return [_native.num_threads()], None
    tail = list(_native.cuda_launch_args(device))
    if work_numel is None:
        return tail, None
    work = torch.empty(max(1, work_numel), dtype=torch.float32, device=device)
    return [work.data_ptr()] + tail, work


def _forward_stats(kind, a, b, la, lb, temperature, one_set):
    mod = _module(kind)
    M, P = a.shape
    N = M if one_set else b.shape[0]
    acc = _acc_dtype(kind, a.dtype)
    lse, pos, cnt = (torch.empty(M, dtype=acc, device=a.device) for _ in range(3))
    tail, _keep = _tail_args(kind, a.device, None)
    mod.sup_con_forward(
        a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), M, N, P, _native.dtype_code(a), float(temperature),
        bool(one_set), la.data_ptr(), lb.data_ptr(), lse.data_ptr(), pos.data_ptr(), cnt.data_ptr(), *tail,
    )  # fmt: skip
    return lse, pos, cnt


def _grad(kind, x, y, lx, ly, temperature, one_set, row, col):
    """Gradient w.r.t. the rows of x; row/col = (w, c, lse) of the anchors on x's / y's side, or None."""
    mod = _module(kind)
    M, P = x.shape
    N = y.shape[0]
    dx = torch.empty((M, P), dtype=x.dtype, device=x.device)
    null = (0, 0, 0)
    rp = tuple(t.data_ptr() for t in row) if row is not None else null
    cp = tuple(t.data_ptr() for t in col) if col is not None else null
    tail, _keep = _tail_args(kind, x.device, M * P)
    mod.sup_con_backward(
        x.data_ptr(), x.stride(0), y.data_ptr(), y.stride(0), M, N, P, _native.dtype_code(x), float(temperature),
        bool(one_set), lx.data_ptr(), ly.data_ptr(), row is not None, col is not None, *rp, *cp, dx.data_ptr(), *tail,
    )  # fmt: skip
    return dx


@no_double_backward(OP)
class _SupConNormalized(torch.autograd.Function):
    """sup_con on already normalised features; b is None in the one-set form."""

    @staticmethod
    def forward(ctx, a, b, la, lb, temperature: float, reduction: str, kind: str):
        one_set = b is None
        a = _rows(a.detach())
        b = a if one_set else _rows(b.detach())
        lse, pos, cnt = _forward_stats(kind, a, b, la, lb, temperature, one_set)
        loss, counted = loss_from_stats(lse, pos, cnt, reduction, a.dtype)
        ctx.save_for_backward(a, *(() if one_set else (b,)), la, lb, lse, cnt, counted)
        ctx.info = (temperature, reduction, kind, one_set)
        return loss

    @staticmethod
    def backward(ctx, grad_out):
        temperature, reduction, kind, one_set = ctx.info
        if one_set:
            a, la, lb, lse, cnt, counted = ctx.saved_tensors
            b = a
        else:
            a, b, la, lb, lse, cnt, counted = ctx.saved_tensors
        terms = anchor_weights(grad_out, lse, cnt, counted, reduction)
        if one_set:
            da = _grad(kind, a, a, la, la, temperature, True, terms, terms)
            return da, None, None, None, None, None, None
        da = _grad(kind, a, b, la, lb, temperature, False, terms, None)
        db = _grad(kind, b, a, lb, la, temperature, False, None, terms)
        return da, db, None, None, None, None, None


def _sup_con_native(kind, z, labels, z2, labels2, temperature, reduction):
    a = F.normalize(z, dim=-1, eps=1e-12)
    b = None if z2 is None else F.normalize(z2, dim=-1, eps=1e-12)
    la, lb = compact_labels(labels, labels2)
    return _SupConNormalized.apply(a, b, la, lb, float(temperature), reduction, kind)


def sup_con_cpu(
    z: torch.Tensor,
    labels: torch.Tensor,
    z2: Optional[torch.Tensor],
    labels2: Optional[torch.Tensor],
    temperature: float,
    reduction: str,
) -> torch.Tensor:
    """Fused sup_con with the native CPU kernels (float32/float64, OpenMP with torch's thread count)."""
    return _sup_con_native("cpu", z, labels, z2, labels2, temperature, reduction)


def sup_con_cuda(
    z: torch.Tensor,
    labels: torch.Tensor,
    z2: Optional[torch.Tensor],
    labels2: Optional[torch.Tensor],
    temperature: float,
    reduction: str,
) -> torch.Tensor:
    """Fused sup_con with the native CUDA kernels (float32/bfloat16/float16, fp32 accumulation), launched
    on torch's current stream of the tensors' device."""
    return _sup_con_native("cuda", z, labels, z2, labels2, temperature, reduction)
