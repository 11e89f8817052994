"""Supervised contrastive loss with label-defined positives over cosine similarities.

Logits are ``L[i, k] = cos(z_i, c_k) / τ`` (``F.normalize``, eps 1e-12) between anchors ``z`` and
candidates ``c``:

* one set (``z2 is None``): the candidates are the rows of ``z`` itself, anchor i never counts
  itself: positives ``P(i) = {p ≠ i : labels[p] == labels[i]}``, denominator over all ``k ≠ i``;
* two sets: the candidates are the rows of ``z2`` only, ``P(i) = {j : labels2[j] == labels[i]}``,
  denominator over every row of ``z2``.

``loss_i = -1/|P(i)| Σ_{p∈P(i)} log softmax_k(L[i, k])[p] = lse_i - (Σ_{p∈P(i)} L[i, p]) / |P(i)|``.
A label < 0 marks an item that is never an anchor nor a positive (it stays a negative in every
denominator). Anchors without a positive are skipped: ``"none"`` gives them 0, ``"mean"`` averages
over the anchors that count (0, with zero gradients, when none does), ``"sum"`` adds them up.

With ``labels = labels2 = arange(M)`` the two-set form is :func:`mclner.ops.info_nce` (one positive
per row). The fused implementations never store the M×M (M×M2) matrix: one sweep over candidate
blocks keeps, per anchor, an online log-sum-exp, the sum of its positive logits and their count;
the backward recomputes the blocks from these per-row statistics.
"""

from __future__ import annotations

from typing import Optional

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

OP = "sup_con"
REDUCTIONS = ("mean", "sum", "none")


def sup_con_reference(
    z: torch.Tensor,
    labels: torch.Tensor,
    z2: Optional[torch.Tensor] = None,
    labels2: Optional[torch.Tensor] = None,
    temperature: float = 0.1,
    reduction: str = "mean",
) -> torch.Tensor:
    """Pure PyTorch oracle: materialises the M×M (M×M2) logits and the positive mask."""
    a = F.normalize(z, dim=-1, eps=1e-12)
    one_set = z2 is None
    b = a if one_set else F.normalize(z2, dim=-1, eps=1e-12)
    lb = labels if one_set else labels2
    logits = (a @ b.transpose(0, 1)) / temperature
    pos = (labels[:, None] == lb[None, :]) & (labels[:, None] >= 0)
    if one_set:
        eye = torch.eye(a.shape[0], dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(eye, float("-inf"))
        pos = pos & ~eye
    cnt = pos.sum(1)
    counted = cnt > 0
    # Rows that do not count get a finite dummy row: an all -inf row (one set, M = 1) would make the
    # log-sum-exp's backward 0·nan.
    lse = torch.logsumexp(torch.where(counted[:, None], logits, 0.0), dim=1)
    pos_sum = torch.where(pos, logits, 0.0).sum(1)
    loss = torch.where(counted, lse - pos_sum / cnt.clamp(min=1).to(logits.dtype), torch.zeros_like(lse))
    return reduce_loss(loss, counted, reduction)


def reduce_loss(per_row: torch.Tensor, counted: torch.Tensor, reduction: str) -> torch.Tensor:
    """mean over the anchors that count (0 when none does), sum, or the per-row losses."""
    if reduction == "mean":
        return per_row.sum() / counted.sum().clamp(min=1).to(per_row.dtype)
    if reduction == "sum":
        return per_row.sum()
    return per_row


# ----------------------------------------------------------------------------- fused-path glue
# O(M) pieces shared by the native and Triton providers: the kernels produce per-row statistics
# (lse, sum of positive logits, positive count) and take per-anchor weights in the backward.


def compact_labels(labels: torch.Tensor, labels2: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """int32 label ids for the kernels: equal labels get equal ids in [0, M + M2), labels < 0 get -1."""
    both = labels if labels2 is None else torch.cat([labels, labels2])
    both = both.to(torch.int64)
    _, inv = torch.unique(both, return_inverse=True)
    ids = torch.where(both >= 0, inv, torch.full_like(inv, -1)).to(torch.int32)
    if labels2 is None:
        return ids.contiguous(), ids.contiguous()
    n = labels.shape[0]
    return ids[:n].contiguous(), ids[n:].contiguous()


def loss_from_stats(
    lse: torch.Tensor, pos: torch.Tensor, cnt: torch.Tensor, reduction: str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss in `dtype`, counted mask) from the per-row statistics (accumulation dtype)."""
    counted = cnt > 0
    per_row = torch.where(counted, lse - pos / cnt.clamp(min=1), torch.zeros_like(lse))
    return reduce_loss(per_row, counted, reduction).to(dtype), counted


def anchor_weights(
    grad: torch.Tensor, lse: torch.Tensor, cnt: torch.Tensor, counted: torch.Tensor, reduction: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-anchor (w, c, lse_eff) for the backward, in the dtype of lse.

    dL/dL[i, k] = w_i·exp(L[i, k] - lse_eff_i) - c_i·[k ∈ P(i)] with w_i the upstream weight of
    loss_i and c_i = w_i / |P(i)|. Anchors that do not count get w = c = 0 and lse_eff = +inf, so
    their exp terms vanish instead of forming 0·inf.
    """
    acc = lse.dtype
    g = grad.to(acc)
    M = lse.shape[0]
    if reduction == "mean":
        w = (g / counted.sum().clamp(min=1).to(acc)).expand(M)
    elif reduction == "sum":
        w = g.expand(M)
    else:
        w = g.reshape(M)
    zero = torch.zeros_like(lse)
    w = torch.where(counted, w, zero).contiguous()
    c = torch.where(counted, w / cnt.clamp(min=1), zero).contiguous()
    lse_eff = torch.where(counted, lse, torch.full_like(lse, float("inf"))).contiguous()
    return w, c, lse_eff


# ----------------------------------------------------------------------------- dispatch

PROVIDERS = {
    "reference": lambda: sup_con_reference,
    "cpu": lazy("mclner.ops._native_sup_con", "sup_con_cpu"),
    "cuda": lazy("mclner.ops._native_sup_con", "sup_con_cuda"),
    "triton": lazy("mclner.kernels.sup_con", "sup_con_triton"),
}
DTYPES = {"reference": REFERENCE_DTYPES, "cpu": CPU_DTYPES, "cuda": GPU_DTYPES, "triton": TRITON_DTYPES}
GPU_ORDER = ("triton", "cuda")


def _check_labels(name: str, t: object, n: int, n_name: str, device: torch.device) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{OP}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
        raise TypeError(f"{OP}: argument '{name}' must be an integer tensor (int64), got dtype {t.dtype}")
    if t.dim() != 1 or t.shape[0] != n:
        raise ValueError(f"{OP}: argument '{name}' must have shape [{n_name}] = [{n}], got {list(t.shape)}")
    if t.device != device:
        raise ValueError(f"{OP}: argument '{name}' must be on the device of the features ({device}), got {t.device}")


def validate(z, labels, z2, labels2, temperature, reduction) -> tuple[torch.device, torch.dtype]:
    check_tensor(OP, "z", z, (None, None), "[M, P]")
    M, P = z.shape
    check_positive_dim(OP, "M", M)
    check_positive_dim(OP, "P", P)
    if (z2 is None) != (labels2 is None):
        raise ValueError(f"{OP}: arguments 'z2' and 'labels2' go together: give both (two sets) or neither (one set)")
    tensors = {"z": z}
    if z2 is not None:
        check_tensor(OP, "z2", z2, (None, P), "[M2, P]")
        check_positive_dim(OP, "M2", z2.shape[0])
        tensors["z2"] = z2
    device, dtype = check_same(OP, tensors)
    _check_labels("labels", labels, M, "M", device)
    if z2 is not None:
        _check_labels("labels2", labels2, z2.shape[0], "M2", device)
    check_scalar(OP, "temperature", temperature)
    if reduction not in REDUCTIONS:
        raise ValueError(f"{OP}: argument 'reduction' must be one of {REDUCTIONS}, got {reduction!r}")
    return device, dtype


def sup_con(
    z: torch.Tensor,
    labels: torch.Tensor,
    *,
    z2: Optional[torch.Tensor] = None,
    labels2: Optional[torch.Tensor] = None,
    temperature: float = 0.1,
    reduction: str = "mean",
    impl: str = "auto",
) -> torch.Tensor:
    """Supervised contrastive loss: the positives of an anchor are the candidates with its label.

    Args:
        z: ``[M, P]`` anchor features (cosine similarity, ``F.normalize`` eps 1e-12).
        labels: ``[M]`` integer labels of ``z``; a label < 0 is never an anchor nor a positive.
        z2, labels2: optional second set ``[M2, P]``, ``[M2]``. Without it the candidates of anchor i
            are the other rows of ``z``; with it, the rows of ``z2`` only.
        temperature: τ > 0.
        reduction: ``"mean"`` over the anchors with at least one positive, ``"sum"``, or ``"none"``
            (``[M]``, 0 for anchors without a positive).
        impl: ``"auto"``, ``"reference"``, ``"cpu"``, ``"triton"`` or ``"cuda"``; the fused ones
            never store the M×M matrix. Double backward is not supported by the fused ones.
    """
    device, dtype = validate(z, labels, z2, labels2, temperature, reduction)
    _, fn = resolve_impl(OP, impl, device, dtype, PROVIDERS, DTYPES, GPU_ORDER)
    return fn(z, labels, z2, labels2, float(temperature), reduction)
