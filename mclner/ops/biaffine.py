"""Biaffine relation scores S[b,i,j,c] = hs_iᵀ U_c he_j + W_c·[hs_i ; he_j] + b_c (docs/METHOD.md §3, §6)."""

from __future__ import annotations

import torch

from mclner.ops._common import (
    CPU_DTYPES,
    GPU_DTYPES,
    REFERENCE_DTYPES,
    TRITON_DTYPES,
    check_positive_dim,
    check_same,
    check_tensor,
    lazy,
    resolve_impl,
)

OP = "biaffine"


def biaffine_reference(
    hs: torch.Tensor, he: torch.Tensor, U: torch.Tensor, W: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Pure PyTorch oracle: materialises the bilinear and the two linear terms separately."""
    db = hs.shape[-1]
    bilinear = torch.einsum("bid,cde,bje->bijc", hs, U, he)
    row = (hs @ W[:, :db].transpose(0, 1)).unsqueeze(2)  # [B, N, 1, C]
    col = (he @ W[:, db:].transpose(0, 1)).unsqueeze(1)  # [B, 1, N, C]
    return bilinear + row + col + b


PROVIDERS = {
    "reference": lambda: biaffine_reference,
    "cpu": lazy("mclner.ops._native_biaffine", "biaffine_cpu"),
    "cuda": lazy("mclner.ops._native_biaffine", "biaffine_cuda"),
    "triton": lazy("mclner.kernels.biaffine", "biaffine_triton"),
}
DTYPES = {"reference": REFERENCE_DTYPES, "cpu": CPU_DTYPES, "cuda": GPU_DTYPES, "triton": TRITON_DTYPES}
GPU_ORDER = ("triton", "cuda")


def validate(hs, he, U, W, b) -> tuple[torch.device, torch.dtype]:
    check_tensor(OP, "hs", hs, (None, None, None), "[B, N, Db]")
    B, N, Db = hs.shape
    for name, v in (("B", B), ("N", N), ("Db", Db)):
        check_positive_dim(OP, name, v)
    check_tensor(OP, "he", he, (B, N, Db), "[B, N, Db]")
    check_tensor(OP, "U", U, (None, Db, Db), "[C, Db, Db]")
    C = U.shape[0]
    check_positive_dim(OP, "C", C)
    check_tensor(OP, "W", W, (C, 2 * Db), "[C, 2*Db]")
    check_tensor(OP, "b", b, (C,), "[C]")
    return check_same(OP, {"hs": hs, "he": he, "U": U, "W": W, "b": b})


def biaffine(
    hs: torch.Tensor,
    he: torch.Tensor,
    U: torch.Tensor,
    W: torch.Tensor,
    b: torch.Tensor,
    *,
    impl: str = "auto",
) -> torch.Tensor:
    """Biaffine scores ``S[b,i,j,c] = hs[b,i]ᵀ U[c] he[b,j] + W[c]·[hs[b,i]; he[b,j]] + b[c]``.

    Args:
        hs, he: start/end word representations ``[B, N, Db]``.
        U: bilinear weights ``[C, Db, Db]``; W: linear weights ``[C, 2·Db]`` (``torch.nn.Linear``
            layout over the concatenation ``[hs; he]``); b: bias ``[C]``.
        impl: ``"auto"`` (best runnable for the tensors' device), ``"reference"``, ``"cpu"``,
            ``"triton"`` or ``"cuda"``.

    Returns:
        ``S`` of shape ``[B, N, N, C]``, differentiable with respect to every input.
    """
    device, dtype = validate(hs, he, U, W, b)
    _, fn = resolve_impl(OP, impl, device, dtype, PROVIDERS, DTYPES, GPU_ORDER)
    return fn(hs, he, U, W, b)
