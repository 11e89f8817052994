"""The mCL-NER model (SPEC.md §3–§5) and the token-classification baseline.

`MCLNERModel` maps a batch from `mclner.data.collate.RelationCollator` to relation logits
``[B, N, N, C]`` (biaffine + conditional-layer-norm heads, both through `mclner.ops`) and computes the
training losses: ``L_ce`` on the source and code-switched grids, ``L_sc`` (sentence-level InfoNCE),
``L_tc`` (relation-level InfoNCE on sampled word pairs) and, in self-training, ``L_mse`` against a
teacher. Everything a step needs happens inside ``forward`` so that DistributedDataParallel sees one
forward per step.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from mclner import ops

IGNORE = -100
FUSIONS = ("lstm", "transformer", "none")
METHODS = ("mclner", "token-classification")


@dataclass
class ModelConfig:
    """Architecture hyper-parameters; stored as ``config.json`` in every checkpoint."""

    num_classes: int
    method: str = "mclner"
    fusion: str = "lstm"
    biaffine_dim: int = 128  # d_b: width of hs/he
    cln_hidden: int = 128  # H: hidden width of the CLN grid MLP
    proj_dim: int = 128  # p: contrastive projection width (paper: 128)
    dropout: float = 0.1
    cln_eps: float = 1e-5
    encoder_hidden: int = 0  # filled from the encoder config
    num_tags: int = 0  # token-classification: 1 + 2·(number of types)
    # Subtracted from the NONE logit when decoding (not in the losses): chosen on the source dev set by
    # `--calibrate-none-bias`; 0 = plain argmax decoding as in the paper.
    none_bias: float = 0.0
    extra: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> ModelConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class LossWeights:
    """Which loss terms a step computes and how they are weighted (SPEC.md §4 Eq. 8, §5 Eq. 9–10)."""

    ce_cs: float = 1.0  # L_ce on the code-switched grid (0 disables)
    sc: float = 0.1  # w·L_sc
    tc: float = 0.1  # w·L_tc (w1 in self-training)
    mse: float = 1.0  # w2·L_mse (self-training only)
    tau_sc: float = 0.1
    tau_tc: float = 0.1
    tc_none_ratio: float = 1.0  # sampled NONE pairs per gold non-NONE pair
    tc_max_pairs: int = 4096  # cap on M


def pool_words(hidden: torch.Tensor, word_index: torch.Tensor, num_words: int) -> torch.Tensor:
    """Mean of each word's sub-word states: ``[B, L, d]`` → ``[B, N, d]`` (words without pieces → 0)."""
    B, L, d = hidden.shape
    valid = (word_index >= 0).unsqueeze(-1).to(hidden.dtype)
    idx = word_index.clamp(min=0).unsqueeze(-1).expand(B, L, d)
    summed = hidden.new_zeros(B, num_words, d).scatter_add_(1, idx, hidden * valid)
    counts = hidden.new_zeros(B, num_words, 1).scatter_add_(1, idx[..., :1], valid)
    return summed / counts.clamp(min=1.0)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.unsqueeze(-1).to(x.dtype)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class MLP(nn.Sequential):
    def __init__(self, d_in: int, d_hidden: int, d_out: int, dropout: float = 0.0) -> None:
        super().__init__(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_hidden, d_out))


class MCLNERModel(nn.Module):
    """Encoder → word pooling → fusion → biaffine + CLN relation heads (+ projection heads)."""

    def __init__(self, encoder: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        if config.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {config.fusion!r}")
        self.config = config
        self.encoder = encoder
        d = int(encoder.config.hidden_size)
        config.encoder_hidden = d
        self.dropout = nn.Dropout(config.dropout)
        if config.fusion == "lstm":
            # d/2 per direction keeps H at the encoder width (W2NER does the same).
            self.fusion: Optional[nn.Module] = nn.LSTM(d, d // 2, batch_first=True, bidirectional=True)
            self.d = 2 * (d // 2)
        elif config.fusion == "transformer":
            heads = max(1, math.gcd(d, 8))
            self.fusion = nn.TransformerEncoderLayer(d, heads, 4 * d, config.dropout, batch_first=True)
            self.d = d
        else:
            self.fusion = None
            self.d = d
        D, Db, C = self.d, config.biaffine_dim, config.num_classes
        self.mlp_s = nn.Sequential(nn.Linear(D, Db), nn.GELU())
        self.mlp_e = nn.Sequential(nn.Linear(D, Db), nn.GELU())
        self.U = nn.Parameter(torch.empty(C, Db, Db))
        self.W_bi = nn.Parameter(torch.empty(C, 2 * Db))
        self.b_bi = nn.Parameter(torch.zeros(C))
        nn.init.xavier_uniform_(self.U)
        nn.init.xavier_uniform_(self.W_bi)
        # Conditional layer norm starts as a plain layer norm (γ = 1, λ = 0) and learns the conditioning.
        self.W_alpha = nn.Parameter(torch.zeros(D, D))
        self.b_alpha = nn.Parameter(torch.ones(D))
        self.W_beta = nn.Parameter(torch.zeros(D, D))
        self.b_beta = nn.Parameter(torch.zeros(D))
        self.cln_1 = nn.Linear(D, config.cln_hidden)
        self.cln_2 = nn.Linear(config.cln_hidden, C)
        P = config.proj_dim
        self.proj_a = MLP(3 * Db, P, P)
        self.proj_b = MLP(D, P, P)

    # ------------------------------------------------------------------ encoding and logits
    def word_states(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        hidden = out.last_hidden_state
        N = batch["word_mask"].shape[1]
        h = self.dropout(pool_words(hidden, batch["word_index"], N))
        if isinstance(self.fusion, nn.LSTM):
            lengths = batch["word_mask"].sum(1).clamp(min=1).cpu()
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out_p, _ = self.fusion(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(out_p, batch_first=True, total_length=N)
        elif self.fusion is not None:
            h = self.fusion(h, src_key_padding_mask=~batch["word_mask"].bool())
        return h

    def relation_logits(self, h: torch.Tensor, impl: str = "reference") -> Dict[str, torch.Tensor]:
        """Relation logits ``S = S^bia + S^cln`` ``[B, N, N, C]`` plus the biaffine inputs hs, he."""
        hd = self.dropout(h)
        hs, he = self.mlp_s(hd), self.mlp_e(hd)
        dt = hs.dtype  # under autocast the activations may be bf16/fp16: the ops want one dtype
        s_bia = ops.biaffine(hs, he, self.U.to(dt), self.W_bi.to(dt), self.b_bi.to(dt), impl=impl)
        hc = h.to(dt)
        s_cln = ops.cln_head(
            hc, self.W_alpha.to(dt), self.b_alpha.to(dt), self.W_beta.to(dt), self.b_beta.to(dt),
            self.cln_1.weight.to(dt), self.cln_1.bias.to(dt), self.cln_2.weight.to(dt), self.cln_2.bias.to(dt),
            eps=self.config.cln_eps, impl=impl,
        )
        return {"logits": s_bia + s_cln, "hs": hs, "he": he}

    def cln_pair_features_at(self, h: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """r'_ij = γ_i ⊙ n_j + λ_i for the listed pairs only ``[M, D]`` (same γ/λ/n as the CLN head)."""
        hi, hj = h[b, i], h[b, j]
        gamma = F.linear(hi, self.W_alpha, self.b_alpha)
        lam = F.linear(hi, self.W_beta, self.b_beta)
        mu = hj.mean(-1, keepdim=True)
        var = hj.var(-1, unbiased=False, keepdim=True)
        n = (hj - mu) / torch.sqrt(var + self.config.cln_eps)
        return gamma * n + lam

    # ------------------------------------------------------------------ losses
    @staticmethod
    def ce_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        C = logits.shape[-1]
        if not bool((labels != IGNORE).any()):
            return logits.sum() * 0.0
        return F.cross_entropy(logits.reshape(-1, C).float(), labels.reshape(-1), ignore_index=IGNORE)

    def sample_tc_pairs(
        self, labels: torch.Tensor, word_mask: torch.Tensor, alignment: Optional[torch.Tensor], w: LossWeights
    ) -> Optional[Dict[str, torch.Tensor]]:
        """All gold non-NONE pairs with an aligned counterpart plus sampled NONE pairs (L_tc, SPEC §4).

        alignment: ``[B, N]`` (one counterpart per source word) or ``[B, N, 2]`` (first and last
        code-switched word of each source word's translation). A relation cell's row word maps to the
        LAST word of its translation and its column word to the FIRST: THW (tail e, head s) and NNW
        (k, k+1) then land on the code-switched sentence's own THW/NNW cells even when a word became
        several words (zh/ja characters).
        """
        B, N, _ = labels.shape
        if alignment is None:  # no counterpart: view B from the same sentence
            alignment = torch.arange(N, device=labels.device).expand(B, N).masked_fill(~word_mask.bool(), -1)
        if alignment.dim() == 3:
            first, last = alignment[..., 0], alignment[..., 1]
        else:
            first = last = alignment
        ok = (first >= 0) & (last >= 0)
        pair_ok = ok.unsqueeze(2) & ok.unsqueeze(1) & labels.ne(IGNORE)
        pos = (pair_ok & labels.gt(0)).nonzero()
        neg = (pair_ok & labels.eq(0)).nonzero()
        n_pos = min(pos.shape[0], w.tc_max_pairs)
        if n_pos < pos.shape[0]:
            pos = pos[torch.randperm(pos.shape[0], device=pos.device)[:n_pos]]
        n_neg = min(neg.shape[0], int(round(w.tc_none_ratio * max(n_pos, 1))), w.tc_max_pairs - n_pos)
        if n_neg > 0:
            neg = neg[torch.randperm(neg.shape[0], device=neg.device)[:n_neg]]
        else:
            neg = neg[:0]
        idx = torch.cat([pos, neg], 0)
        if idx.shape[0] < 2:  # InfoNCE needs at least one negative
            return None
        b, i, j = idx[:, 0], idx[:, 1], idx[:, 2]
        return {"b": b, "i": i, "j": j, "ai": last[b, i], "aj": first[b, j]}

    def forward(
        self,
        src: Dict[str, torch.Tensor],
        cs: Optional[Dict[str, torch.Tensor]] = None,
        alignment: Optional[torch.Tensor] = None,
        tgt: Optional[Dict[str, torch.Tensor]] = None,
        teacher_probs: Optional[torch.Tensor] = None,
        weights: Optional[LossWeights] = None,
        impl: str = "reference",
    ) -> Dict[str, torch.Tensor]:
        """Training losses for one step; ``loss`` is the weighted total, the other keys are the terms.

        src: source batch (with grid_labels); cs: its code-switched counterpart (same order) and
        alignment ``[B, N_src, 2]`` (or ``[B, N_src]``) source word → first/last code-switched word
        (-1 none, see sample_tc_pairs); tgt: pseudo-labelled
        target batch with teacher_probs ``[B, N, N, C]`` (self-training).
        """
        w = weights or LossWeights()
        out: Dict[str, torch.Tensor] = {}
        h = self.word_states(src)
        rel = self.relation_logits(h, impl)
        total = out["ce_src"] = self.ce_loss(rel["logits"], src["grid_labels"])
        h_cs = None
        if cs is not None:
            h_cs = self.word_states(cs)
            if w.ce_cs > 0:
                rel_cs = self.relation_logits(h_cs, impl)
                out["ce_cs"] = self.ce_loss(rel_cs["logits"], cs["grid_labels"])
                total = total + w.ce_cs * out["ce_cs"]
            if w.sc > 0:
                za = masked_mean(h, src["word_mask"])
                zb = masked_mean(h_cs, cs["word_mask"]).to(za.dtype)
                out["sc"] = ops.info_nce(za, zb, temperature=w.tau_sc, impl=impl) if za.shape[0] > 1 else za.sum() * 0
                total = total + w.sc * out["sc"]
        if w.tc > 0:
            pairs = self.sample_tc_pairs(src["grid_labels"], src["word_mask"], alignment if cs is not None else None, w)
            if pairs is not None:
                hs, he = rel["hs"], rel["he"]
                b, i, j = pairs["b"], pairs["i"], pairs["j"]
                hsi, hej = hs[b, i], he[b, j]
                za = self.proj_a(torch.cat([hsi * hej, hsi, hej], -1))
                hb = h_cs if h_cs is not None else h
                zb = self.proj_b(self.cln_pair_features_at(hb, b, pairs["ai"], pairs["aj"]))
                zb = zb.to(za.dtype)
                out["tc"] = ops.info_nce(za, zb, temperature=w.tau_tc, impl=impl)
                out["tc_pairs"] = torch.tensor(float(b.shape[0]), device=h.device)
                total = total + w.tc * out["tc"]
        if tgt is not None:
            h_t = self.word_states(tgt)
            logits_t = self.relation_logits(h_t, impl)["logits"]
            out["ce_tgt"] = self.ce_loss(logits_t, tgt["grid_labels"])
            total = total + out["ce_tgt"]
            if teacher_probs is not None and w.mse > 0:
                valid = tgt["word_mask"].unsqueeze(2) & tgt["word_mask"].unsqueeze(1)
                diff = (logits_t.float().softmax(-1) - teacher_probs.float()) ** 2
                out["mse"] = diff.sum(-1)[valid].mean() if bool(valid.any()) else diff.sum() * 0
                total = total + w.mse * out["mse"]
        # Parameters not used this step (ablations) still join the graph with zero gradient, so that
        # DDP's reducer sees every parameter every step.
        total = total + 0.0 * sum(p.view(-1)[0] for p in self.parameters() if p.requires_grad)
        out["loss"] = total
        return out

    @torch.no_grad()
    def predict_probs(
        self, batch: Dict[str, torch.Tensor], impl: str = "reference", none_bias: Optional[float] = 0.0
    ) -> torch.Tensor:
        """Relation probabilities ``[B, N, N, C]`` (eval mode is the caller's job), after subtracting
        ``none_bias`` from the NONE logit (``None``: the calibrated ``config.none_bias``; the default 0
        gives the model's own distribution, which self-training's L_mse targets need)."""
        logits = self.relation_logits(self.word_states(batch), impl)["logits"].float()
        b = self.config.none_bias if none_bias is None else none_bias
        if b:
            from mclner.data.grid import NONE

            logits[..., NONE] -= b
        return logits.softmax(-1)


class TokenClassificationModel(nn.Module):
    """Zero-shot baseline: softmax IOB2 tagger on mean-pooled word states of the encoder."""

    def __init__(self, encoder: nn.Module, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.encoder = encoder
        d = int(encoder.config.hidden_size)
        config.encoder_hidden = d
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = nn.Linear(d, config.num_tags)

    def tag_logits(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        out = self.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h = pool_words(out.last_hidden_state, batch["word_index"], batch["word_mask"].shape[1])
        return self.classifier(self.dropout(h))

    def forward(self, src: Dict[str, torch.Tensor], **_: Any) -> Dict[str, torch.Tensor]:
        logits = self.tag_logits(src)
        labels = src["tag_labels"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=IGNORE)
        return {"loss": loss, "ce_src": loss.detach()}


def tag_vocabulary(types: List[str]) -> List[str]:
    """IOB2 tag list of the baseline: O, then B-t, I-t for each type in label-map order."""
    tags = ["O"]
    for t in types:
        tags += [f"B-{t}", f"I-{t}"]
    return tags
