"""The `mclner plot` commands that read a run folder (training curves, per-type scores), `mclner compare`
and `mclner report`, and what every plot command shares (output paths, seeds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Sequence

from mclner.errors import UserError


def given_out(out):
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


def print_files(files: Sequence[Path]) -> None:
    for f in files:
        print(f)


def run_curves(args: argparse.Namespace) -> int:
    from mclner.viz.plots import plot_training_curves
    from mclner.viz.runs import read_log, training_curves

    run = Path(args.run_dir)
    curves = training_curves(read_log(run), terms=args.terms)
    if not curves.terms and not curves.evals:
        raise UserError(f"{run}: the log has no training steps or evaluations yet")
    out = given_out(args.output) or (run if run.is_dir() else run.parent) / "plots" / "curves"
    res = plot_training_curves(curves, out, title=args.title or f"training curves: {run.resolve().name}",
                               log_scale=args.log_scale, seed=args.seed)
    print_files(res.files)
    return 0


def runs_table(run_dirs: Sequence[str], split: str):
    from mclner.viz.runs import load_results, per_type_table, run_names

    names = run_names(run_dirs)
    return per_type_table({n: load_results(d) for n, d in zip(names, run_dirs)}, split=split)


def run_per_type(args: argparse.Namespace) -> int:
    from mclner.viz.plots import plot_per_type

    table = runs_table(args.run_dirs, args.split)
    default = Path(args.run_dirs[0]) / "plots" / "per_type" if len(args.run_dirs) == 1 else "per_type"
    out = given_out(args.output) or default
    print_files(plot_per_type(table, out, title=args.title, seed=args.seed).files)
    return 0


def run_compare(args: argparse.Namespace) -> int:
    import sys

    from mclner.viz.runs import compare_markdown, load_results, run_info, run_names, runs_markdown, scored_apart

    table = runs_table(args.run_dirs, args.split)
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
        given_out(args.plot)
        from mclner.viz.plots import plot_per_type

        print_files(plot_per_type(table, args.plot, title=args.title, seed=args.seed).files)
    return 0



def torch_seed(seed: int) -> None:
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)



def run_report(args: argparse.Namespace) -> int:
    from mclner.viz.report import write_report

    torch_seed(args.seed)
    out, notes = write_report(Path(args.run_dir), with_model=args.with_model, max_sentences=args.max_sentences,
                              seed=args.seed, device=args.device, impl=args.impl)
    for n in notes:
        print(f"note: {n}")
    print(out)
    return 0
