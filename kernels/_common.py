"""Shared by the Triton kernels of the four ops: precision policy, tile sizing, the logits tile of the
contrastive losses, and one launcher that runs a kernel with its default configuration, autotunes it
over a resource-pruned set, or records the launch for the compile check (kernels/_resources.py)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import triton
import triton.language as tl

# MCLNER_TRITON_AUTOTUNE=1: launchers with several plausible configurations time them (triton.autotune,
# configurations that spill or overflow shared memory pruned first) instead of taking the first. Off by
# default: the chosen configuration then depends on timing noise, and with it the rounding of the sums.
AUTOTUNE_ENV = "MCLNER_TRITON_AUTOTUNE"


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulation/intermediate dtype: fp32 for fp32/bf16/fp16, fp64 for fp64 (interpreter)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def _pow2(n: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, triton.next_power_of_2(n)))


def _upcast(dtype: torch.dtype) -> bool:
    """The interpreter's tl.dot multiplies bfloat16 tiles as their raw 16-bit patterns (numpy has no
    bfloat16), so there the tiles are widened to fp32 first; GPUs use the bf16 tensor-core dot."""
    return _interpreting() and dtype == torch.bfloat16


def _ieee(dtype: torch.dtype) -> bool:
    """fp32/fp64 tiles (and interpreter-widened bf16 ones) are multiplied in full IEEE precision."""
    return dtype in (torch.float32, torch.float64) or _upcast(dtype)


@triton.jit
def _mma(acc, a, b, ACC: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    """acc + a @ b: fp32/fp64 operands in IEEE precision (no TF32), bf16/fp16 ones on the tensor
    cores with ACC accumulation (input_precision only concerns fp32 operands, so it is left out)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if IEEE:
        return acc + tl.dot(a, b, input_precision="ieee", out_dtype=ACC)
    else:
        return acc + tl.dot(a, b, out_dtype=ACC)


@triton.jit
def _logits_tile(
    X_ptr,
    Y_ptr,
    o,
    t,
    om,
    tm,
    P,
    inv_tau,
    ACC: tl.constexpr,
    UPCAST: tl.constexpr,
    IEEE: tl.constexpr,
    BLOCK_O: tl.constexpr,
    BLOCK_T: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """l[o, t] = X[o]·Y[t] / τ for one [BLOCK_O, BLOCK_T] tile, accumulated over chunks of P
    (info_nce and sup_con: X and Y are row-major [*, P])."""
    kk = tl.arange(0, BLOCK_K)
    acc = tl.zeros([BLOCK_O, BLOCK_T], dtype=ACC)
    for k0 in range(0, P, BLOCK_K):
        k = k0 + kk
        km = k < P
        x = tl.load(X_ptr + o[:, None] * P + k[None, :], mask=om[:, None] & km[None, :], other=0.0)
        # Y tile loaded already transposed ([K, T]) so the dot needs no tl.trans.
        y = tl.load(Y_ptr + t[None, :] * P + k[:, None], mask=km[:, None] & tm[None, :], other=0.0)
        acc = _mma(acc, x, y, ACC, UPCAST, IEEE)
    return acc * inv_tau


# ----------------------------------------------------------------------------- launching


def cfg(num_warps: int, num_stages: int, **blocks: int) -> dict:
    """One launch configuration: tile sizes (constexprs) plus num_warps and num_stages."""
    return {**blocks, "num_warps": num_warps, "num_stages": num_stages}


def tile_configs(names: Sequence[str], default: Sequence[int], warps_stages: tuple, candidates: Sequence[tuple],
                 caps: Sequence[int]) -> list:
    """The default configuration (tiles `default`, `warps_stages`) followed by the autotune candidates
    ((*tiles, num_warps, num_stages), tiles clipped to `caps` like the default; duplicates dropped).
    Under the interpreter only the default (its large tiles)."""
    out = [cfg(*warps_stages, **dict(zip(names, default)))]
    if _interpreting():
        return out
    for *tiles, w, s in candidates:
        c = cfg(w, s, **{n: min(t, cap) for n, t, cap in zip(names, tiles, caps)})
        if c not in out:
            out.append(c)
    return out


@dataclass(frozen=True)
class Launch:
    """A launch as a launcher would make it: the kernel, its positional arguments, the constexprs
    fixed by the call (dtype policy, variant flags) and the configurations it may run with (the
    default first)."""

    kernel: object
    args: tuple
    consts: dict
    configs: tuple
    key: tuple = ()
    reset: tuple = ()


_RECORD: dict = {"launches": None, "arch": None}


@contextlib.contextmanager
def recording(arch: int) -> Iterator[list]:
    """Within the block, launchers record their launches (for sm_`arch`) instead of running them."""
    launches: list = []
    _RECORD["launches"], _RECORD["arch"] = launches, arch
    try:
        yield launches
    finally:
        _RECORD["launches"], _RECORD["arch"] = None, None


def _arch(t: torch.Tensor) -> int:
    """Compute capability of `t`'s GPU as 80, 90, ... (the recorded one while recording; 0 elsewhere)."""
    if _RECORD["arch"] is not None:
        return _RECORD["arch"]
    if not t.is_cuda:
        return 0
    major, minor = torch.cuda.get_device_capability(t.device)
    return 10 * major + minor


def autotune_enabled() -> bool:
    return os.environ.get(AUTOTUNE_ENV, "0") == "1" and not _interpreting()


_TUNERS: dict = {}


def _tuner(kernel, consts: dict, configs: Sequence[dict], key: tuple, reset: tuple):
    # One tuner per kernel variant (its constexprs, e.g. HAS_OWN): triton.autotune keys its choices on
    # the `key` arguments and the dtypes only.
    ident = (kernel, repr(sorted(consts.items())), tuple(tuple(sorted(c.items())) for c in configs), key, reset)
    if ident not in _TUNERS:
        from ._resources import resource_prune

        tconfigs = [
            triton.Config(
                {k: v for k, v in c.items() if k not in ("num_warps", "num_stages")},
                num_warps=c["num_warps"],
                num_stages=c["num_stages"],
            )
            for c in configs
        ]
        tuner = triton.autotune(
            tconfigs,
            key=list(key),
            reset_to_zero=list(reset) or None,
            prune_configs_by={"early_config_prune": resource_prune(kernel)},
        )(kernel)
        flags = [k for k, v in consts.items() if isinstance(v, bool) and v and k not in ("UPCAST", "IEEE")]
        _TUNERS[ident] = (kernel.__name__ + (f"[{','.join(flags)}]" if flags else ""), tuner)
    return _TUNERS[ident][1]


def tuned_configs() -> list:
    """(kernel and variant, autotune key, chosen configuration) for every tuning made in this process."""
    rows = []
    for name, tuner in _TUNERS.values():
        for k, c in tuner.cache.items():
            rows.append((name, k, {**c.kwargs, "num_warps": c.num_warps, "num_stages": c.num_stages}))
    return rows


def launch(
    kernel,
    grid: Callable[[dict], tuple],
    args: tuple,
    consts: dict,
    configs: Sequence[dict],
    key: tuple = (),
    reset: tuple = (),
) -> None:
    """Run `kernel[grid(config)](*args, **consts, **config)` with the first of `configs` (the default),
    or, with MCLNER_TRITON_AUTOTUNE=1 and several configs, the fastest of those that pass the resource
    check, tuned once per value of the `key` arguments (and the tensors' dtypes). `reset` names the
    outputs that the kernel accumulates into (zeroed before each timed run)."""
    if _RECORD["launches"] is not None:
        _RECORD["launches"].append(Launch(kernel, tuple(args), dict(consts), tuple(configs), tuple(key), tuple(reset)))
        return
    if len(configs) > 1 and autotune_enabled():
        _tuner(kernel, consts, configs, key, reset)[grid](*args, **consts)
        return
    config = configs[0]
    kernel[grid({**consts, **config})](*args, **consts, **config)
