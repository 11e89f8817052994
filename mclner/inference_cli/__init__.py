"""`mclner evaluate`, `mclner predict` and `mclner export`: a checkpoint of any method on labelled data,
raw text or CoNLL files, and a tagger out of the toolkit as a Hugging Face token-classification folder.
One module per command (`evaluate`, `predict` with its input in `predict_input`, `export`); what they
share (the implementation and the methods' decoding options, generated from the registry) is in
`options`."""

from __future__ import annotations

import argparse

from mclner.inference_cli.evaluate import add_evaluate
from mclner.inference_cli.export import add_export
from mclner.inference_cli.predict import add_predict


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    add_evaluate(sub)
    add_predict(sub)
    add_export(sub)
