"""The `mclner` command line: sub-commands are registered by the modules that implement them.

Each module listed in SUBCOMMAND_MODULES exposes ``add_subcommands(subparsers)``; it adds its parsers
with ``set_defaults(func=...)`` where ``func(args) -> int``. Errors a user can fix (missing file,
unknown name, bad value) are raised as ``mclner.errors.UserError`` and printed as one line.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

from mclner.errors import UserError

SUBCOMMAND_MODULES = ("mclner.data_cli", "mclner.training.cli", "mclner.inference_cli", "mclner.ops.cli",
                      "mclner.viz.cli")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mclner",
        description="Cross-lingual NER with multi-view contrastive learning (mCL-NER) on fused relation kernels.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from mclner import __version__

    parser.add_argument("--version", action="version", version=f"mclner {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # The module (or its package) is absent: that sub-command is not part of this build.
            # A missing dependency inside an existing module is a real error: surface it.
            if exc.name is None or not name.startswith(exc.name):
                raise
            continue
        module.add_subcommands(sub)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"mclner {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"mclner {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # python -m mclner.cli
    sys.exit(main())
