"""Native (C++ CPU and CUDA) providers of the fused InfoNCE (docs/METHOD.md §4, §6).

The views are normalised here with ``F.normalize`` (eps 1e-12) so that torch's autograd chains the
normalisation's backward; the native kernels see the normalised ``a, b [M, P]``, keep an online
log-sum-exp over column tiles, save only the per-row (and per-column) log-sum-exp ``[M]`` and
recompute the logits tile by tile in the backward. Neither stores the M×M matrix.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mclner import _native
from mclner.ops._autograd import no_double_backward

OP = "info_nce"
REDUCTION_CODES = {"mean": 0, "sum": 1, "none": 2}


def _rows(t: torch.Tensor) -> torch.Tensor:
    """The kernels take a row stride but need unit column stride."""
    return t if t.stride(1) == 1 and t.stride(0) >= t.shape[1] else t.contiguous()


def _lse_dtype(kind: str, dtype: torch.dtype) -> torch.dtype:
    # CPU kernels accumulate in the input dtype (float32/float64); CUDA always in float32.
    return dtype if kind == "cpu" else torch.float32


def _tail_args(kind: str, device: torch.device, work_numel: int) -> list:
    """Trailing launch arguments: CPU (num_threads); CUDA (fp32 workspace pointer, device, stream).

    The CUDA workspace tensor is returned as the last element so it outlives the (asynchronous) launch
    through torch's caching allocator, which is stream-ordered.
    """
    if kind == "cpu":
        return [_native.num_threads()]
    work = torch.empty(work_numel, dtype=torch.float32, device=device)
    return [work.data_ptr(), *_native.cuda_launch_args(device), work]


@no_double_backward(OP)
class _InfoNCENormalized(torch.autograd.Function):
    """InfoNCE on already normalised views; one native forward and one native backward call."""

    @staticmethod
    def forward(ctx, a, b, temperature: float, symmetric: bool, reduction: str, kind: str):
        mod = _native.require_module(OP, kind)
        a, b = _rows(a.detach()), _rows(b.detach())
        M, P = a.shape
        code = REDUCTION_CODES[reduction]
        out = torch.empty(M if reduction == "none" else 1, dtype=a.dtype, device=a.device)
        lse_dtype = _lse_dtype(kind, a.dtype)
        row_lse = torch.empty(M, dtype=lse_dtype, device=a.device)
        col_lse = torch.empty(M, dtype=lse_dtype, device=a.device) if symmetric else None
        tail = _tail_args(kind, a.device, M)
        mod.info_nce_forward(
            a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), M, P, _native.dtype_code(a),
            float(temperature), bool(symmetric), code, out.data_ptr(), row_lse.data_ptr(),
            0 if col_lse is None else col_lse.data_ptr(), *tail[:3],
        )
        ctx.save_for_backward(a, b, row_lse, *(() if col_lse is None else (col_lse,)))
        ctx.info = (temperature, symmetric, code, kind)
        return out if reduction == "none" else out.reshape(())

    @staticmethod
    def backward(ctx, grad_out):
        temperature, symmetric, code, kind = ctx.info
        a, b, row_lse, *rest = ctx.saved_tensors
        col_lse = rest[0] if rest else None
        mod = _native.require_module(OP, kind)
        M, P = a.shape
        grad = grad_out.reshape(-1).to(a.dtype).contiguous()
        da = torch.empty((M, P), dtype=a.dtype, device=a.device)
        db = torch.empty((M, P), dtype=a.dtype, device=a.device)
        tail = _tail_args(kind, a.device, M + M * P)
        mod.info_nce_backward(
            a.data_ptr(), a.stride(0), b.data_ptr(), b.stride(0), M, P, _native.dtype_code(a),
            float(temperature), bool(symmetric), code, grad.data_ptr(), row_lse.data_ptr(),
            0 if col_lse is None else col_lse.data_ptr(), da.data_ptr(), db.data_ptr(), *tail[:3],
        )
        return da, db, None, None, None, None


def _info_nce_native(kind, za, zb, temperature, symmetric, reduction):
    a = F.normalize(za, dim=-1, eps=1e-12)
    b = F.normalize(zb, dim=-1, eps=1e-12)
    return _InfoNCENormalized.apply(a, b, float(temperature), bool(symmetric), reduction, kind)


def info_nce_cpu(
    za: torch.Tensor, zb: torch.Tensor, temperature: float, symmetric: bool, reduction: str
) -> torch.Tensor:
    """Fused InfoNCE with the native CPU kernels (float32/float64, OpenMP with torch's thread count)."""
    return _info_nce_native("cpu", za, zb, temperature, symmetric, reduction)


def info_nce_cuda(
    za: torch.Tensor, zb: torch.Tensor, temperature: float, symmetric: bool, reduction: str
) -> torch.Tensor:
    """Fused InfoNCE with the native CUDA kernels (float32/bfloat16/float16, fp32 accumulation),
    launched on torch's current stream of the tensors' device."""
    return _info_nce_native("cuda", za, zb, temperature, symmetric, reduction)
