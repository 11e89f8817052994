"""The training state of a resumable checkpoint: optimizer, scheduler, grad scaler, step counters and
the RNG states of every DDP rank, as ``training_state.json`` (the structure and the numbers) +
``training_state.safetensors`` (the tensors). Nothing is pickled: loading a state never runs code."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, Dict

import numpy as np
import torch

from mclner.errors import UserError
from mclner.inference.checkpoint import checksums_required, read_config
from mclner.store.atomic import recover_dir
from mclner.store.checksums import verify_files

STATE_JSON = "training_state.json"
STATE_TENSORS = "training_state.safetensors"
LEGACY_STATE = "training_state.pt"
STATE_FORMAT = "mclner-training-state"


def rng_state() -> Dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore the states of :func:`rng_state`; one that cannot be restored (an edited training state)
    is a UserError."""
    try:
        random.setstate(state["python"])
        np.random.set_state(state["numpy"])
        torch.set_rng_state(state["torch"])
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise UserError(f"the training state holds an RNG state that cannot be restored ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0][:100] if str(exc) else ''}); the file was edited") from None


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
    verify_files(folder, [STATE_JSON, STATE_TENSORS], checksums_required(cfg))
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


def _counter_ok(value: Any, default: Any) -> bool:
    """Whether a counter read back is of the kind the run keeps (``default``: its initial value)."""
    if isinstance(value, bool):
        return False
    if isinstance(default, int):
        return isinstance(value, int) and value >= min(default, 0)
    return isinstance(value, (int, float)) and math.isfinite(value) and -1.0 <= value <= 1.0  # a score


def restore_training_state(folder: Path, ts: Dict[str, Any], model: torch.nn.Module, opt: Any, sched: Any,
                           scaler: Any, counters: Dict[str, Any]) -> None:
    """Load a training state read by :func:`load_training_state` into the optimizer, scheduler, grad
    scaler and ``counters`` (updated in place; its values are the run's initial ones, which fix each
    counter's kind). Whatever does not fit (a counter edited to a string, an optimizer tensor of
    another shape than its parameter) is a UserError naming the file, before anything trains."""
    f = Path(folder) / STATE_JSON
    got = ts.get("counters")
    if not isinstance(got, dict):
        raise UserError(f"{f}: no counters")
    for k, default in counters.items():
        if k in got and not _counter_ok(got[k], default):
            kind = "an integer >= 0" if isinstance(default, int) and default >= 0 else (
                "an integer >= -1" if isinstance(default, int) else "a score in [-1, 1]")
            raise UserError(f"{f}: counter {k!r} is {got[k]!r}, expected {kind} (the file was edited)")
    saved = ts.get("optimizer")
    try:
        ids = [i for g in saved["param_groups"] for i in g["params"]]
        state = saved["state"]
    except (KeyError, TypeError):
        raise UserError(f"{f}: no optimizer state") from None
    names = {id(p): n for n, p in model.named_parameters()}
    params = [p for g in opt.param_groups for p in g["params"]]
    if len(ids) != len(params):
        raise UserError(f"{f}: an optimizer state of {len(ids)} parameters, this run trains {len(params)}")
    by_id = dict(zip(ids, params))
    for i, entry in (state.items() if isinstance(state, dict) else ()):
        p = by_id.get(i)
        for key, t in (entry.items() if isinstance(entry, dict) else ()):
            if p is not None and isinstance(t, torch.Tensor) and t.dim() and t.shape != p.shape:
                raise UserError(f"{f}: the optimizer state {key} of {names.get(id(p), i)} has shape {list(t.shape)}, "
                                f"the parameter {list(p.shape)} (the file was edited or belongs to another model)")
    for what, obj, key in (("optimizer", opt, "optimizer"), ("scheduler", sched, "scheduler"),
                           ("grad scaler", scaler, "scaler")):
        try:
            obj.load_state_dict(ts[key])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
            raise UserError(f"{f}: the {what} state does not fit this run ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0][:100] if str(exc) else ''})") from None
    counters.update({k: got[k] for k in counters if k in got})
