"""What a stage trains with: the method's model on the configured encoder, AdamW with two learning
rates and the warm-up/decay schedule."""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch

from mclner.errors import UserError
from mclner.methods.base import Method
from mclner.nn.encoder import hf_encoders
from mclner.training.preflight import check_model_size


def load_encoder_or_fail(name: str) -> Tuple[Any, Any]:
    """(tokenizer, encoder) of an embedded name or a Hugging Face folder, or a one-line error."""
    from mclner.encoders import load_encoder

    try:
        return load_encoder(name)
    except (FileNotFoundError, OSError, KeyError) as exc:
        raise UserError(f"cannot load encoder {name!r}: {exc}") from None


def build_model(cfg: Any, method: Method, label_map: Any) -> Tuple[torch.nn.Module, Any]:
    """(model, tokenizer) of ``method`` on the configured encoder."""
    tokenizer, encoder = load_encoder_or_fail(cfg.encoder)
    # a model too large for the device is refused with its size, not an allocation traceback
    check_model_size(method, encoder, label_map, cfg.device, cfg.freeze_embeddings)
    model = method.build_model(encoder, label_map)
    if cfg.freeze_embeddings:
        for enc in hf_encoders(model):
            enc.get_input_embeddings().weight.requires_grad_(False)
    return model, tokenizer


def make_optimizer(model: torch.nn.Module, cfg: Any) -> torch.optim.Optimizer:
    """AdamW: ``--encoder-lr`` for every `transformers` model inside the method's model, ``--head-lr``
    for the rest; no weight decay on biases and norm scales."""
    groups: Dict[str, List[torch.nn.Parameter]] = {"enc": [], "enc_nd": [], "head": [], "head_nd": []}
    enc_ids = {id(p) for enc in hf_encoders(model) for p in enc.parameters()}
    for p in model.parameters():
        if not p.requires_grad:
            continue
        part = "enc" if id(p) in enc_ids else "head"
        groups[part + ("_nd" if p.dim() <= 1 else "")].append(p)
    spec = [
        {"params": groups["enc"], "lr": cfg.encoder_lr, "weight_decay": cfg.weight_decay, "name": "encoder"},
        {"params": groups["enc_nd"], "lr": cfg.encoder_lr, "weight_decay": 0.0, "name": "encoder"},
        {"params": groups["head"], "lr": cfg.head_lr, "weight_decay": cfg.weight_decay, "name": "head"},
        {"params": groups["head_nd"], "lr": cfg.head_lr, "weight_decay": 0.0, "name": "head"},
    ]
    return torch.optim.AdamW([g for g in spec if g["params"]])


def make_scheduler(opt: torch.optim.Optimizer, total: int, warmup_ratio: float,
                   encoder_delay: int = 0) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup_ratio`` of the steps, then linear decay to 0. ``encoder_delay`` N
    (--head-warmup-steps): the encoder's groups get factor 0 for the first N steps (their gradients are
    still computed), then their own warm-up of the same length starts, capped by the common decay."""
    warm = int(round(total * warmup_ratio))

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        return max(0.0, (total - step) / max(1, total - warm))

    if encoder_delay <= 0:
        return torch.optim.lr_scheduler.LambdaLR(opt, f)

    def f_enc(step: int) -> float:
        if step < encoder_delay:
            return 0.0
        return min(f(step), (step - encoder_delay + 1) / (warm + 1))

    return torch.optim.lr_scheduler.LambdaLR(opt, [f_enc if g.get("name") == "encoder" else f
                                                   for g in opt.param_groups])
