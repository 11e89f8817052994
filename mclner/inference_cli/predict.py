"""`mclner predict`: entities of raw text or a CoNLL file with a checkpoint of any method, written as
JSON lines (pipeline-style entities with scores and character offsets) or IOB2 columns, one record per
input line (the input: `mclner.inference_cli.predict_input`)."""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, List, Optional

from mclner._cli_util import DefaultsHelpFormatter
from mclner.errors import UserError
from mclner.inference_cli.options import add_decode_options, add_impl, choose, decode_options, load, positive_int
from mclner.inference_cli.predict_input import count_records, read_predict_items
from mclner.training.guards import check_device


def _check_output(output: str) -> Optional[Path]:
    """The output file (None: stdout), checked before any work; it is written under a temporary name
    and renamed at the end, so a failed run never leaves a truncated file in its place."""
    if output == "-":
        return None
    p = Path(output)
    if p.is_dir():
        raise UserError(f"--output {output}: is a folder, expected a file path")
    parent = p.parent if str(p.parent) else Path(".")
    if not parent.is_dir():
        raise UserError(f"--output {output}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"--output {output}: the folder {parent} is not writable")
    return p


def _parse_types(text: Optional[str], known: List[str]) -> Optional[set]:
    if text is None:
        return None
    types = {t.strip() for t in text.split(",") if t.strip()}
    unknown = sorted(types - set(known))
    if not types or unknown:
        raise UserError(f"--types {text}: {'unknown type(s) ' + ', '.join(unknown) if unknown else 'no type given'}; "
                        f"the model predicts {', '.join(known)}")
    return types


# Characters that JSON leaves unescaped but line-oriented readers (str.splitlines, many editors) take for
# line breaks: escaped, so that a JSON Lines record is always one line.
_LINE_BREAKS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def json_line(rec: Any) -> str:
    """``rec`` as one JSON line, non-ASCII text kept readable, line-break characters escaped."""
    text = json.dumps(rec, ensure_ascii=False)
    for ch, esc in _LINE_BREAKS.items():
        text = text.replace(ch, esc)
    return text


def _segmenter(args: argparse.Namespace, lm: Any) -> Any:
    """The segmenter of raw text: --segmenter, else the one the checkpoint records."""
    from mclner.data.segmenters import Segmenter, checkpoint_segmenter

    if args.input_format == "conll" and not getattr(args, "text", None):
        return None
    return Segmenter(args.segmenter or checkpoint_segmenter(lm.path, lm.config)["segmenter"])


def run_predict(args: argparse.Namespace) -> int:
    from mclner.data.iob2 import entities_to_iob2
    from mclner.data.text import entity_dicts
    from mclner.predictor import predict_scored

    device = check_device(args.device)
    dest = _check_output(args.output)
    lm = load(args.checkpoint, device)  # before waiting on stdin
    model, builder, label_map, dev = lm.model, lm.collator, lm.label_map, lm.device
    impl = choose(args, dev)
    keep = _parse_types(args.types, list(label_map.types))
    stream = read_predict_items(args, _segmenter(args, lm))
    opts = dict(batch_size=args.batch_size, device=dev, impl=impl, **decode_options(args))
    tmp = None if dest is None else dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        out = sys.stdout if tmp is None else open(tmp, "w", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--output {args.output}: cannot write ({exc.strerror})") from None
    bar = None
    try:
        # In chunks: the input is streamed, so memory does not grow with its number of lines; an input
        # longer than one chunk gets a progress bar on a terminal (stderr), as `evaluate` does.
        chunk = 16 * args.batch_size
        while True:
            items = list(itertools.islice(stream, chunk))
            if not items:
                break
            if bar is None and len(items) == chunk and args.progress and sys.stderr.isatty():
                from tqdm.auto import tqdm

                bar = tqdm(total=count_records(args), desc="predict", unit="sent", file=sys.stderr)
            nonempty = [k for k, (s, _, _) in enumerate(items) if s.tokens]
            scored = predict_scored(model, [items[k][0] for k in nonempty], builder, label_map, **opts)
            preds: List[List[Any]] = [[] for _ in items]
            for k, ents in zip(nonempty, scored):
                preds[k] = [e for e in ents if keep is None or e[2] in keep]
            for (s, text, spans), ents in zip(items, preds):
                if args.output_format == "jsonl":
                    rec = {"text": text, "tokens": s.tokens, "entities": entity_dicts(text, spans, ents)}
                    out.write(json_line(rec) + "\n")
                else:
                    for tok, tag in zip(s.tokens, entities_to_iob2([e[:3] for e in ents], len(s.tokens))):
                        out.write(f"{tok}\t{tag}\n")
                    out.write("\n")
            if bar is not None:
                bar.update(len(items))
    except BaseException:
        if tmp is not None:
            out.close()
            tmp.unlink(missing_ok=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    if tmp is not None:
        out.close()
        os.replace(tmp, dest)
    return 0


def add_predict(sub: argparse._SubParsersAction) -> None:
    q = sub.add_parser("predict", help="tag raw text or a CoNLL file with a checkpoint",
                       description="Read sentences (raw text: one sentence per line, split into words and punctuation, "
                       "Chinese/Japanese as the model's target corpus was split: per character, or into words "
                       "with the segmenter the checkpoint records; or a CoNLL file) and write the entities "
                       "as JSON lines or the words with IOB2 tags, one record per input line (a blank line gives "
                       "an empty record). A JSON line is {text, tokens, entities}; "
                       "each entity has the fields of the Hugging Face token-classification pipeline's "
                       "aggregated output: entity_group, score, word (as written in the text), start and end "
                       "(character offsets, end exclusive), and word_start/word_end (word indices, end "
                       "inclusive).",
                       formatter_class=DefaultsHelpFormatter)
    q.add_argument("checkpoint", help="checkpoint folder written by `mclner train`")
    q.add_argument("--input", "-i", default="-", help="input file ('-' = stdin)")
    q.add_argument("--text", "-t", action="append", default=None, metavar="TEXT",
                   help="a sentence to tag, instead of --input (repeat for several)")
    q.add_argument("--input-format", choices=("text", "conll"), default="text",
                   help="raw text lines or CoNLL columns (words in the first column; tags or other columns, "
                   "if any, are ignored)")
    q.add_argument("--output", "-o", default="-", help="output file ('-' = stdout)")
    q.add_argument("--output-format", choices=("jsonl", "iob2"), default="jsonl",
                   help="JSON lines {tokens, entities} or 'word<TAB>tag' lines with blank lines between sentences")
    q.add_argument("--lang", default=None, help="language code of the input")
    from mclner.data.segmenters import SEGMENTERS

    q.add_argument("--segmenter", choices=SEGMENTERS, default=None,
                   help="how raw text is split into words (default: the checkpoint's, that of its target corpus): "
                   "char = one word per Han/kana character, space = Han/kana runs between spaces are words, "
                   "fugashi/sudachipy = Japanese words, jieba = Chinese words (optional extras: "
                   "pip install \"mclner[ja]\", \"mclner[ja-sudachi]\", \"mclner[zh]\")")
    q.add_argument("--batch-size", type=positive_int, default=32, help="sentences per batch")
    q.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar on long inputs (on a terminal)")
    q.add_argument("--types", default=None, metavar="T1,T2",
                   help="keep only these entity types (comma-separated, e.g. PER,LOC)")
    add_impl(q)
    q.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    add_decode_options(q)
    q.set_defaults(func=run_predict)
