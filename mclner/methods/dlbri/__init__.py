"""DLBri: progressive contrastive bridging, then NER decomposed into span extraction (B/I/O) and type
prediction (O + types), each transferred by two students that teach each other, then combined
(docs/METHOD.md §8.4).

Stages (all on one :class:`DLBriModel`): ``bridge1..3`` (the contrastive bridging loss over the pairs
(X, X_s), (X_s, X_t'), (X_t', X_t) made from each source sentence), ``source`` (span and type
teachers: cross-entropy on the source), ``students`` (on unlabelled target text: distillation from
the teachers, co-matching, self-penalisation, and span boundary consistency on source and target),
``combine`` (label attention + biaffine co-interaction, distilled from the four students).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch

from mclner.errors import UserError
from mclner.methods.base import Context, Method, Stage, option, register
from mclner.methods.dlbri.model import (
    COM_THRESHOLDS,
    LP_THRESHOLDS,
    SPAN,
    SPAN_TAGS,
    TYPE,
    DLBriModel,
    DLBriModelConfig,
    boundary_consistency,
    bridging_loss,
    confidence_terms,
    decode_entities,
    kl_sum,
)
from mclner.methods.presets import FULL_COMMON, QUICK_COMMON
from mclner.nn import token_ce
from mclner.schema import IGNORE, tag_vocabulary

# the three oriented pairs, from source-like to target-like: source, entities translated (source
# context), context translated (source entities), fully translated
VARIANTS = ("source", "entities", "context", "full")
PAIRS = (("source", "entities"), ("entities", "context"), ("context", "full"))


@dataclass
class DLBriExample:
    """A labelled source sentence and its translated variants (``entities``, ``context``, ``full``)."""

    src: Any
    variants: Dict[str, Any]


@dataclass
class DLBriConfig:
    bridging: bool = option(True, "step 1: progressive contrastive bridging (off: the students start from the "
                                  "pretrained encoder)")
    bridges: int = option(2, "bridging encoders: 2 (one per student) or 1 (both students start from it)",
                          choices=(1, 2), flag="dlbri-bridges")
    bridge_tau: float = option(0.1, "temperature of the contrastive bridging loss", min=1e-6)
    delta: Optional[float] = option(None, "fixed confidence threshold δ of co-matching and self-penalisation "
                                          "(default: per mini-batch, mean + std of the max probability)",
                                    min=0.0, max=1.0)
    lp: bool = option(True, "the self-penalisation loss L_P on a student's own unconfident words")
    lp_threshold: str = option("lower", "which words L_P penalises under the adaptive δ: 'lower' = max probability "
                                        "below mean - std of the student's own max probabilities (the low tail), "
                                        "'delta' = below δ = mean + std (Eq. 4 as printed: most words, all of "
                                        "them when δ > 1; docs/METHOD.md)", choices=LP_THRESHOLDS)
    com_threshold: str = option("mean", "which peer words co-matching follows under the adaptive δ: 'mean' = "
                                        "max probability above the mean of the peer's max probabilities, 'delta' "
                                        "= above δ = mean + std (Eq. 3 as printed: no word once the peer is "
                                        "confident, δ > 1; docs/METHOD.md)", choices=COM_THRESHOLDS,
                                before="delta")  # the default until the three-seed comparison (docs/RESULTS.md)
    boundary: bool = option(True, "the span students' boundary-consistency loss (source and target)")
    combination: bool = option(True, "step 3: subtask combination (off: decode with the better student pair on the "
                                     "source dev set)")
    w_sbc: float = option(1.0, "weight of each boundary-consistency term", min=0.0)
    translations: Optional[str] = option(None, "CoNLL file of real translations of the source training split, in "
                                               "order (replaces the lexicon translation)", type=str)
    bridge_max_steps: Optional[int] = option(None, "optimizer steps of each of the three bridging stages "
                                                   "(default: as --max-steps / --epochs)", min=1)
    source_max_steps: Optional[int] = option(None, "optimizer steps of the source-teacher stage (default: as "
                                                   "--max-steps / --epochs)", min=1)
    students_max_steps: Optional[int] = option(None, "optimizer steps of the student stage (default: as "
                                                   "--max-steps / --epochs)", min=1)
    combine_max_steps: Optional[int] = option(None, "optimizer steps of the combination stage (default: as "
                                                   "--max-steps / --epochs)", min=1)


def span_type_maps(types: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """IOB2 tag id (``tag_vocabulary(types)``) → span id (O/B/I) and → type id (0 = O, k = types[k-1])."""
    sp, tp = [], []
    for tag in tag_vocabulary(types):
        sp.append(SPAN_TAGS.index(tag[:1]))
        tp.append(0 if tag == "O" else list(types).index(tag[2:]) + 1)
    return torch.tensor(sp), torch.tensor(tp)


def split_labels(tag_labels: torch.Tensor, types: Sequence[str]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Span and type labels from IOB2 tag ids (IGNORE stays IGNORE)."""
    sp, tp = span_type_maps(types)
    ok = tag_labels.ne(IGNORE)
    idx = tag_labels.clamp(min=0).cpu()
    span = torch.where(ok, sp[idx].to(tag_labels.device), tag_labels)
    typ = torch.where(ok, tp[idx].to(tag_labels.device), tag_labels)
    return span, typ


def entity_keys(tags: Optional[Sequence[str]]) -> List[Optional[Tuple[str, int]]]:
    """Per word: (type, rank among the sentence's entities of that type) of its entity, None outside
    entities. Translations keep the entities of each type in order (lexicon: the source word order;
    files: checked), so a key names the same entity in every variant of a sentence."""
    from mclner.data.iob2 import iob2_to_entities

    out: List[Optional[Tuple[str, int]]] = [None] * len(tags or [])
    seen: Dict[str, int] = {}
    for i, j, t in iob2_to_entities(list(tags or [])):
        r = seen.get(t, 0)
        seen[t] = r + 1
        for w in range(i, j + 1):
            out[w] = (t, r)
    return out


def pair_entity_ids(a: Sequence[Any], b: Sequence[Any], na: int, nb: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Entity ids ``[B, na]``, ``[B, nb]`` of two batches of paired sentences: the words of one entity
    share an id in both sentences of a pair, ids differ between entities and pairs, −1 elsewhere."""
    ia = torch.full((len(a), na), -1, dtype=torch.long)
    ib = torch.full((len(b), nb), -1, dtype=torch.long)
    ids: Dict[Tuple[int, Tuple[str, int]], int] = {}
    for r, (sa, sb) in enumerate(zip(a, b)):
        for dest, s, n in ((ia, sa, na), (ib, sb, nb)):
            for w, key in enumerate(entity_keys(s.tags)[:n]):
                if key is not None:
                    dest[r, w] = ids.setdefault((r, key), len(ids))
    return ia, ib


@register
class DLBriMethod(Method):
    name = "dlbri"
    description = ("DLBri: progressive contrastive bridging, span/type students with co-matching, then subtask "
                   "combination")
    Config = DLBriConfig
    presets = {
        # 3 × 30 + 100 + 100 + 60 = 350 optimizer steps, as mCL-NER's quick run (250 + 100)
        "quick": {**QUICK_COMMON, "bridge_max_steps": 30, "source_max_steps": 100, "students_max_steps": 100,
                  "combine_max_steps": 60},
        "full": dict(FULL_COMMON),
    }
    config: DLBriConfig

    def __init__(self, config: Any = None) -> None:
        super().__init__(config)
        self.types: List[str] = []

    # -- model and batches
    def build_model(self, encoder: torch.nn.Module, label_map: Any) -> DLBriModel:
        self.types = list(label_map.types)
        return DLBriModel(encoder, DLBriModelConfig(types=list(label_map.types)))

    def make_collator(self, tokenizer: Any, label_map: Any, max_length: int) -> Any:
        from mclner.data.collate import tag_collator

        self.types = list(label_map.types)
        return tag_collator(tokenizer, label_map, max_length)

    # -- data and stages
    def prepare_examples(self, sentences: Sequence[Any], ctx: Context) -> List[Any]:
        """Each source sentence with its ``entities``, ``context`` and ``full`` translations (lexicon;
        ``full`` from --translations when given). Without bridging: the sentences alone."""
        if not self.config.bridging:
            return [DLBriExample(s, {}) for s in sentences]
        from mclner.data.translations import file_translations, lexicon_translations

        t, c = ctx.train, self.config
        if not t.lexicon:
            raise UserError("DLBri builds its oriented sentence pairs with a lexicon: pass --lexicon "
                            "(or --no-bridging)")
        from mclner.data.lexicon import load_lexicon
        from mclner.data.segmentation import run_segmentation

        lex = load_lexicon(t.lexicon, t.target_lang)
        seg = run_segmentation(ctx)
        made = {m: lexicon_translations(sentences, lex, t.target_lang, m, segmentation=seg.mode)
                for m in ("entities", "context", "full")}
        if c.translations:
            index = ctx.source_index if ctx.source_index is not None else list(range(len(sentences)))
            made["full"] = file_translations(c.translations, sentences, index, ctx.source_total or len(sentences),
                                             t.target_lang)
        out = [DLBriExample(s, {m: made[m][k].sentence for m in made}) for k, s in enumerate(sentences)]
        changed = {m: sum(r.sentence.tokens != s.tokens for r, s in zip(made[m], sentences)) for m in made}
        ctx.log({"event": "translations", "message": f"oriented pairs ({t.lexicon}; target segmentation "
                 f"{seg.describe()}): " + ", ".join(f"{m} {n}/{len(sentences)} changed" for m, n in changed.items())})
        return out

    def stages(self) -> List[Stage]:
        c = self.config
        out: List[Stage] = []
        if c.bridging:
            for k in range(len(PAIRS)):
                out.append(Stage(f"bridge{k + 1}", {"bridge": 1.0}, select_best=False, max_steps=c.bridge_max_steps))
        out.append(Stage("source", {"ce": 1.0}, max_steps=c.source_max_steps))
        w = {"distil": 1.0, "com": 1.0, "p": 1.0 if c.lp else 0.0, "sbc": c.w_sbc if c.boundary else 0.0}
        streams = ("source", "target") if c.boundary else ("target",)
        out.append(Stage("students", w, streams=streams, teacher=True, max_steps=c.students_max_steps))
        if c.combination:
            out.append(Stage("combine", {"kd": 1.0}, streams=("target",), teacher=True, max_steps=c.combine_max_steps))
        return out

    def late_options(self) -> Dict[str, str]:
        # step 2's losses and length; step 3 (without it the student stage's calibration, which a
        # reused stage also gets, picks the decoding pair)
        out = {k: "students" for k in ("delta", "lp", "lp_threshold", "com_threshold", "boundary", "w_sbc",
                                       "students_max_steps")}
        out.update({k: "combine" for k in ("combination", "combine_max_steps")})
        return out

    def prepare_stage(self, model: DLBriModel, stage: Stage) -> None:
        model.config.decode_with = "combination" if stage.name == "combine" else "student"
        if stage.name == "combine":
            # the classifiers start from student pair 1's heads (docs/METHOD.md, "Combination"); a
            # resume inside the stage loads its own weights after this
            model.comb.start_from(model.span_head[0], model.type_head[0])
        if stage.name == "source" and self.config.bridging:
            # the bridged encoders initialise the students: bridge k → span and type student k
            # (one bridge: all four)
            with torch.no_grad():
                for dst in (1, 2, 3):
                    src = SPAN + (0 if self.config.bridges == 1 else dst % 2)
                    if dst != src:
                        for p, q in zip(model.enc[dst].parameters(), model.enc[src].parameters()):
                            p.copy_(q)

    def trainable(self, stage: Stage) -> Optional[Callable[[str], bool]]:
        if stage.name.startswith("bridge"):
            parts: Tuple[str, ...] = ("enc.0.",) + (("enc.1.",) if self.config.bridges == 2 else ())
        elif stage.name == "source":
            parts = ("enc.", "span_head.", "type_head.")
        elif stage.name == "students":
            parts = ("enc.", "span_head.", "type_head.") + (("boundary.",) if self.config.boundary else ())
        else:  # combine: student pair 1's encoders and heads (label embeddings) and the combination module
            parts = (f"enc.{SPAN}.", f"enc.{TYPE}.", "span_head.0.", "type_head.0.", "comb.")
        return lambda name: name.startswith(parts)

    def collate(self, collator: Any, examples: Sequence[Any], target: Optional[Sequence[Any]],
                stage: Stage) -> Dict[str, Any]:
        batch: Dict[str, Any] = {}
        if examples:
            if stage.name.startswith("bridge"):
                a, b = PAIRS[int(stage.name[len("bridge"):]) - 1]
                sa = [e.src if a == "source" else e.variants[a] for e in examples]
                sb = [e.variants[b] for e in examples]
                ba, bb = collator(sa), collator(sb)
                ia, ib = pair_entity_ids(sa, sb, ba["word_mask"].shape[1], bb["word_mask"].shape[1])
                batch["pair"] = {"a": ba, "b": bb, "ids_a": ia, "ids_b": ib}
            else:
                src = collator([e.src if isinstance(e, DLBriExample) else e for e in examples])
                if "tag_labels" in src:
                    src["span_labels"], src["type_labels"] = split_labels(src["tag_labels"], self.types)
                batch["src"] = src
        if target:
            batch["tgt"] = collator(list(target))
        return batch

    def teacher_outputs(self, teacher: DLBriModel, batch: Dict[str, Any], stage: Stage,
                        impl: str) -> Dict[str, Any]:
        """The four frozen students' (teachers') span and type distributions on the target words."""
        if "tgt" not in batch:
            return {}
        out = {}
        for k in (0, 1):
            sp, tp = teacher.student_logits(k, batch["tgt"])
            out[f"t_span{k}"], out[f"t_type{k}"] = sp.float().softmax(-1), tp.float().softmax(-1)
        return out

    def loss(self, model: DLBriModel, batch: Dict[str, Any], stage: Stage, impl: str) -> Dict[str, Any]:
        if "pair" in batch:
            return self._bridge_loss(model, batch["pair"], impl)
        if stage.name == "source":
            return self._source_loss(model, batch["src"])
        if stage.name == "students":
            return self._students_loss(model, batch, stage)
        return self._combine_loss(model, batch, impl)

    def _bridge_loss(self, model: DLBriModel, pair: Dict[str, Any], impl: str) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        total = None
        for k in range(self.config.bridges):
            enc = model.enc[SPAN + k]
            term = bridging_loss(enc(pair["a"]), pair["ids_a"], pair["a"]["word_mask"], enc(pair["b"]),
                                 pair["ids_b"], pair["b"]["word_mask"], self.config.bridge_tau, impl)
            out[f"bridge{k + 1}"] = term.detach()
            total = term if total is None else total + term
        out["loss"] = total
        return out

    def _source_loss(self, model: DLBriModel, src: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        total = 0.0
        for k in (0, 1):
            sp, tp = model.student_logits(k, src)
            out[f"ce_span{k + 1}"] = token_ce(sp, src["span_labels"])
            out[f"ce_type{k + 1}"] = token_ce(tp, src["type_labels"])
            total = total + out[f"ce_span{k + 1}"] + out[f"ce_type{k + 1}"]
        out["loss"] = total
        return out

    def _students_loss(self, model: DLBriModel, batch: Dict[str, Any], stage: Stage) -> Dict[str, Any]:
        w = stage.weights
        tgt = batch["tgt"]
        mask = tgt["word_mask"].bool()
        h_sp = [model.words(SPAN + k, tgt) for k in (0, 1)]
        h_tp = [model.words(TYPE + k, tgt) for k in (0, 1)]
        logits = {"span": [model.span_head[k](h_sp[k]) for k in (0, 1)],
                  "type": [model.type_head[k](h_tp[k]) for k in (0, 1)]}
        out: Dict[str, Any] = {}
        stats: Dict[str, torch.Tensor] = {}
        total = 0.0
        for task in ("span", "type"):
            for k in (0, 1):
                own, peer = logits[task][k], logits[task][1 - k].detach().float().softmax(-1)
                distil = kl_sum(own, [batch[f"t_{task}{k}"]], mask)
                terms = confidence_terms(own, peer, mask, self.config.delta, self.config.lp_threshold,
                                         self.config.com_threshold)
                tag = f"{task}{k + 1}"
                out[f"distil_{tag}"], out[f"com_{tag}"], out[f"p_{tag}"] = distil, terms["com"], terms["p"]
                stats[f"delta_{tag}"] = terms["delta_own"]
                # the shares of words co-matched and self-penalised (the adaptive δ can exceed 1)
                stats[f"com_share_{tag}"], stats[f"p_share_{tag}"] = terms["com_share"], terms["p_share"]
                total = total + w["distil"] * distil + w["com"] * terms["com"]
                if w["p"] > 0:
                    total = total + w["p"] * terms["p"]
        if w["sbc"] > 0:
            out["sbc_tgt"] = boundary_consistency(model.boundary[0](h_sp[0]), model.boundary[1](h_sp[1]), mask)
            total = total + w["sbc"] * out["sbc_tgt"]
            if "src" in batch:
                src = batch["src"]
                hs = [model.words(SPAN + k, src) for k in (0, 1)]
                out["sbc_src"] = boundary_consistency(model.boundary[0](hs[0]), model.boundary[1](hs[1]),
                                                      src["word_mask"])
                total = total + w["sbc"] * out["sbc_src"]
        out["loss"] = total
        out["stats"] = stats
        return out

    def _combine_loss(self, model: DLBriModel, batch: Dict[str, Any], impl: str) -> Dict[str, torch.Tensor]:
        tgt = batch["tgt"]
        sp, tp = model.combined_logits(tgt, impl)
        mask = tgt["word_mask"].bool()
        out = {"kd_span": kl_sum(sp, [batch["t_span0"], batch["t_span1"]], mask),
               "kd_type": kl_sum(tp, [batch["t_type0"], batch["t_type1"]], mask)}
        out["loss"] = out["kd_span"] + out["kd_type"]
        return out

    # -- decoding
    def calibrates(self, stage: Stage) -> bool:
        # only the student stage picks a pair: a resume then need not reload every earlier stage's best
        return not self.config.combination and stage.name == "students"

    def calibrate(self, model: DLBriModel, stage: Stage, dev: Sequence[Any], collator: Any,
                  ctx: Context) -> Optional[Dict[str, Any]]:
        """Without combination: decode with the student pair (span k + type k) that scores better on the
        source dev set (after the student stage)."""
        if not self.calibrates(stage):
            return None
        from mclner.evaluation import evaluate

        f1 = {}
        for k in (1, 2):
            model.config.student = k
            f1[k] = evaluate(model, dev, collator, ctx.label_map, batch_size=2 * ctx.train.batch_size,
                             device=ctx.device, impl=ctx.impl)["f1"]
        best = 1 if f1[1] >= f1[2] else 2
        model.config.student = best
        return {"model": {"student": best}, "student_dev_f1": f1,
                "message": f"decoding with student pair {best} (source dev F1 {f1[1]:.4f} vs {f1[2]:.4f})"}


__all__ = ["DLBriConfig", "DLBriExample", "DLBriMethod", "DLBriModel", "DLBriModelConfig", "decode_entities",
           "entity_keys", "pair_entity_ids", "split_labels"]
