"""The `mclner plot` commands that read a checkpoint (or predictions): the entity-type confusion, the
relation-similarity heatmap of pair-level views and the t-SNE/PCA of entity representations."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import List, Tuple

from mclner.errors import UserError
from mclner.viz.run_commands import given_out, print_files, torch_seed


def read_predictions(path: str) -> List[Tuple[List[str], List[Tuple[int, int, str]]]]:
    """``(tokens, entities)`` per line of a `mclner predict` JSON-lines file. Entities carry word
    indices as ``word_start``/``word_end`` (pipeline-style output) or ``start``/``end``; ends inclusive."""
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise UserError(f"{p}: no such file") from None
    out = []
    for k, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            tokens = [str(t) for t in rec["tokens"]]
            ents = []
            for e in rec["entities"]:
                a = e["word_start"] if "word_start" in e else e["start"]
                b = e["word_end"] if "word_end" in e else e["end"]
                ents.append((int(a), int(b), str(e.get("type", e.get("entity_group")))))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise UserError(f"{p}:{k}: not a `mclner predict` JSON line ({type(exc).__name__}: {exc})") from None
        out.append((tokens, ents))
    return out


def is_checkpoint(path: str) -> bool:
    return (Path(path) / "config.json").is_file() and (Path(path) / "model.safetensors").is_file()


def training_args(ckpt: str) -> dict:
    """The run options a checkpoint was trained with (its training_args.json; {} when absent)."""
    try:
        args = json.loads((Path(ckpt) / "training_args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return args if isinstance(args, dict) else {}


def default_out(ckpt: str, name: str) -> Path:
    """CKPT/../plots/NAME: next to the run's other plots for RUN/best."""
    return Path(ckpt).resolve().parent / "plots" / name


def load_checkpoint(args: argparse.Namespace):
    from mclner.inference import load_model
    from mclner.ops.impl import check_impl
    from mclner.ops.impl import choose_impl as resolve_impl
    from mclner.training.guards import check_device

    lm = load_model(args.checkpoint, check_device(args.device))
    impl = resolve_impl(args.impl)
    check_impl(impl, lm.device)
    return lm, impl


def labelled(spec: str, split: str, lang, what: str) -> list:
    from mclner.data.readers import load_sentences

    sents = [s for s in load_sentences(spec, split=split, lang=lang) if s.tags is not None]
    if not sents:
        raise UserError(f"{what} {spec} ({split}) has no labelled sentences")
    return sents


def run_heatmap(args: argparse.Namespace) -> int:
    from mclner.data.iob2 import iob2_to_entities
    from mclner.viz.figures import relation_heatmap

    torch_seed(args.seed)
    targs = training_args(args.checkpoint)
    spec = args.data or targs.get("source")
    if not spec:
        raise UserError("--data is needed: the checkpoint does not record its source data")
    sents = labelled(spec, args.split, args.lang, "--data")
    if args.index is None:  # the first short sentence with an entity: a readable figure
        k = next((i for i, s in enumerate(sents) if iob2_to_entities(s.tags) and len(s.tokens) <= 15), 0)
    elif not 0 <= args.index < len(sents):
        raise UserError(f"--index {args.index}: {spec} ({args.split}) has {len(sents)} labelled sentences")
    else:
        k = args.index
    src = sents[k]
    lm, impl = load_checkpoint(args)
    other, where_other = None, ""
    if args.target:
        tgt = labelled(args.target, args.target_split, args.target_lang or targs.get("target_lang"), "--target")
        if not 0 <= args.target_index < len(tgt):
            raise UserError(f"--target-index {args.target_index}: {args.target} has {len(tgt)} labelled sentences")
        other = tgt[args.target_index]
        where_other = f"sentence {args.target_index} of {args.target} {args.target_split}"
    out = given_out(args.output) or default_out(args.checkpoint, "heatmap")
    res_plot, _, other = relation_heatmap(lm, src, out, where=f"sentence {k} of {spec} {args.split}", train_args=targs,
                                   run_dir=Path(args.checkpoint).resolve().parent, lexicon=args.lexicon,
                                   target_lang=args.target_lang, target=other, target_where=where_other,
                                   seed=args.seed, impl=impl, title=args.title)
    extend_json(res_plot, {"kind": "relation_similarity", "sentence_index": k, "source_words": list(src.tokens),
                            "counterpart_words": list(other.tokens), "counterpart_lang": other.lang})
    print_files(res_plot.files)
    return 0


def extend_json(res, extra: dict) -> None:
    from mclner.viz.canvas import jsonable

    res.data.update(extra)
    res.files[2].write_text(json.dumps(res.data, indent=1, ensure_ascii=False, default=jsonable) + "\n",
                            encoding="utf-8")




def run_entities(args: argparse.Namespace) -> int:
    import numpy as np

    from mclner.viz.model import entity_representations
    from mclner.viz.plots import plot_embedding

    torch_seed(args.seed)
    targs = training_args(args.checkpoint)
    specs = []
    source = args.source or targs.get("source")
    target = args.target if args.target is not None else targs.get("target")
    if source and source.lower() != "none":
        specs.append((source, None))
    if target and target.lower() != "none":
        specs.append((target, args.target_lang or targs.get("target_lang")))
    if not specs:
        raise UserError("give --source and/or --target: the checkpoint does not record its data")
    lm, _ = load_checkpoint(args)
    pts, langs, types = [], [], []
    for spec, lang in specs:
        sents = labelled(spec, args.split, lang, "data")[: args.max_sentences]
        p, l_, t = entity_representations(lm.model, lm.collator, sents, batch_size=args.batch_size, device=lm.device)
        pts.append(p)
        langs += l_
        types += t
    out = given_out(args.output) or default_out(args.checkpoint, "entities")
    method_name = lm.config.get("method", "")
    res = plot_embedding(np.concatenate(pts), langs, types, out, method=args.reduce, seed=args.seed,
                         title=args.title or f"entity representations ({method_name}, {args.split} sets)")
    extend_json(res, {"data": [s for s, _ in specs], "checkpoint": str(args.checkpoint)})
    print_files(res.files)
    return 0


def run_confusion(args: argparse.Namespace) -> int:
    from mclner.data.readers import load_sentences
    from mclner.viz.confusion import entity_confusion

    gold = [s for s in load_sentences(args.gold, split=args.split, lang=args.lang) if s.tags is not None]
    gold = gold[: args.max_sentences or None]
    if is_checkpoint(args.predictions):  # a checkpoint: predict the gold sentences with it
        from mclner.viz.model import confusion_of

        args.checkpoint = args.predictions
        lm, impl = load_checkpoint(args)
        try:
            conf = confusion_of(lm.model, lm.collator, lm.label_map, gold, match=args.match, device=lm.device,
                                impl=impl)
        except ValueError as exc:
            raise UserError(f"{args.gold}: {exc}") from None
        out = given_out(args.output) or default_out(args.predictions, "confusion")
        show_confusion(conf, args, out)
        return 0
    preds = read_predictions(args.predictions)
    if args.max_sentences:
        preds = preds[: args.max_sentences]
    if len(gold) != len(preds):
        raise UserError(f"{args.predictions}: {len(preds)} predicted sentences but {args.gold} has {len(gold)}")
    for k, (g, (tokens, _)) in enumerate(zip(gold, preds)):
        if list(g.tokens) != tokens:
            raise UserError(f"{args.predictions}:{k + 1}: its words differ from gold sentence {k + 1} "
                            f"({' '.join(tokens[:8])} ... vs {' '.join(g.tokens[:8])} ...)")
    try:
        conf = entity_confusion([g.tags for g in gold], [e for _, e in preds], match=args.match)
    except ValueError as exc:
        raise UserError(f"{args.predictions}: {exc}") from None
    out = given_out(args.output) or Path(args.predictions).with_suffix("").as_posix() + ".confusion"
    show_confusion(conf, args, out)
    return 0


def show_confusion(conf, args: argparse.Namespace, out) -> None:
    from mclner.viz.plots import plot_confusion

    if args.json:
        print(json.dumps({"labels": conf.labels, "counts": conf.counts.tolist(), "match": conf.match}))
    else:
        width = max(len(t) for t in conf.labels) + 2
        print("gold \\ predicted".ljust(width + 4) + "".join(t.rjust(width) for t in conf.labels))
        for t, row in zip(conf.labels, conf.counts):
            print(t.ljust(width + 4) + "".join(str(v).rjust(width) for v in row))
    print_files(plot_confusion(conf, out, normalize=args.normalize, title=args.title, seed=args.seed).files)

