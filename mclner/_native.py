"""Loading the native modules (mclner._C for the CPU, mclner._cuda for CUDA) and describing them.

Both modules take raw pointers, sizes and strides; nothing here links against libtorch. dtype codes
must match csrc/include/mclner/common.h.

MCLNER_CUDA_EMULATE=1 (mclner._cuda_emu) or =<path of a built module> loads the emulated CUDA module
(scripts/cuda_emulate.sh: the same kernels and bindings built against HIP-CPU) in place of
mclner._cuda: impl="cuda" then runs the CUDA kernels on the CPU, on CPU tensors (for tests).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
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


@functools.cache
def _load_cuda() -> tuple[Optional[ModuleType], str]:
    emulate = os.environ.get("MCLNER_CUDA_EMULATE", "")
    if emulate in ("", "0"):
        return _load("_cuda")
    if emulate == "1":
        return _load("_cuda_emu")
    try:  # a module file built outside the package (scripts/cuda_emulate.sh prints its path)
        spec = importlib.util.spec_from_file_location("mclner._cuda_emu", emulate)
        if spec is None or spec.loader is None or not os.path.isfile(emulate):
            raise ImportError(f"MCLNER_CUDA_EMULATE={emulate!r} is neither 0, 1 nor a module file")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod, ""
    except ImportError as exc:
        return None, f"{type(exc).__name__}: {exc}"


def cuda_module() -> Optional[ModuleType]:
    """The native CUDA module, or None when it is not built or cannot be loaded (see cuda_error())."""
    return _load_cuda()[0]


def cuda_error() -> str:
    return _load_cuda()[1]


def cuda_emulated() -> bool:
    """True when the loaded CUDA module is the emulated one (kernels on the CPU, CPU tensors)."""
    mod = cuda_module()
    return mod is not None and bool(getattr(mod, "emulator", ""))


def cuda_launch_args(device: torch.device) -> tuple[int, int]:
    """(device index, raw handle of torch's current stream) for the CUDA launchers; (0, 0) for the
    CPU tensors of the emulated module."""
    if device.type != "cuda":
        return 0, 0
    index = device.index if device.index is not None else torch.cuda.current_device()
    return index, int(torch.cuda.current_stream(device).cuda_stream)


def require_module(op: str, kind: str) -> ModuleType:
    """The native module of `kind` ("cpu" or "cuda") for `op`, or a RuntimeError saying why it is missing."""
    mod = cpu_module() if kind == "cpu" else cuda_module()
    if mod is None:
        err = cpu_error() if kind == "cpu" else cuda_error()
        raise RuntimeError(f"{op}: the native {kind} module is not available: {err}")
    return mod


def current_stream(device: torch.device) -> int:
    """Raw handle of torch's current CUDA stream on `device`, for the CUDA launchers."""
    return cuda_launch_args(device)[1]


def num_threads() -> int:
    """Threads for the CPU kernels: follow torch's setting so both paths compete fairly."""
    return max(1, torch.get_num_threads())
