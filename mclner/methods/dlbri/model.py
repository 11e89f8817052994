"""The DLBri model and its loss terms (docs/METHOD.md §8.4).

One module holds every part the stages train: four word encoders (span students 1 and 2, type
students 1 and 2; the bridging stages train the span students' encoders, which then initialise the
type students'), a span head (B/I/O) and a type head (O + types) per student, a boundary scorer
(``Score_bd``) per span student, and the subtask-combination module (label attention and biaffine
co-interaction between span and type features, with its own classifiers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn as nn

from mclner import ops
from mclner.methods.base import DictConfig, Entity, NERModel
from mclner.nn import WordEncoder

SPAN_TAGS = ("O", "B", "I")
# encoder slots: span students 1, 2 then type students 1, 2
SPAN, TYPE = 0, 2


@dataclass
class DLBriModelConfig(DictConfig):
    """Architecture and decoding of a DLBri model; stored as ``config.json["model"]``."""

    types: List[str] = field(default_factory=list)  # entity types; type labels are ["O", *types]
    dropout: float = 0.1
    encoder_hidden: int = 0
    boundary_dim: int = 64
    # decoding: "combination" (the combined span/type classifiers) or "student" (student `student`)
    decode_with: str = "student"
    student: int = 1  # 1 or 2 (checkpoints written before this was an int hold 1.0 or 2.0)



class BoundaryScorer(nn.Module):
    """``Score_bd(i, j) = q_iᵀ k_j + w_bd·(h_i + h_j)`` with ``q = W_q h + b_q``, ``k = W_k h + b_k``."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.q = nn.Linear(dim, width)
        self.k = nn.Linear(dim, width)
        self.w = nn.Linear(dim, 1, bias=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        lin = self.w(h).squeeze(-1)  # [B, N]
        return self.q(h) @ self.k(h).transpose(1, 2) + lin.unsqueeze(2) + lin.unsqueeze(1)


class Combination(nn.Module):
    """Label attention (``H̃ = H + softmax(H Wᵀ) W`` with a classifier's weights W as label embeddings)
    and biaffine co-interaction between span and type features, then span/type classifiers over
    ``[H̃_c ; Σ_j α_ij H̃_other,j]`` (attention over the other subtask's words, padding masked)."""

    def __init__(self, dim: int, num_span: int, num_type: int) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.empty(2, 1, dim, dim))  # [sp→tp, tp→sp] bilinear terms
        self.W = nn.Parameter(torch.empty(2, 1, 2 * dim))
        self.b = nn.Parameter(torch.zeros(2, 1))
        nn.init.xavier_uniform_(self.U)
        nn.init.xavier_uniform_(self.W)
        self.span_out = nn.Linear(2 * dim, num_span)
        self.type_out = nn.Linear(2 * dim, num_type)

    @torch.no_grad()
    def start_from(self, span_head: nn.Linear, type_head: nn.Linear) -> None:
        """Start the span and type classifiers as the given student heads on the first half of their
        input (the label-attended own features) and zero on the co-attended half: the stage then starts
        near the students it is distilled from, instead of from random classifiers that have to learn
        the rare classes (I, and types) from a KL dominated by O words."""
        for out, head in ((self.span_out, span_head), (self.type_out, type_head)):
            d = head.in_features
            out.weight.zero_()
            out.weight[:, :d].copy_(head.weight)
            out.bias.copy_(head.bias)

    @staticmethod
    def label_attention(h: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return h + torch.softmax(h @ labels.to(h.dtype).t(), -1) @ labels.to(h.dtype)

    def forward(self, h_sp: torch.Tensor, h_tp: torch.Tensor, w_sp: torch.Tensor, w_tp: torch.Tensor,
                word_mask: torch.Tensor, impl: str = "reference") -> Tuple[torch.Tensor, torch.Tensor]:
        hs = self.label_attention(h_sp, w_sp)
        ht = self.label_attention(h_tp, w_tp)
        dt = hs.dtype
        pad = ~word_mask.bool().unsqueeze(1)  # [B, 1, N]: padding words are never attended to
        r_sp = ops.biaffine(hs, ht, self.U[0].to(dt), self.W[0].to(dt), self.b[0].to(dt), impl=impl)[..., 0]
        r_tp = ops.biaffine(ht, hs, self.U[1].to(dt), self.W[1].to(dt), self.b[1].to(dt), impl=impl)[..., 0]
        a_sp = torch.softmax(r_sp.float().masked_fill(pad, float("-inf")), -1).to(dt)
        a_tp = torch.softmax(r_tp.float().masked_fill(pad, float("-inf")), -1).to(dt)
        hs2 = torch.cat([hs, a_sp @ ht], -1)
        ht2 = torch.cat([ht, a_tp @ hs], -1)
        return self.span_out(hs2), self.type_out(ht2)


class DLBriModel(NERModel):
    method = "dlbri"

    def __init__(self, encoder: nn.Module, config: DLBriModelConfig) -> None:
        import copy

        super().__init__()
        self.config = config
        # four encoders from the same pretrained weights (deep copies: nothing re-initialised)
        self.enc = nn.ModuleList([WordEncoder(encoder if k == 0 else copy.deepcopy(encoder), "none", config.dropout)
                                  for k in range(4)])
        d = self.enc[0].dim
        config.encoder_hidden = self.enc[0].encoder_hidden
        nt = len(config.types) + 1
        self.span_head = nn.ModuleList([nn.Linear(d, len(SPAN_TAGS)) for _ in range(2)])
        self.type_head = nn.ModuleList([nn.Linear(d, nt) for _ in range(2)])
        self.boundary = nn.ModuleList([BoundaryScorer(d, config.boundary_dim) for _ in range(2)])
        self.comb = Combination(d, len(SPAN_TAGS), nt)

    # -- parts
    def words(self, slot: int, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Word states of encoder ``slot`` (0, 1: span students; 2, 3: type students)."""
        return self.enc[slot](batch)

    def entity_states(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        """Word states for entity plots: the type student of the pair that decodes (pair 1 under the
        combination, which reads pair 1's encoders), the encoder that learns what an entity is."""
        k = 0 if self.config.decode_with == "combination" else int(round(self.config.student)) - 1
        return self.words(TYPE + k, batch)

    def student_logits(self, k: int, batch: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(span logits, type logits) of student pair ``k`` (0 or 1)."""
        return self.span_head[k](self.words(SPAN + k, batch)), self.type_head[k](self.words(TYPE + k, batch))

    def combined_logits(self, batch: Dict[str, torch.Tensor],
                        impl: str = "reference") -> Tuple[torch.Tensor, torch.Tensor]:
        h_sp, h_tp = self.words(SPAN, batch), self.words(TYPE, batch)
        return self.comb(h_sp, h_tp, self.span_head[0].weight, self.type_head[0].weight, batch["word_mask"], impl)

    @torch.no_grad()
    def decode(self, batch: Dict[str, torch.Tensor], label_map: Any, *, impl: str = "reference",
               return_scores: bool = False, **_: Any) -> List[Tuple[List[Entity], Optional[torch.Tensor]]]:
        """Spans from the span tags; each span's type is the type label of its last word; O drops it.
        Scores: per word an IOB2 tag distribution ``[n, 1 + 2·types]`` (:func:`joint_tag_probs`)."""
        if self.config.decode_with == "combination":
            sp, tp = self.combined_logits(batch, impl)
        else:
            sp, tp = self.student_logits(int(round(self.config.student)) - 1, batch)
        p_sp, p_tp = sp.float().softmax(-1).cpu(), tp.float().softmax(-1).cpu()
        span_ids, type_ids = p_sp.argmax(-1), p_tp.argmax(-1)
        out = []
        for r, n in enumerate(batch["word_mask"].sum(1).tolist()):
            n = int(n)
            ents = decode_entities(span_ids[r, :n].tolist(), type_ids[r, :n].tolist(), self.config.types)
            scores = joint_tag_probs(p_sp[r, :n], p_tp[r, :n]) if return_scores else None
            out.append((ents, scores))
        return out


def joint_tag_probs(p_span: torch.Tensor, p_type: torch.Tensor) -> torch.Tensor:
    """Per word, the IOB2 tag distribution (``tag_vocabulary`` order: O, B-t1, I-t1, …) of independent
    span ``[n, 3]`` (O/B/I) and type ``[n, 1 + T]`` (O + types) distributions: ``P(B-t) = P(B)·P(t)``,
    ``P(I-t) = P(I)·P(t)``, and O takes the rest (span O, or a span word typed O)."""
    n, T = p_type.shape[0], p_type.shape[1] - 1
    out = p_span.new_zeros(n, 1 + 2 * T)
    out[:, 1::2] = p_span[:, 1:2] * p_type[:, 1:]
    out[:, 2::2] = p_span[:, 2:3] * p_type[:, 1:]
    out[:, 0] = p_span[:, 0] + (p_span[:, 1] + p_span[:, 2]) * p_type[:, 0]
    return out


def decode_entities(span_ids: Sequence[int], type_ids: Sequence[int], types: Sequence[str]) -> List[Entity]:
    """Entities from per-word span ids (``SPAN_TAGS``) and type ids (0 = O, k = ``types[k-1]``): a span
    starts at B (or at an I that follows O) and runs over the following I's; its type is the type of
    its rightmost word; a span whose rightmost word has type O is dropped."""
    out: List[Entity] = []
    start = -1
    for i, s in enumerate(list(span_ids) + [0]):
        tag = SPAN_TAGS[s]
        if start >= 0 and tag != "I":
            t = type_ids[i - 1]
            if t > 0:
                out.append((start, i - 1, types[t - 1]))
            start = -1
        if tag == "B" or (tag == "I" and start < 0):
            start = i
    return out


# ----------------------------------------------------------------------------- loss terms


def bridging_loss(h_a: torch.Tensor, ids_a: torch.Tensor, mask_a: torch.Tensor, h_b: torch.Tensor,
                  ids_b: torch.Tensor, mask_b: torch.Tensor, temperature: float,
                  impl: str = "reference") -> torch.Tensor:
    """Token contrastive bridging loss over a pair batch, both directions: an entity word of one
    sentence has as positives the words of the same entity in its pair sentence and as candidates all
    words of the other side of the batch (``ops.sup_con``, two-set form); words outside entities
    (id −1) are negatives only. Mean over the anchors of both directions."""
    ma, mb = mask_a.bool(), mask_b.bool()
    za, zb = h_a[ma], h_b[mb].to(h_a.dtype)
    ya, yb = ids_a[ma], ids_b[mb]
    la = ops.sup_con(za, ya, z2=zb, labels2=yb, temperature=temperature, reduction="sum", impl=impl)
    lb = ops.sup_con(zb, yb, z2=za, labels2=ya, temperature=temperature, reduction="sum", impl=impl)
    n = int((ya[:, None] == yb[None, :]).logical_and(ya[:, None] >= 0).any(1).sum()) + \
        int((yb[:, None] == ya[None, :]).logical_and(yb[:, None] >= 0).any(1).sum())
    return (la + lb) / max(n, 1)


LP_THRESHOLDS = ("delta", "lower")
COM_THRESHOLDS = ("delta", "mean")


def adaptive_delta(max_prob: torch.Tensor, sign: float = 1.0) -> torch.Tensor:
    """Confidence threshold of a mini-batch: mean + (population) standard deviation of the words'
    maximum probabilities (``sign=-1``: mean − std, the lower tail; ``sign=0``: the mean)."""
    x = max_prob.detach().float()
    return x.mean() + sign * x.std(correction=0) if x.numel() > 1 else x.mean()


def confidence_terms(logits: torch.Tensor, peer_probs: torch.Tensor, mask: torch.Tensor,
                     delta: Optional[float], lp_threshold: str = "delta",
                     com_threshold: str = "delta") -> Dict[str, torch.Tensor]:
    """Co-matching (cross-entropy towards the peer's argmax where the peer's max probability exceeds
    its threshold) and self-penalisation (−log(1 − p) of the model's own argmax where its max
    probability is below its threshold), each a mean over the masked words (sum over the selected
    words / masked words). δ is the given number or, when None, :func:`adaptive_delta` of the
    respective model on this batch. Under the adaptive δ, the co-matching threshold is δ = mean + std
    of the peer's max probabilities (``com_threshold="delta"``, Eq. 3 as printed) or their mean
    (``"mean"``: the words the peer is surer of than on average), and the self-penalisation threshold
    is that δ (``lp_threshold="delta"``, Eq. 4 as printed) or the mean − std of the model's own max
    probabilities (``"lower"``, only the low tail). Also the shares of the words each term selects
    (``com_share``, ``p_share``)."""
    if lp_threshold not in LP_THRESHOLDS:
        raise ValueError(f"lp_threshold must be one of {LP_THRESHOLDS}, not {lp_threshold!r}")
    if com_threshold not in COM_THRESHOLDS:
        raise ValueError(f"com_threshold must be one of {COM_THRESHOLDS}, not {com_threshold!r}")
    m = mask.bool()
    logp = logits.float().log_softmax(-1)[m]  # [W, C]
    peer = peer_probs.float()[m]
    if logp.shape[0] == 0:
        z = logits.sum() * 0
        return {"com": z, "p": z, "delta_peer": z.detach(), "delta_own": z.detach(), "com_share": z.detach(),
                "p_share": z.detach()}
    own_max, own_arg = logp.detach().exp().max(-1)
    peer_max, peer_arg = peer.max(-1)
    if delta is None:
        d_peer = adaptive_delta(peer_max, 0.0 if com_threshold == "mean" else 1.0)
        d_own = adaptive_delta(own_max, -1.0 if lp_threshold == "lower" else 1.0)
    else:
        d_peer = d_own = torch.tensor(float(delta), device=logp.device)
    sel_peer = (peer_max > d_peer).float()
    sel_own = (own_max < d_own).float()
    W = float(logp.shape[0])
    com = -(logp.gather(1, peer_arg[:, None]).squeeze(1) * sel_peer).sum() / W
    p_own = logp.gather(1, own_arg[:, None]).squeeze(1).exp()
    pen = -(torch.log1p(-p_own.clamp(max=1 - 1e-6)) * sel_own).sum() / W
    return {"com": com, "p": pen, "delta_peer": d_peer, "delta_own": d_own, "com_share": sel_peer.mean(),
            "p_share": sel_own.mean()}


def boundary_consistency(s1: torch.Tensor, s2: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared difference of two students' ``Score_bd`` over the upper triangle (``i ≤ j``) of
    each sentence's real words."""
    m = mask.bool()
    n = m.shape[1]
    upper = torch.ones(n, n, dtype=torch.bool, device=m.device).triu()
    cells = m.unsqueeze(2) & m.unsqueeze(1) & upper
    if not bool(cells.any()):
        return (s1.sum() + s2.sum()) * 0
    return ((s1.float() - s2.float()) ** 2)[cells].mean()


def kl_sum(logits: torch.Tensor, targets: Sequence[torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Σ over the target distributions of the mean KL(target ‖ model) over the masked words."""
    from mclner.nn import kl_to_teacher

    return sum(kl_to_teacher(logits, t, mask.bool()) for t in targets)

