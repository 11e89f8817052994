"""Checks before training starts that would otherwise fail late: a model that cannot fit in the
device's memory (e.g. ``--biaffine-dim 100000000``) is refused with its size, instead of an
allocation traceback or a process killed for memory part-way.

The model is built on PyTorch's ``meta`` device (shapes only, nothing allocated, no random number
drawn), its parameters counted, and training's need estimated as 4 bytes per parameter for the
weights plus 12 per trained parameter (gradient and AdamW's two moments, fp32). Activations come on
top and depend on the batch, so only a model that cannot fit even without them is refused.
"""

from __future__ import annotations

import os
from typing import Any, Optional, Tuple

import torch

from mclner.errors import UserError

BYTES_PER_WEIGHT = 4
BYTES_PER_TRAINED = 12  # gradient + AdamW exp_avg + exp_avg_sq


def _meta_model(method: Any, encoder: Any, label_map: Any) -> torch.nn.Module:
    """``method``'s model with every tensor on the meta device (the encoder rebuilt from its config)."""
    from mclner.hf_load import model_from_config

    with torch.device("meta"):
        return method.build_model(model_from_config(encoder.config), label_map)


def training_bytes(model: torch.nn.Module, frozen_embeddings: bool = False) -> Tuple[int, int, str]:
    """(parameters, estimated bytes for training them, the largest parameter as ``name shape``)."""
    from mclner.nn.encoder import hf_encoders

    frozen = set()
    if frozen_embeddings:
        frozen = {id(enc.get_input_embeddings().weight) for enc in hf_encoders(model)}
    n = need = 0
    largest, big = "", -1
    for name, p in model.named_parameters():
        n += p.numel()
        need += p.numel() * (BYTES_PER_WEIGHT + (0 if id(p) in frozen else BYTES_PER_TRAINED))
        if p.numel() > big:
            largest, big = f"{name} {list(p.shape)}", p.numel()
    return n, need, largest


def device_memory(device: Optional[str]) -> Tuple[Optional[int], str]:
    """(bytes of memory of ``device``, its name): a GPU's total memory, or the machine's RAM."""
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.type == "cuda":
        return torch.cuda.get_device_properties(dev.index or 0).total_memory, str(dev)
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "this machine's RAM"
    except (ValueError, OSError, AttributeError):
        return None, "cpu"


def check_model_size(method: Any, encoder: Any, label_map: Any, device: Optional[str],
                     frozen_embeddings: bool = False) -> int:
    """A UserError when training ``method``'s model (on ``encoder``) cannot fit in ``device``'s memory;
    returns the estimated bytes."""
    try:
        model = _meta_model(method, encoder, label_map)
    except (RuntimeError, ValueError, OverflowError) as exc:  # sizes no tensor can have
        raise UserError(f"the {method.name} model cannot be built with these options ({str(exc).splitlines()[0]})"
                        ) from None
    n, need, largest = training_bytes(model, frozen_embeddings)
    have, where = device_memory(device)
    if have is not None and need > have:
        raise UserError(f"the {method.name} model would have {n:,} parameters (largest: {largest}), about "
                        f"{need / 2**30:,.1f} GiB for weights, gradients and optimizer state, more than the "
                        f"{have / 2**30:,.1f} GiB of {where}; choose smaller sizes")
    return need
