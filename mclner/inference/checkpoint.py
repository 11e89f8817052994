"""Reading an mclner checkpoint folder (written by :mod:`mclner.training.checkpoint`).

Layout: ``config.json`` (the method's name and options, its model config, the label map),
``model.safetensors`` (the method's own weights: heads, fusion layer, projections), ``encoder/`` (the
fine-tuned encoder as a standard Hugging Face folder, ``config.json`` + ``model.safetensors``, so that
``transformers.AutoModel.from_pretrained(ckpt / "encoder")`` opens it; its weights are stored there
only, not twice, and the loader puts the two files back together), the tokenizer files, ``label_map.json``,
``training_args.json``, ``checksums.json`` (SHA-256 of every other file, written last) and, for
resumable checkpoints, the training state (:mod:`mclner.training.state_codec`). Nothing is pickled: loading
a checkpoint never runs code from it.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch

from mclner.errors import UserError
from mclner.store.atomic import recover_dir
from mclner.store.checksums import verify_files
from mclner.store.links import refuse_links_out

FORMAT = "mclner-checkpoint"
# 3: config.json records the method and its options (model weights named after the shared parts),
# checksums.json, training state as JSON + safetensors. Older checkpoints (mclner 0.1: format 1, a
# pickled training_state.pt) are refused with a one-line error naming their format.
# 4: the encoder's weights live in encoder/model.safetensors (a Hugging Face folder), not in
# model.safetensors; format 3 (everything in model.safetensors) is still read.
FORMAT_VERSION = 4
MIN_FORMAT_VERSION = 3
ENCODER_DIR = "encoder"
ENCODER_WEIGHTS = "encoder/model.safetensors"

StateDict = Dict[str, torch.Tensor]


def checksums_required(cfg: Optional[Dict[str, Any]]) -> bool:
    """Whether a checkpoint with this config.json must have ``checksums.json`` (every format-4 one)."""
    return cfg is not None and int(cfg.get("format_version", 1)) >= FORMAT_VERSION


def read_config(path: Path) -> Dict[str, Any]:
    path = Path(path)
    recover_dir(path)
    if not path.is_dir():
        raise UserError(f"checkpoint {path} does not exist or is not a folder")
    refuse_links_out(path, "checkpoint")
    f = path / "config.json"
    try:
        cfg = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path} is not an mclner checkpoint (no config.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{f}: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(cfg, dict) or cfg.get("format") != FORMAT:
        raise UserError(f"{path} is not an mclner checkpoint (config.json has no format={FORMAT!r})")
    try:
        version = int(cfg.get("format_version", 0))
    except (TypeError, ValueError):
        raise UserError(f"{f}: bad format_version {cfg.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path} was written by a newer mclner (checkpoint format {version}, this one reads up to "
            f"{FORMAT_VERSION})"
        )
    if version < MIN_FORMAT_VERSION:
        raise UserError(
            f"{path} is a checkpoint of format {version} (mclner 0.1, before the method registry); this "
            f"mclner reads formats {MIN_FORMAT_VERSION}-{FORMAT_VERSION}: retrain it, or load it with mclner 0.1"
        )
    needed = ["model.safetensors", "encoder/config.json"] + ([ENCODER_WEIGHTS] if "encoder_prefix" in cfg else [])
    for name in needed:
        if not (path / name).is_file():
            raise UserError(f"{path} is an incomplete checkpoint: {name} is missing")
    for key in ("model", "label_map"):
        if not isinstance(cfg.get(key), dict):
            raise UserError(f"{f}: no {key!r} section")
    return cfg


def weight_files(cfg: Dict[str, Any]) -> List[str]:
    """The weight files of a checkpoint with this config.json (format 3: model.safetensors only)."""
    return ["model.safetensors"] + ([ENCODER_WEIGHTS] if "encoder_prefix" in cfg else [])


def read_weights(path: Path, device: Optional[str] = None, cfg: Optional[Dict[str, Any]] = None) -> StateDict:
    """The model's whole state dict from a checkpoint folder: ``model.safetensors`` plus, under the
    recorded prefix, the encoder's ``encoder/model.safetensors``."""
    path = Path(path)
    cfg = read_config(path) if cfg is None else cfg
    state = read_safetensors(path / "model.safetensors", device)
    prefix = cfg.get("encoder_prefix")
    if prefix is not None:
        for k, v in read_safetensors(path / ENCODER_WEIGHTS, device).items():
            state[str(prefix) + k] = v
    return state


def read_safetensors(f: Path, device: Optional[str] = None) -> StateDict:
    """One safetensors file; a truncated, empty or inconsistent file is a one-line UserError naming it."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if f.stat().st_size < 8:
            raise UserError(f"{f}: empty or truncated ({f.stat().st_size} bytes), not a safetensors file")
        return load_file(str(f), device=device or "cpu")
    except UserError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{f}: not a readable safetensors file ({detail}); the checkpoint is corrupt") from None


def check_label_map(path: Path, cfg: Dict[str, Any]) -> Any:
    """The checkpoint's LabelMap; config.json and label_map.json must agree (type order included: the
    class ids follow it)."""
    from mclner.data.labels import LabelMap

    try:
        label_map = LabelMap.from_dict(cfg["label_map"])
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path / 'config.json'}: bad label_map ({exc})") from None
    side = path / "label_map.json"
    if side.is_file():
        try:
            other = json.loads(side.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{side}: not valid JSON ({exc})") from None
        if not isinstance(other, dict) or other.get("types") != label_map.types:
            got = other.get("types") if isinstance(other, dict) else other
            raise UserError(
                f"{path}: label_map.json {got} disagrees with config.json {label_map.types} (the type order "
                "fixes the class ids; the checkpoint was edited or mixed up)"
            )
    return label_map


class Checkpoint(NamedTuple):
    """What :func:`open_checkpoint` rebuilds from a folder."""

    method: Any  # mclner.methods.base.Method, with the options the checkpoint was trained with
    model: torch.nn.Module  # in eval mode
    tokenizer: Any
    label_map: Any
    config: Dict[str, Any]  # config.json


def open_checkpoint(path: Path, device: Optional[torch.device] = None) -> Checkpoint:
    """The method, model, tokenizer, label map and config of a checkpoint folder of any registered
    method (the method is read from config.json), every file verified, the model in eval mode."""
    from mclner.hf_load import load_config, load_tokenizer, model_from_config
    from mclner.methods import get_method
    from mclner.methods.base import config_from_dict

    path = Path(path)
    cfg = read_config(path)
    verify_files(path, None, checksums_required(cfg))
    label_map = check_label_map(path, cfg)
    cls = get_method(str(cfg.get("method", "")))
    try:
        method = cls(config_from_dict(cls, cfg.get("method_config", {})))
    except TypeError as exc:
        raise UserError(f"{path / 'config.json'}: bad method options ({exc})") from None
    # an encoder config that names custom code or an unknown model type is refused (never run)
    encoder = model_from_config(load_config(path / ENCODER_DIR))
    model = method.build_model(encoder, label_map)
    try:  # decoding settings chosen after training (e.g. the calibrated NONE bias)
        model.config = type(model.config).from_dict(cfg["model"])
    except (TypeError, ValueError, KeyError) as exc:
        raise UserError(f"{path / 'config.json'}: bad model config ({exc})") from None
    for k, v in dataclasses.asdict(model.config).items():
        if isinstance(v, float) and not math.isfinite(v):
            raise UserError(f"{path / 'config.json'}: {k} {v} is not a finite number")
    state = read_weights(path, None, cfg)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatch
        detail = str(exc).splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise UserError(f"{path}: weights do not match the model in config.json ({detail})") from None
    if missing or unexpected:
        raise UserError(
            f"{path}: weights do not match the model in config.json "
            f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    try:
        tokenizer = load_tokenizer(path, local=True)
    except UserError:
        raise
    except Exception as exc:  # a corrupt or absent tokenizer is the user's checkpoint problem
        raise UserError(f"{path}: cannot load the tokenizer ({exc})") from None
    from mclner.data.collate import fit_tokenizer_to_encoder

    fit_tokenizer_to_encoder(tokenizer, encoder)  # the encoder's position limit caps every collator
    if device is not None:
        model.to(device)
    model.eval()
    return Checkpoint(method, model, tokenizer, label_map, cfg)


def load_checkpoint(path: Path,
                    device: Optional[torch.device] = None) -> Tuple[torch.nn.Module, Any, Any, Dict[str, Any]]:
    """(model, tokenizer, label_map, config dict) of :func:`open_checkpoint`."""
    ck = open_checkpoint(path, device)
    return ck.model, ck.tokenizer, ck.label_map, ck.config
