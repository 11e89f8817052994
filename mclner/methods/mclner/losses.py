"""mCL-NER's loss terms over the relation grid (docs/METHOD.md §4): the grid cross-entropy with its
levers against the NONE majority, and the word pairs of the relation-level contrastive loss."""

from __future__ import annotations

import math
from typing import Dict, Optional

import torch

from mclner.methods.mclner.grid import NONE
from mclner.nn.losses import labelled_ce
from mclner.schema import IGNORE

NONE_SAMPLING = ("random", "hard")


def decoded_cells(n: int, device: Optional[torch.device] = None) -> torch.Tensor:
    """``[n, n]`` bool: the cells grid decoding reads, the lower triangle with the diagonal (THW: tail
    row ≥ head column) and the first super-diagonal (NNW: (k, k+1)); the rest are always NONE."""
    i = torch.arange(n, device=device)
    return i.unsqueeze(1) + 1 >= i.unsqueeze(0)


def grid_ce(logits: torch.Tensor, labels: torch.Tensor, *, none_weight: float = 1.0, focal_gamma: float = 0.0,
            none_keep: float = 1.0, none_sampling: str = "random", decoded_only: bool = False) -> torch.Tensor:
    """Cross-entropy over the labelled cells of relation logits ``[B, N, N, C]`` (labels ``[B, N, N]``).

    With the defaults: the plain mean (the paper's ``L_ce``). Otherwise, over the kept labelled cells K,
    ``sum_i w_i (1 - p_i)^focal_gamma (-log p_i) / sum_i w_i`` with ``p_i`` the probability of cell i's
    gold class and ``w_i = none_weight`` for NONE cells, 1 for the others (~99 % of the cells are NONE:
    a weight < 1 gives the entity cells more of the gradient; the focal factor takes it from the easy
    cells). ``none_keep < 1`` keeps only that fraction of the batch's NONE cells (every non-NONE cell
    stays): ``random`` draws each NONE cell with probability ``none_keep`` from torch's global generator
    (its state is in every resumable checkpoint, so ``--resume`` is exact); ``hard`` keeps the
    ``ceil(none_keep * #NONE)`` NONE cells of highest loss (online hard example mining, no randomness).
    ``decoded_only``: only the cells decoding reads (:func:`decoded_cells`) are labelled cells.
    """
    if decoded_only:
        labels = labels.masked_fill(~decoded_cells(labels.shape[-1], labels.device), IGNORE)
    if none_weight == 1.0 and focal_gamma == 0.0 and none_keep >= 1.0:
        return labelled_ce(logits, labels)  # the paper's loss, bit for bit
    if none_sampling not in NONE_SAMPLING:
        raise ValueError(f"none_sampling must be one of {NONE_SAMPLING}, got {none_sampling!r}")
    C = logits.shape[-1]
    y = labels.reshape(-1)
    valid = y != IGNORE
    if not bool(valid.any()):
        return logits.sum() * 0.0
    lg = logits.reshape(-1, C)[valid].float()
    y = y[valid]
    logp = lg.log_softmax(-1).gather(1, y.unsqueeze(1)).squeeze(1)
    loss = -logp
    if focal_gamma > 0.0:
        loss = (1.0 - logp.exp()).clamp_min(0.0).pow(focal_gamma) * loss
    is_none = y == NONE
    if none_keep < 1.0:
        if none_sampling == "random":
            drop = is_none & (torch.rand(y.shape, device=y.device) >= none_keep)
        else:
            n_none = int(is_none.sum())
            k = min(n_none, math.ceil(none_keep * n_none))
            hard = torch.zeros_like(is_none)
            if k > 0:
                score = loss.detach().masked_fill(~is_none, -math.inf)
                hard[score.topk(k).indices] = True
            drop = is_none & ~hard
        keep = ~drop
        if not bool(keep.any()):  # a batch of NONE cells, none drawn: nothing to learn this time
            return logits.sum() * 0.0
        loss, is_none = loss[keep], is_none[keep]
    w = torch.where(is_none, torch.full_like(loss, none_weight), torch.ones_like(loss))
    return (w * loss).sum() / w.sum()


def sample_relation_pairs(labels: torch.Tensor, word_mask: torch.Tensor, alignment: Optional[torch.Tensor],
                          none_ratio: float, max_pairs: int) -> Optional[Dict[str, torch.Tensor]]:
    """Word pairs for the relation-level contrastive loss: every labelled non-NONE pair whose words
    have a counterpart, plus ``none_ratio`` sampled NONE pairs per such pair, at most ``max_pairs``.

    alignment: ``[B, N]`` (one counterpart per source word) or ``[B, N, 2]`` (first and last
    counterpart word of each source word); None = the same sentence. A relation cell's row word maps
    to the LAST word of its translation and its column word to the FIRST: THW (tail e, head s) and
    NNW (k, k+1) then land on the counterpart's own THW/NNW cells even when a word became several.
    Returns ``b, i, j`` (source pairs) and ``ai, aj`` (counterpart pairs), or None below two pairs.
    """
    B, N, _ = labels.shape
    if alignment is None:
        alignment = torch.arange(N, device=labels.device).expand(B, N).masked_fill(~word_mask.bool(), -1)
    if alignment.dim() == 3:
        first, last = alignment[..., 0], alignment[..., 1]
    else:
        first = last = alignment
    ok = (first >= 0) & (last >= 0)
    pair_ok = ok.unsqueeze(2) & ok.unsqueeze(1) & labels.ne(IGNORE)
    pos = (pair_ok & labels.ne(NONE)).nonzero()
    neg = (pair_ok & labels.eq(NONE)).nonzero()
    n_pos = min(pos.shape[0], max_pairs)
    if n_pos < pos.shape[0]:
        pos = pos[torch.randperm(pos.shape[0], device=pos.device)[:n_pos]]
    n_neg = min(neg.shape[0], int(round(none_ratio * max(n_pos, 1))), max_pairs - n_pos)
    if n_neg > 0:
        neg = neg[torch.randperm(neg.shape[0], device=neg.device)[:n_neg]]
    else:
        neg = neg[:0]
    idx = torch.cat([pos, neg], 0)
    if idx.shape[0] < 2:  # InfoNCE needs at least one negative
        return None
    b, i, j = idx[:, 0], idx[:, 1], idx[:, 2]
    return {"b": b, "i": i, "j": j, "ai": last[b, i], "aj": first[b, j]}
