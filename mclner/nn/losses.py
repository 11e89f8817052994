"""Loss terms shared by the methods (docs/METHOD.md §4–§5): cross-entropy over labelled positions,
sentence- and pair-level InfoNCE (through `mclner.ops.info_nce`) and the teacher losses (probability
MSE, KL). A loss only one method has lives in that method's folder."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mclner import ops
from mclner.nn.encoder import masked_mean
from mclner.schema import IGNORE


def labelled_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose label is not IGNORE (classes last)."""
    C = logits.shape[-1]
    if not bool((labels != IGNORE).any()):  # nothing to learn here: a zero that keeps the graph
        return logits.sum() * 0.0
    return F.cross_entropy(logits.reshape(-1, C).float(), labels.reshape(-1), ignore_index=IGNORE)


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled words of tag logits ``[B, N, T]``."""
    return labelled_ce(logits, labels)


def sentence_info_nce(h_a: torch.Tensor, mask_a: torch.Tensor, h_b: torch.Tensor, mask_b: torch.Tensor,
                      temperature: float, impl: str = "reference") -> torch.Tensor:
    """InfoNCE between the masked-mean sentence vectors of two aligned batches (row b's positive is
    row b of the other view; the batch's other sentences are the negatives)."""
    za = masked_mean(h_a, mask_a)
    zb = masked_mean(h_b, mask_b).to(za.dtype)
    if za.shape[0] < 2:  # no negative in a one-sentence batch
        return za.sum() * 0
    return ops.info_nce(za, zb, temperature=temperature, impl=impl)


def relation_info_nce(z_a: torch.Tensor, z_b: torch.Tensor, temperature: float,
                      impl: str = "reference") -> torch.Tensor:
    """InfoNCE over M sampled relation pairs: row m of view A against all M rows of view B."""
    return ops.info_nce(z_a, z_b.to(z_a.dtype), temperature=temperature, impl=impl)


def prob_mse(logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions of the squared distance between the student's softmax and the
    teacher's distribution (classes last; the sum over classes per position)."""
    diff = (logits.float().softmax(-1) - teacher_probs.float()) ** 2
    return diff.sum(-1)[mask].mean() if bool(mask.any()) else diff.sum() * 0


def kl_to_teacher(logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the masked positions of KL(teacher ‖ student) (classes last)."""
    logp = logits.float().log_softmax(-1)
    t = teacher_probs.float()
    kl = (t * (t.clamp_min(1e-12).log() - logp)).sum(-1)
    return kl[mask].mean() if bool(mask.any()) else kl.sum() * 0
