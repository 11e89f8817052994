"""Loading a checkpoint of any method for inference: model, tokenizer, label map and the collator
that turns sentences into the model's batches. The checkpoint folder itself is read by
:mod:`mclner.inference.checkpoint`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Union

import torch


@dataclass
class LoadedModel:
    method: Any  # mclner.methods.base.Method, with the options the checkpoint was trained with
    model: torch.nn.Module  # in eval mode, on ``device``
    tokenizer: Any
    label_map: Any
    collator: Any
    config: Dict[str, Any]  # the checkpoint's config.json
    device: torch.device
    path: Optional[Path] = None  # the checkpoint folder


def check_checkpoint_path(checkpoint: Union[str, Path]) -> Path:
    """A one-line error for the common mix-up of a run folder with its checkpoint (``RUN/best``)."""
    from mclner.errors import UserError

    path = Path(checkpoint)
    if path.is_dir() and not (path / "config.json").exists():
        if (path / "best" / "config.json").is_file():
            raise UserError(f"{path} is a run folder, not a checkpoint: use {path / 'best'}")
        if (path / "training_args.json").is_file() or (path / "stages").is_dir():
            raise UserError(f"{path} is a run folder without a final checkpoint yet (no {path / 'best'}); "
                            f"use a stage's checkpoint, e.g. {path / 'stages' / '<stage>' / 'best'}")
    return path


def resolve_device(device: Optional[Union[str, torch.device]]) -> torch.device:
    """``device`` as a torch.device (default: cuda when available, else cpu)."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_model(checkpoint: Union[str, Path], device: Optional[Union[str, torch.device]] = None,
               max_length: Optional[int] = None) -> LoadedModel:
    """Load a checkpoint folder written by `mclner train` (any method; read from its config.json).
    ``max_length`` (sub-word pieces per sentence) defaults to the one the model was trained with."""
    from mclner.data.collate import usable_max_length
    from mclner.inference.checkpoint import open_checkpoint

    check_checkpoint_path(checkpoint)
    dev = resolve_device(device)
    ck = open_checkpoint(Path(checkpoint), dev)
    if max_length is None:
        try:
            max_length = int(json.loads((Path(checkpoint) / "training_args.json").read_text()).get("max_length", 512))
        except (OSError, ValueError, TypeError, AttributeError):
            max_length = 512
    # never more pieces than the encoder's positions (the tokenizer records that limit; long sentences
    # are windowed by predict_entities)
    collator = ck.method.make_collator(ck.tokenizer, ck.label_map, usable_max_length(ck.tokenizer, max_length))
    return LoadedModel(ck.method, ck.model, ck.tokenizer, ck.label_map, collator, ck.config, dev, Path(checkpoint))
