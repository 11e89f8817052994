"""Loading the native modules (mclner._C for the CPU, mclner._cuda for CUDA) and describing them.

Both modules take raw pointers, sizes and strides; nothing here links against libtorch. dtype codes
must match csrc/include/mclner/common.h.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Optional

import torch

DTYPE_CODES = {torch.float32: 0, torch.float64: 1, torch.float16: 2, torch.bfloat16: 3}


def dtype_code(t: torch.Tensor) -> int:
    try:
        return DTYPE_CODES[t.dtype]
    except KeyError:
        raise TypeError(f"native kernels do not support dtype {t.dtype}") from None


@functools.cache
def _load(name: str) -> tuple[Optional[ModuleType], str]:
    try:
        return importlib.import_module(f"mclner.{name}"), ""
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def cpu_module() -> Optional[ModuleType]:
    """The native CPU module, or None when it is not built (see cpu_error())."""
    return _load("_C")[0]


def cpu_error() -> str:
    return _load("_C")[1]


def cuda_module() -> Optional[ModuleType]:
    """The native CUDA module, or None when it is not built or cannot be loaded (see cuda_error())."""
    return _load("_cuda")[0]


def cuda_error() -> str:
    return _load("_cuda")[1]


def require_module(op: str, kind: str) -> ModuleType:
    """The native module of `kind` ("cpu" or "cuda") for `op`, or a RuntimeError saying why it is missing."""
    mod = cpu_module() if kind == "cpu" else cuda_module()
    if mod is None:
        err = cpu_error() if kind == "cpu" else cuda_error()
        raise RuntimeError(f"{op}: the native {kind} module is not available: {err}")
    return mod


def current_stream(device: torch.device) -> int:
    """Raw handle of torch's current CUDA stream on `device`, for the CUDA launchers."""
    return int(torch.cuda.current_stream(device).cuda_stream)


def num_threads() -> int:
    """Threads for the CPU kernels: follow torch's setting so both paths compete fairly."""
    return max(1, torch.get_num_threads())
