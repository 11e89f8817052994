"""The parsers of `mclner plot` (training curves, per-type scores, entity-type confusion, relation
heatmap, entity t-SNE), `mclner compare` and `mclner report`; the commands run in
`mclner.viz.run_commands` (from run folders) and `mclner.viz.model_commands` (from checkpoints)."""

from __future__ import annotations

import argparse

from mclner._cli_util import DefaultsHelpFormatter
from mclner.viz.model_commands import run_confusion, run_entities, run_heatmap
from mclner.viz.run_commands import run_compare, run_curves, run_per_type, run_report


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
    _add_run_plots(psub)
    _add_confusion(psub)
    _add_heatmap(psub)
    _add_entities(psub)
    _add_compare(sub)
    _add_report(sub)


def _add_run_plots(psub: argparse._SubParsersAction) -> None:
    q = psub.add_parser("curves", help="every loss term and dev P/R/F1 against the step, stages marked",
                        description="Training curves from RUN_DIR/log.jsonl: each loss term (top) and the dev "
                        "scores (bottom) against the optimizer step, stages one after another.",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("run_dir", help="run folder written by `mclner train` (or its log.jsonl)")
    q.add_argument("--terms", nargs="+", default=None,
                   help="loss terms to draw (default: all, e.g. loss ce_src ce_cs sc tc)")
    q.add_argument("--log-scale", action="store_true", help="logarithmic loss axis")
    _common(q, "output path without suffix (default: RUN_DIR/plots/curves)")
    q.set_defaults(func=run_curves)

    q = psub.add_parser("per-type", help="per-type P/R/F1 of one or more runs side by side",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run folders with results.json")
    q.add_argument("--split", default="target_test", help="scores to use: target_test or source_dev")
    _common(q, "output path without suffix (default: RUN_DIR/plots/per_type for one run, ./per_type for several)")
    q.set_defaults(func=run_per_type)


def _add_confusion(psub: argparse._SubParsersAction) -> None:
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
    q.set_defaults(func=run_confusion)


def _add_heatmap(psub: argparse._SubParsersAction) -> None:
    from mclner.methods.base import methods_with

    q = psub.add_parser("heatmap", help="relation-similarity heatmap of a checkpoint whose model has pair-level "
                        f"contrastive views ({', '.join(methods_with('pair_views')) or 'none installed'})",
                        description="Cosine similarity between the relation-level contrastive views of a source "
                        "sentence: view A (projection of the biaffine inputs) of pair (i, j) against view B "
                        "(projection of the CLN pair features) of the same sentence, and of its code-switched "
                        "copy at the aligned pair (default; made with the run's lexicon) or of a target sentence "
                        "(--target; its own map, as it has no word alignment). Words on both axes.",
                        formatter_class=DefaultsHelpFormatter)
    q.add_argument("checkpoint", help="checkpoint folder of such a method (e.g. runs/x/best)")
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
    q.set_defaults(func=run_heatmap)


def _add_entities(psub: argparse._SubParsersAction) -> None:
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
    q.set_defaults(func=run_entities)


def _add_compare(sub: argparse._SubParsersAction) -> None:
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
    c.set_defaults(func=run_compare)


def _add_report(sub: argparse._SubParsersAction) -> None:
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
    r.set_defaults(func=run_report)
