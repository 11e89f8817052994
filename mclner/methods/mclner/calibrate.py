"""Calibrated decoding of the relation grid: a bias subtracted from the NONE logit at decoding time
(not in the losses), chosen on the source dev set (``--calibrate-none-bias``; docs/TRAINING.md).

An under-trained relation grid ranks the entity cells right but its NONE prior still wins the argmax
(low recall, high precision); lowering that logit at decoding time recovers the recall without
retraining.
"""

from __future__ import annotations

import math
from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from mclner.evaluation import predict_entities, score
from mclner.methods.mclner.grid import NONE, decode_grid

# Candidate NONE-logit biases for calibration: 0 (plain argmax) to e^6 ≈ 400× less NONE mass.
NONE_BIAS_GRID: Tuple[float, ...] = tuple(0.5 * k for k in range(13))


def shift_none(probs: torch.Tensor, bias: float) -> torch.Tensor:
    """``probs`` (classes last) with the NONE logit lowered by ``bias``: p_NONE·e^-bias, renormalised."""
    if not bias:
        return probs
    q = probs.clone()
    q[..., NONE] *= math.exp(-bias)
    return q / q.sum(-1, keepdim=True)


def calibrate_none_bias(
    model: torch.nn.Module,
    sentences: Sequence[Any],
    collator: Any,
    label_map: Any,
    *,
    grid: Sequence[float] = NONE_BIAS_GRID,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
    impl: str = "reference",
) -> Tuple[float, Dict[float, float]]:
    """The NONE-logit bias (from ``grid``) that maximises entity F1 on labelled ``sentences`` (the
    source dev set: no target labels are used), and the F1 of every candidate. Ties go to the smaller
    bias."""
    _, probs = predict_entities(model, sentences, collator, label_map, batch_size=batch_size, device=device,
                                impl=impl, return_probs=True, none_bias=0.0)
    # sentences decoded in windows have no scores (see predict_entities): they do not vote
    keep = [i for i, p in enumerate(probs) if p is not None]
    gold = [sentences[i].tags for i in keep]
    curve: Dict[float, float] = {}
    for b in grid:
        preds = [decode_grid(shift_none(probs[i], b), label_map) for i in keep]
        curve[float(b)] = score(gold, preds)["f1"]
    best = max(curve, key=lambda b: (curve[b], -b))
    return best, curve


def describe(none_bias: Optional[float], calibrated: float) -> str:
    """Which NONE bias decoding applies: the one given (``none_bias``) or the checkpoint's."""
    if none_bias is not None:
        return f"NONE bias {none_bias:g} (--none-bias)"
    if calibrated:
        return f"NONE bias {calibrated:g} (calibrated on the source dev set, kept in the checkpoint)"
    return "NONE bias 0 (plain argmax)"
