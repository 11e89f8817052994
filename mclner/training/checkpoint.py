"""Writing checkpoint folders during training (the format: :mod:`mclner.inference.checkpoint`), and
the ``DONE`` record of a finished stage.

A checkpoint is assembled under a temporary name, its SHA-256 list written last, its modes set from
the umask, and swapped into place atomically (:mod:`mclner.store.atomic`); copies (``best/``) and
edited copies (a calibrated config) are made of hard links.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch

from mclner.errors import UserError
from mclner.inference.checkpoint import (
    ENCODER_DIR,
    ENCODER_WEIGHTS,
    FORMAT,
    FORMAT_VERSION,
    StateDict,
    checksums_required,
    read_config,
    read_weights,
    weight_files,
)
from mclner.store.atomic import atomic_replace_dir, recover_dir, tmp_sibling, write_json_atomic
from mclner.store.checksums import replace_recorded_file, verify_files, write_checksums
from mclner.store.links import apply_umask, link_or_copy
from mclner.training.state_codec import save_training_state


def _main_encoder(model: torch.nn.Module) -> Tuple[Any, str]:
    """The model's (first) Hugging Face encoder and the prefix of its keys in ``model.state_dict()``."""
    from mclner.nn.encoder import hf_encoders

    encoder = hf_encoders(model)[0]
    name = next(n for n, m in model.named_modules() if m is encoder)
    return encoder, (name + "." if name else "")


def _split_state(state: StateDict, prefix: str) -> Tuple[StateDict, StateDict]:
    """(the method's own weights, the encoder's weights without ``prefix``), contiguous CPU copies that
    share no storage (safetensors refuses shared buffers)."""
    own: Dict[str, torch.Tensor] = {}
    enc: Dict[str, torch.Tensor] = {}
    seen: set = set()
    for k, v in state.items():
        t = v.detach().contiguous().cpu()
        if t.numel() and t.data_ptr() in seen:
            t = t.clone()
        seen.add(t.data_ptr())
        if prefix and k.startswith(prefix):
            enc[k[len(prefix):]] = t
        else:
            own[k] = t
    return own, enc


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
    text: Optional[Dict[str, Any]] = None,
) -> Path:
    from safetensors.torch import save_file

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_sibling(dest)
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
        if text is not None:  # how raw text is split into words like the target (mclner.data.segmenters)
            cfg["text"] = text
        encoder, prefix = _main_encoder(model)
        cfg["encoder_prefix"] = prefix  # where encoder/model.safetensors goes in the model's state dict
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2, default=float))
        (tmp / "label_map.json").write_text(json.dumps(label_map.to_dict(), indent=2))
        (tmp / "training_args.json").write_text(json.dumps(train_args, indent=2, default=str))
        own, enc = _split_state(model.state_dict(), prefix)
        save_file(own, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        # a standard Hugging Face folder: the base model's state-dict keys, as save_pretrained writes them
        encoder.config.save_pretrained(str(tmp / ENCODER_DIR))
        save_file(enc, str(tmp / ENCODER_WEIGHTS), metadata={"format": "pt"})
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp))
        from mclner.training.model_card import write_card_and_tokenizer

        write_card_and_tokenizer(tmp, cfg, train_args, tokenizer, ENCODER_DIR)
        if training_state is not None:
            save_training_state(tmp, training_state)
        write_checksums(tmp)
        apply_umask(tmp)
        atomic_replace_dir(tmp, dest)
    except BaseException as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        reason = _write_failure(exc)
        if reason:
            # e.g. a full disk: one line, not a traceback; nothing was replaced (atomic)
            raise UserError(f"cannot write checkpoint {dest}: {reason}; the checkpoint there before (if any) is "
                            "intact: free space and continue with --resume") from None
        raise
    return dest


def _write_failure(exc: BaseException) -> Optional[str]:
    """The reason when ``exc`` is a failed write (an OSError, or safetensors' I/O error), else None."""
    from safetensors import SafetensorError

    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    text = str(exc)
    if isinstance(exc, SafetensorError) and "I/O error" in text:
        # partition, not split()[1]: a message without the colon must not raise IndexError here
        return text.partition("I/O error")[2].lstrip(":").strip() or text
    return None


def copy_checkpoint(src: Path, dest: Path, with_training_state: bool = False) -> Path:
    """Copy a checkpoint folder atomically (hard links where possible), by default without its
    training state (e.g. ``<output-dir>/best``)."""
    src, dest = Path(src), Path(dest)
    read_config(src)
    tmp = tmp_sibling(dest)
    ignore = None if with_training_state else shutil.ignore_patterns("training_state.*")
    try:
        shutil.copytree(src, tmp, ignore=ignore, copy_function=link_or_copy)
        atomic_replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def update_model_config(path: Path, **fields: Any) -> None:
    """Set ``fields`` of the model config in a checkpoint's ``config.json``, e.g. the decoding bias that
    calibration picks after the checkpoint was saved. The folder is re-made as a hard-linked copy with
    the new config and checksums and swapped in atomically: config and checksums never disagree."""
    path = Path(path)
    cfg = read_config(path)
    cfg["model"].update(fields)
    tmp = tmp_sibling(path)
    try:
        shutil.copytree(path, tmp, copy_function=link_or_copy)
        replace_recorded_file(tmp, "config.json", json.dumps(cfg, indent=2, default=float), checksums_required(cfg))
        atomic_replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def checkpoint_exists(path: Path) -> bool:
    """Whether a checkpoint folder exists (after repairing an interrupted replacement)."""
    return recover_dir(Path(path))


def load_weights(model: torch.nn.Module, path: Path, device: Any = None) -> None:
    """Load a checkpoint's weights into ``model`` after verifying its weight files."""
    path = Path(path)
    cfg = read_config(path)
    verify_files(path, weight_files(cfg), checksums_required(cfg))
    state = read_weights(path, str(device) if device is not None else None, cfg)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:  # a shape or a name that differs (an edited or mixed-up file)
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        detail = lines[1] if len(lines) > 1 else (lines[0] if lines else type(exc).__name__)
        raise UserError(f"{path}: weights do not match the model of this run ({detail})") from None


# ----------------------------------------------------------------------------- stage records


def read_done(stage_dir: Path) -> Optional[Dict[str, Any]]:
    """The result a finished stage recorded in ``DONE``, or None when the stage is not finished. A
    ``DONE`` that is not a JSON object (a half-written file from an older mclner) counts as not
    finished: the stage resumes from its ``last`` checkpoint, which holds the finished state."""
    f = Path(stage_dir) / "DONE"
    for stale in Path(stage_dir).glob(".DONE.tmp-*") if Path(stage_dir).is_dir() else ():
        stale.unlink(missing_ok=True)
    try:
        done = json.loads(f.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError):
        print(f"note: {f} is incomplete (the run was killed while writing it); the stage is resumed instead")
        return None
    return done if isinstance(done, dict) else None


def write_done(stage_dir: Path, result: Dict[str, Any]) -> None:
    write_json_atomic(Path(stage_dir) / "DONE", result)
