"""Helpers shared by the sub-command modules of the `mclner` command line."""

from __future__ import annotations

import argparse
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
