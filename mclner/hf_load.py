"""Opening Hugging Face folders (encoders, a checkpoint's encoder and tokenizer) without running code
from them.

transformers imports Python files that a folder ships when a config names them (``auto_map``), and
when it is not told ``trust_remote_code`` it asks on stdin, the stdin `mclner predict` reads text
from. mclner loads only what transformers itself implements: before a folder is opened, every
configuration file in it is read as plain JSON and one that names custom code (``auto_map``) or a
model type transformers does not know is a one-line error naming that file; then every
``from_pretrained`` gets ``trust_remote_code=False`` (never a question), and model weights are read
from safetensors only (never a pickle).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Optional, Union

from mclner.errors import UserError

# Configuration files of a folder whose ``auto_map`` transformers follows (tokenizer.json, the
# serialised tokenizer itself, is data only, and large).
_SKIP = frozenset({"tokenizer.json", "checksums.json"})
_MAX_CONFIG_BYTES = 16 << 20  # a configuration file is a few kB; a larger one is not read


def _read_json(f: Path) -> Any:
    try:
        size = f.stat().st_size
        if size > _MAX_CONFIG_BYTES:
            raise UserError(f"{f}: {size} bytes, too large for a configuration file (at most {_MAX_CONFIG_BYTES})")
        with open(f, "rb") as fh:
            data = fh.read(_MAX_CONFIG_BYTES + 1)
        if len(data) > _MAX_CONFIG_BYTES:
            raise UserError(f"{f}: too large for a configuration file (at most {_MAX_CONFIG_BYTES} bytes)")
        return json.loads(data.decode("utf-8"))
    except UserError:
        raise
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"{f}: not a readable JSON file ({_first_line(exc)[:100]})") from None


def _names_code(obj: Any, depth: int = 0) -> bool:
    """Whether a JSON value holds an ``auto_map`` at any depth (sub-configs have their own)."""
    if depth > 50:
        return True  # no configuration nests this deep: refuse rather than guess
    if isinstance(obj, dict):
        return "auto_map" in obj or any(_names_code(v, depth + 1) for v in obj.values())
    if isinstance(obj, list):
        return any(_names_code(v, depth + 1) for v in obj)
    return False


def check_config_file(f: Path, model_config: bool = False) -> Dict[str, Any]:
    """The JSON object of configuration file ``f``; a UserError naming ``f`` when it names custom code,
    or (``model_config``: an encoder's config.json) when its ``model_type`` is not one transformers
    implements."""
    data = _read_json(f)
    if not isinstance(data, dict):
        raise UserError(f"{f}: not a JSON object")
    if _names_code(data):
        raise UserError(f"{f}: names custom code (auto_map); mclner never runs code from a model folder and loads "
                        "only models that transformers implements")
    if model_config:
        from transformers import CONFIG_MAPPING

        kind = data.get("model_type")
        if not isinstance(kind, str) or kind not in CONFIG_MAPPING:
            raise UserError(f"{f}: model_type {kind!r} is not a model that transformers implements (custom model code "
                            "is never run)")
    return data


def check_folder(folder: Path, model_config: bool = True) -> None:
    """:func:`check_config_file` for every configuration file directly in ``folder`` (``config.json``
    as a model config when ``model_config``)."""
    folder = Path(folder)
    for f in sorted(folder.glob("*.json")):
        if f.name not in _SKIP and f.is_file():
            check_config_file(f, model_config=model_config and f.name == "config.json")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def load_config(folder: Path) -> Any:
    """The transformers config of an encoder folder (checked first)."""
    from transformers import AutoConfig

    folder = Path(folder)
    check_config_file(folder / "config.json", model_config=True)
    check_folder(folder, model_config=True)  # its other configuration files (a tokenizer's) too
    try:
        return AutoConfig.from_pretrained(str(folder), trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise UserError(f"{folder / 'config.json'}: cannot read the encoder config ({_first_line(exc)})") from None


def model_from_config(config: Any) -> Any:
    """A freshly initialised transformers model of ``config`` (weights are loaded by the caller)."""
    from transformers import AutoModel

    return AutoModel.from_config(config, trust_remote_code=False)


def load_tokenizer(where: Union[str, Path], local: bool) -> Any:
    """The tokenizer of a folder (``local``: checked first) or of a hub name."""
    from transformers import AutoTokenizer

    if local:
        check_folder(Path(where), model_config=False)
    return AutoTokenizer.from_pretrained(str(where), trust_remote_code=False)


def safetensors_weights(folder: Path) -> Optional[str]:
    """None when ``folder`` holds safetensors weights; else what it holds instead (for the error)."""
    folder = Path(folder)
    if (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file():
        return None
    other = sorted(p.name for p in folder.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".h5",
                                                                    ".msgpack"))
    return ", ".join(other) or "no weights file"


def load_pretrained_model(where: Union[str, Path], local: bool) -> Any:
    """A transformers model with its weights from a folder (checked first) or a hub name: safetensors
    only (a pickled ``pytorch_model.bin`` can run code when unpickled)."""
    from transformers import AutoModel

    if local:
        folder = Path(where)
        check_folder(folder, model_config=True)
        held = safetensors_weights(folder)
        if held is not None:
            raise UserError(f"{folder}: only safetensors encoders are loaded (model.safetensors), this folder holds "
                            f"{held}; pickled weights are never unpickled (convert them to safetensors)")
    return AutoModel.from_pretrained(str(where), trust_remote_code=False, use_safetensors=True)
