"""A fifth method that lives outside the package (tests/methods/test_fifth_method.py): a tagger whose
word states are the encoder's pooled pieces with a one-layer head, trained in two stages, the second
distilled from the first on unlabelled target text. Everything it needs is in this folder; the
``mclner.methods`` entry point of the ``mclner_fifth`` distribution next to it registers it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from mclner.data.collate import tag_collator
from mclner.data.iob2 import iob2_to_entities
from mclner.methods.base import DictConfig, Method, NERModel, Stage, option, register
from mclner.methods.presets import QUICK_COMMON
from mclner.nn import TokenHead, WordEncoder, prob_mse, token_ce
from mclner.schema import tag_vocabulary


@dataclass
class FifthModelConfig(DictConfig):
    tags: List[str] = field(default_factory=lambda: ["O"])
    encoder_hidden: int = 0
    # a decoding setting the method calibrates: a bonus added to the non-O tag logits
    entity_bonus: float = 0.0


class FifthModel(NERModel):
    method = "fifth"

    def __init__(self, encoder: torch.nn.Module, config: FifthModelConfig) -> None:
        super().__init__()
        self.config = config
        self.words = WordEncoder(encoder, "none", 0.0)
        config.encoder_hidden = self.words.encoder_hidden
        self.head = TokenHead(self.words.dim, len(config.tags))

    def tag_logits(self, batch: Dict[str, torch.Tensor], bonus: float = 0.0) -> torch.Tensor:
        logits = self.head(self.words(batch)).float()
        if bonus:
            logits = logits.clone()
            logits[..., 1:] += bonus
        return logits

    def entity_states(self, batch: Dict[str, torch.Tensor]) -> torch.Tensor:
        return self.words(batch)

    def describe_decoding(self, entity_bonus: Optional[float] = None, **_: Any) -> str:
        bonus = self.config.entity_bonus if entity_bonus is None else entity_bonus
        return f"argmax with entity bonus {bonus:g}"

    @torch.no_grad()
    def decode(self, batch: Dict[str, torch.Tensor], label_map: Any, *, impl: str = "reference",
               return_scores: bool = False, entity_bonus: Optional[float] = None,
               **_: Any) -> List[Tuple[List[Tuple[int, int, str]], Optional[torch.Tensor]]]:
        bonus = self.config.entity_bonus if entity_bonus is None else entity_bonus
        probs = self.tag_logits(batch, bonus).softmax(-1).cpu()
        out = []
        for r, n in enumerate(batch["word_mask"].sum(1).tolist()):
            seq = [self.config.tags[int(x)] for x in probs[r, : int(n)].argmax(-1)]
            out.append((iob2_to_entities(seq), probs[r, : int(n)] if return_scores else None))
        return out


@dataclass
class FifthConfig:
    distil: bool = option(True, "the distillation stage on unlabelled target text")
    distil_max_steps: Optional[int] = option(None, "optimizer steps of the distillation stage", min=1)


@dataclass
class FifthDecodeConfig:
    entity_bonus: Optional[float] = option(None, "add this to the entity tags' logits when decoding (fifth)",
                                           type=float)


@register
class FifthMethod(Method):
    name = "fifth"
    description = "test-only: a tagger distilled onto target text (a method from outside the package)"
    Config = FifthConfig
    DecodeConfig = FifthDecodeConfig
    presets = {"quick": dict(QUICK_COMMON)}

    def build_model(self, encoder: torch.nn.Module, label_map: Any) -> FifthModel:
        return FifthModel(encoder, FifthModelConfig(tags=tag_vocabulary(label_map.types)))

    def make_collator(self, tokenizer: Any, label_map: Any, max_length: int) -> Any:
        return tag_collator(tokenizer, label_map, max_length)

    def stages(self) -> List[Stage]:
        out = [Stage("tagger")]
        if self.config.distil:
            out.append(Stage("distil", streams=("target",), teacher=True, max_steps=self.config.distil_max_steps))
        return out

    def teacher_outputs(self, teacher: torch.nn.Module, batch: Dict[str, Any], stage: Stage,
                        impl: str) -> Dict[str, Any]:
        return {"teacher_probs": teacher.tag_logits(batch["tgt"]).softmax(-1)} if "tgt" in batch else {}

    def loss(self, model: FifthModel, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, Any]:
        if stage.name == "distil":
            tgt = batch["tgt"]
            mse = prob_mse(model.tag_logits(tgt), batch["teacher_probs"], tgt["word_mask"].bool())
            return {"loss": mse, "mse": mse.detach(), "stats": {"target_words": tgt["word_mask"].sum().float()}}
        src = batch["src"]
        ce = token_ce(model.tag_logits(src), src["tag_labels"])
        return {"loss": ce, "ce": ce.detach()}

    def calibrates(self, stage: Stage) -> bool:
        return stage.name == "tagger"

    def calibrate(self, model: FifthModel, stage: Stage, dev: Any, collator: Any, ctx: Any) -> Dict[str, Any]:
        from mclner.evaluation import evaluate

        f1 = {b: evaluate(model, dev, collator, ctx.label_map, device=ctx.device, impl=ctx.impl,
                          entity_bonus=b)["f1"] for b in (0.0, 0.5)}
        best = max(f1, key=lambda b: (f1[b], -b))
        ctx.log({"event": "fifth_calibration", "message": f"entity bonus {best:g} (dev F1 {f1[best]:.3f})"})
        return {"model": {"entity_bonus": best}, "bonus_dev_f1": {str(b): v for b, v in f1.items()}}
