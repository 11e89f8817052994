"""The token-classification baseline: a softmax IOB2 tagger on the encoder's mean-pooled word states,
trained on the source language only and applied zero-shot to the target (docs/METHOD.md §8.0)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from mclner.data.collate import tag_collator
from mclner.data.iob2 import iob2_to_entities
from mclner.methods.base import DictConfig, Entity, Method, NERModel, Stage, register
from mclner.methods.presets import FULL_COMMON, QUICK_COMMON
from mclner.nn import TokenHead, WordEncoder, token_ce
from mclner.schema import tag_vocabulary


@dataclass
class TaggerModelConfig(DictConfig):
    """Architecture of the tagger; stored as ``config.json["model"]`` in checkpoints."""

    tags: List[str] = field(default_factory=lambda: ["O"])  # IOB2 tag vocabulary, id = position
    dropout: float = 0.1
    encoder_hidden: int = 0


class TokenClassificationModel(NERModel):
    """Encoder → word pooling → dropout → linear tag classifier."""

    method = "token-classification"

    def __init__(self, encoder: torch.nn.Module, config: TaggerModelConfig) -> None:
        super().__init__()
        self.config = config
        self.words = WordEncoder(encoder, "none", config.dropout)
        config.encoder_hidden = self.words.encoder_hidden
        self.head = TokenHead(self.words.dim, len(config.tags))

    def tag_logits(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.head(self.words(batch))

    def entity_states(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.words(batch)

    def token_classifier(self) -> Optional[Tuple[torch.nn.Module, torch.nn.Linear, List[str]]]:
        # no fusion layer: the word state is the mean of its pieces' states, so the linear head applies per piece
        if self.words.fusion is not None:
            return None
        return self.words.encoder, self.head.classifier, list(self.config.tags)

    @torch.no_grad()
    def decode(self, batch: Dict[str, torch.Tensor], label_map: Any, *, impl: str = "reference",
               return_scores: bool = False, **_: Any) -> List[Tuple[List[Entity], Optional[torch.Tensor]]]:
        probs = self.tag_logits(batch).float().softmax(-1).cpu()
        ids = probs.argmax(-1)
        tags = self.config.tags
        out = []
        for r, n in enumerate(batch["word_mask"].sum(1).tolist()):
            seq = [tags[int(x)] for x in ids[r, : int(n)]]
            out.append((list(iob2_to_entities(seq)), probs[r, : int(n)] if return_scores else None))
        return out


@dataclass
class TaggerConfig:
    """The baseline has no options of its own (the common ones: encoder, data, optimisation)."""


@register
class TokenClassificationMethod(Method):
    name = "token-classification"
    description = "baseline: softmax IOB2 tagger on the source language, applied zero-shot to the target"
    Config = TaggerConfig
    presets = {"quick": dict(QUICK_COMMON), "full": dict(FULL_COMMON)}

    def build_model(self, encoder: torch.nn.Module, label_map: Any) -> TokenClassificationModel:
        return TokenClassificationModel(encoder, TaggerModelConfig(tags=tag_vocabulary(label_map.types)))

    def make_collator(self, tokenizer: Any, label_map: Any, max_length: int) -> Any:
        return tag_collator(tokenizer, label_map, max_length)

    def stages(self) -> List[Stage]:
        return [Stage("source")]

    def loss(self, model: TokenClassificationModel, batch: Dict[str, Any], stage: Stage,
             impl: str) -> Dict[str, torch.Tensor]:
        src = batch["src"]
        loss = token_ce(model.tag_logits(src), src["tag_labels"])
        return {"loss": loss, "ce_src": loss.detach()}
