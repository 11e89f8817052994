"""mCL-NER: relation grid + multi-view contrastive learning + self-training (docs/METHOD.md).

Stages: ``source`` (source + code-switched data, ``L_ce(src) + L_ce(cs) + w·(L_sc + L_tc)``), then
``st1 … stK`` (self-training rounds: the student starts from the previous stage's best model and
trains on source, code-switched and pseudo-labelled target data with ``L_ce + w1·L_tc + w2·L_mse``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from mclner.data.batches import build_examples
from mclner.errors import UserError
from mclner.methods.base import Context, Method, Stage, option, register
from mclner.methods.mclner.grid import NNW, NONE, GridLabels, class_names, num_classes, thw
from mclner.methods.mclner.losses import NONE_SAMPLING, grid_ce, sample_relation_pairs
from mclner.methods.mclner.model import MCLNERModel, RelationModelConfig
from mclner.methods.presets import FULL_COMMON, QUICK_COMMON
from mclner.nn import FUSIONS, prob_mse, relation_info_nce, sentence_info_nce

CE_CELLS = ("all", "decoded")


@dataclass
class MCLNERConfig:
    codeswitch: bool = option(True, "train with code-switched copies of the source sentences (L_ce(cs), "
                                    "L_sc, and view B of L_tc)")
    sc: bool = option(True, "the sentence-level contrastive loss L_sc")
    tc: bool = option(True, "the relation-level contrastive loss L_tc")
    self_training_rounds: int = option(1, "self-training rounds after the source stage (0: source stage only)",
                                       min=0)
    st_max_steps: Optional[int] = option(None, "optimizer steps of each self-training round (default: as "
                                               "--max-steps / --epochs)", min=1)
    cs_word_ratio: float = option(0.3, "fraction of non-entity words also code-switched", min=0.0, max=1.0)
    fusion: str = option("lstm", "contextual fusion layer over the pooled word states", choices=FUSIONS)
    biaffine_dim: int = option(128, "width d_b of hs/he", min=1)
    cln_hidden: int = option(128, "hidden width of the CLN grid MLP", min=1)
    proj_dim: int = option(128, "contrastive projection width p", min=1)
    w_cl: float = option(0.1, "weight w of L_sc + L_tc in the source stage", min=0.0)
    w_tc_st: float = option(0.1, "weight w1 of L_tc in self-training", min=0.0)
    w_mse: float = option(1.0, "weight w2 of L_mse in self-training", min=0.0)
    tau_sc: float = option(0.1, "temperature of L_sc", min=1e-6)
    tau_tc: float = option(0.1, "temperature of L_tc", min=1e-6)
    tc_none_ratio: float = option(1.0, "L_tc: sampled NONE pairs per gold non-NONE pair", min=0.0)
    tc_max_pairs: int = option(4096, "L_tc: cap on the sampled pairs M", min=2)
    st_threshold: float = option(0.9, "self-training: minimum mean probability of a sentence's decoded "
                                      "relations", min=0.0, max=1.0)
    prior_init: bool = option(True, "initialise the relation logits' bias to the log class prior of the training "
                                    "grids, so that training starts from 'all NONE' instead of learning it first "
                                    "(docs/TRAINING.md: argmax dev F1 64 instead of 0 after 100 quick steps)")
    # Levers against the NONE majority of the grid (docs/TRAINING.md, "Levers against the NONE majority").
    # --none-weight 0.1 is the default because it makes the grid fit the source as fast as a tagger
    # (docs/TRAINING.md); 1 with the other levers' defaults is the paper's plain mean L_ce. They apply
    # to every grid CE term (source, code-switched, pseudo-labelled target).
    none_weight: float = option(0.1, "weight of the NONE cells in the grid cross-entropy (a weighted mean: "
                                     "sum of w·loss over sum of w; 1 = the paper's plain mean)", min=1e-6)
    focal_gamma: float = option(0.0, "focal exponent of the grid cross-entropy: each cell's loss times "
                                     "(1 - p_gold)^gamma (0 = plain cross-entropy)", min=0.0, max=10.0)
    none_keep: float = option(1.0, "fraction of each batch's NONE cells the grid cross-entropy keeps (every "
                                   "non-NONE cell stays; 1 = all); which ones: --none-sampling", min=1e-6, max=1.0)
    none_sampling: str = option("random", "with --none-keep < 1: 'random' (each NONE cell with probability P, "
                                          "from the run's seeded generator) or 'hard' (the P share of NONE cells "
                                          "with the highest loss, OHEM)", choices=NONE_SAMPLING)
    ce_cells: str = option("all", "cells of the grid cross-entropy: 'all' (the paper) or 'decoded' (only those "
                                  "decoding reads: the lower triangle with the diagonal, THW, and the first "
                                  "super-diagonal, NNW; the others are always NONE)", choices=CE_CELLS)
    calibrate_none_bias: bool = option(False, "after each stage, lower the NONE logit at decoding time by the bias "
                                              "(0 to 6) that maximises source dev F1; kept in the checkpoint and used "
                                              "by evaluate/predict and the self-training teacher (the losses are "
                                              "unchanged)")


@dataclass
class MCLNERDecodeConfig:
    none_bias: Optional[float] = option(None, "decode with this bias subtracted from the NONE logit (relation "
                                              "models; default: the checkpoint's calibrated value, 0 unless "
                                              "trained with --calibrate-none-bias)", type=float)


@register
class MCLNERMethod(Method):
    name = "mclner"
    description = "mCL-NER: relation grid, code-switched and relation-level contrastive views, self-training"
    Config = MCLNERConfig
    # quick: decoding calibrated against the NONE prior that the short schedule leaves (docs/TRAINING.md)
    presets = {
        "quick": {**QUICK_COMMON, "tc_max_pairs": 1024, "calibrate_none_bias": True, "st_max_steps": 100},
        "full": dict(FULL_COMMON),
    }
    DecodeConfig = MCLNERDecodeConfig
    config: MCLNERConfig

    # -- model and batches
    def build_model(self, encoder: torch.nn.Module, label_map: Any) -> MCLNERModel:
        c = self.config
        return MCLNERModel(encoder, RelationModelConfig(
            num_classes=num_classes(label_map), fusion=c.fusion, biaffine_dim=c.biaffine_dim,
            cln_hidden=c.cln_hidden, proj_dim=c.proj_dim))

    def make_collator(self, tokenizer: Any, label_map: Any, max_length: int) -> Any:
        from mclner.data.collate import SentenceCollator

        return SentenceCollator(tokenizer, max_length, labels={"grid_labels": GridLabels(label_map)})

    def init_model(self, model: MCLNERModel, examples: Sequence[Any], label_map: Any) -> Dict[str, Any]:
        """With --prior-init: the biaffine bias b_c = log p(c) over the cells of the training grids that
        L_ce reads (the source sentences; NONE is ~99% of them), NONE counted times --none-weight and
        --none-keep; the CLN head's output bias 0."""
        if not self.config.prior_init:
            return {}
        from mclner.data.iob2 import iob2_to_entities

        counts = torch.zeros(num_classes(label_map), dtype=torch.float64)
        for e in examples:
            n = len(e.src.tokens)
            for s, t_end, typ in iob2_to_entities(e.src.tags):
                counts[thw(label_map, typ)] += 1
                counts[NNW] += t_end - s
            # the cells L_ce is taken over (--ce-cells): all n², or those decoding reads
            counts[NONE] += n * n if self.config.ce_cells == "all" else n * (n + 1) // 2 + max(n - 1, 0)
        counts[NONE] -= counts[NNW:].sum()
        # the minimiser of a NONE-weighted (or NONE-subsampled) L_ce over a constant prediction is the
        # prior with the NONE count scaled the same way: start there (both 1 by default)
        counts[NONE] *= self.config.none_weight * self.config.none_keep
        prior = (counts + 1.0) / (counts + 1.0).sum()  # add-one: a type absent from the data stays finite
        with torch.no_grad():
            model.relation.b_bi.copy_(prior.log().to(model.relation.b_bi.dtype))
            model.relation.cln_2.bias.zero_()
        return {"prior_init": {name: float(p) for name, p in zip(class_names(label_map), prior)}}

    # -- data and stages
    def prepare_examples(self, sentences: Sequence[Any], ctx: Context) -> List[Any]:
        switcher = None
        if self.config.codeswitch:
            from mclner.data.codeswitch import CodeSwitcher
            from mclner.data.lexicon import load_lexicon
            from mclner.data.segmentation import run_segmentation

            t = ctx.train
            if not t.lexicon:
                raise UserError("code-switching needs a lexicon: pass --lexicon or --no-codeswitch")
            seg = run_segmentation(ctx)
            switcher = CodeSwitcher(load_lexicon(t.lexicon, t.target_lang), target_lang=t.target_lang,
                                    word_ratio=self.config.cs_word_ratio, seed=t.seed, segmentation=seg.mode)
        examples = build_examples(sentences, switcher)
        if switcher is not None:
            ctx.log({"event": "codeswitch", "message": f"code-switching ({ctx.train.lexicon}; target segmentation "
                                                       f"{seg.describe()}): {switcher.report()}"})
        return examples

    def stages(self) -> List[Stage]:
        c = self.config
        cs = 1.0 if c.codeswitch else 0.0
        out = [Stage("source", {"ce_cs": cs, "sc": c.w_cl if (c.codeswitch and c.sc) else 0.0,
                                "tc": c.w_cl if c.tc else 0.0, "mse": 0.0})]
        for r in range(1, c.self_training_rounds + 1):
            out.append(Stage(f"st{r}", {"ce_cs": cs, "sc": 0.0, "tc": c.w_tc_st if c.tc else 0.0, "mse": c.w_mse},
                             streams=("source", "target"), teacher=True, max_steps=c.st_max_steps))
        return out

    def late_options(self) -> Dict[str, str]:
        return {k: "st1" for k in ("self_training_rounds", "st_max_steps", "w_tc_st", "w_mse", "st_threshold")}

    def target_data(self, stage: Stage, teacher: Optional[torch.nn.Module], sentences: Sequence[Any],
                    collator: Any, ctx: Context) -> Tuple[List[Any], Dict[str, Any]]:
        from mclner.methods.mclner.selftrain import pseudo_label

        thr = self.config.st_threshold
        kept, counts = pseudo_label(teacher, sentences, collator, ctx.label_map, threshold=thr,
                                    batch_size=2 * ctx.train.batch_size, device=ctx.device, impl=ctx.impl)
        ctx.log({"event": "pseudo_labels", "stage": stage.name,
                 "message": f"[{stage.name}] pseudo-labels: {counts['unlabeled']} unlabelled, {counts['has_entity']} "
                            f"with an entity, {counts['continuous']} continuous, {counts['confident']} ≥ {thr}"})
        return kept, counts

    def teacher_outputs(self, teacher: torch.nn.Module, batch: Dict[str, Any], stage: Stage,
                        impl: str) -> Dict[str, Any]:
        if "tgt" not in batch:
            return {}
        # the teacher's own distribution (no decoding bias): L_mse's target
        return {"teacher_probs": teacher.predict_probs(batch["tgt"], impl=impl)}

    def grid_ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_ce of one grid with the configured NONE weighting, focal exponent and NONE subsampling."""
        c = self.config
        return grid_ce(logits, labels, none_weight=c.none_weight, focal_gamma=c.focal_gamma,
                       none_keep=c.none_keep, none_sampling=c.none_sampling, decoded_only=c.ce_cells == "decoded")

    def loss(self, model: MCLNERModel, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, Any]:
        c, w = self.config, stage.weights
        src, cs = batch["src"], batch.get("cs")
        out: Dict[str, Any] = {}
        h = model.word_states(src)
        rel = model.relation_logits(h, impl)
        total = out["ce_src"] = self.grid_ce(rel["logits"], src["grid_labels"])
        h_cs = None
        if cs is not None:
            h_cs = model.word_states(cs)
            if w["ce_cs"] > 0:
                out["ce_cs"] = self.grid_ce(model.relation_logits(h_cs, impl)["logits"], cs["grid_labels"])
                total = total + w["ce_cs"] * out["ce_cs"]
            if w["sc"] > 0:
                out["sc"] = sentence_info_nce(h, src["word_mask"], h_cs, cs["word_mask"], c.tau_sc, impl)
                total = total + w["sc"] * out["sc"]
        if w["tc"] > 0:
            pairs = sample_relation_pairs(src["grid_labels"], src["word_mask"],
                                          batch.get("alignment") if cs is not None else None,
                                          c.tc_none_ratio, c.tc_max_pairs)
            if pairs is not None:
                # view A from the source pair's biaffine inputs, view B from the counterpart's CLN pair
                # features at the aligned pair (the same sentence without a counterpart)
                b, i, j = pairs["b"], pairs["i"], pairs["j"]
                za = model.view_a(rel["hs"][b, i], rel["he"][b, j])
                zb = model.view_b(h_cs if h_cs is not None else h, b, pairs["ai"], pairs["aj"])
                out["tc"] = relation_info_nce(za, zb, c.tau_tc, impl)
                out["stats"] = {"tc_pairs": torch.tensor(float(b.shape[0]), device=h.device)}
                total = total + w["tc"] * out["tc"]
        tgt = batch.get("tgt")
        if tgt is not None:
            logits_t = model.relation_logits(model.word_states(tgt), impl)["logits"]
            out["ce_tgt"] = self.grid_ce(logits_t, tgt["grid_labels"])
            total = total + out["ce_tgt"]
            if "teacher_probs" in batch and w["mse"] > 0:
                valid = tgt["word_mask"].unsqueeze(2) & tgt["word_mask"].unsqueeze(1)
                out["mse"] = prob_mse(logits_t, batch["teacher_probs"], valid)
                total = total + w["mse"] * out["mse"]
        out["loss"] = total
        return out

    # -- decoding
    def calibrates(self, stage: Stage) -> bool:
        return self.config.calibrate_none_bias

    def calibrate(self, model: MCLNERModel, stage: Stage, dev: Sequence[Any], collator: Any,
                  ctx: Context) -> Optional[Dict[str, Any]]:
        """With --calibrate-none-bias: the decoding NONE bias that maximises source dev F1."""
        if not (self.calibrates(stage) and dev):
            return None
        from mclner.methods.mclner.calibrate import calibrate_none_bias

        bias, curve = calibrate_none_bias(model, dev, collator, ctx.label_map, batch_size=2 * ctx.train.batch_size,
                                          device=ctx.device, impl=ctx.impl)
        return {"model": {"none_bias": bias}, "none_bias_dev_f1": {str(k): v for k, v in curve.items()},
                "message": f"decoding NONE bias {bias:g} (source dev F1 {100 * curve[bias]:.2f}; "
                           f"{100 * curve[0.0]:.2f} without)"}
