"""Atomic Hugging Face style checkpoint folders.

Layout: ``config.json`` (the method's name and options, its model config, the label map),
``model.safetensors``,
``encoder/config.json`` (to rebuild the encoder offline), the tokenizer files, ``label_map.json``,
``training_args.json`` and, for resumable checkpoints, ``training_state.pt`` (optimizer, scheduler,
grad scaler, step counters, RNG states). A folder is written under a temporary name next to its
destination and renamed into place, so a killed run never leaves a half-written checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from mclner.errors import UserError

FORMAT = "mclner-checkpoint"
# 2: the method registry (config.json records the method and its options; model weights are named
# after the shared parts). Format 1 checkpoints (mclner 0.1) are refused with a one-line error.
FORMAT_VERSION = 2


def atomic_replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder `tmp` to `dest`, replacing an older `dest` (one rename each)."""
    old = None
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
    os.replace(tmp, dest)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    dest: Path,
    model: torch.nn.Module,
    tokenizer: Any,
    label_map: Any,
    train_args: Dict[str, Any],
    *,
    method: Any,
    training_state: Optional[Dict[str, Any]] = None,
    extra: Optional[Dict[str, Any]] = None,
) -> Path:
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        import transformers

        cfg = {
            "format": FORMAT,
            # HF convention; without it transformers>=5 mistakes the folder for an old Mistral
            # tokenizer and warns about a regex it does not change.
            "transformers_version": transformers.__version__,
            "format_version": FORMAT_VERSION,
            "method": method.name,
            "method_config": dataclasses.asdict(method.config),
            "model": model.config.to_dict(),
            "label_map": label_map.to_dict(),
            "extra": extra or {},
        }
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2))
        (tmp / "label_map.json").write_text(json.dumps(label_map.to_dict(), indent=2))
        (tmp / "training_args.json").write_text(json.dumps(train_args, indent=2, default=str))
        state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        from mclner.nn.encoder import hf_encoders

        hf_encoders(model)[0].config.save_pretrained(str(tmp / "encoder"))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        if training_state is not None:
            torch.save(training_state, tmp / "training_state.pt")
        atomic_replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_config(path: Path) -> Dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"checkpoint {path} does not exist or is not a folder")
    f = path / "config.json"
    try:
        cfg = json.loads(f.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is not an mclner checkpoint (no config.json)") from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{f}: not valid JSON ({exc})") from None
    if cfg.get("format") != FORMAT:
        raise UserError(f"{path} is not an mclner checkpoint (config.json has no format={FORMAT!r})")
    version = int(cfg.get("format_version", 0))
    if version > FORMAT_VERSION:
        raise UserError(
            f"{path} was written by a newer mclner (checkpoint format {version}, this one reads up to "
            f"{FORMAT_VERSION})"
        )
    if version < FORMAT_VERSION:
        raise UserError(
            f"{path} is a checkpoint of format {version} (mclner 0.1, before the method registry); this "
            f"mclner reads format {FORMAT_VERSION}: retrain it, or load it with mclner 0.1"
        )
    for name in ("model.safetensors", "encoder/config.json"):
        if not (path / name).is_file():
            raise UserError(f"{path} is an incomplete checkpoint: {name} is missing")
    return cfg


def update_model_config(path: Path, **fields: Any) -> None:
    """Set ``fields`` of the model config in a checkpoint's ``config.json`` (written atomically), e.g.
    the decoding bias that calibration picks after the checkpoint was saved."""
    cfg = read_config(path)
    cfg["model"].update(fields)
    f = Path(path) / "config.json"
    tmp = f.with_name(".config.json.tmp")
    tmp.write_text(json.dumps(cfg, indent=2))
    os.replace(tmp, f)


def load_checkpoint(path: Path, device: Optional[torch.device] = None) -> Tuple[torch.nn.Module, Any, Any, Dict]:
    """(model, tokenizer, label_map, config dict) from a checkpoint folder of any registered method
    (the method is read from config.json), model in eval mode."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from mclner.data.grid import LabelMap
    from mclner.methods import get_method
    from mclner.methods.base import config_from_dict

    path = Path(path)
    cfg = read_config(path)
    cls = get_method(cfg.get("method", ""))
    method = cls(config_from_dict(cls, cfg.get("method_config", {})))
    label_map = LabelMap.from_dict(cfg["label_map"])
    enc_cfg = AutoConfig.from_pretrained(str(path / "encoder"))
    encoder = AutoModel.from_config(enc_cfg)
    model = method.build_model(encoder, label_map)
    model.config = type(model.config).from_dict(cfg["model"])  # decoding settings chosen after training
    state = load_file(str(path / "model.safetensors"))
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
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # a corrupt or absent tokenizer is the user's checkpoint problem
        raise UserError(f"{path}: cannot load the tokenizer ({exc})") from None
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer, label_map, cfg
