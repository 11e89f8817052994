"""`mclner train` (options generated from `TrainConfig` and every registered method's ``Config``) and
`mclner methods`."""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Dict, List

from mclner._cli_util import add_field
from mclner.errors import UserError
from mclner.methods.base import option_flag
from mclner.training.config import TrainConfig

# ----------------------------------------------------------------------------- train


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
    from mclner._cli_util import choice_type, one_line_errors, preset_values

    one_line_errors(p)  # a mistyped value: one line, not the whole usage of every option

    def quick(name: str) -> str:  # what --preset quick sets the option to (the help shows the plain default)
        return preset_values(name, {m: cls.presets.get("quick", {}) for m, cls in methods.items()}, "--preset quick")

    groups = {"data": p.add_argument_group("data"), "optimisation": p.add_argument_group("optimisation")}
    for f in dataclasses.fields(TrainConfig):
        if "help" in f.metadata:
            add_field(groups[f.metadata["group"]], f, note=quick(f.name))
    m = p.add_argument_group("method")
    m.add_argument("--method", type=choice_type(tuple(methods), "method"), default="mclner",
                   metavar="{" + ",".join(methods) + "}",
                   help="the method to train (default: mclner); its own options follow")
    presets = sorted({k for cls in methods.values() for k in cls.presets})
    m.add_argument("--preset", type=choice_type(tuple(presets), "preset"), default=None,
                   metavar="{" + ",".join(presets) + "}",
                   help="the method's preset: quick = the whole method on a 2-core CPU in under 30 minutes (a "
                   "subset, short sentences, frozen word embeddings); full = all data, 10 epochs (GPU). Each option "
                   "below says what quick sets it to; an option given on the command line wins")
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
                add_field(g, fields[f.name], ", ".join(seen[f.name]) if len(seen[f.name]) > 1 else "",
                          note=quick(f.name))
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


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    _add_train(sub)
    p = sub.add_parser("methods", help="list the registered methods, one per line with a description",
                       description="The methods `mclner train --method` accepts (one folder each under "
                       "mclner/methods/, or a package in the mclner.methods entry-point group), each with a "
                       "one-line description.")
    p.set_defaults(func=_run_methods)
