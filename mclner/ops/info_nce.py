"""Relation-level InfoNCE over cosine similarities (paper Eq. 6, docs/METHOD.md §4, §6).

loss_m = -log softmax_k(cos(za_m, zb_k) / τ)[m]; symmetric=True averages it with the column-wise
loss (zb_m against all za_k). The fused implementations never store the M×M matrix.
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

OP = "info_nce"
REDUCTIONS = ("mean", "sum", "none")


def reduce_loss(per_row: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return per_row.mean()
    if reduction == "sum":
        return per_row.sum()
    return per_row


def info_nce_reference(
    za: torch.Tensor,
    zb: torch.Tensor,
    temperature: float = 0.1,
    symmetric: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    """Pure PyTorch oracle: materialises the M×M logits."""
    a = F.normalize(za, dim=-1, eps=1e-12)
    b = F.normalize(zb, dim=-1, eps=1e-12)
    logits = (a @ b.transpose(0, 1)) / temperature
    target = torch.arange(za.shape[0], device=za.device)
    loss = F.cross_entropy(logits, target, reduction="none")
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.transpose(0, 1), target, reduction="none"))
    return reduce_loss(loss, reduction)


PROVIDERS = {
    "reference": lambda: info_nce_reference,
    "cpu": lazy("mclner.ops._native_info_nce", "info_nce_cpu"),
    "cuda": lazy("mclner.ops._native_info_nce", "info_nce_cuda"),
    "triton": lazy("mclner.kernels.info_nce", "info_nce_triton"),
}
DTYPES = {"reference": REFERENCE_DTYPES, "cpu": CPU_DTYPES, "cuda": GPU_DTYPES, "triton": TRITON_DTYPES}
GPU_ORDER = ("triton", "cuda")


def validate(za, zb, temperature, symmetric, reduction) -> tuple[torch.device, torch.dtype]:
    check_tensor(OP, "za", za, (None, None), "[M, P]")
    M, P = za.shape
    check_positive_dim(OP, "M", M)
    check_positive_dim(OP, "P", P)
    check_tensor(OP, "zb", zb, (M, P), "[M, P]")
    check_scalar(OP, "temperature", temperature)
    if not isinstance(symmetric, bool):
        raise TypeError(f"{OP}: argument 'symmetric' must be a bool, got {type(symmetric).__name__}")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{OP}: argument 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")
    return check_same(OP, {"za": za, "zb": zb})


def info_nce(
    za: torch.Tensor,
    zb: torch.Tensor,
    *,
    temperature: float = 0.1,
    symmetric: bool = False,
    reduction: str = "mean",
    impl: str = "auto",
) -> torch.Tensor:
    """InfoNCE between paired views: row m of ``za`` has its positive at row m of ``zb``.

    Args:
        za, zb: ``[M, P]`` projections of the two views (cosine similarity, ``F.normalize`` eps 1e-12).
        temperature: τ > 0. symmetric: average the row-wise and column-wise losses.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (per row, ``[M]``).
        impl: ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"`` or ``"cuda"``; the fused ones
            use an online log-sum-exp over column blocks and never store the M×M matrix.
    """
    device, dtype = validate(za, zb, temperature, symmetric, reduction)
    _, fn = resolve_impl(OP, impl, device, dtype, PROVIDERS, DTYPES, GPU_ORDER)
    return fn(za, zb, float(temperature), symmetric, reduction)
