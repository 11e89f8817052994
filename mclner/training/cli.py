"""`mclner train`, `mclner evaluate`, `mclner predict`."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

from mclner._cli_util import DefaultsHelpFormatter
from mclner.errors import UserError
from mclner.methods.base import option_flag
from mclner.training.config import TrainConfig
from mclner.training.guards import check_device, finite_float


def _positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def _nonneg_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {v}")
    return v


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {v}")
    return v


def _unit_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {v}")
    return v


# ----------------------------------------------------------------------------- train


def _field_type(f: dataclasses.Field) -> Any:
    """The argparse type of a config field from its default and bounds."""
    kind = f.metadata.get("type")
    if kind is None:
        d = f.default
        kind = type(d) if d is not None and not isinstance(d, bool) else None
        if kind is None:  # Optional[...] fields default to None: read the annotation
            ann = str(f.type)
            kind = int if "int" in ann else float if "float" in ann else str
    if kind is float:
        return _finite_float
    return kind


def _finite_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text}")
    return v


def _add_field(group: argparse._ArgumentGroup, f: dataclasses.Field, owners: str = "") -> None:
    """One option from a config field. Its argparse default is None so that an option given on the
    command line is told apart from one left out, whatever its value (a preset never swallows it)."""
    flag = option_flag(f)
    default = f.default if f.default is not dataclasses.MISSING else None
    flag_only = f.metadata.get("flag_only", False)  # a plain switch, no --no- form (e.g. --fused, an alias)
    if flag_only:
        shown = ""
    elif isinstance(default, bool):
        shown = " (default: on)" if default else " (default: off)"
    else:
        shown = "" if default is None else f" (default: {default})"
    text = f.metadata.get("help", "") + (f" [{owners}]" if owners else "") + shown
    if flag_only:
        group.add_argument(flag, dest=f.name, action="store_true", default=None, help=text)
    elif isinstance(f.default, bool):
        group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
    else:
        group.add_argument(flag, dest=f.name, type=_field_type(f), default=None, choices=f.metadata.get("choices"),
                           help=text)


def _add_train(sub: argparse._SubParsersAction) -> None:
    from mclner.methods import registry

    methods = registry()
    p = sub.add_parser(
        "train",
        help="train a cross-lingual NER method and evaluate it on the target",
        description=(
            "Train a method (`mclner methods` lists them) on labelled source sentences (plus what the method "
            "adds: code-switched copies, pseudo-labelled or unlabelled target sentences), select the best model "
            "on the source dev set, then score it on the target test set. Defaults are the embedded offline "
            "setup: CoNLL-2003 English -> MSRA Chinese, CC-CEDICT, multilingual-e5-small. Options given on the "
            "command line override the preset. Run on several processes with "
            "`torchrun --nproc_per_node K -m mclner train ...` (DDP; gloo on CPU, NCCL on GPU)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups = {"data": p.add_argument_group("data"), "optimisation": p.add_argument_group("optimisation")}
    for f in dataclasses.fields(TrainConfig):
        if "help" in f.metadata:
            _add_field(groups[f.metadata["group"]], f)
    m = p.add_argument_group("method")
    m.add_argument("--method", choices=tuple(methods), default="mclner",
                   help="the method to train (default: mclner); its own options follow")
    presets = sorted({k for cls in methods.values() for k in cls.presets})
    m.add_argument("--preset", choices=presets, default=None,
                   help="the method's preset: quick = the whole method on a 2-core CPU in under 30 minutes (a "
                   "subset, short sentences, frozen word embeddings); full = all data, 10 epochs (GPU)")
    # Each method's options, generated from its Config; an option that several methods share is listed once.
    seen: Dict[str, List[str]] = {}
    fields: Dict[str, dataclasses.Field] = {}
    for name, cls in methods.items():
        for f in dataclasses.fields(cls.Config):
            seen.setdefault(f.name, []).append(name)
            fields.setdefault(f.name, f)
    for name, cls in methods.items():
        own = [f for f in dataclasses.fields(cls.Config) if seen[f.name][0] == name]
        if own:
            g = p.add_argument_group(f"{name} options")
            for f in own:
                _add_field(g, fields[f.name], ", ".join(seen[f.name]) if len(seen[f.name]) > 1 else "")
    r = p.add_argument_group("run")
    r.add_argument("--resume", action="store_true", help="continue the run in --output-dir where it stopped")
    r.add_argument("--overwrite", action="store_true",
                   help="start again in an existing run folder: deletes what mclner wrote there (after the options, "
                   "data and encoder were checked); a non-empty folder that is not a run folder is refused")
    r.add_argument("--reuse-stages-from", metavar="RUN",
                   help="start this new run with the finished stages of the run folder RUN that this run's options "
                   "cannot change (hard links, no retraining): RUN must agree in every option the stages read, e.g. "
                   "a DLBri ablation with --no-lp takes bridging and source stages from the full run "
                   "(docs/TRAINING.md, \"Reusing finished stages\")")
    r.add_argument("--json", action="store_true", help="print the final summary as JSON")
    p.set_defaults(func=_run_train)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """TrainConfig from parsed options: the method's preset first, then every option given on the
    command line (options default to None in argparse, so any given value wins, even one equal to the
    built-in default)."""
    from mclner.methods import get_method
    from mclner.training.config import apply_preset

    cls = get_method(args.method)
    cfg = apply_preset(TrainConfig(method=args.method), args.preset)
    for f in dataclasses.fields(TrainConfig):
        v = getattr(args, f.name, None)
        if v is not None and "help" in f.metadata:
            setattr(cfg, f.name, v)
    own = {f.name for f in dataclasses.fields(cls.Config)}
    from mclner.methods import registry

    for other_name, other in registry().items():
        for f in dataclasses.fields(other.Config):
            v = getattr(args, f.name, None)
            if v is None:
                continue
            if f.name not in own:
                flag = option_flag(f)
                raise UserError(f"{flag} is an option of {other_name}, not of --method {args.method}")
            cfg.method_options[f.name] = v
    if (cfg.target or "").lower() in ("", "none"):
        cfg.target = None
    if cfg.effective_batch_size < cfg.batch_size:
        cfg.effective_batch_size = cfg.batch_size
    cfg.validate()
    return cfg


def _run_train(args: argparse.Namespace) -> int:
    from mclner.training.trainer import train

    cfg = config_from_args(args)
    # --output-dir is checked, locked and (with --overwrite) cleared by the trainer, after it has
    # validated the data and the encoder (mclner/training/rundir.py)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite, reuse_from=args.reuse_stages_from)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    # without --json the trainer has printed where the model, results and log went
    return 0


def _run_methods(args: argparse.Namespace) -> int:
    from mclner.methods import registry

    for name, cls in registry().items():
        print(f"{name}\t{cls.description}")
    return 0


# ----------------------------------------------------------------------------- evaluate / predict


def _load(checkpoint: str, device: Optional[str]):
    from mclner.inference import load_model

    lm = load_model(checkpoint, device)
    return lm.model, lm.collator, lm.label_map, lm.device


def _impl(args: argparse.Namespace, device: Any) -> str:
    from mclner.predictor import check_impl, resolve_impl

    impl = resolve_impl(args.impl, args.fused)
    check_impl(impl, device)
    return impl


def decoding_note(model: Any, none_bias: Optional[float]) -> str:
    """Which decoding a checkpoint's model applies (printed by `evaluate`, kept in its JSON)."""
    cfg = getattr(model, "config", None)
    if not hasattr(cfg, "none_bias"):
        return "decoding: argmax per word (the method has no decoding bias)"
    if none_bias is not None:
        return f"decoding: NONE bias {none_bias:g} (--none-bias)"
    b = float(cfg.none_bias)
    if b:
        return f"decoding: NONE bias {b:g} (calibrated on the source dev set, kept in the checkpoint)"
    return "decoding: NONE bias 0 (plain argmax)"


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
    note = decoding_note(model, args.none_bias)
    if not args.json:
        print(f"{note}; impl {impl}; {len(sentences)} sentences", file=sys.stderr)
    opts = dict(batch_size=args.batch_size, device=dev, impl=impl, none_bias=args.none_bias)
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


def _read_predict_items(args: argparse.Namespace) -> Iterator[Any]:
    """``(sentence, text, spans)`` per input sentence: the words, the line they come from and each
    word's character offsets in it (a CoNLL file's words are joined as they are written). Raw text
    is read line by line, each line and sentence bounded (mclner.data.lines)."""
    from mclner.data.lines import MAX_LINE_CHARS, check_sentence, iter_lines, too_long
    from mclner.data.readers import Sentence
    from mclner.data.text import split_lines, tokenize_line, words_to_text

    fmt = args.input_format
    src = args.input
    if getattr(args, "text", None):
        if src != "-" or fmt != "text":
            raise UserError("--text gives the input: it cannot be combined with --input or --input-format conll")
        for k, text in enumerate(args.text, 1):  # each --text is one sentence, as given
            if len(text) > MAX_LINE_CHARS:
                raise too_long(f"--text {k}")
            tw = tokenize_line(text)
            check_sentence(len(tw.words), f"--text {k}")
            yield Sentence(tw.words, None, args.lang or "xx"), tw.text, tw.spans
        return
    if fmt == "conll":
        from mclner.data.readers import read_conll

        if src == "-":
            raise UserError("--input-format conll needs a file path, not stdin")
        # The words are the first column; any other column (tags, known or not) is ignored, and a
        # file of words alone is fine.
        for s in read_conll(src, tag_col=None):
            tw = words_to_text(list(s.tokens))
            yield Sentence(list(s.tokens), None, args.lang or s.lang), tw.text, tw.spans
        return
    if src == "-":
        stdin = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else sys.stdin  # bytes: decoded line by line
        lines: Iterator[Tuple[int, str]] = iter_lines(stdin, "stdin")
    else:
        lines = _file_lines(src)
    for k, line in lines:
        # split_lines drops blank lines and a leading byte order mark: it is not part of the first word
        for part in split_lines(line):
            tw = tokenize_line(part)
            check_sentence(len(tw.words), f"{'stdin' if src == '-' else src}:{k}")
            yield Sentence(tw.words, None, args.lang or "xx"), tw.text, tw.spans


def _file_lines(src: str) -> Iterator[Tuple[int, str]]:
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
    from mclner.data.grid import entities_to_iob2
    from mclner.data.text import entity_dicts
    from mclner.predictor import predict_scored

    device = check_device(args.device)
    dest = _check_output(args.output)
    model, builder, label_map, dev = _load(args.checkpoint, device)  # before waiting on stdin
    impl = _impl(args, dev)
    keep = _parse_types(args.types, list(label_map.types))
    stream = _read_predict_items(args)
    tmp = None if dest is None else dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        out = sys.stdout if tmp is None else open(tmp, "w", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--output {args.output}: cannot write ({exc.strerror})") from None
    try:
        # in chunks: the input is streamed, so memory does not grow with its number of lines
        while True:
            items = list(itertools.islice(stream, 64 * args.batch_size))
            if not items:
                break
            nonempty = [k for k, (s, _, _) in enumerate(items) if s.tokens]
            scored = predict_scored(model, [items[k][0] for k in nonempty], builder, label_map,
                                    batch_size=args.batch_size, device=dev, impl=impl, none_bias=args.none_bias)
            preds: List[List[Any]] = [[] for _ in items]
            for k, ents in zip(nonempty, scored):
                preds[k] = [e for e in ents if keep is None or e[2] in keep]
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
    from mclner.predictor import FUSED_HELP, IMPL_CHOICES, IMPL_HELP

    p.add_argument("--impl", choices=IMPL_CHOICES, default=None, help=f"{IMPL_HELP} (default: auto)")
    p.add_argument("--fused", action="store_true", help=FUSED_HELP)


def _add_eval_predict(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--none-bias", type=finite_float, default=None,
                   help="decode with this bias subtracted from the NONE logit (relation models; default: the "
                   "checkpoint's calibrated value, 0 unless trained with --calibrate-none-bias)")
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
    q.add_argument("--none-bias", type=finite_float, default=None,
                   help="decode with this bias subtracted from the NONE logit (relation models; default: the "
                   "checkpoint's calibrated value, 0 unless trained with --calibrate-none-bias)")
    q.add_argument("--types", default=None, metavar="T1,T2",
                   help="keep only these entity types (comma-separated, e.g. PER,LOC)")
    _add_impl(q)
    q.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    q.set_defaults(func=_run_predict)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_eval_predict(sub)
    p = sub.add_parser("methods", help="list the registered methods, one per line with a description",
                       description="The methods `mclner train --method` accepts (one folder each under "
                       "mclner/methods/), each with a one-line description.")
    p.set_defaults(func=_run_methods)
