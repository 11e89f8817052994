"""Prediction and entity-level scoring (docs/METHOD.md §1: seqeval, strict IOB2, micro P/R/F1 per type and
overall). Prediction works for every method: it asks the model to ``decode`` a collated batch.

Label sets are mapped per dataset: predicted types that the gold data never uses (e.g. MISC on MSRA)
are dropped before scoring, and the result says which were dropped. The result also splits the score
into span extraction and type prediction (:func:`span_type_scores`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import torch

from mclner.data.iob2 import Entity, entities_to_iob2, flat_tags, iob2_to_entities


def _types_in(tag_lists: Sequence[Sequence[str]]) -> List[str]:
    out = set()
    for tags in tag_lists:
        for t in tags:
            if t != "O" and "-" in t:
                out.add(t.split("-", 1)[1])
    return sorted(out)


def _windows(sentences: Sequence[Any], collator: Any) -> Tuple[List[Any], List[Tuple[int, int]]]:
    """Each sentence as one or more windows that fit the collator (see
    `mclner.data.collate.window_sentences`); a collator that does not say its tokenizer and
    ``max_length`` gets the sentences as they are."""
    tok, max_length = getattr(collator, "tokenizer", None), getattr(collator, "max_length", None)
    plain = [dataclasses.replace(s, tags=None) for s in sentences]
    if tok is None or not isinstance(max_length, int):
        return plain, [(i, 0) for i in range(len(sentences))]
    from mclner.data.collate import window_sentences

    return window_sentences(plain, tok, max_length)


@torch.no_grad()
def predict_entities(
    model: torch.nn.Module,
    sentences: Sequence[Any],
    collator: Any,
    label_map: Any,
    *,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
    impl: str = "reference",
    return_probs: bool = False,
    **decode_options: Any,
) -> Any:
    """Decoded entities per sentence, for any method's model (its ``decode``). With return_probs also
    each sentence's scores on the CPU, as the model's ``decode`` gives them (e.g. tag probabilities
    ``[n, T]``). ``decode_options`` go to ``decode`` (the method's decoding options, e.g. a decoding
    bias); an option given as None is left out (the model's own setting).

    A sentence longer than the collator's ``max_length`` is decoded in overlapping windows whose
    predictions are merged word by word (`mclner.data.collate.rejoin_tags`); its entities are then
    flat (no nesting) and its scores are None: no single window holds the whole sentence (and scores
    over word pairs of thousands of words would not fit in memory anyway)."""
    from mclner.data.collate import rejoin_tags

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    options = {k: v for k, v in decode_options.items() if v is not None}
    try:
        # gold tags play no part in prediction (a gold type the model never saw must not fail here)
        windows, where = _windows(sentences, collator)
        # Length-sorted batches waste less padding; results go back in input order.
        order = sorted(range(len(windows)), key=lambda i: len(windows[i].tokens))
        results: Dict[int, Any] = {}
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            batch = collator([windows[i] for i in idx])
            batch = {key: v.to(device) if isinstance(v, torch.Tensor) else v for key, v in batch.items()}
            decoded = model.decode(batch, label_map, impl=impl, return_scores=return_probs, **options)
            for r, i in enumerate(idx):
                ents, p = decoded[r]
                results[i] = ([(int(s), int(e), str(t)) for s, e, t in ents], p)
    finally:
        model.train(was_training)
    parts: List[List[int]] = [[] for _ in sentences]
    for w, (si, _) in enumerate(where):
        parts[si].append(w)
    preds: List[List[Entity]] = []
    probs_out: List[Optional[torch.Tensor]] = []
    for ws in parts:
        if len(ws) == 1:
            ents, p = results[ws[0]]
            preds.append(ents)
            probs_out.append(p)
            continue
        tags = [flat_tags(results[w][0], len(windows[w].tokens)) for w in ws]
        merged = rejoin_tags(tags, [(0, where[w][1]) for w in ws], 1)[0]
        preds.append(iob2_to_entities(merged))
        probs_out.append(None)
    return (preds, probs_out) if return_probs else preds


def _aligned(
    gold_tags: Sequence[Sequence[str]], pred_entities: Sequence[Sequence[Entity]]
) -> Tuple[List[List[str]], List[List[str]], List[str], Set[str]]:
    """Gold and predicted IOB2 sequences as :func:`score` compares them (predicted types absent from
    the gold label set dropped, entities past a sentence's end ignored), the dropped types and the
    gold types."""
    gold_types = set(_types_in(gold_tags))
    dropped = sorted({t for ents in pred_entities for _, _, t in ents} - gold_types)
    y_true, y_pred = [], []
    for tags, ents in zip(gold_tags, pred_entities):
        n = len(tags)
        kept = [(s, e, t) for s, e, t in ents if t in gold_types and e < n]
        y_true.append(list(tags))
        y_pred.append(list(entities_to_iob2(kept, n)))
    return y_true, y_pred, dropped, gold_types


def _span_type_from_tags(y_true: Sequence[Sequence[str]], y_pred: Sequence[Sequence[str]]) -> Dict[str, Any]:
    """:func:`span_type_scores` on aligned IOB2 sequences (see :func:`_aligned`)."""
    from itertools import chain

    from seqeval.scheme import IOB2, Entities

    # seqeval's own strict-IOB2 entity extraction: the counts agree with the typed scores of `score`
    def spans(seqs: Sequence[Sequence[str]]) -> Dict[Tuple[int, int, int], str]:
        return {(e.sent_id, e.start, e.end): e.tag for e in chain(*Entities(list(seqs), IOB2).entities)}

    gold, pred = spans(y_true), spans(y_pred)
    matched = [k for k in pred if k in gold]
    correct = sum(pred[k] == gold[k] for k in matched)
    p = len(matched) / len(pred) if pred else 0.0
    r = len(matched) / len(gold) if gold else 0.0
    f1 = 2 * p * r / (p + r) if p + r else 0.0
    acc = correct / len(matched) if matched else 0.0
    return {
        "span": {"precision": p, "recall": r, "f1": f1},
        "type": {"accuracy": acc, "matched": len(matched), "correct": int(correct)},
    }


def span_type_scores(
    gold_tags: Sequence[Sequence[str]], pred_entities: Sequence[Sequence[Entity]]
) -> Dict[str, Any]:
    """Entity F1 split into its two halves: finding entities and naming them (the span extraction vs
    type prediction analysis of cross-lingual NER). Same inputs and same entities as :func:`score`:
    gold IOB2 tags per sentence, predicted ``(start, end, type)`` per sentence, predicted types absent
    from the gold label set dropped first, entities extracted as seqeval's strict IOB2 mode does.

    - ``span``: micro precision, recall and F1 of entity boundaries with the type ignored (a predicted
      entity counts when a gold entity has exactly its first and last word).
    - ``type``: ``accuracy`` of the predicted type on the ``matched`` gold entities, those whose span
      was predicted with exact boundaries (``correct`` of them have the right type); 0.0 when none
      matched.

    Typed F1 follows from both: a typed hit is a matched span with the right type, so typed precision
    and recall are the span ones times the type accuracy, and typed F1 = span F1 × type accuracy. A
    "type F1 given gold spans" (typing the gold spans themselves) cannot be computed from predictions
    alone, so it is not reported."""
    y_true, y_pred, _, _ = _aligned(gold_tags, pred_entities)
    return _span_type_from_tags(y_true, y_pred)


def score(gold_tags: Sequence[Sequence[str]], pred_entities: Sequence[Sequence[Entity]]) -> Dict[str, Any]:
    """seqeval strict-IOB2 micro P/R/F1 overall and per type; predicted types absent from the gold
    label set are dropped first (reported under ``dropped_types``). ``span`` and ``type`` split the
    score into span extraction and type prediction (:func:`span_type_scores`)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    y_true, y_pred, dropped, gold_types = _aligned(gold_tags, pred_entities)
    report = classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True, zero_division=0)
    per_type = {
        t: {"precision": r["precision"], "recall": r["recall"], "f1": r["f1-score"], "support": int(r["support"])}
        for t, r in report.items()
        if t in gold_types
    }
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0})
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "support": int(micro["support"]),
        "per_type": per_type,
        "dropped_types": dropped,
        "sentences": len(y_true),
        **_span_type_from_tags(y_true, y_pred),
    }


def evaluate(
    model: torch.nn.Module,
    sentences: Sequence[Any],
    collator: Any,
    label_map: Any,
    *,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
    impl: str = "reference",
    **decode_options: Any,
) -> Dict[str, Any]:
    """Predict on labelled sentences and score them (``decode_options``: see :func:`predict_entities`)."""
    preds = predict_entities(model, sentences, collator, label_map, batch_size=batch_size, device=device, impl=impl,
                             **decode_options)
    return score([s.tags for s in sentences], preds)


def format_scores(result: Dict[str, Any]) -> str:
    lines = [f"{'type':8s} {'P':>7s} {'R':>7s} {'F1':>7s} {'support':>8s}"]
    for t, r in sorted(result["per_type"].items()):
        lines.append(
            f"{t:8s} {100 * r['precision']:7.2f} {100 * r['recall']:7.2f} {100 * r['f1']:7.2f} {r['support']:8d}"
        )
    lines.append(
        f"{'overall':8s} {100 * result['precision']:7.2f} {100 * result['recall']:7.2f} "
        f"{100 * result['f1']:7.2f} {result['support']:8d}"
    )
    if "span" in result:  # score dicts written before the split have none
        sp, ty = result["span"], result["type"]
        lines.append(
            f"{'span':8s} {100 * sp['precision']:7.2f} {100 * sp['recall']:7.2f} {100 * sp['f1']:7.2f}"
            f"  (boundaries only); type accuracy {100 * ty['accuracy']:.2f} on the {ty['matched']} exact spans"
        )
    if result.get("dropped_types"):
        lines.append(f"dropped predicted types not in the gold label set: {', '.join(result['dropped_types'])}")
    return "\n".join(lines)
