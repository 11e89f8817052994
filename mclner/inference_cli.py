"""`mclner evaluate`, `mclner predict` and `mclner export`: a checkpoint of any method on labelled data,
raw text or CoNLL files, and a tagger out of the toolkit as a Hugging Face token-classification folder.
The decoding options of the methods (`Method.DecodeConfig`) are generated from the registry."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

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


def _load(checkpoint: str, device: Optional[str]) -> Any:
    from mclner.inference import load_model

    return load_model(checkpoint, device)


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


def _run_evaluate(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.evaluation import _types_in, format_scores, predict_entities, score

    device = check_device(args.device)
    lm = _load(args.checkpoint, device)
    model, builder, label_map, dev = lm.model, lm.collator, lm.label_map, lm.device
    impl = _impl(args, dev)
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


def _read_predict_input(args: argparse.Namespace) -> List[Any]:
    """The input sentences (see :func:`_read_predict_items`)."""
    return [s for s, _, _ in _read_predict_items(args)]


def _file_lines(src: str) -> Iterator[Tuple[int, str]]:
    """``(line number, line)`` of a text file, read line by line (mclner.data.lines)."""
    from mclner.data.lines import iter_lines

    try:
        f = open(src, "rb")
    except FileNotFoundError:
        raise UserError(f"{src}: no such file") from None
    except IsADirectoryError:
        raise UserError(f"{src}: is a folder, expected a text file") from None
    except OSError as exc:
        raise UserError(f"{src}: cannot read ({exc.strerror})") from None
    with f:
        try:
            yield from iter_lines(f, src)
        except IsADirectoryError:
            raise UserError(f"{src}: is a folder, expected a text file") from None
        except OSError as exc:
            raise UserError(f"{src}: cannot read ({exc.strerror})") from None


def _count_records(args: argparse.Namespace) -> Optional[int]:
    """How many records the input holds, where that is known without keeping it (for the progress
    bar): --text, or a raw text file (its lines counted block by block); None for stdin or CoNLL."""
    if getattr(args, "text", None):
        return len(args.text)
    if args.input_format != "text" or args.input == "-" or not Path(args.input).is_file():
        return None
    n, last = 0, b"\n"
    with open(args.input, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def _read_predict_items(args: argparse.Namespace, segmenter: Any = None) -> Iterator[Any]:
    """``(sentence, text, spans)`` per input record: the words, the line they come from and each
    word's character offsets in it (a CoNLL file's words are joined as they are written). Raw text
    gives one record per line, blank lines included (an empty record), so that output line k belongs
    to input line k; lines end at ``\\n`` or ``\\r\\n`` only. ``segmenter`` splits raw text
    (`mclner.data.segmenters`; default: one word per Han/kana character). Raw text is read line by
    line, each line and sentence bounded (mclner.data.lines), so that the input is streamed."""
    from mclner.data.lines import MAX_LINE_CHARS, check_sentence, iter_lines, too_long
    from mclner.data.readers import Sentence
    from mclner.data.text import tokenize_line, words_to_text

    fmt = args.input_format
    src = args.input
    split = segmenter if segmenter is not None else tokenize_line
    if getattr(args, "text", None):
        if src != "-" or fmt != "text":
            raise UserError("--text gives the input: it cannot be combined with --input or --input-format conll")
        lines: Iterator[Tuple[Any, str]] = ((f"--text {k}", t) for k, t in enumerate(args.text, 1))
    elif fmt == "conll":
        from mclner.data.readers import read_conll

        if src == "-":
            raise UserError("--input-format conll needs a file path, not stdin")
        # The words are the first column; any other column (tags, known or not) is ignored, and a
        # file of words alone is fine.
        for s in read_conll(src, tag_col=None):
            tw = words_to_text(list(s.tokens))
            yield Sentence(list(s.tokens), None, args.lang or s.lang), tw.text, tw.spans
        return
    elif src == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin  # bytes: decoded line by line
        lines = ((f"stdin:{k}", line) for k, line in iter_lines(stdin, "stdin"))
    else:
        lines = ((f"{src}:{k}", line) for k, line in _file_lines(src))
    for where, line in lines:  # iter_lines drops a leading byte order mark: not part of the first word
        if len(line) > MAX_LINE_CHARS:
            raise too_long(where)
        tw = split(line)
        check_sentence(len(tw.words), where)
        yield Sentence(tw.words, None, args.lang or "xx"), tw.text, tw.spans


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


def _run_predict(args: argparse.Namespace) -> int:
    from mclner.data.iob2 import entities_to_iob2
    from mclner.data.text import entity_dicts
    from mclner.predictor import predict_scored

    device = check_device(args.device)
    dest = _check_output(args.output)
    lm = _load(args.checkpoint, device)  # before waiting on stdin
    model, builder, label_map, dev = lm.model, lm.collator, lm.label_map, lm.device
    impl = _impl(args, dev)
    keep = _parse_types(args.types, list(label_map.types))
    stream = _read_predict_items(args, _segmenter(args, lm))
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

                bar = tqdm(total=_count_records(args), desc="predict", unit="sent", file=sys.stderr)
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


def _add_impl(p: argparse.ArgumentParser) -> None:
    from mclner.ops.impl import FUSED_HELP, IMPL_CHOICES, IMPL_HELP

    p.add_argument("--impl", choices=IMPL_CHOICES, default=None, help=f"{IMPL_HELP} (default: auto)")
    p.add_argument("--fused", action="store_true", help=FUSED_HELP)


def _run_export(args: argparse.Namespace) -> int:
    from mclner.export import describe, export_token_classification
    from mclner.inference import check_checkpoint_path

    check_checkpoint_path(args.checkpoint)
    out = export_token_classification(args.checkpoint, args.output, overwrite=args.overwrite)
    d = describe(out)
    print(f"{out}: {', '.join(d['architectures'] or ['?'])} with labels {', '.join(d['labels'])}; "
          f'load it with transformers.pipeline("token-classification", model="{out}", '
          'aggregation_strategy="simple")')
    return 0


def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="write a tagger checkpoint as a Hugging Face token-classification folder",
                       description="Write the checkpoint of a tagger method (token-classification, concner) as a "
                       "standard Hugging Face token-classification folder (config with id2label, weights, "
                       "tokenizer, model card): AutoModelForTokenClassification and pipeline(\"token-"
                       "classification\") load it without mclner. Relation-grid (mclner) and span (dlbri) models "
                       "have no such head in transformers and are refused (docs/USAGE.md).",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder written by `mclner train` (e.g. runs/x/best)")
    p.add_argument("output", help="the new folder")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT when it is a folder `mclner export` wrote")
    p.set_defaults(func=_run_export)


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
    q.add_argument("--batch-size", type=_positive_int, default=32, help="sentences per batch")
    q.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="a progress bar on long inputs (on a terminal)")
    q.add_argument("--types", default=None, metavar="T1,T2",
                   help="keep only these entity types (comma-separated, e.g. PER,LOC)")
    _add_impl(q)
    q.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    _add_decode_options(q)
    q.set_defaults(func=_run_predict)

    _add_export(sub)
