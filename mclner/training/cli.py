"""`mclner train`, `mclner evaluate`, `mclner predict`."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import uuid
from pathlib import Path
from typing import Any, Dict, List, Optional

from mclner._cli_util import DefaultsHelpFormatter
from mclner.errors import UserError
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
    flag = "--" + f.metadata.get("flag", f.name.replace("_", "-"))
    default = f.default if f.default is not dataclasses.MISSING else None
    if isinstance(default, bool):
        shown = " (default: on)" if default else " (default: off)"
    else:
        shown = "" if default is None else f" (default: {default})"
    text = f.metadata.get("help", "") + (f" [{owners}]" if owners else "") + shown
    if isinstance(f.default, bool):
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
                flag = "--" + f.metadata.get("flag", f.name.replace("_", "-"))
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
    out = Path(cfg.output_dir)
    # --output-dir is checked, locked and (with --overwrite) cleared by the trainer, after it has
    # validated the data and the encoder (mclner/training/rundir.py)
    summary = train(cfg, resume=args.resume, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    elif "final" in summary:
        print(f"best model: {out / 'best'}; results: {out / 'results.json'}")
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


def _run_evaluate(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.evaluation import _types_in, evaluate, format_scores

    model, builder, label_map, dev = _load(args.checkpoint, check_device(args.device))
    sentences = [s for s in load_sentences(args.data, split=args.split, lang=args.lang) if s.tags is not None]
    if not sentences:
        raise UserError(f"{args.data} ({args.split}) has no labelled sentences to score")
    res = evaluate(model, sentences, builder, label_map, batch_size=args.batch_size, device=dev,
                   impl="auto" if args.fused else "reference", none_bias=args.none_bias)
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
    from mclner.data.readers import Sentence

    fmt = args.input_format
    src = args.input
    if fmt == "conll":
        from mclner.data.readers import read_conll

        if src == "-":
            raise UserError("--input-format conll needs a file path, not stdin")
        # The words are the first column; any other column (tags, known or not) is ignored, and a
        # file of words alone is fine.
        sents = read_conll(src, tag_col=None)
        return [Sentence(list(s.tokens), None, args.lang or s.lang) for s in sents]
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
    from mclner.data.text import split_lines, split_words

    # split_lines drops a leading byte order mark: it is not part of the first word
    return [Sentence(split_words(line), None, args.lang or "xx") for line in split_lines(text)]


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


def _run_predict(args: argparse.Namespace) -> int:
    from mclner.data.grid import entities_to_iob2
    from mclner.evaluation import predict_entities

    device = check_device(args.device)
    dest = _check_output(args.output)
    model, builder, label_map, dev = _load(args.checkpoint, device)  # before waiting on stdin
    sentences = _read_predict_input(args)
    preds = predict_entities(model, sentences, builder, label_map, batch_size=args.batch_size, device=dev,
                             impl="auto" if args.fused else "reference",
                             none_bias=args.none_bias) if sentences else []
    tmp = None if dest is None else dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        out = sys.stdout if tmp is None else open(tmp, "w", encoding="utf-8")
    except OSError as exc:
        raise UserError(f"--output {args.output}: cannot write ({exc.strerror})") from None
    try:
        for s, ents in zip(sentences, preds):
            if args.output_format == "jsonl":
                rec = {"tokens": s.tokens, "entities": [
                    {"start": a, "end": b, "type": t, "text": " ".join(s.tokens[a : b + 1])} for a, b, t in ents]}
                out.write(json.dumps(rec, ensure_ascii=False) + "\n")
            else:
                for tok, tag in zip(s.tokens, entities_to_iob2(ents, len(s.tokens))):
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
    p.add_argument("--fused", action="store_true", help="use the fused op implementations")
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    p.add_argument("--json", action="store_true", help="print the scores as JSON")
    p.add_argument("--none-bias", type=finite_float, default=None,
                   help="decode with this bias subtracted from the NONE logit (relation models; default: the "
                   "checkpoint's calibrated value, 0 unless trained with --calibrate-none-bias)")
    p.set_defaults(func=_run_evaluate)

    q = sub.add_parser("predict", help="tag raw text or a CoNLL file with a checkpoint",
                       description="Read sentences (raw text: one sentence per line, split into words and punctuation, "
                       "CJK characters into single characters; or a CoNLL file) and write the entities "
                       "as JSON lines or the words with IOB2 tags.",
                       formatter_class=DefaultsHelpFormatter)
    q.add_argument("checkpoint", help="checkpoint folder written by `mclner train`")
    q.add_argument("--input", "-i", default="-", help="input file ('-' = stdin)")
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
    q.add_argument("--fused", action="store_true", help="use the fused op implementations")
    q.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    q.set_defaults(func=_run_predict)


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    _add_eval_predict(sub)
    p = sub.add_parser("methods", help="list the registered methods, one per line with a description",
                       description="The methods `mclner train --method` accepts (one folder each under "
                       "mclner/methods/), each with a one-line description.")
    p.set_defaults(func=_run_methods)
