"""`mclner evaluate` and `mclner predict`: a checkpoint of any method on labelled data or raw text.
The decoding options of the methods (`Method.DecodeConfig`) are generated from the registry."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mclner._cli_util import DefaultsHelpFormatter, add_field
from mclner.errors import UserError
from mclner.training.guards import check_device


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _load(checkpoint: str, device: Optional[str]):
    from mclner.inference import load_model

    lm = load_model(checkpoint, device)
    return lm.model, lm.collator, lm.label_map, lm.device


def _impl(args: argparse.Namespace, device: Any) -> str:
    from mclner.ops.impl import check_impl, choose_impl

    impl = choose_impl(args.impl, args.fused)
    check_impl(impl, device)
    return impl


def _decode_fields() -> Dict[str, Tuple[dataclasses.Field, List[str]]]:
    """Every registered method's decoding options: name -> (field, the methods that have it)."""
    from mclner.methods import registry

    out: Dict[str, Tuple[dataclasses.Field, List[str]]] = {}
    for name, cls in registry().items():
        for f in dataclasses.fields(cls.DecodeConfig) if cls.DecodeConfig is not None else ():
            out.setdefault(f.name, (f, []))[1].append(name)
    return out


def _add_decode_options(p: argparse.ArgumentParser) -> None:
    """The methods' decoding options (`Method.DecodeConfig`), each naming the methods that have it; a
    checkpoint of another method decodes as it always does."""
    fields = _decode_fields()
    if fields:
        g = p.add_argument_group("decoding (the checkpoint's own setting unless given)")
        for f, owners in fields.values():
            add_field(g, f, ", ".join(owners))


def decode_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The decoding options given on the command line (passed to the model's ``decode``)."""
    return {k: getattr(args, k) for k in _decode_fields() if getattr(args, k, None) is not None}


def decoding_note(model: Any, options: Dict[str, Any]) -> str:
    """Which decoding a checkpoint's model applies (printed by `evaluate`, kept in its JSON)."""
    return "decoding: " + model.describe_decoding(**options)


def _run_evaluate(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.evaluation import _types_in, format_scores, predict_entities, score

    device = check_device(args.device)
    model, builder, label_map, dev = _load(args.checkpoint, device)
    impl = _impl(args, dev)
    sentences = [s for s in load_sentences(args.data, split=args.split, lang=args.lang) if s.tags is not None]
    # the first K labelled sentences, as `mclner train --max-eval-sentences K` scores them
    sentences = sentences[: args.max_sentences or None]
    if not sentences:
        raise UserError(f"{args.data} ({args.split}) has no labelled sentences to score")
    decode = decode_options(args)
    note = decoding_note(model, decode)
    if not args.json:
        print(f"{note}; impl {impl}; {len(sentences)} sentences", file=sys.stderr)
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


def _read_predict_input(args: argparse.Namespace) -> List[Any]:
    """The input sentences (see :func:`_read_predict_items`)."""
    return [s for s, _, _ in _read_predict_items(args)]


def _read_predict_items(args: argparse.Namespace) -> List[Any]:
    """``(sentence, text, spans)`` per input sentence: the words, the line they come from and each
    word's character offsets in it (a CoNLL file's words are joined as they are written)."""
    from mclner.data.readers import Sentence
    from mclner.data.text import split_lines, tokenize_line, words_to_text

    fmt = args.input_format
    src = args.input
    if getattr(args, "text", None):
        if src != "-" or fmt != "text":
            raise UserError("--text gives the input: it cannot be combined with --input or --input-format conll")
        lines = list(args.text)
    elif fmt == "conll":
        from mclner.data.readers import read_conll

        if src == "-":
            raise UserError("--input-format conll needs a file path, not stdin")
        # The words are the first column; any other column (tags, known or not) is ignored, and a
        # file of words alone is fine.
        out = []
        for s in read_conll(src, tag_col=None):
            tw = words_to_text(list(s.tokens))
            out.append((Sentence(list(s.tokens), None, args.lang or s.lang), tw.text, tw.spans))
        return out
    else:
        if src == "-":
            text = sys.stdin.read()
        else:
            try:
                text = Path(src).read_text(encoding="utf-8")
            except FileNotFoundError:
                raise UserError(f"{src}: no such file") from None
            except IsADirectoryError:
                raise UserError(f"{src}: is a folder, expected a text file") from None
            except UnicodeDecodeError as exc:
                raise UserError(f"{src}: not UTF-8 text ({exc.reason})") from None
            except OSError as exc:
                raise UserError(f"{src}: cannot read ({exc.strerror})") from None
        # split_lines drops a leading byte order mark: it is not part of the first word
        lines = split_lines(text)
    out = []
    for line in lines:
        tw = tokenize_line(line)
        out.append((Sentence(tw.words, None, args.lang or "xx"), tw.text, tw.spans))
    return out


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


def _run_predict(args: argparse.Namespace) -> int:
    from mclner.data.iob2 import entities_to_iob2
    from mclner.data.text import entity_dicts
    from mclner.predictor import predict_scored

    device = check_device(args.device)
    dest = _check_output(args.output)
    model, builder, label_map, dev = _load(args.checkpoint, device)  # before waiting on stdin
    impl = _impl(args, dev)
    keep = _parse_types(args.types, list(label_map.types))
    items = _read_predict_items(args)
    nonempty = [k for k, (s, _, _) in enumerate(items) if s.tokens]
    scored = predict_scored(model, [items[k][0] for k in nonempty], builder, label_map, batch_size=args.batch_size,
                            device=dev, impl=impl, **decode_options(args))
    preds: List[List[Any]] = [[] for _ in items]
    for k, ents in zip(nonempty, scored):
        preds[k] = [e for e in ents if keep is None or e[2] in keep]
    tmp = None if dest is None else dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        out = sys.stdout if tmp is None else open(tmp, "w", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--output {args.output}: cannot write ({exc.strerror})") from None
    try:
        for (s, text, spans), ents in zip(items, preds):
            if args.output_format == "jsonl":
                rec = {"text": text, "tokens": s.tokens, "entities": entity_dicts(text, spans, ents)}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                for tok, tag in zip(s.tokens, entities_to_iob2([e[:3] for e in ents], len(s.tokens))):
                    out.write(f"{tok}\t{tag}\n")
                out.write("\n")
    except BaseException:
        if tmp is not None:
            out.close()
            tmp.unlink(missing_ok=True)
        raise
    if tmp is not None:
        out.close()
        os.replace(tmp, dest)
    return 0


def _add_impl(p: argparse.ArgumentParser) -> None:
    from mclner.ops.impl import FUSED_HELP, IMPL_CHOICES, IMPL_HELP

    p.add_argument("--impl", choices=IMPL_CHOICES, default=None, help=f"{IMPL_HELP} (default: auto)")
    p.add_argument("--fused", action="store_true", help=FUSED_HELP)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--batch-size", type=_positive_int, default=32, help="sentences per batch")
    p.add_argument("--max-sentences", type=_positive_int, default=None, metavar="K",
                   help="score only the first K labelled sentences (as `mclner train --max-eval-sentences K`)")
    _add_impl(p)
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar on long sets (on a terminal)")
    _add_decode_options(p)
    p.set_defaults(func=_run_evaluate)

    q = sub.add_parser("predict", help="tag raw text or a CoNLL file with a checkpoint",
                       description="Read sentences (raw text: one sentence per line, split into words and punctuation, "
                       "CJK characters into single characters; or a CoNLL file) and write the entities "
                       "as JSON lines or the words with IOB2 tags. A JSON line is {text, tokens, entities}; "
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
    q.add_argument("--batch-size", type=_positive_int, default=32, help="sentences per batch")
    q.add_argument("--types", default=None, metavar="T1,T2",
                   help="keep only these entity types (comma-separated, e.g. PER,LOC)")
    _add_impl(q)
    q.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    _add_decode_options(q)
    q.set_defaults(func=_run_predict)
