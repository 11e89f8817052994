"""Helpers shared by the sub-command modules of the `mclner` command line."""

from __future__ import annotations

import argparse
import re

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
