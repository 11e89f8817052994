"""`mclner report RUN_DIR`: one markdown page per run (``RUN_DIR/report.md``) with the configuration,
the per-stage results, the figures (written to ``RUN_DIR/plots/``) and the commands that reproduce it.

The training command is rebuilt from ``training_args.json``: every option that differs from the
built-in default (common options and the method's own), so running it again trains the same model
(the data order, code-switching and initialisation are seeded).
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mclner.errors import UserError
from mclner.methods.base import option_flag


def _option_words(f: dataclasses.Field, value: Any) -> List[str]:
    if isinstance(f.default, bool):
        return [option_flag(f) if value else "--no-" + option_flag(f)[2:]]
    return [option_flag(f), str(value)]


def train_command(args: Dict[str, Any]) -> List[str]:
    """``mclner train ...`` (argv words) that reproduces a run from its ``training_args.json``."""
    from mclner.methods import get_method
    from mclner.training.config import TrainConfig, recorded_impl

    words = ["mclner", "train", "--method", str(args.get("method", "mclner"))]
    if args.get("impl", "") is None and recorded_impl(args) == "reference":
        words += ["--impl", "reference"]  # a run from before auto became the default
    for f in dataclasses.fields(TrainConfig):
        if "help" not in f.metadata or f.name not in args:
            continue
        v = args[f.name]
        if v is None or v == f.default:
            continue
        words += _option_words(f, v)
    cls = get_method(str(args.get("method", "mclner")))
    # the resolved method options when recorded (so a later change of a default is written out), else
    # those given explicitly (runs recorded before method_config existed)
    opts = args.get("method_config")
    opts = opts if isinstance(opts, dict) else args.get("method_options") or {}
    for f in dataclasses.fields(cls.Config):
        if f.name in opts and opts[f.name] != f.default and opts[f.name] is not None:
            words += _option_words(f, opts[f.name])
    return words


def _pct(x: Any) -> str:
    return "-" if x is None else f"{100 * float(x):.2f}"


def _stage_rows(results: Dict[str, Any]) -> List[str]:
    rows = ["| stage | steps | epochs | best source-dev F1 | decoding | early stop | target data |",
            "|---|---:|---:|---:|---|---|---|"]
    tdata = results.get("target_data", {})
    for name, r in (results.get("stages") or {}).items():
        cal = r.get("calibrated") or {}
        dec = ", ".join(f"{k} {v:g}" for k, v in cal.items()) if cal else "-"
        td = tdata.get(name)
        tds = ", ".join(f"{k} {v}" for k, v in td.items()) if isinstance(td, dict) else "-"
        rows.append(f"| {name} | {r.get('steps', '-')} | {r.get('epochs', '-')} | {_pct(r.get('best_dev_f1'))} | "
                    f"{dec} | {'yes' if r.get('early_stopped') else 'no'} | {tds} |")
    return rows


def _figure(lines: List[str], run: Path, title: str, res: Any, note: str = "") -> None:
    png = Path(res.files[0])
    rel = png.relative_to(run) if png.is_relative_to(run) else png
    lines += [f"### {title}", "", f"![{title}]({rel.as_posix()})", ""]
    if note:
        lines += [note, ""]


def write_report(run_dir: Path, with_model: bool = True, max_sentences: int = 200, seed: int = 0,
                 device: Optional[str] = None, impl: Optional[str] = None) -> Tuple[Path, List[str]]:
    """Write ``RUN_DIR/report.md`` and its figures; returns the report path and any notes on figures
    that could not be made (e.g. the heatmap of a method without contrastive views). ``impl``: the op
    implementation of the checkpoint figures (default auto)."""
    from mclner.training.config import recorded_impl
    from mclner.viz.plots import plot_per_type, plot_training_curves
    from mclner.viz.runs import compare_markdown, load_results, per_type_table, read_log, training_curves

    run = Path(run_dir).resolve()
    if not (run / "training_args.json").is_file():
        raise UserError(f"{run}: not a run folder (no training_args.json)")
    args = json.loads((run / "training_args.json").read_text(encoding="utf-8"))
    results = load_results(run)
    plots = run / "plots"
    notes: List[str] = []
    method = str(args.get("method", "mclner"))
    lines = [f"# Run report: {run.name}", "",
             f"Method `{method}`, encoder `{args.get('encoder')}`, source `{args.get('source')}`, target "
             f"`{args.get('target')}` ({args.get('target_lang')}), seed {args.get('seed')}.", ""]

    lines += ["## Results", ""]
    final = results.get("final") or {}
    for split, title in (("target_test", "target test"), ("source_dev", "source dev")):
        if split in final:
            s = final[split]
            lines += [f"**{title}**: P {_pct(s.get('precision'))}, R {_pct(s.get('recall'))}, F1 {_pct(s.get('f1'))} "
                      f"({s.get('sentences', '?')} sentences, {s.get('support', '?')} entities)", ""]
            lines += [compare_markdown(per_type_table({run.name: results}, split=split), digits=2), ""]
    lines += ["### Stages", ""] + _stage_rows(results) + [""]

    lines += ["## Figures", ""]
    try:
        curves = training_curves(read_log(run))
        _figure(lines, run, "Training curves", plot_training_curves(curves, plots / "curves", seed=seed,
                                                                     title=f"training curves: {run.name}"))
    except UserError as exc:
        notes.append(f"training curves: {exc}")
    if "target_test" in final:
        _figure(lines, run, "Per-type scores (target test)",
                plot_per_type(per_type_table({run.name: results}), plots / "per_type", seed=seed))
    ckpt = run / "best"
    if with_model and ckpt.is_dir():
        lines += _model_figures(run, ckpt, args, notes, max_sentences, seed, device, impl)
    if notes:
        lines += ["Figures not made: " + "; ".join(notes), ""]

    lines += ["## Reproduce", "", "```sh", shlex.join(train_command(args)) + " --overwrite"]
    k = args.get("max_eval_sentences")
    if args.get("target"):
        ev = ["mclner", "evaluate", str(ckpt), str(args["target"]), "--lang", str(args.get("target_lang"))]
        if k:
            ev += ["--max-sentences", str(k)]
        used = recorded_impl(args)
        if used not in (None, "auto"):  # the implementation the run's own scores were computed with
            ev += ["--impl", used]
        lines.append(shlex.join(ev))
    lines += [shlex.join(["mclner", "report", str(run)]), "```", ""]
    lines += ["## Configuration", "", "```json", json.dumps(args, indent=2, default=str), "```", ""]
    out = run / "report.md"
    out.write_text("\n".join(lines), encoding="utf-8")
    return out, notes


def _model_figures(run: Path, ckpt: Path, args: Dict[str, Any], notes: List[str], max_sentences: int, seed: int,
                   device: Optional[str], impl: Optional[str] = None) -> List[str]:
    """Heatmap (relation methods), entity t-SNE and the target-test confusion of ``RUN/best``."""
    import numpy as np

    from mclner.data.readers import load_sentences
    from mclner.inference import load_model
    from mclner.ops.impl import check_impl
    from mclner.ops.impl import choose_impl as resolve_impl
    from mclner.viz.model import confusion_of, entity_representations
    from mclner.viz.plots import plot_confusion, plot_embedding

    lines: List[str] = []
    lm = load_model(ckpt, device)
    impl = resolve_impl(impl)
    check_impl(impl, lm.device)

    def labelled(spec: Optional[str], lang: Optional[str]) -> list:
        if not spec or str(spec).lower() == "none":
            return []
        try:
            sents = load_sentences(spec, split="test", lang=lang)
        except (UserError, OSError, KeyError) as exc:
            notes.append(f"{spec}: {exc}")
            return []
        return [s for s in sents if s.tags is not None][:max_sentences]

    src = labelled(args.get("source"), None)
    tgt = labelled(args.get("target"), args.get("target_lang"))
    pts, langs, types = [], [], []
    for sents in (src, tgt):
        if sents:
            try:
                p, l_, t = entity_representations(lm.model, lm.collator, sents, device=lm.device)
            except UserError as exc:
                notes.append(f"entities: {exc}")
                continue
            pts.append(p)
            langs += l_
            types += t
    if pts:
        res = plot_embedding(np.concatenate(pts), langs, types, run / "plots" / "entities", seed=seed,
                             title=f"entity representations ({args.get('method')}, test sets)")
        _figure(lines, run, "Entity representations", res,
                f"{len(langs)} gold entities (first {max_sentences} test sentences of each set), mean word states, "
                f"{res.data['method']}; colour = language, marker = type.")
    if tgt:
        conf = confusion_of(lm.model, lm.collator, lm.label_map, tgt, device=lm.device, impl=impl)
        _figure(lines, run, "Entity-type confusion (target test)",
                plot_confusion(conf, run / "plots" / "confusion", seed=seed))
    if src and hasattr(lm.model, "proj_a"):
        try:
            lines += _heatmap(run, lm, src, args, seed, impl)
        except UserError as exc:
            notes.append(f"heatmap: {exc}")
    return lines


def _heatmap(run: Path, lm: Any, src: list, args: Dict[str, Any], seed: int, impl: str) -> List[str]:
    from mclner.data.codeswitch import CodeSwitcher
    from mclner.data.iob2 import iob2_to_entities
    from mclner.data.lexicon import load_lexicon
    from mclner.viz.model import relation_similarity
    from mclner.viz.plots import MatrixPanel, plot_matrices

    if not args.get("lexicon"):
        raise UserError("the run has no lexicon for a code-switched counterpart")
    k = next((i for i, s in enumerate(src) if iob2_to_entities(s.tags) and len(s.tokens) <= 15), 0)
    lang = args.get("target_lang") or "zh"
    ratio = float((args.get("method_options") or {}).get("cs_word_ratio", 0.3))
    from mclner.data.segmentation import recorded_mode

    res = CodeSwitcher(load_lexicon(args["lexicon"], lang), target_lang=lang, word_ratio=ratio, seed=seed,
                       segmentation=recorded_mode(args, run)).switch_detailed(src[k])
    maps = relation_similarity(lm.model, lm.collator, src[k], res.sentence, list(res.spans), device=lm.device,
                               impl=impl)
    panels = [MatrixPanel(m.matrix, m.words, m.words, m.title, "column word j", "row word i") for m in maps]
    plot = plot_matrices(panels, run / "plots" / "heatmap", title=f"relation similarity, source test sentence {k}",
                         cmap="RdBu_r", vmin=-1.0, vmax=1.0, colorbar_label="cosine similarity", seed=seed)
    lines: List[str] = []
    _figure(lines, run, "Relation similarity (views A/B)", plot,
            f"Cosine similarity of view A of source pair (i, j) with view B of the same sentence (left) and of "
            f"its code-switched copy at the aligned pair (right): {' '.join(res.sentence.tokens)}")
    return lines
