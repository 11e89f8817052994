"""The implementation policy of the ops, once for every caller: which ``impl`` values exist, the
default that `mclner train`/`evaluate`/`predict`, the plots and `NERPredictor` run, how ``--impl`` and
``--fused`` combine, and whether a chosen implementation can run on a device.

(Per op, `mclner.ops._common.resolve_impl` then turns ``auto`` into the implementation that runs.)
"""

from __future__ import annotations

from typing import Any, Dict, Optional

from mclner.errors import UserError
from mclner.ops._common import IMPLS

# The ops with several implementations (the fused ops of mclner.ops).
OPS = ("biaffine", "cln_head", "info_nce", "sup_con")
IMPL_CHOICES = (*IMPLS, "auto")
# What runs when no impl is chosen: the best runnable implementation per op (the native CPU kernels on a
# CPU, triton/cuda on a GPU, the reference when nothing fused is built). The one place the default is set.
DEFAULT_IMPL = "auto"
IMPL_HELP = ("op implementation: reference (pure PyTorch), cpu (native fused kernels), triton, cuda, or auto (the "
             "best runnable one: the native CPU kernels on a CPU, triton or cuda on a GPU, reference when nothing "
             "fused is built)")
FUSED_HELP = "the same as --impl auto (kept for older scripts)"


def choose_impl(impl: Optional[str], fused: bool = False) -> str:
    """The op implementation from ``--impl``/``impl=`` and the ``--fused`` alias (= ``auto``);
    :data:`DEFAULT_IMPL` (``auto``) when neither is given."""
    if impl is not None and impl not in IMPL_CHOICES:
        raise UserError(f"impl must be one of {', '.join(IMPL_CHOICES)}, got {impl!r}")
    if fused:
        if impl not in (None, "auto"):
            raise UserError(f"--fused means --impl auto; it contradicts --impl {impl}")
        return "auto"
    return impl or DEFAULT_IMPL


def check_impl(impl: str, device: Any) -> None:
    """A one-line error, before any work, when an explicitly chosen implementation cannot run here."""
    if impl in ("auto", "reference"):
        return
    import torch

    from mclner.ops._common import available_impls

    status = available_impls()[impl]
    if not status["runnable"]:
        raise UserError(f"--impl {impl} cannot run here: {status['reason']}")
    if impl == "cuda" and torch.device(device).type != "cuda":
        raise UserError(f"--impl cuda needs a CUDA device, got --device {device}")


def selected_impls(impl: str, device: Any) -> Dict[str, str]:
    """What each op runs under ``impl`` on ``device`` in float32 (for logs and banners)."""
    import torch

    from mclner.ops import selected_impl

    if impl != "auto":
        return {op: impl for op in OPS}
    return {op: selected_impl(op, torch.device(device), torch.float32) for op in OPS}
