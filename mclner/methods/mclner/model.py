"""The mCL-NER model: word encoder → relation head (biaffine + conditional layer norm, through
`mclner.ops`) and the two projections of the relation-level contrastive views (docs/METHOD.md §3–§4)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from mclner.methods.base import DictConfig, Entity, NERModel
from mclner.methods.mclner.grid import NNW, NONE, decode_grid, thw
from mclner.nn import MLP, RelationHead, WordEncoder


@dataclass
class RelationModelConfig(DictConfig):
    """Architecture of the relation model; stored as ``config.json["model"]`` in checkpoints."""

    num_classes: int
    fusion: str = "lstm"
    biaffine_dim: int = 128  # d_b: width of hs/he
    cln_hidden: int = 128  # H: hidden width of the CLN grid MLP
    proj_dim: int = 128  # p: contrastive projection width (paper: 128)
    dropout: float = 0.1
    cln_eps: float = 1e-5
    encoder_hidden: int = 0  # filled from the encoder config
    # Subtracted from the NONE logit when decoding (not in the losses): chosen on the source dev set by
    # `--calibrate-none-bias`; 0 = plain argmax decoding as in the paper.
    none_bias: float = 0.0


class MCLNERModel(NERModel):
    """Encoder → word pooling → fusion → relation logits ``[B, N, N, C]`` (+ projection heads)."""

    method = "mclner"

    def __init__(self, encoder: torch.nn.Module, config: RelationModelConfig) -> None:
        super().__init__()
        self.config = config
        self.words = WordEncoder(encoder, config.fusion, config.dropout)
        config.encoder_hidden = self.words.encoder_hidden
        D, Db, P = self.words.dim, config.biaffine_dim, config.proj_dim
        self.relation = RelationHead(D, config.num_classes, Db, config.cln_hidden, config.dropout, config.cln_eps)
        self.proj_a = MLP(3 * Db, P, P)
        self.proj_b = MLP(D, P, P)

    def word_states(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.words(batch)

    def relation_logits(self, h: torch.Tensor, impl: str = "reference") -> Dict[str, torch.Tensor]:
        return self.relation(h, impl)

    def view_a(self, hs: torch.Tensor, he: torch.Tensor) -> torch.Tensor:
        """View A of relations (i, j) from the biaffine inputs hs_i, he_j: ``proj_a([hs ⊙ he; hs; he])``."""
        return self.proj_a(torch.cat([hs * he, hs, he], -1))

    def view_b(self, h: torch.Tensor, b: torch.Tensor, i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
        """View B of the listed relations (b, i, j): ``proj_b`` of the CLN pair features r'_ij."""
        return self.proj_b(self.relation.pair_features_at(h, b, i, j))

    @torch.no_grad()
    def predict_probs(self, batch: Dict[str, torch.Tensor], impl: str = "reference",
                      none_bias: Optional[float] = 0.0) -> torch.Tensor:
        """Relation probabilities ``[B, N, N, C]`` (eval mode is the caller's job), after subtracting
        ``none_bias`` from the NONE logit (``None``: the calibrated ``config.none_bias``; the default 0
        gives the model's own distribution, which self-training's L_mse targets need)."""
        logits = self.relation_logits(self.word_states(batch), impl)["logits"].float()
        b = self.config.none_bias if none_bias is None else none_bias
        if b:
            logits[..., NONE] -= b
        return logits.softmax(-1)

    @torch.no_grad()
    def decode(self, batch: Dict[str, torch.Tensor], label_map: Any, *, impl: str = "reference",
               return_scores: bool = False, none_bias: Optional[float] = None,
               **_: Any) -> List[Tuple[List[Entity], Optional[torch.Tensor]]]:
        """Entities of each sentence by grid decoding (``none_bias``: see predict_probs; default the
        calibrated one); with return_scores also its relation probabilities ``[n, n, C]`` on the CPU."""
        probs = self.predict_probs(batch, impl=impl, none_bias=none_bias).cpu()
        out = []
        for r, n in enumerate(batch["word_mask"].sum(1).tolist()):
            p = probs[r, : int(n), : int(n)]
            out.append((list(decode_grid(p, label_map)), p if return_scores else None))
        return out

    def entity_scores(self, entities: Sequence[Entity], scores: Optional[torch.Tensor],
                      label_map: Any) -> List[Optional[float]]:
        """The mean probability of the relations that decode each entity, its THW cell and its NNW
        links (as grid decoding and self-training score it), from the ``[n, n, C]`` probabilities."""
        if scores is None:
            return [None] * len(entities)
        p = scores.detach().float().cpu()
        if p.dim() != 3:
            raise ValueError(f"expected [n, n, C] relation probabilities, got shape {tuple(p.shape)}")
        n = p.shape[0]
        out: List[Optional[float]] = []
        for s, e, t in entities:
            if e >= n:  # a word the model did not see (cut sentence): no score
                out.append(None)
                continue
            links = sum(float(p[k, k + 1, NNW]) for k in range(s, e))
            out.append((float(p[e, s, thw(label_map, t)]) + links) / (e - s + 1))
        return out

    def describe_decoding(self, none_bias: Optional[float] = None, **_: Any) -> str:
        from mclner.methods.mclner.calibrate import describe

        return describe(none_bias, float(self.config.none_bias))

    def argmax_decoding(self) -> Optional[Dict[str, Any]]:
        return {"none_bias": 0.0} if float(self.config.none_bias or 0.0) else None

    def entity_states(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.word_states(batch)

    @torch.no_grad()
    def pair_views(self, batch: Dict[str, torch.Tensor], impl: str = "reference") -> Tuple[torch.Tensor, torch.Tensor]:
        """View A and view B of every word pair of the batch's first sentence, ``[n, n, p]`` each (the
        relation-level contrastive views, docs/METHOD.md §4), on the CPU in float32."""
        h = self.word_states(batch)
        rel = self.relation_logits(h, impl)
        n = int(batch["lengths"][0])
        hs, he = rel["hs"][0, :n], rel["he"][0, :n]
        za = self.view_a(hs.unsqueeze(1).expand(n, n, -1), he.unsqueeze(0).expand(n, n, -1))
        ii, jj = torch.meshgrid(torch.arange(n, device=h.device), torch.arange(n, device=h.device), indexing="ij")
        b = torch.zeros(n * n, dtype=torch.long, device=h.device)
        zb = self.view_b(h[:1], b, ii.reshape(-1), jj.reshape(-1)).reshape(n, n, -1)
        return za.float().cpu(), zb.float().cpu()
