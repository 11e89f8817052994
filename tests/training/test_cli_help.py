"""Help texts: each default is printed once, None and flag defaults are not printed."""

from __future__ import annotations

import argparse
import re

from mclner._cli_util import DefaultsHelpFormatter
from mclner.cli import build_parser


def _all_parsers(parser: argparse.ArgumentParser, prefix: str = "mclner"):
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _all_parsers(sub, f"{prefix} {name}")


def test_no_default_printed_twice_or_as_none():
    seen = 0
    for name, parser in _all_parsers(build_parser()):
        text = re.sub(r"\s+", " ", parser.format_help())
        assert "(default: None)" not in text, name
        fmt = parser._get_formatter()
        for action in parser._actions:
            if not action.help or action.help is argparse.SUPPRESS:
                continue
            expanded = fmt._expand_help(action) if action.help else ""
            assert len(re.findall(r"\bdefault\b", expanded, re.IGNORECASE)) <= 1, (name, action.dest, expanded)
            if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
                assert "(default: " not in expanded, (name, action.dest)  # a plain flag's default says nothing
            seen += 1
    assert seen > 50  # the walk reached the sub-commands' options


def test_formatter_rules():
    p = argparse.ArgumentParser(prog="x", formatter_class=DefaultsHelpFormatter)
    p.add_argument("--a", type=int, default=3, help="an int")
    p.add_argument("--b", default=None, help="unset by default")
    p.add_argument("--c", action="store_true", help="a flag")
    p.add_argument("--d", default="x", help="names its default (default: the first one)")
    p.add_argument("--e", default="y", help="templated, default: %(default)s")
    p.add_argument("pos", help="a positional")
    text = re.sub(r"\s+", " ", p.format_help())
    assert "an int (default: 3)" in text
    assert "unset by default --c" in text.replace("(default", "!")  # nothing appended to --b
    assert "a flag (default" not in text
    assert text.count("default: the first one") == 1 and "(default: x)" not in text
    assert "templated, default: y" in text and "(default: y)" not in text
    assert "a positional (default" not in text


def test_train_help_shows_real_defaults():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    text = re.sub(r"\s+", " ", sub.format_help())
    assert "(default: msra-zh)" in text  # a real default is still shown
    assert "(default: the target's train split, tags ignored)" in text and "ignored) (default" not in text
