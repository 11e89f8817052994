"""`mclner ops`: which implementations of the fused ops are built and runnable here."""

from __future__ import annotations

import argparse
import json


def _run(args: argparse.Namespace) -> int:
    from mclner.ops import available_impls

    info = available_impls()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    for name, status in info.items():
        flag = "runnable" if status["runnable"] else ("built" if status["built"] else "missing")
        print(f"{name:10s} {flag:9s} {status['reason']}")
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ops", help="show which op implementations (reference/cpu/triton/cuda) can run here",
                       description="Show, for each implementation of the fused ops, whether it is built and "
                       "runnable on this machine, and why not.")
    p.add_argument("--json", action="store_true", help="print the status as JSON")
    p.set_defaults(func=_run)
