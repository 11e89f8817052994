"""`mclner evaluate`: a checkpoint of any method scored on labelled data (seqeval P/R/F1 per type)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, List, Optional

from mclner._cli_util import DefaultsHelpFormatter
from mclner.errors import UserError
from mclner.inference_cli.options import (
    add_decode_options,
    add_impl,
    choose,
    decode_options,
    decoding_note,
    load,
    positive_int,
)
from mclner.training.guards import check_device


def segmentation_note(lm: Any, sentences: List[Any]) -> Optional[str]:
    """A note when labelled CJK data is split otherwise than the model's target was (per character
    against words, or the reverse): the model then sees units it did not learn, and scores drop."""
    from mclner.data.segmentation import MIN_CJK_SHARE, cjk_token_counts, resolve_segmentation
    from mclner.data.segmenters import checkpoint_segmenter

    text = checkpoint_segmenter(lm.path, lm.config)
    total, cjk, _ = cjk_token_counts(sentences)
    if not total or cjk < MIN_CJK_SHARE * total:
        return None
    data = resolve_segmentation("auto", text.get("lang") or "xx", sentences, "the data").mode
    if data == text["segmentation"]:
        return None
    how = {"char": "one token per character", "word": "into words"}
    return (f"the data is split {how[data]}, the model's target was split {how[text['segmentation']]} "
            f"(segmenter {text['segmenter']}): the model sees units it did not learn, so scores may be low")


def run_evaluate(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.evaluation import _types_in, format_scores, predict_entities, score

    device = check_device(args.device)
    lm = load(args.checkpoint, device)
    model, builder, label_map, dev = lm.model, lm.collator, lm.label_map, lm.device
    impl = choose(args, dev)
    sentences = [s for s in load_sentences(args.data, split=args.split, lang=args.lang) if s.tags is not None]
    # the first K labelled sentences, as `mclner train --max-eval-sentences K` scores them
    sentences = sentences[: args.max_sentences or None]
    if not sentences:
        raise UserError(f"{args.data} ({args.split}) has no labelled sentences to score")
    decode = decode_options(args)
    note = decoding_note(model, decode)
    seg_note = segmentation_note(lm, sentences)
    if not args.json:
        print(f"{note}; impl {impl}; {len(sentences)} sentences", file=sys.stderr)
        if seg_note:
            print(f"note: {seg_note}", file=sys.stderr)
    opts = dict(batch_size=args.batch_size, device=dev, impl=impl, **decode)
    # Long sets go in chunks with a progress bar (on a terminal); a short set is one call, batched
    # exactly as the trainer's final evaluation batches it.
    chunk = 64 * args.batch_size
    if len(sentences) > chunk and args.progress and sys.stderr.isatty():
        from tqdm.auto import tqdm

        preds = []
        with tqdm(total=len(sentences), desc="evaluate", unit="sent", file=sys.stderr) as bar:
            for k in range(0, len(sentences), chunk):
                part = sentences[k : k + chunk]
                preds.extend(predict_entities(model, part, builder, label_map, **opts))
                bar.update(len(part))
    else:
        preds = predict_entities(model, sentences, builder, label_map, **opts)
    res = score([s.tags for s in sentences], preds)
    res["decoding"] = note
    if seg_note:
        res["segmentation_note"] = seg_note
    res["impl"] = impl
    # Gold types the model never learned are scored (all missed: recall 0) and named (docs/TRAINING.md).
    res["unknown_types"] = sorted(set(_types_in([s.tags for s in sentences])) - set(label_map.types))
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(format_scores(res))
        if res["unknown_types"]:
            print(f"gold types the model does not know (scored as missed): {', '.join(res['unknown_types'])}")
    return 0


def add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="score a checkpoint on labelled data (seqeval P/R/F1 per type)",
                       description="Entity-level micro precision/recall/F1 (seqeval, strict IOB2), overall and "
                       "per type. Predicted types absent from the data's label set (e.g. MISC on MSRA) are "
                       "dropped before scoring and listed; gold types the model never learned are scored as "
                       "missed and listed too.",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder written by `mclner train` (e.g. runs/x/best)")
    p.add_argument("data", help="labelled data: embedded name (msra-zh, conll2003-en), HF dataset or CoNLL path")
    p.add_argument("--split", default="test", help="split of a named data set")
    p.add_argument("--lang", default=None, help="language code of the data (for path inputs)")
    p.add_argument("--batch-size", type=positive_int, default=32, help="sentences per batch")
    p.add_argument("--max-sentences", type=positive_int, default=None, metavar="K",
                   help="score only the first K labelled sentences (as `mclner train --max-eval-sentences K`)")
    add_impl(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar on long sets (on a terminal)")
    add_decode_options(p)
    p.set_defaults(func=run_evaluate)

