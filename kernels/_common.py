"""Helpers shared by the Triton kernels of biaffine and info_nce: precision policy and tile sizing."""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation/intermediate dtype: fp32 for fp32/bf16/fp16, fp64 for fp64 (interpreter)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def _upcast(dtype: torch.dtype) -> bool:
    """The interpreter's tl.dot multiplies bfloat16 tiles as their raw 16-bit patterns (numpy has no
    bfloat16), so there the tiles are widened to fp32 first; GPUs use the bf16 tensor-core dot."""
    return _interpreting() and dtype == torch.bfloat16


def _ieee(dtype: torch.dtype) -> bool:
    """fp32/fp64 tiles (and interpreter-widened bf16 ones) are multiplied in full IEEE precision."""
    return dtype in (torch.float32, torch.float64) or _upcast(dtype)


@triton.jit
def _mma(acc, a, b, ACC: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """acc + a @ b: fp32/fp64 operands in IEEE precision (no TF32), bf16/fp16 ones on the tensor
    cores with ACC accumulation (input_precision only concerns fp32 operands, so it is left out)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if IEEE:
        return acc + tl.dot(a, b, input_precision="ieee", out_dtype=ACC)
    else:
        return acc + tl.dot(a, b, out_dtype=ACC)
