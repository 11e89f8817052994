"""Implementation registry, `impl=` dispatch and argument validation shared by the fused ops."""

from __future__ import annotations

import functools
import importlib
import math
import os
from typing import Callable, Dict, Iterable, Optional, Sequence

import torch

from mclner import _native

IMPLS = ("reference", "cpu", "triton", "cuda")

# impl="auto" preference per device type. On a GPU the order per op is decided by measurement
# (benchmarks/RESULTS.md); ops may override it through their own `gpu_order`.
DEFAULT_GPU_ORDER = ("triton", "cuda")


@functools.cache
def _triton_import_error() -> str:
    """'' when triton imports, else the reason; probed once (dispatch asks on every op call)."""
    try:
        import triton  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return ""


@functools.cache
def _cuda_runtime_devices() -> tuple[int, str]:
    """Devices the CUDA module's own runtime sees; probed once per process."""
    mod = _native.cuda_module()
    return mod.device_count() if mod is not None else (0, "")


def _triton_status() -> tuple[bool, bool, str]:
    err = _triton_import_error()
    if err:
        return False, False, f"triton is not installed ({err}); pip install 'mclner[triton]'"
    if torch.cuda.is_available():
        return True, True, "triton with a CUDA device"
    if os.environ.get("TRITON_INTERPRET", "0") == "1":
        return True, True, "no CUDA device: runs on the CPU under TRITON_INTERPRET=1 (slow, for tests)"
    return True, False, "no CUDA device; set TRITON_INTERPRET=1 to run the kernels on the CPU"


def _cuda_status() -> tuple[bool, bool, str]:
    mod = _native.cuda_module()
    if mod is None:
        return False, False, f"CUDA module not built or not loadable: {_native.cuda_error()}"
    if _native.cuda_emulated():
        return True, True, f"emulated CUDA module ({mod.emulator}) on the CPU: CPU tensors only, for tests"
    if not torch.cuda.is_available():
        return True, False, f"CUDA module built (sm {mod.architectures}) but torch sees no CUDA device"
    n, err = _cuda_runtime_devices()
    if n == 0:
        return True, False, f"CUDA module built but its runtime sees no device: {err}"
    return True, True, f"CUDA module built for sm {mod.architectures}, {n} device(s)"


def _cpu_status() -> tuple[bool, bool, str]:
    cpu = _native.cpu_module()
    if cpu is None:
        return False, False, f"native CPU module not built: {_native.cpu_error()}"
    return True, True, "native CPU module" + (" with OpenMP" if getattr(cpu, "openmp", False) else "")


_STATUS = {
    "reference": lambda: (True, True, "pure PyTorch"),
    "cpu": _cpu_status,
    "triton": _triton_status,
    "cuda": _cuda_status,
}


def available_impls() -> Dict[str, Dict[str, object]]:
    """For each of reference, cpu, triton, cuda: {"built": bool, "runnable": bool, "reason": str}."""
    out: Dict[str, Dict[str, object]] = {}
    for name in IMPLS:
        built, runnable, reason = _STATUS[name]()
        out[name] = {"built": built, "runnable": runnable, "reason": reason}
    return out


def _runnable_on(impl: str, device: torch.device) -> tuple[bool, str]:
    # Only the asked-for backend is probed: this runs on every op call.
    _, runnable, reason = _STATUS[impl]()
    if not runnable:
        return False, reason
    if impl == "cpu" and device.type != "cpu":
        return False, f"impl='cpu' needs CPU tensors, got tensors on {device}"
    if impl == "cuda" and _native.cuda_emulated():
        if device.type != "cpu":
            return False, f"impl='cuda' is the emulated CUDA module here: it needs CPU tensors, got {device}"
    elif impl == "cuda" and device.type != "cuda":
        return False, f"impl='cuda' needs CUDA tensors, got tensors on {device}"
    if impl == "triton" and device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        return False, "impl='triton' on CPU tensors needs TRITON_INTERPRET=1"
    if impl == "triton" and device.type not in ("cpu", "cuda"):
        return False, f"impl='triton' does not run on {device}"
    return True, ""


def resolve_impl(
    op: str,
    impl: str,
    device: torch.device,
    dtype: torch.dtype,
    providers: Dict[str, Callable[[], Optional[Callable]]],
    dtypes: Dict[str, Sequence[torch.dtype]],
    gpu_order: Iterable[str] = DEFAULT_GPU_ORDER,
) -> tuple[str, Callable]:
    """Pick the implementation of `op` for tensors on `device`.

    providers maps an impl name to a zero-argument loader returning the callable (or None when that
    backend does not provide the op); dtypes maps an impl name to the dtypes it accepts.
    """
    if not isinstance(impl, str) or (impl != "auto" and impl not in IMPLS):
        raise ValueError(f"{op}: impl must be 'auto' or one of {IMPLS}, got {impl!r}")

    def usable(name: str) -> tuple[Optional[Callable], str]:
        if name not in providers:
            return None, f"{op} has no {name!r} implementation"
        ok, why = _runnable_on(name, device)
        if not ok:
            return None, why
        if dtype not in dtypes.get(name, ()):
            allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes.get(name, ()))
            return None, f"impl={name!r} supports dtypes ({allowed}), got {str(dtype).replace('torch.', '')}"
        fn = providers[name]()
        if fn is None:
            return None, f"the {name!r} backend does not provide {op}"
        return fn, ""

    if impl != "auto":
        fn, why = usable(impl)
        if fn is None:
            raise RuntimeError(f"{op}: impl={impl!r} cannot run here: {why}")
        return impl, fn

    order = ("cpu",) if device.type == "cpu" else tuple(gpu_order) if device.type == "cuda" else ()
    for name in order:
        fn, _ = usable(name)
        if fn is not None:
            return name, fn
    return "reference", providers["reference"]()  # type: ignore[return-value]


# ----------------------------------------------------------------------------- validation


def _shape_str(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def check_tensor(
    op: str,
    name: str,
    t: object,
    shape: Sequence[Optional[int]],
    dims: str,
) -> torch.Tensor:
    """Check that `t` is a floating tensor with `len(shape)` dims; None entries in `shape` are free.

    `dims` names the expected shape for the message, e.g. "[B, N, Db]".
    """
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: argument '{name}' must be a torch.Tensor, got {type(t).__name__}")
    if not t.is_floating_point():
        raise TypeError(f"{op}: argument '{name}' must be a floating-point tensor, got dtype {t.dtype}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape)):
        expect = _shape_str(["?" if s is None else s for s in shape])  # type: ignore[misc]
        raise ValueError(
            f"{op}: argument '{name}' must have shape {dims} = {expect}, got {_shape_str(t.shape)}"
        )
    return t


def check_same(op: str, tensors: Dict[str, torch.Tensor]) -> tuple[torch.device, torch.dtype]:
    """All tensors on one device and of one dtype; returns them."""
    items = list(tensors.items())
    name0, t0 = items[0]
    for name, t in items[1:]:
        if t.device != t0.device:
            raise ValueError(
                f"{op}: all tensors must be on one device: '{name0}' is on {t0.device}, '{name}' on {t.device}"
            )
        if t.dtype != t0.dtype:
            raise TypeError(
                f"{op}: all tensors must have one dtype: '{name0}' is {t0.dtype}, '{name}' is {t.dtype}"
            )
    return t0.device, t0.dtype


def check_positive_dim(op: str, name: str, value: int) -> None:
    if value <= 0:
        raise ValueError(f"{op}: dimension {name} must be positive, got {value}")


def check_scalar(op: str, name: str, value: object, *, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{op}: argument '{name}' must be a real number, got {type(value).__name__}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{op}: argument '{name}' must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{op}: argument '{name}' must be positive, got {v}")
    return v


def lazy(module: str, attr: str) -> Callable[[], Optional[Callable]]:
    """Loader for an implementation that lives in another module (imported on first use)."""

    def load() -> Optional[Callable]:
        try:
            mod = importlib.import_module(module)
        except ImportError:
            return None
        return getattr(mod, attr, None)

    return load


CPU_DTYPES = (torch.float32, torch.float64)
GPU_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
REFERENCE_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Triton under TRITON_INTERPRET=1 runs numpy on the CPU: float32 and float64 there.
TRITON_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
