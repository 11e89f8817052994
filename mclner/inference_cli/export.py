"""`mclner export`: the checkpoint of a method whose model is a per-word tag classifier as a standard
Hugging Face token-classification folder (`mclner.export`)."""

from __future__ import annotations

import argparse

from mclner._cli_util import DefaultsHelpFormatter


def run_export(args: argparse.Namespace) -> int:
    from mclner.export import describe, export_token_classification
    from mclner.inference import check_checkpoint_path

    check_checkpoint_path(args.checkpoint)
    out = export_token_classification(args.checkpoint, args.output, overwrite=args.overwrite)
    d = describe(out)
    print(f"{out}: {', '.join(d['architectures'] or ['?'])} with labels {', '.join(d['labels'])}; "
          f'load it with transformers.pipeline("token-classification", model="{out}", '
          'aggregation_strategy="simple")')
    return 0


def add_export(sub: argparse._SubParsersAction) -> None:
    from mclner.methods import registry
    from mclner.methods.base import methods_with

    taggers = methods_with("token_classifier")
    others = [m for m in registry() if m not in taggers]
    p = sub.add_parser("export", help="write a tagger checkpoint as a Hugging Face token-classification folder",
                       description="Write the checkpoint of a method whose model is a per-word tag classifier "
                       f"({', '.join(taggers) or 'none installed'}) as a standard Hugging Face token-classification "
                       "folder (config with id2label, weights, tokenizer, model card): AutoModelForTokenClassification "
                       "and pipeline(\"token-classification\") load it without mclner. Models that decode otherwise "
                       f"({', '.join(others) or 'none installed'}) have no such head in transformers and are refused "
                       "(docs/USAGE.md).",
                       formatter_class=DefaultsHelpFormatter)
    p.add_argument("checkpoint", help="checkpoint folder written by `mclner train` (e.g. runs/x/best)")
    p.add_argument("output", help="the new folder")
    p.add_argument("--overwrite", action="store_true", help="replace OUTPUT when it is a folder `mclner export` wrote")
    p.set_defaults(func=run_export)
