"""Helpers shared by the sub-command modules of the `mclner` command line."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import re
import sys
from typing import Any, Callable, Dict, Mapping, NoReturn, Sequence

_SAYS_DEFAULT = re.compile(r"%\(default\)|\bdefault\b\s*[:=]", re.IGNORECASE)


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to an option's help once, and only where it says something.

    Unlike ``argparse.ArgumentDefaultsHelpFormatter`` it prints nothing when the default is ``None``
    (the option is simply unset) or for flags without a value (``store_true``: ``False``), and nothing
    when the help text already names its default (``(default: the target's train split)``).
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if default is None or default is argparse.SUPPRESS or action.nargs == 0:
            return text
        if _SAYS_DEFAULT.search(text):
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text  # a required positional has no default worth printing
        return f"{text} (default: %(default)s)" if text else "(default: %(default)s)"


def field_type(f: dataclasses.Field) -> Any:
    """The argparse type of a config field from its default and bounds."""
    kind = f.metadata.get("type")
    if kind is None:
        d = f.default
        kind = type(d) if d is not None and not isinstance(d, bool) else None
        if kind is None:  # Optional[...] fields default to None: read the annotation
            ann = str(f.type)
            kind = int if "int" in ann else float if "float" in ann else str
    if kind is float:
        from mclner.training.guards import finite_float

        return finite_float
    return kind


def add_field(group: Any, f: dataclasses.Field, owners: str = "", note: str = "") -> None:
    """One option from a config field. Its argparse default is None so that an option given on the
    command line is told apart from one left out, whatever its value (a preset never swallows it)."""
    from mclner.methods.base import option_flag

    flag = option_flag(f)
    default = f.default if f.default is not dataclasses.MISSING else None
    flag_only = f.metadata.get("flag_only", False)  # a plain switch, no --no- form (e.g. --fused, an alias)
    if flag_only:
        shown = ""
    elif isinstance(default, bool):
        shown = " (default: on)" if default else " (default: off)"
    else:
        shown = "" if default is None else f" (default: {default})"
    text = f.metadata.get("help", "") + (f" [{owners}]" if owners else "") + shown + note
    if flag_only:
        group.add_argument(flag, dest=f.name, action="store_true", default=None, help=text)
    elif isinstance(f.default, bool):
        group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=text)
    else:
        group.add_argument(flag, dest=f.name, type=field_type(f), default=None, choices=f.metadata.get("choices"),
                           help=text)


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """`` (did you mean X?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def choice_type(choices: Sequence[str], what: str) -> Callable[[str], str]:
    """An argparse ``type`` accepting one of ``choices``; anything else is refused naming the closest one."""

    def check(text: str) -> str:
        if text in choices:
            return text
        raise argparse.ArgumentTypeError(f"unknown {what} {text!r}{did_you_mean(text, choices)}; choose one of "
                                         f"{', '.join(choices)}")

    return check


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Make ``parser`` report a bad command line in one line (``prog: error: ...``), pointing at
    ``--help``, instead of printing the usage of every option first."""

    def error(message: str) -> NoReturn:
        print(f"{parser.prog}: error: {message} (see {parser.prog} --help)", file=sys.stderr)
        sys.exit(2)

    parser.error = error  # type: ignore[method-assign]


def _shown(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return "none" if v is None else str(v)


def preset_values(name: str, presets: Mapping[str, Dict[str, Any]], label: str) -> str:
    """`` (--preset quick: 250)`` for an option a preset sets: one value when every method that sets
    it agrees, else the value per method."""
    by_method = {m: p[name] for m, p in presets.items() if name in p}
    if not by_method:
        return ""
    values = {_shown(v) for v in by_method.values()}
    if len(values) == 1:
        return f" ({label}: {values.pop()})"
    return f" ({label}: " + ", ".join(f"{_shown(v)} for {m}" for m, v in by_method.items()) + ")"
