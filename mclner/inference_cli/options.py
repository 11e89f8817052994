"""What the inference commands share: argument types, loading the checkpoint, the op implementation
(--impl/--fused) and the methods' decoding options (`Method.DecodeConfig`), generated from the registry."""

from __future__ import annotations

import argparse
from typing import Any, Dict, Optional

from mclner._cli_util import add_field


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def load(checkpoint: str, device: Optional[str]) -> Any:
    """The checkpoint, loaded (`mclner.inference.load_model`)."""
    from mclner.inference import load_model

    return load_model(checkpoint, device)


def choose(args: argparse.Namespace, device: Any) -> str:
    """The op implementation from --impl/--fused, checked to run on ``device``."""
    from mclner.ops.impl import check_impl, choose_impl

    impl = choose_impl(args.impl, args.fused)
    check_impl(impl, device)
    return impl


def add_impl(p: argparse.ArgumentParser) -> None:
    from mclner.ops.impl import FUSED_HELP, IMPL_CHOICES, IMPL_HELP

    p.add_argument("--impl", choices=IMPL_CHOICES, default=None, help=f"{IMPL_HELP} (default: auto)")
    p.add_argument("--fused", action="store_true", help=FUSED_HELP)


def add_decode_options(p: argparse.ArgumentParser) -> None:
    """The methods' decoding options (`Method.DecodeConfig`), each naming the methods that have it; a
    checkpoint of another method decodes as it always does."""
    from mclner.methods.base import decode_fields

    fields = decode_fields()
    if fields:
        g = p.add_argument_group("decoding (the checkpoint's own setting unless given)")
        for f, owners in fields.values():
            add_field(g, f, ", ".join(owners))


def decode_options(args: argparse.Namespace) -> Dict[str, Any]:
    """The decoding options given on the command line (passed to the model's ``decode``)."""
    from mclner.methods.base import decode_fields

    return {k: getattr(args, k) for k in decode_fields() if getattr(args, k, None) is not None}


def decoding_note(model: Any, options: Dict[str, Any]) -> str:
    """Which decoding a checkpoint's model applies (printed by `evaluate`, kept in its JSON)."""
    return "decoding: " + model.describe_decoding(**options)

