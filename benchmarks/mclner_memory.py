"""Peak extra memory of a callable: CUDA allocator statistics on a GPU, peak RSS on the CPU.

On Linux, writing 5 to /proc/self/clear_refs resets the peak resident set size (VmHWM), so the peak
of one call is measured in-process, native (malloc) allocations included.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import re
from typing import Callable

import torch

# glibc raises its mmap threshold after large frees, so later large buffers come from the heap and
# stay resident: peak RSS would then miss them. A fixed threshold (and a trim before each measurement)
# makes every large allocation visible.
try:
    _libc = ctypes.CDLL(ctypes.util.find_library("c"))
    _M_MMAP_THRESHOLD = -3
    _libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
except (OSError, AttributeError):  # not glibc: measurements are still peak RSS, just less precise
    _libc = None


def _trim() -> None:
    if _libc is not None and hasattr(_libc, "malloc_trim"):
        _libc.malloc_trim(0)


def _status_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        m = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.M)
    if m is None:
        raise RuntimeError(f"/proc/self/status has no {key}")
    return int(m.group(1)) * 1024


def cpu_peak_supported() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        _status_bytes("VmHWM")
        return True
    except OSError:
        return False


def peak_extra_bytes(fn: Callable[[], object], device: torch.device) -> int:
    """Bytes allocated at the peak of fn() beyond what was allocated before it."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - base
    _trim()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base = _status_bytes("VmRSS")
    fn()
    return max(0, _status_bytes("VmHWM") - base)
