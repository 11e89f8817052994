"""Prediction and entity-level scoring (SPEC.md §1: seqeval, strict IOB2, micro P/R/F1 per type and overall).

Label sets are mapped per dataset: predicted types that the gold data never uses (e.g. MISC on MSRA)
are dropped before scoring, and the result says which were dropped.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

Entity = Tuple[int, int, str]  # (start, end inclusive, type), word indices


def _data_grid():
    from mclner.data import grid

    return grid


def _types_in(tag_lists: Sequence[Sequence[str]]) -> List[str]:
    out = set()
    for tags in tag_lists:
        for t in tags:
            if t != "O" and "-" in t:
                out.add(t.split("-", 1)[1])
    return sorted(out)


@torch.no_grad()
def predict_entities(
    model: torch.nn.Module,
    sentences: Sequence[Any],
    builder: Any,
    label_map: Any,
    *,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
    impl: str = "reference",
    return_probs: bool = False,
) -> Any:
    """Decoded entities per sentence. With return_probs (relation models only) also each sentence's
    relation probabilities ``[n, n, C]`` on the CPU."""
    grid = _data_grid()
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    preds: List[List[Entity]] = []
    probs_out: List[torch.Tensor] = []
    try:
        # Length-sorted batches waste less padding (N² grids); results go back in input order.
        order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].tokens))
        results: Dict[int, Any] = {}
        for k in range(0, len(order), batch_size):
            idx = order[k : k + batch_size]
            batch = builder.sentences([sentences[i] for i in idx])
            batch = {key: v.to(device) if isinstance(v, torch.Tensor) else v for key, v in batch.items()}
            lengths = batch["word_mask"].sum(1).tolist()
            if hasattr(model, "tag_logits"):
                tags_id = model.tag_logits(batch).argmax(-1).cpu()
                id_to_tag = {v: t for t, v in builder.tag_to_id.items()}
                for r, i in enumerate(idx):
                    tags = [id_to_tag[int(x)] for x in tags_id[r, : int(lengths[r])]]
                    results[i] = (list(grid.iob2_to_entities(tags)), None)
            else:
                probs = model.predict_probs(batch, impl=impl).cpu()
                for r, i in enumerate(idx):
                    n = int(lengths[r])
                    p = probs[r, :n, :n]
                    results[i] = (list(grid.decode_grid(p, label_map)), p if return_probs else None)
        for i in range(len(sentences)):
            ents, p = results[i]
            preds.append([(int(s), int(e), str(t)) for s, e, t in ents])
            probs_out.append(p)
    finally:
        model.train(was_training)
    return (preds, probs_out) if return_probs else preds


def score(gold_tags: Sequence[Sequence[str]], pred_entities: Sequence[Sequence[Entity]]) -> Dict[str, Any]:
    """seqeval strict-IOB2 micro P/R/F1 overall and per type; predicted types absent from the gold
    label set are dropped first (reported under ``dropped_types``)."""
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    grid = _data_grid()
    gold_types = set(_types_in(gold_tags))
    dropped = sorted({t for ents in pred_entities for _, _, t in ents} - gold_types)
    y_true, y_pred = [], []
    for tags, ents in zip(gold_tags, pred_entities):
        n = len(tags)
        kept = [(s, e, t) for s, e, t in ents if t in gold_types and e < n]
        y_true.append(list(tags))
        y_pred.append(list(grid.entities_to_iob2(kept, n)))
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
    }


def evaluate(
    model: torch.nn.Module,
    sentences: Sequence[Any],
    builder: Any,
    label_map: Any,
    *,
    batch_size: int = 32,
    device: Optional[torch.device] = None,
    impl: str = "reference",
) -> Dict[str, Any]:
    """Predict on labelled sentences and score them."""
    preds = predict_entities(model, sentences, builder, label_map, batch_size=batch_size, device=device, impl=impl)
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
    if result.get("dropped_types"):
        lines.append(f"dropped predicted types not in the gold label set: {', '.join(result['dropped_types'])}")
    return "\n".join(lines)
