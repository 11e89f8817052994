"""ConCNER: a token classifier trained on source sentences and their translations with a label-wise
token contrastive loss (LCL) and a translation sentence contrastive loss (TCL), then distilled onto
unlabelled target text (docs/METHOD.md §8.3).

Stages: ``teacher`` (batches of N source sentences with their translations:
``α·L_CE + β·(L_LCL + L_TCL)``), then ``kd`` (a student initialised from the teacher trains on
unlabelled target sentences to match the teacher's tag distributions with MSE).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch

from mclner import ops
from mclner.data.batches import Example
from mclner.data.collate import tag_collator
from mclner.data.translations import MODES
from mclner.errors import UserError
from mclner.methods.base import Context, Method, Stage, option, register
from mclner.methods.presets import FULL_COMMON, QUICK_COMMON
from mclner.methods.token_classification import TaggerModelConfig, TokenClassificationModel
from mclner.nn import masked_mean, prob_mse, token_ce
from mclner.schema import tag_vocabulary


class ConCNERModel(TokenClassificationModel):
    """The baseline's tagger (encoder → pooled word states → linear tag classifier)."""

    method = "concner"


@dataclass
class ConCNERConfig:
    lcl: bool = option(True, "the label-wise token contrastive loss L_LCL")
    tcl: bool = option(True, "the translation sentence contrastive loss L_TCL")
    kd: bool = option(True, "the knowledge-distillation stage on unlabelled target text")
    alpha: float = option(0.5, "weight α of the token cross-entropy", min=0.0)
    beta: float = option(0.25, "weight β of L_LCL + L_TCL", min=0.0)
    tau_lcl: float = option(0.1, "temperature of L_LCL", min=1e-6)
    tau_tcl: float = option(0.1, "temperature of L_TCL", min=1e-6)
    translation_mode: str = option("full", "lexicon translation of the source sentences: every known word "
                                      "(full), entity phrases only, or context words only", choices=MODES)
    translations: Optional[str] = option(None, "CoNLL file of real translations of the source training split, in "
                                               "order (replaces the lexicon translation)", type=str)
    kd_max_steps: Optional[int] = option(None, "optimizer steps of the distillation stage (default: as "
                                               "--max-steps / --epochs)", min=1)


@register
class ConCNERMethod(Method):
    name = "concner"
    description = "ConCNER: tagger with label-wise token and translation sentence contrastive losses, then distillation"
    Config = ConCNERConfig
    presets = {"quick": {**QUICK_COMMON, "kd_max_steps": 100}, "full": dict(FULL_COMMON)}
    config: ConCNERConfig

    # -- model and batches
    def build_model(self, encoder: torch.nn.Module, label_map: Any) -> ConCNERModel:
        return ConCNERModel(encoder, TaggerModelConfig(tags=tag_vocabulary(label_map.types)))

    def make_collator(self, tokenizer: Any, label_map: Any, max_length: int) -> Any:
        return tag_collator(tokenizer, label_map, max_length)

    # -- data and stages
    def prepare_examples(self, sentences: Sequence[Any], ctx: Context) -> List[Example]:
        """Each source sentence with its translation (the lexicon's, or the --translations file's)."""
        from mclner.data.segmentation import run_segmentation
        from mclner.data.translations import file_translations, lexicon_translations

        t = ctx.train
        c = self.config
        seg = run_segmentation(ctx)
        if c.translations:
            index = ctx.source_index if ctx.source_index is not None else list(range(len(sentences)))
            results = file_translations(c.translations, sentences, index, ctx.source_total or len(sentences),
                                        t.target_lang)
            where = c.translations
        else:
            from mclner.data.lexicon import load_lexicon

            if not t.lexicon:
                raise UserError("ConCNER translates the source with a lexicon: pass --lexicon or --translations")
            results = lexicon_translations(sentences, load_lexicon(t.lexicon, t.target_lang), t.target_lang,
                                           c.translation_mode, segmentation=seg.mode)
            where = f"{t.lexicon}, {c.translation_mode}; target segmentation {seg.describe()}"
        changed = sum(r.sentence.tokens != s.tokens for r, s in zip(results, sentences))
        ctx.log({"event": "translations", "message": f"translations ({where}): {changed}/{len(sentences)} "
                                                     "sentences differ from their source"})
        return [Example(s, r.sentence, list(r.spans)) for s, r in zip(sentences, results)]

    def stages(self) -> List[Stage]:
        c = self.config
        out = [Stage("teacher", {"alpha": c.alpha, "lcl": c.beta if c.lcl else 0.0, "tcl": c.beta if c.tcl else 0.0})]
        if c.kd:
            out.append(Stage("kd", {"mse": 1.0}, streams=("target",), teacher=True, max_steps=c.kd_max_steps))
        return out

    def late_options(self) -> Dict[str, str]:
        return {"kd": "kd", "kd_max_steps": "kd"}

    def teacher_outputs(self, teacher: torch.nn.Module, batch: Dict[str, Any], stage: Stage,
                        impl: str) -> Dict[str, Any]:
        if "tgt" not in batch:
            return {}
        return {"teacher_probs": teacher.tag_logits(batch["tgt"]).float().softmax(-1)}

    def loss(self, model: ConCNERModel, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, Any]:
        w = stage.weights
        out: Dict[str, torch.Tensor] = {}
        if "tgt" in batch:  # distillation: the teacher's tag distributions on target words
            tgt = batch["tgt"]
            out["mse"] = prob_mse(model.tag_logits(tgt), batch["teacher_probs"], tgt["word_mask"].bool())
            out["loss"] = w["mse"] * out["mse"]
            return out
        src, tr = batch["src"], batch["cs"]
        h_src, h_tr = model.words(src), model.words(tr)
        logits = torch.cat([model.head(h_src).flatten(0, 1), model.head(h_tr).flatten(0, 1)])
        labels = torch.cat([src["tag_labels"].flatten(), tr["tag_labels"].flatten()])
        out["ce"] = token_ce(logits, labels)
        total = w["alpha"] * out["ce"]
        if w["lcl"] > 0:
            # every word of the 2N sentences (padding removed); positives = the words with its tag
            m_src, m_tr = src["word_mask"].bool(), tr["word_mask"].bool()
            z = torch.cat([h_src[m_src], h_tr[m_tr]])
            y = torch.cat([src["tag_labels"][m_src], tr["tag_labels"][m_tr]])
            out["lcl"] = ops.sup_con(z, y, temperature=self.config.tau_lcl, impl=impl)
            total = total + w["lcl"] * out["lcl"]
        if w["tcl"] > 0:
            # the 2N sentence vectors; a sentence's positive is its translation (NT-Xent)
            n = h_src.shape[0]
            z = torch.cat([masked_mean(h_src, src["word_mask"]), masked_mean(h_tr, tr["word_mask"])])
            pair = torch.arange(n, device=z.device)
            out["tcl"] = ops.sup_con(z, torch.cat([pair, pair]), temperature=self.config.tau_tcl, impl=impl)
            total = total + w["tcl"] * out["tcl"]
        out["loss"] = total
        return out
