"""Checks that keep training from giving silent wrong answers: option ranges (every float finite),
devices, a stop for non-finite losses, and log records that stay valid JSON."""

from __future__ import annotations

import argparse
import math
from typing import Any, Dict, Optional

from mclner.errors import UserError

# Largest --seed: Python, NumPy (mod 2**32) and torch all accept it, and the per-epoch data-order seed
# (seed * 1_000_003 + ...) stays inside torch's 64-bit generator range.
MAX_SEED = 2**32 - 1
# [CLS] + one word piece + [SEP]
MIN_MAX_LENGTH = 3

def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_float(name: str, value: Any, low: Optional[float], high: Optional[float], low_ok: bool) -> float:
    """``value`` as a finite float in the range, else a UserError naming the option."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{_flag(name)} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise UserError(f"{_flag(name)} must be a finite number, got {value}")
    if low is not None and (v < low or (v == low and not low_ok)):
        raise UserError(f"{_flag(name)} must be {'>=' if low_ok else '>'} {low:g}, got {v:g}")
    if high is not None and v > high:
        raise UserError(f"{_flag(name)} must be <= {high:g}, got {v:g}")
    return v


def check_device(spec: Optional[str]) -> Optional[str]:
    """A device string training and inference can run on (cpu, cuda[:k] with that GPU present, mps
    when available), else a UserError; None stays None (the default: cuda when available)."""
    if spec is None:
        return None
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, ValueError, TypeError):
        raise UserError(f"--device {spec!r} is not a torch device (expected cpu, cuda or cuda:K)") from None
    if dev.type == "cpu":
        if dev.index is not None:  # torch accepts cpu:3, but safetensors (and so every checkpoint) does not
            raise UserError(f"--device {spec}: the CPU takes no device index (use --device cpu)")
        return spec
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"--device {spec}: no CUDA GPU is available here (use --device cpu)")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise UserError(f"--device {spec}: there are {n} CUDA device(s) (cuda:0 to cuda:{n - 1})")
        return spec
    if dev.type == "mps" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return spec
    raise UserError(f"--device {spec}: not a device mclner can compute on (use cpu or cuda)")


def validate_train_config(cfg: Any) -> None:
    """What the fields' own bounds (``validate_options``: finite, min/max) do not say: the seed's type,
    room for one word piece, and a device to compute on (called by ``TrainConfig.validate``)."""
    seed = cfg.seed
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise UserError(f"--seed must be an integer in [0, {MAX_SEED}], got {seed!r}")
    if not isinstance(cfg.max_length, int) or cfg.max_length < MIN_MAX_LENGTH:
        raise UserError(f"--max-length must be at least {MIN_MAX_LENGTH} word pieces ([CLS] word [SEP]), "
                        f"got {cfg.max_length!r}")
    check_device(cfg.device)


# ----------------------------------------------------------------------------- argparse types


def float_type(low: Optional[float] = None, high: Optional[float] = None, low_ok: bool = True):
    """An argparse ``type=`` for a finite float in a range (``nan``/``inf`` are rejected)."""

    def parse(text: str) -> float:
        try:
            return check_float("value", text, low, high, low_ok)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc).replace("--value ", "")) from None

    parse.__name__ = "number"  # argparse names the type in "invalid number value"
    return parse


# every float option of the command line (method options and TrainConfig fields: mclner._cli_util)
finite_float = float_type()


# ----------------------------------------------------------------------------- training-time guards


class NonFiniteGuard:
    """Stops a run whose loss (or, without a grad scaler, gradient norm) stays non-finite.

    Call :meth:`step_ok` once per optimizer step before ``optimizer.step()``: False means skip the
    update (the weights stay finite, so every checkpoint written meanwhile is a good one); after
    ``patience`` consecutive bad steps it raises a UserError naming the steps. With a grad scaler
    (float16), infinite gradients are the scaler's business (it skips the step and lowers the
    scale); only a non-finite loss counts there. Under DDP the ranks agree (a step is bad when it is
    bad on any rank: one all-reduce of a flag per step), so they skip and stop together.
    """

    def __init__(self, patience: int = 3, stage: str = "", device: Any = None) -> None:
        self.patience = patience
        self.stage = stage
        self.device = device
        self.bad = 0
        self.first_bad: Optional[int] = None
        self.skipped = 0

    def step_ok(self, step: int, loss: float, grad_norm: Optional[float] = None, scaler_enabled: bool = False) -> bool:
        loss_ok = math.isfinite(loss)
        grad_ok = grad_norm is None or scaler_enabled or math.isfinite(grad_norm)
        if not _any_rank(not (loss_ok and grad_ok), self.device):
            self.bad, self.first_bad = 0, None
            return True
        self.bad += 1
        self.skipped += 1
        if self.first_bad is None:
            self.first_bad = step
        if self.bad >= self.patience:
            if not loss_ok:
                what = f"loss {loss}"
            elif not grad_ok:
                what = f"gradient norm {grad_norm}"
            else:
                what = "a non-finite loss on another process"
            where = f" of stage {self.stage}" if self.stage else ""
            steps = f"step {step}" if self.first_bad == step else f"steps {self.first_bad}-{step}"
            raise UserError(
                f"training diverged: {what} at {steps}{where} ({self.bad} in a row; those updates were skipped, "
                "the checkpoints hold the last finite weights); lower --encoder-lr/--head-lr or check the data"
            )
        return False


def _any_rank(flag: bool, device: Any = None) -> bool:
    """``flag`` or-ed over the ranks of an initialised process group (``flag`` itself otherwise)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device if device is not None else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def _safe(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_safe(x) for x in v]
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    try:
        f = float(v)  # floats, NumPy and 0-d tensor scalars
    except (TypeError, ValueError):
        return str(v)
    return f if math.isfinite(f) else None


def json_safe(record: Dict[str, Any]) -> Dict[str, Any]:
    """``record`` with non-finite numbers replaced by None (JSON has no NaN/Infinity; ``json.dumps``
    would write them bare) and the top-level keys that held one listed under ``nonfinite``."""
    out = {k: _safe(v) for k, v in record.items()}
    bad = [k for k, v in record.items() if out[k] is None and v is not None]
    if bad:
        out["nonfinite"] = bad
    return out
