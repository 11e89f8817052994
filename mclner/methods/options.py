"""Options of the methods and of their decoding: dataclass fields made with :func:`option` (help text,
bounds, choices) from which the command line, its help and the validation are generated, and the
checks of a value given from Python (:func:`check_option_value`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import field
from typing import Any, Dict

from mclner.errors import UserError


class DictConfig:
    """to_dict/from_dict for the config dataclasses saved in checkpoints and run folders; from_dict
    ignores keys the dataclass does not have (a newer writer's extra fields)."""

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> Any:
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in d.items() if k in names})


def option(default: Any, help: str, **meta: Any) -> Any:
    """A method option: a dataclass field whose help text (and ``choices``, ``flag``) the command
    line uses. ``min``/``max`` bound numbers (validated, non-finite values are always refused).
    ``before`` is what runs recorded before the option existed did, when that is not the default (a
    default changed after the option was added): `--resume` and `--reuse-stages-from` compare with it."""
    return field(default=default, metadata={"help": help, **meta})


def option_flag(f: dataclasses.Field) -> str:
    """The command-line flag of an option field (``--name-with-dashes``, or its ``flag`` metadata)."""
    return "--" + f.metadata.get("flag", f.name.replace("_", "-"))


def validate_options(config: Any, owner: str) -> None:
    """Finite numbers within each field's ``min``/``max`` and one of its ``choices``."""
    for f in dataclasses.fields(config):
        _check_bounds(f, getattr(config, f.name), option_flag(f), owner)


def _check_bounds(f: dataclasses.Field, v: Any, label: str, owner: str) -> None:
    if v is None or isinstance(v, bool):
        return
    if isinstance(v, (int, float)):
        if not math.isfinite(v):
            raise UserError(f"{label} must be a finite number, got {v}")
        lo, hi = f.metadata.get("min"), f.metadata.get("max")
        if lo is not None and v < lo:
            raise UserError(f"{label} must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise UserError(f"{label} must be <= {hi}, got {v}")
    choices = f.metadata.get("choices")
    if choices is not None and v not in choices:
        raise UserError(f"{label} must be one of {', '.join(map(str, choices))}, got {v!r} ({owner})")


def option_kind(f: dataclasses.Field) -> Any:
    """The type of an option's values: its ``type`` metadata, else its default's, else the one its
    annotation names (``Optional[float]`` fields default to None)."""
    kind = f.metadata.get("type")
    if kind is None:
        d = f.default
        kind = type(d) if d is not None and d is not dataclasses.MISSING else None
        if kind is None:
            ann = str(f.type)
            kind = bool if "bool" in ann else int if "int" in ann else float if "float" in ann else str
    return kind


def check_option_value(f: dataclasses.Field, value: Any, owner: str) -> Any:
    """A value given for option ``f`` from Python (the command line converts its own): of the
    option's type (an int is taken for a float), finite, within its bounds and choices; a one-line
    error naming the option (by its Python name) otherwise. Returns the value as the option's type."""
    kind, name = option_kind(f), f.name
    if kind in (int, float):
        if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
            raise UserError(f"{name} must be {'an integer' if kind is int else 'a finite number'}, got {value!r}")
        if not math.isfinite(value):
            raise UserError(f"{name} must be a finite number, got {value!r}")
        value = kind(value)
    elif kind is bool and not isinstance(value, bool):
        raise UserError(f"{name} must be True or False, got {value!r}")
    elif kind is str and not isinstance(value, str):
        raise UserError(f"{name} must be a string, got {value!r}")
    _check_bounds(f, value, name, owner)
    return value
