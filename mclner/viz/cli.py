"""`mclner plot` (training curves, per-type scores, entity-type confusion) and `mclner compare`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Sequence, Tuple

from mclner._cli_util import DefaultsHelpFormatter
from mclner.errors import UserError


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
    out = args.output or (run if run.is_dir() else run.parent) / "plots" / "curves"
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
    out = args.output or (Path(args.run_dirs[0]) / "plots" / "per_type" if len(args.run_dirs) == 1 else "per_type")
    _print_files(plot_per_type(table, out, title=args.title, seed=args.seed).files)
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from mclner.viz.runs import compare_markdown

    table = _table(args.run_dirs, args.split)
    if args.json:
        print(json.dumps({"split": table.split, "runs": table.runs, "types": table.types,
                          "values": {m: [[None if v != v else v for v in row] for row in a.tolist()]
                                     for m, a in table.values.items()},
                          "support": table.support.tolist()}, indent=2))
    else:
        print(compare_markdown(table, digits=args.digits), end="")
    if args.plot:
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


def _run_confusion(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.viz.confusion import entity_confusion
    from mclner.viz.plots import plot_confusion

    gold = [s for s in load_sentences(args.gold, split=args.split, lang=args.lang) if s.tags is not None]
    preds = read_predictions(args.predictions)
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
    if args.json:
        print(json.dumps({"labels": conf.labels, "counts": conf.counts.tolist(), "match": conf.match}))
    else:
        width = max(len(t) for t in conf.labels) + 2
        print("gold \\ predicted".ljust(width + 4) + "".join(t.rjust(width) for t in conf.labels))
        for t, row in zip(conf.labels, conf.counts):
            print(t.ljust(width + 4) + "".join(str(v).rjust(width) for v in row))
    out = args.output or Path(args.predictions).with_suffix("").as_posix() + ".confusion"
    _print_files(plot_confusion(conf, out, normalize=args.normalize, title=args.title, seed=args.seed).files)
    return 0


def _common(p: argparse.ArgumentParser, output_help: str) -> None:
    p.add_argument("--output", "-o", default=None, help=output_help)
    p.add_argument("--title", default=None, help="figure title")
    p.add_argument("--seed", type=int, default=0, help="seed (layouts that are random, stable SVG ids)")


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot a run: training curves, per-type scores, entity-type confusion",
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
    q.add_argument("predictions", help="JSON lines written by `mclner predict` on the same sentences")
    q.add_argument("--split", default="test", help="split of a named data set")
    q.add_argument("--lang", default=None, help="language code of the data (for path inputs)")
    q.add_argument("--match", choices=("exact", "overlap"), default="exact",
                   help="pair entities with the same words only, or also by largest overlap")
    q.add_argument("--normalize", action="store_true", help="show fractions of each gold row")
    q.add_argument("--json", action="store_true", help="print the matrix as JSON")
    _common(q, "output path without suffix (default: PREDICTIONS without suffix + .confusion)")
    q.set_defaults(func=_run_confusion)

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

