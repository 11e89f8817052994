"""`mclner plot` (training curves, per-type scores, entity-type confusion) and `mclner compare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Sequence, Tuple

from mclner._cli_util import DefaultsHelpFormatter
from mclner.errors import UserError


def _given_out(out):
    """An output path given on the command line (``-o``, ``--plot``): its folder must exist, as for
    `mclner predict -o` (a mistyped ``-o /nonexistent/x`` is an error, never a new folder tree); the
    default outputs (``RUN/plots/...``) are made as needed."""
    if out is None:
        return None
    folder = Path(out).parent
    if not folder.is_dir():
        what = "is not a folder" if folder.exists() else "does not exist"
        raise UserError(f"{out}: the folder {folder} {what}")
    return out


def _print_files(files: Sequence[Path]) -> None:
    for f in files:
        print(f)


def _run_curves(args: argparse.Namespace) -> int:
    from mclner.viz.plots import plot_training_curves
    from mclner.viz.runs import read_log, training_curves

    run = Path(args.run_dir)
    curves = training_curves(read_log(run), terms=args.terms)
    if not curves.terms and not curves.evals:
        raise UserError(f"{run}: the log has no training steps or evaluations yet")
    out = _given_out(args.output) or (run if run.is_dir() else run.parent) / "plots" / "curves"
    res = plot_training_curves(curves, out, title=args.title or f"training curves: {run.resolve().name}",
                               log_scale=args.log_scale, seed=args.seed)
    _print_files(res.files)
    return 0


def _table(run_dirs: Sequence[str], split: str):
    from mclner.viz.runs import load_results, per_type_table, run_names

    names = run_names(run_dirs)
    return per_type_table({n: load_results(d) for n, d in zip(names, run_dirs)}, split=split)


def _run_per_type(args: argparse.Namespace) -> int:
    from mclner.viz.plots import plot_per_type

    table = _table(args.run_dirs, args.split)
    default = Path(args.run_dirs[0]) / "plots" / "per_type" if len(args.run_dirs) == 1 else "per_type"
    out = _given_out(args.output) or default
    _print_files(plot_per_type(table, out, title=args.title, seed=args.seed).files)
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    import sys

    from mclner.viz.runs import compare_markdown, load_results, run_info, run_names, runs_markdown, scored_apart

    table = _table(args.run_dirs, args.split)
    names = run_names(args.run_dirs)
    infos = [run_info(d, load_results(d), args.split) for d in args.run_dirs]
    apart = scored_apart(infos)
    if apart:
        print("warning: the runs were scored on different data (" + "; ".join(
            f"{n}: {i['data']}, {i.get('sentences', '?')} sentences, {i.get('support', '?')} entities"
            for n, i in zip(names, infos)) + "): their scores are not directly comparable", file=sys.stderr)
    if args.json:
        print(json.dumps({"split": table.split, "runs": table.runs, "types": table.types,
                          "values": {m: [[None if v != v else v for v in row] for row in a.tolist()]
                                     for m, a in table.values.items()},
                          "support": table.support.tolist(), "run_info": dict(zip(names, infos)),
                          "scored_on_different_data": apart}, indent=2))
    else:
        print(runs_markdown(names, infos))
        print(compare_markdown(table, digits=args.digits), end="")
    if args.plot:
        _given_out(args.plot)
        from mclner.viz.plots import plot_per_type

        _print_files(plot_per_type(table, args.plot, title=args.title, seed=args.seed).files)
    return 0


def read_predictions(path: str) -> List[Tuple[List[str], List[Tuple[int, int, str]]]]:
    """``(tokens, entities)`` per line of a `mclner predict` JSON-lines file. Entities carry word
    indices as ``word_start``/``word_end`` (pipeline-style output) or ``start``/``end``; ends inclusive."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    out = []
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            tokens = [str(t) for t in rec["tokens"]]
            ents = []
            for e in rec["entities"]:
                a = e["word_start"] if "word_start" in e else e["start"]
                b = e["word_end"] if "word_end" in e else e["end"]
                ents.append((int(a), int(b), str(e.get("type", e.get("entity_group")))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{p}:{k}: not a `mclner predict` JSON line ({type(exc).__name__}: {exc})") from None
        out.append((tokens, ents))
    return out


def _is_checkpoint(path: str) -> bool:
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


def _training_args(ckpt: str) -> dict:
    """The run options a checkpoint was trained with (its training_args.json; {} when absent)."""
    try:
        args = json.loads((Path(ckpt) / "training_args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return args if isinstance(args, dict) else {}


def _default_out(ckpt: str, name: str) -> Path:
    """CKPT/../plots/NAME: next to the run's other plots for RUN/best."""
    return Path(ckpt).resolve().parent / "plots" / name


def _load_model(args: argparse.Namespace):
    from mclner.inference import load_model
    from mclner.ops.impl import check_impl
    from mclner.ops.impl import choose_impl as resolve_impl
    from mclner.training.guards import check_device

    lm = load_model(args.checkpoint, check_device(args.device))
    impl = resolve_impl(args.impl)
    check_impl(impl, lm.device)
    return lm, impl


def _labelled(spec: str, split: str, lang, what: str) -> list:
    from mclner.data.readers import load_sentences

    sents = [s for s in load_sentences(spec, split=split, lang=lang) if s.tags is not None]
    if not sents:
        raise UserError(f"{what} {spec} ({split}) has no labelled sentences")
    return sents


def _run_heatmap(args: argparse.Namespace) -> int:
    from mclner.data.iob2 import iob2_to_entities
    from mclner.viz.figures import relation_heatmap

    torch_seed(args.seed)
    targs = _training_args(args.checkpoint)
    spec = args.data or targs.get("source")
    if not spec:
        raise UserError("--data is needed: the checkpoint does not record its source data")
    sents = _labelled(spec, args.split, args.lang, "--data")
    if args.index is None:  # the first short sentence with an entity: a readable figure
        k = next((i for i, s in enumerate(sents) if iob2_to_entities(s.tags) and len(s.tokens) <= 15), 0)
    elif not 0 <= args.index < len(sents):
        raise UserError(f"--index {args.index}: {spec} ({args.split}) has {len(sents)} labelled sentences")
    else:
        k = args.index
    src = sents[k]
    lm, impl = _load_model(args)
    other, where_other = None, ""
    if args.target:
        tgt = _labelled(args.target, args.target_split, args.target_lang or targs.get("target_lang"), "--target")
        if not 0 <= args.target_index < len(tgt):
            raise UserError(f"--target-index {args.target_index}: {args.target} has {len(tgt)} labelled sentences")
        other = tgt[args.target_index]
        where_other = f"sentence {args.target_index} of {args.target} {args.target_split}"
    out = _given_out(args.output) or _default_out(args.checkpoint, "heatmap")
    res_plot, _, other = relation_heatmap(lm, src, out, where=f"sentence {k} of {spec} {args.split}", train_args=targs,
                                   run_dir=Path(args.checkpoint).resolve().parent, lexicon=args.lexicon,
                                   target_lang=args.target_lang, target=other, target_where=where_other,
                                   seed=args.seed, impl=impl, title=args.title)
    _extend_json(res_plot, {"kind": "relation_similarity", "sentence_index": k, "source_words": list(src.tokens),
                            "counterpart_words": list(other.tokens), "counterpart_lang": other.lang})
    _print_files(res_plot.files)
    return 0


def _extend_json(res, extra: dict) -> None:
    from mclner.viz.plots import _jsonable

    res.data.update(extra)
    res.files[2].write_text(json.dumps(res.data, indent=1, ensure_ascii=False, default=_jsonable) + "\n",
                            encoding="utf-8")


def torch_seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _run_entities(args: argparse.Namespace) -> int:
    import numpy as np

    from mclner.viz.model import entity_representations
    from mclner.viz.plots import plot_embedding

    torch_seed(args.seed)
    targs = _training_args(args.checkpoint)
    specs = []
    source = args.source or targs.get("source")
    target = args.target if args.target is not None else targs.get("target")
    if source and source.lower() != "none":
        specs.append((source, None))
    if target and target.lower() != "none":
        specs.append((target, args.target_lang or targs.get("target_lang")))
    if not specs:
        raise UserError("give --source and/or --target: the checkpoint does not record its data")
    lm, _ = _load_model(args)
    pts, langs, types = [], [], []
    for spec, lang in specs:
        sents = _labelled(spec, args.split, lang, "data")[: args.max_sentences]
        p, l_, t = entity_representations(lm.model, lm.collator, sents, batch_size=args.batch_size, device=lm.device)
        pts.append(p)
        langs += l_
        types += t
    out = _given_out(args.output) or _default_out(args.checkpoint, "entities")
    method_name = lm.config.get("method", "")
    res = plot_embedding(np.concatenate(pts), langs, types, out, method=args.reduce, seed=args.seed,
                         title=args.title or f"entity representations ({method_name}, {args.split} sets)")
    _extend_json(res, {"data": [s for s, _ in specs], "checkpoint": str(args.checkpoint)})
    _print_files(res.files)
    return 0


def _run_confusion(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.viz.confusion import entity_confusion

    gold = [s for s in load_sentences(args.gold, split=args.split, lang=args.lang) if s.tags is not None]
    gold = gold[: args.max_sentences or None]
    if _is_checkpoint(args.predictions):  # a checkpoint: predict the gold sentences with it
        from mclner.viz.model import confusion_of

        args.checkpoint = args.predictions
        lm, impl = _load_model(args)
        try:
            conf = confusion_of(lm.model, lm.collator, lm.label_map, gold, match=args.match, device=lm.device,
                                impl=impl)
        except ValueError as exc:
            raise UserError(f"{args.gold}: {exc}") from None
        out = _given_out(args.output) or _default_out(args.predictions, "confusion")
        _show_confusion(conf, args, out)
        return 0
    preds = read_predictions(args.predictions)
    if args.max_sentences:
        preds = preds[: args.max_sentences]
    if len(gold) != len(preds):
        raise UserError(f"{args.predictions}: {len(preds)} predicted sentences but {args.gold} has {len(gold)}")
    for k, (g, (tokens, _)) in enumerate(zip(gold, preds)):
        if list(g.tokens) != tokens:
            raise UserError(f"{args.predictions}:{k + 1}: its words differ from gold sentence {k + 1} "
                            f"({' '.join(tokens[:8])} ... vs {' '.join(g.tokens[:8])} ...)")
    try:
        conf = entity_confusion([g.tags for g in gold], [e for _, e in preds], match=args.match)
    except ValueError as exc:
        raise UserError(f"{args.predictions}: {exc}") from None
    out = _given_out(args.output) or Path(args.predictions).with_suffix("").as_posix() + ".confusion"
    _show_confusion(conf, args, out)
    return 0


def _show_confusion(conf, args: argparse.Namespace, out) -> None:
    from mclner.viz.plots import plot_confusion

    if args.json:
        print(json.dumps({"labels": conf.labels, "counts": conf.counts.tolist(), "match": conf.match}))
    else:
        width = max(len(t) for t in conf.labels) + 2
        print("gold \\ predicted".ljust(width + 4) + "".join(t.rjust(width) for t in conf.labels))
        for t, row in zip(conf.labels, conf.counts):
            print(t.ljust(width + 4) + "".join(str(v).rjust(width) for v in row))
    _print_files(plot_confusion(conf, out, normalize=args.normalize, title=args.title, seed=args.seed).files)


def _model_opts(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    _impl_opt(p)


def _impl_opt(p: argparse.ArgumentParser) -> None:
    from mclner.ops.impl import IMPL_CHOICES, IMPL_HELP

    p.add_argument("--impl", choices=IMPL_CHOICES, default=None, help=f"{IMPL_HELP} (default: auto)")


def _common(p: argparse.ArgumentParser, output_help: str) -> None:
    p.add_argument("--output", "-o", default=None, help=output_help)
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--seed", type=int, default=0, help="seed (layouts that are random, stable SVG ids)")


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot a run or a checkpoint: training curves, per-type scores, entity-type "
                       "confusion, relation-similarity heatmap, entity t-SNE",
                       description="Write figures as OUT.png, OUT.svg and OUT.json (the data behind the figure). "
                       'Needs matplotlib: pip install "mclner[viz]".')
    psub = p.add_subparsers(dest="plot_command", metavar="PLOT")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    q = psub.add_parser("curves", help="every loss term and dev P/R/F1 against the step, stages marked",
                        description="Training curves from RUN_DIR/log.jsonl: each loss term (top) and the dev "
                        "scores (bottom) against the optimizer step, stages one after another.",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("run_dir", help="run folder written by `mclner train` (or its log.jsonl)")
    q.add_argument("--terms", nargs="+", default=None,
                   help="loss terms to draw (default: all, e.g. loss ce_src ce_cs sc tc)")
    q.add_argument("--log-scale", action="store_true", help="logarithmic loss axis")
    _common(q, "output path without suffix (default: RUN_DIR/plots/curves)")
    q.set_defaults(func=_run_curves)

    q = psub.add_parser("per-type", help="per-type P/R/F1 of one or more runs side by side",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders with results.json")
    q.add_argument("--split", default="target_test", help="scores to use: target_test or source_dev")
    _common(q, "output path without suffix (default: RUN_DIR/plots/per_type for one run, ./per_type for several)")
    q.set_defaults(func=_run_per_type)

    q = psub.add_parser("confusion", help="entity-type confusion of predictions against a labelled set",
                        description="Gold entities of each type against the predicted type, 'O (missed)' and "
                        "'O (spurious)'. PREDICTIONS is the output of `mclner predict CKPT -i GOLD_FILE "
                        "--input-format conll` (JSON lines).",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("gold", help="labelled data: embedded name, HF data set or CoNLL path")
    q.add_argument("predictions", help="JSON lines written by `mclner predict` on the same sentences, or a "
                   "checkpoint folder (its predictions on GOLD are made here)")
    q.add_argument("--max-sentences", type=int, default=None, metavar="K", help="only the first K labelled sentences")
    _model_opts(q)
    q.add_argument("--split", default="test", help="split of a named data set")
    q.add_argument("--lang", default=None, help="language code of the data (for path inputs)")
    q.add_argument("--match", choices=("exact", "overlap"), default="exact",
                   help="pair entities with the same words only, or also by largest overlap")
    q.add_argument("--normalize", action="store_true", help="show fractions of each gold row")
    q.add_argument("--json", action="store_true", help="print the matrix as JSON")
    _common(q, "output path without suffix (default: PREDICTIONS without suffix + .confusion; for a checkpoint "
               "CKPT/../plots/confusion)")
    q.set_defaults(func=_run_confusion)

    q = psub.add_parser("heatmap", help="relation-similarity heatmap of a relation checkpoint (mCL-NER views)",
                        description="Cosine similarity between the relation-level contrastive views of a source "
                        "sentence: view A (projection of the biaffine inputs) of pair (i, j) against view B "
                        "(projection of the CLN pair features) of the same sentence, and of its code-switched "
                        "copy at the aligned pair (default; made with the run's lexicon) or of a target sentence "
                        "(--target; its own map, as it has no word alignment). Words on both axes.",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("checkpoint", help="checkpoint folder of a relation method (e.g. runs/x/best)")
    q.add_argument("--data", default=None, help="labelled source data (default: the run's --source)")
    q.add_argument("--split", default="test", help="split of --data")
    q.add_argument("--lang", default=None, help="language code of --data (for path inputs)")
    q.add_argument("--index", type=int, default=None,
                   help="sentence of --data (default: the first with an entity and at most 15 words)")
    q.add_argument("--target", default=None, help="compare with a sentence of this labelled target data instead")
    q.add_argument("--target-split", default="test", help="split of --target")
    q.add_argument("--target-index", type=int, default=0, help="sentence of --target")
    q.add_argument("--target-lang", default=None, help="target language (default: the run's)")
    q.add_argument("--lexicon", default=None, help="lexicon for the code-switched copy (default: the run's)")
    _model_opts(q)
    _common(q, "output path without suffix (default: CKPT/../plots/heatmap)")
    q.set_defaults(func=_run_heatmap)

    q = psub.add_parser("entities", help="t-SNE/PCA of entity representations: colour = language, marker = type",
                        description="Each gold entity of the source and target test sets as the mean of the "
                        "checkpoint's word states over its words (any method), reduced to 2-D by t-SNE "
                        "(scikit-learn) or PCA.",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("checkpoint", help="checkpoint folder written by `mclner train` (any method)")
    q.add_argument("--source", default=None, help="labelled source data (default: the run's --source)")
    q.add_argument("--target", default=None, help="labelled target data (default: the run's --target; 'none' to skip)")
    q.add_argument("--target-lang", default=None, help="target language (default: the run's)")
    q.add_argument("--split", default="test", help="split of both data sets")
    q.add_argument("--max-sentences", type=int, default=200, metavar="K", help="first K labelled sentences of each")
    q.add_argument("--reduce", choices=("auto", "tsne", "pca"), default="auto",
                   help="2-D reduction (auto: t-SNE when scikit-learn is installed)")
    q.add_argument("--batch-size", type=int, default=32, help="sentences per batch")
    _model_opts(q)
    _common(q, "output path without suffix (default: CKPT/../plots/entities)")
    q.set_defaults(func=_run_entities)

    c = sub.add_parser("compare", help="per-type P/R/F1 of several runs as a markdown table (and a plot)",
                       description="Print a markdown table of the per-type precision, recall and F1 (percent) of "
                       "the runs side by side, from each RUN_DIR/results.json.",
                       formatter_class=DefaultsHelpFormatter)
    c.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders with results.json")
    c.add_argument("--split", default="target_test", help="scores to use: target_test or source_dev")
    c.add_argument("--digits", type=int, choices=range(0, 7), default=1, metavar="{0..6}",
                   help="decimals of the percentages")
    c.add_argument("--plot", default=None, metavar="OUT", help="also write the per-type bar chart to OUT.png/.svg")
    c.add_argument("--json", action="store_true", help="print the table as JSON instead")
    c.add_argument("--title", default=None, help="figure title (with --plot)")
    c.add_argument("--seed", type=int, default=0, help="seed for the figure (with --plot)")
    c.set_defaults(func=_run_compare)


    r = sub.add_parser("report", help="write RUN_DIR/report.html (one self-contained page) and report.md: scores, "
                       "figures, sample predictions, the commands to reproduce the run",
                       description="A page per finished run: RUN_DIR/report.html (figures embedded, no script, nothing "
                       "fetched) and RUN_DIR/report.md (figures linked from RUN_DIR/plots/): its data and method, the "
                       "final scores overall and per type, the stages, sample target sentences with gold and "
                       "predicted entities highlighted, the figures (training curves, per-type scores and, from "
                       "RUN_DIR/best, the entity t-SNE, the target-test confusion and for models with relation views "
                       "the relation-similarity heatmap), the `mclner train` command that reproduces it into a new "
                       "folder (never the run's own) with the matching `mclner evaluate`, and the run's options.",
                       formatter_class=DefaultsHelpFormatter)
    r.add_argument("run_dir", help="run folder written by `mclner train`")
    r.add_argument("--no-model", dest="with_model", action="store_false",
                   help="only the figures from the log and results (no checkpoint is loaded)")
    r.add_argument("--max-sentences", type=int, default=200, metavar="K",
                   help="test sentences of each set for the checkpoint figures")
    r.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    _impl_opt(r)
    r.add_argument("--seed", type=int, default=0, help="seed (t-SNE, code-switched counterpart, SVG ids)")
    r.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from mclner.viz.report import write_report

    torch_seed(args.seed)
    out, notes = write_report(Path(args.run_dir), with_model=args.with_model, max_sentences=args.max_sentences,
                              seed=args.seed, device=args.device, impl=args.impl)
    for n in notes:
        print(f"note: {n}")
    print(out)
    return 0
