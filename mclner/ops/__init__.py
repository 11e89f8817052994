"""The fused relation ops of mclner (docs/METHOD.md §6).

Each op dispatches with ``impl=`` over ``reference`` (pure PyTorch, the oracle), ``cpu`` (native fused
kernels), ``triton`` and ``cuda`` (fused GPU kernels); ``"auto"`` picks the best runnable one for the
tensors' device.
"""

from mclner.ops._common import IMPLS, available_impls, resolve_impl
from mclner.ops.biaffine import biaffine, biaffine_reference
from mclner.ops.cln_head import (
    cln_head,
    cln_head_reference,
    cln_pair_features,
    cln_pair_features_at,
    cln_prologue,
)
from mclner.ops.info_nce import info_nce, info_nce_reference
from mclner.ops.sup_con import sup_con, sup_con_reference


def selected_impl(op: str, device, dtype) -> str:
    """Which implementation ``impl="auto"`` picks for `op` on `device`/`dtype` (for logs and tests)."""
    import importlib

    mod = importlib.import_module(f"mclner.ops.{op}")
    name, _ = resolve_impl(op, "auto", device, dtype, mod.PROVIDERS, mod.DTYPES, mod.GPU_ORDER)
    return name


__all__ = [
    "IMPLS",
    "available_impls",
    "biaffine",
    "biaffine_reference",
    "cln_head",
    "cln_head_reference",
    "cln_pair_features",
    "cln_pair_features_at",
    "cln_prologue",
    "info_nce",
    "info_nce_reference",
    "selected_impl",
    "sup_con",
    "sup_con_reference",
]
