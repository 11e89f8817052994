"""Atomic, verified Hugging Face style checkpoint folders.

Layout: ``config.json`` (the method's name and options, its model config, the label map),
``model.safetensors`` (the method's own weights: heads, fusion layer, projections), ``encoder/`` (the
fine-tuned encoder as a standard Hugging Face folder, ``config.json`` + ``model.safetensors``, so that
``transformers.AutoModel.from_pretrained(ckpt / "encoder")`` opens it; its weights are stored there
only, not twice, and the loader puts the two files back together), the tokenizer files, ``label_map.json``,
``training_args.json``, ``checksums.json`` (SHA-256 of every other file, written last) and, for
resumable checkpoints, ``training_state.json`` + ``training_state.safetensors`` (optimizer, scheduler,
grad scaler, step counters, the RNG states of every DDP rank: JSON for the structure and numbers,
safetensors for the tensors). Nothing is pickled: loading a checkpoint never runs code from it.

A folder is written under a temporary name next to its destination and renamed into place. Replacing
an existing folder takes two renames (``dest`` -> ``.dest.old-*``, ``.dest.tmp-*`` -> ``dest``); a
process killed between them leaves no ``dest`` but a complete ``.dest.old-*``, which every reader
(:func:`recover_dir`) renames back before it looks at the folder, and leftovers are removed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from mclner.errors import UserError

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
CHECKSUMS = "checksums.json"
STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
LEGACY_STATE = "training_state.pt"
STATE_FORMAT = "mclner-training-state"


# ----------------------------------------------------------------------------- atomic folders


def _fsync_path(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not fsync directories
        pass
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    """Flush a finished folder before it is renamed into place (a crash of the machine, not only of
    the process, then finds either the old or the complete new folder)."""
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def _leftovers(dest: Path, kind: str) -> List[Path]:
    if not dest.parent.is_dir():
        return []
    return sorted(dest.parent.glob(f".{dest.name}.{kind}-*"), key=lambda p: p.stat().st_mtime, reverse=True)


def recover_dir(dest: Path, clean: bool = False, keep: Optional[Path] = None) -> bool:
    """Repair what a killed :func:`atomic_replace_dir` left: without ``dest``, the newest
    ``.dest.old-*`` (a complete folder: it was ``dest``) becomes ``dest`` again. With ``clean`` (writers
    and the run-folder sweep at ``--resume``, which hold the run's lock) stale ``.dest.old-*`` /
    ``.dest.tmp-*`` leftovers are removed too (except ``keep``, the writer's own); mere readers leave
    them, as a writer may be at work. True when ``dest`` exists afterwards."""
    dest = Path(dest)
    if not dest.exists():
        for old in _leftovers(dest, "old"):
            try:
                os.replace(old, dest)
                break
            except OSError:  # another process (a DDP rank) recovered it first
                if dest.exists():
                    break
    if clean and dest.exists():
        for stale in _leftovers(dest, "old") + _leftovers(dest, "tmp"):
            if keep is not None and stale.name == Path(keep).name:
                continue
            shutil.rmtree(stale, ignore_errors=True) if stale.is_dir() else stale.unlink(missing_ok=True)
    return dest.exists()


_LEFTOVER = re.compile(r"^\.(.+)\.(old|tmp)-[0-9a-f]{8}$")


def recover_tree(root: Path) -> List[str]:
    """:func:`recover_dir` for every interrupted replacement under ``root`` (a run folder at
    ``--resume``, under its lock), then removal of every leftover ``.*.tmp-*`` (never a complete
    folder in use). Returns what was restored or removed, for the log."""
    done: List[str] = []
    root = Path(root)
    if not root.is_dir():
        return done
    for dirpath, dirs, files in os.walk(root):
        here = Path(dirpath)
        for name in sorted(dirs + files):
            m = _LEFTOVER.match(name)
            if not m:
                continue
            if m.group(2) == "old" and not (here / m.group(1)).exists() and (here / name).is_dir():
                recover_dir(here / m.group(1))
                done.append(f"restored {here / m.group(1)} from {name}")
            if (here / name).exists():
                p = here / name
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                done.append(f"removed {p}")
        dirs[:] = [d for d in dirs if not _LEFTOVER.match(d)]
    return done


def atomic_replace_dir(tmp: Path, dest: Path) -> None:
    """Move the finished folder `tmp` to `dest`, replacing an older `dest` (one rename each; a kill
    between the two renames is repaired by :func:`recover_dir`)."""
    tmp, dest = Path(tmp), Path(dest)
    recover_dir(dest, clean=True, keep=tmp)
    _fsync_tree(tmp)
    olds = []
    for _attempt in range(3):
        if dest.exists():
            olds.append(dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}"))
            os.replace(dest, olds[-1])
        try:
            os.replace(tmp, dest)
            break
        except OSError:  # a reader's recover_dir put the old folder back in between: once more
            if not dest.exists() or _attempt == 2:
                raise
    _fsync_path(dest.parent)
    for old in olds:
        shutil.rmtree(old, ignore_errors=True)


def write_json_atomic(path: Path, obj: Any) -> None:
    """Write JSON under a temporary name and rename it into place: a reader never sees half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps(obj, indent=2, default=float))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


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


# ----------------------------------------------------------------------------- checksums


def _sha256(path: Path) -> str:
    from mclner.data.sources import sha256_file

    return sha256_file(path)


def write_checksums(folder: Path) -> None:
    """Record the SHA-256 of every file in ``folder`` (written last: its presence marks a complete
    folder)."""
    folder = Path(folder)
    files = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != CHECKSUMS:
            files[p.relative_to(folder).as_posix()] = _sha256(p)
    (folder / CHECKSUMS).write_text(json.dumps({"algorithm": "sha256", "files": files}, indent=2))


def _checksums(folder: Path, cfg: Optional[Dict[str, Any]]) -> Optional[Dict[str, str]]:
    f = Path(folder) / CHECKSUMS
    if not f.is_file():
        if cfg is not None and int(cfg.get("format_version", 1)) >= FORMAT_VERSION:
            raise UserError(f"{folder} is an incomplete checkpoint: {CHECKSUMS} is missing")
        return None  # written before checksums were recorded
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
        files = data["files"]
        if not isinstance(files, dict):
            raise TypeError
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError):
        raise UserError(f"{f}: not a valid checksum list (the checkpoint is corrupt)") from None
    return files


def verify_files(folder: Path, names: Optional[Iterable[str]] = None, cfg: Optional[Dict[str, Any]] = None) -> None:
    """Check files of ``folder`` against ``checksums.json`` (all recorded ones when ``names`` is None;
    the training state may be absent from a copy); a UserError names the first file that differs."""
    folder = Path(folder)
    recorded = _checksums(folder, cfg)
    if recorded is None:
        return
    todo = list(recorded) if names is None else list(names)
    for name in todo:
        p = folder / name
        if name not in recorded:
            raise UserError(f"{p}: not listed in {folder / CHECKSUMS} (the checkpoint was changed after saving)")
        if not p.is_file():
            if names is None and name.startswith("training_state."):
                continue  # a model-only copy (e.g. <output-dir>/best) drops the training state
            raise UserError(f"{folder} is an incomplete checkpoint: {name} is missing")
        if _sha256(p) != recorded[name]:
            raise UserError(
                f"{p}: SHA-256 differs from the one recorded when the checkpoint was saved (the file is "
                "corrupt or was changed)"
            )


# ----------------------------------------------------------------------------- training state


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


_MARKERS = ("__tensor__", "__tuple__", "__dict__", "__float__", "__ndarray__")


def _encode(obj: Any, tensors: Dict[str, torch.Tensor], where: str) -> Any:
    """A JSON-able image of ``obj``: tensors go to ``tensors`` (referenced by name); tuples, dicts with
    non-string keys, non-finite floats and NumPy arrays are tagged so that they come back as they were."""
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        t = obj.detach().cpu().contiguous()
        if any(t.data_ptr() == u.data_ptr() for u in tensors.values() if t.numel() and u.numel()):
            t = t.clone()  # safetensors refuses two names for one buffer
        tensors[key] = t
        return {"__tensor__": key}
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return v if math.isfinite(v) else {"__float__": repr(v)}
    if isinstance(obj, np.ndarray):
        return {"__ndarray__": obj.tolist(), "dtype": str(obj.dtype)}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) and k not in _MARKERS for k in obj):
            return {k: _encode(v, tensors, f"{where}.{k}") for k, v in obj.items()}
        return {"__dict__": [[_encode(k, tensors, where), _encode(v, tensors, f"{where}[{k!r}]")]
                             for k, v in obj.items()]}
    raise TypeError(f"training state: cannot store a {type(obj).__name__} (at {where}) without pickle")


def _decode(obj: Any, tensors: Dict[str, torch.Tensor], source: Path) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors, source) for v in obj]
    if not isinstance(obj, dict):
        return obj
    if "__tensor__" in obj:
        try:
            return tensors[obj["__tensor__"]]
        except (KeyError, TypeError):
            raise UserError(f"{source}: refers to tensor {obj['__tensor__']!r}, absent from {STATE_TENSORS}") from None
    if "__tuple__" in obj:
        return tuple(_decode(v, tensors, source) for v in obj["__tuple__"])
    if "__dict__" in obj:
        return {_freeze(_decode(k, tensors, source)): _decode(v, tensors, source) for k, v in obj["__dict__"]}
    if "__float__" in obj:
        if obj["__float__"] not in ("nan", "inf", "-inf"):
            raise UserError(f"{source}: bad float {obj['__float__']!r}")
        return float(obj["__float__"])
    if "__ndarray__" in obj:
        try:
            return np.asarray(obj["__ndarray__"], dtype=np.dtype(str(obj["dtype"])))
        except (TypeError, ValueError, KeyError):
            raise UserError(f"{source}: bad array entry") from None
    return {k: _decode(v, tensors, source) for k, v in obj.items()}


def _freeze(k: Any) -> Any:
    return tuple(k) if isinstance(k, list) else k


def save_training_state(folder: Path, state: Dict[str, Any]) -> None:
    """Write ``state`` (optimizer/scheduler/scaler ``state_dict()``s, counters, RNG states: nested
    dicts, lists, tuples, numbers, strings, tensors, NumPy arrays) as ``training_state.json`` +
    ``training_state.safetensors``."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tensors: Dict[str, torch.Tensor] = {}
    doc = {"format": STATE_FORMAT, "version": 1, "state": _encode(state, tensors, "state")}
    save_file(tensors, str(folder / STATE_TENSORS), metadata={"format": "pt"})
    # allow_nan=False: the file stays standard JSON (non-finite floats are tagged by _encode)
    (folder / STATE_JSON).write_text(json.dumps(doc, allow_nan=False))


def has_training_state(folder: Path) -> bool:
    """Whether ``folder`` (after :func:`recover_dir`) holds a resumable training state, in either
    format: an old pickled one must be refused with an error, not silently ignored."""
    folder = Path(folder)
    recover_dir(folder)
    return (folder / STATE_JSON).is_file() or (folder / LEGACY_STATE).is_file()


def load_training_state(folder: Path) -> Dict[str, Any]:
    """The dict given to :func:`save_training_state`, verified against ``checksums.json``; tensors on
    the CPU. No pickle: an old ``training_state.pt`` is refused with a one-line error."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    recover_dir(folder)
    cfg = read_config(folder)
    if not (folder / STATE_JSON).is_file():
        if (folder / LEGACY_STATE).is_file():
            raise UserError(
                f"{folder / LEGACY_STATE}: a pickled training state from an older mclner; it is not loaded "
                "(unpickling a file can run code). Start the run again with --overwrite"
            )
        raise UserError(f"{folder} holds no training state ({STATE_JSON}); it cannot be resumed")
    verify_files(folder, [STATE_JSON, STATE_TENSORS], cfg)
    f = folder / STATE_JSON
    try:
        doc = json.loads(f.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise UserError(f"{f}: not valid JSON ({str(exc)[:80]})") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT or "state" not in doc:
        raise UserError(f"{f}: not an mclner training state")
    try:
        tensors = load_file(str(folder / STATE_TENSORS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{folder / STATE_TENSORS}: not a readable safetensors file ({exc})") from None
    try:
        return _decode(doc["state"], tensors, f)
    except (TypeError, ValueError, RecursionError) as exc:  # a structure _encode never writes
        raise UserError(f"{f}: not an mclner training state ({type(exc).__name__})") from None


# ----------------------------------------------------------------------------- save / load


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _umask() -> int:
    """The process's umask (read without changing it where /proc tells it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def apply_umask(folder: Path) -> None:
    """Give every file and folder under ``folder`` the modes the user's umask asks for (0666/0777 minus
    it): some writers (safetensors) create their files 0600 whatever the umask."""
    mask = _umask()
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            os.chmod(Path(dirpath) / name, 0o666 & ~mask)
        os.chmod(dirpath, 0o777 & ~mask)


def _main_encoder(model: torch.nn.Module) -> Tuple[Any, str]:
    """The model's (first) Hugging Face encoder and the prefix of its keys in ``model.state_dict()``."""
    from mclner.nn.encoder import hf_encoders

    encoder = hf_encoders(model)[0]
    name = next(n for n, m in model.named_modules() if m is encoder)
    return encoder, (name + "." if name else "")


StateDict = Dict[str, torch.Tensor]


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
    tmp = dest.with_name(f".{dest.name}.tmp-{uuid.uuid4().hex[:8]}")
    ignore = None if with_training_state else shutil.ignore_patterns("training_state.*")
    try:
        shutil.copytree(src, tmp, ignore=ignore, copy_function=_link_or_copy)
        atomic_replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_config(path: Path) -> Dict[str, Any]:
    path = Path(path)
    recover_dir(path)
    if not path.is_dir():
        raise UserError(f"checkpoint {path} does not exist or is not a folder")
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


def replace_recorded_file(folder: Path, name: str, text: str, cfg: Optional[Dict[str, Any]] = None) -> None:
    """Write ``text`` as file ``name`` of a checkpoint folder made of hard links (the link is removed
    first: never written through) and record its new SHA-256 in ``checksums.json`` (also a fresh file)."""
    folder = Path(folder)
    (folder / name).unlink()
    (folder / name).write_text(text, encoding="utf-8")
    recorded = _checksums(folder, cfg)
    if recorded is not None:
        recorded[name] = _sha256(folder / name)
        (folder / CHECKSUMS).unlink()
        (folder / CHECKSUMS).write_text(json.dumps({"algorithm": "sha256", "files": recorded}, indent=2))


def update_model_config(path: Path, **fields: Any) -> None:
    """Set ``fields`` of the model config in a checkpoint's ``config.json``, e.g. the decoding bias that
    calibration picks after the checkpoint was saved. The folder is re-made as a hard-linked copy with
    the new config and checksums and swapped in atomically: config and checksums never disagree."""
    path = Path(path)
    cfg = read_config(path)
    cfg["model"].update(fields)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(path, tmp, copy_function=_link_or_copy)
        replace_recorded_file(tmp, "config.json", json.dumps(cfg, indent=2, default=float), cfg)
        atomic_replace_dir(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def weight_files(cfg: Dict[str, Any]) -> List[str]:
    """The weight files of a checkpoint with this config.json (format 3: model.safetensors only)."""
    return ["model.safetensors"] + ([ENCODER_WEIGHTS] if "encoder_prefix" in cfg else [])


def read_weights(path: Path, device: Optional[str] = None, cfg: Optional[Dict[str, Any]] = None) -> StateDict:
    """The model's whole state dict from a checkpoint folder: ``model.safetensors`` plus, under the
    recorded prefix, the encoder's ``encoder/model.safetensors``."""
    path = Path(path)
    cfg = read_config(path) if cfg is None else cfg
    state = _read_file(path / "model.safetensors", device)
    prefix = cfg.get("encoder_prefix")
    if prefix is not None:
        for k, v in _read_file(path / ENCODER_WEIGHTS, device).items():
            state[str(prefix) + k] = v
    return state


def _read_file(f: Path, device: Optional[str] = None) -> Dict[str, torch.Tensor]:
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


def _check_label_map(path: Path, cfg: Dict[str, Any]) -> Any:
    """The checkpoint's LabelMap; config.json and label_map.json must agree (type order included: the
    class ids follow it), as must the tag vocabulary."""
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
    tags = cfg.get("tag_vocab")
    if tags is not None:
        from mclner.model import tag_vocabulary

        if list(tags) != tag_vocabulary(list(label_map.types)):
            raise UserError(f"{path / 'config.json'}: tag_vocab {tags} does not follow label_map {label_map.types}")
    return label_map


def load_weights(model: torch.nn.Module, path: Path, device: Any = None) -> None:
    """Load a checkpoint's weights into ``model`` after verifying ``model.safetensors``."""
    path = Path(path)
    cfg = read_config(path)
    verify_files(path, weight_files(cfg), cfg)
    model.load_state_dict(read_weights(path, str(device) if device is not None else None, cfg))


def checkpoint_exists(path: Path) -> bool:
    """Whether a checkpoint folder exists (after repairing an interrupted replacement)."""
    return recover_dir(Path(path))


def load_checkpoint(path: Path, device: Optional[torch.device] = None) -> Tuple[torch.nn.Module, Any, Any, Dict]:
    """(model, tokenizer, label_map, config dict) from a checkpoint folder of any registered method
    (the method is read from config.json), model in eval mode."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from mclner.methods import get_method
    from mclner.methods.base import config_from_dict

    path = Path(path)
    cfg = read_config(path)
    verify_files(path, None, cfg)
    label_map = _check_label_map(path, cfg)
    cls = get_method(str(cfg.get("method", "")))
    try:
        method = cls(config_from_dict(cls, cfg.get("method_config", {})))
    except TypeError as exc:
        raise UserError(f"{path / 'config.json'}: bad method options ({exc})") from None
    try:
        enc_cfg = AutoConfig.from_pretrained(str(path / "encoder"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{path / 'encoder'}: cannot read the encoder config ({str(exc).splitlines()[0]})") from None
    encoder = AutoModel.from_config(enc_cfg)
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
        tokenizer = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # a corrupt or absent tokenizer is the user's checkpoint problem
        raise UserError(f"{path}: cannot load the tokenizer ({exc})") from None
    from mclner.data.collate import fit_tokenizer_to_encoder

    fit_tokenizer_to_encoder(tokenizer, encoder)  # the encoder's position limit caps every collator
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer, label_map, cfg
