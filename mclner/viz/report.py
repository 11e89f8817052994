"""`mclner report RUN_DIR`: one page per run, as ``RUN_DIR/report.html`` (self-contained: figures
embedded, nothing fetched) and ``RUN_DIR/report.md`` (figures linked from ``RUN_DIR/plots/``): the
run's data and method, the final scores overall and per type, the stages, the figures, a sample of
target sentences with their gold and predicted entities marked, the commands that reproduce the run,
and its options.

The training command is rebuilt from ``training_args.json`` (`mclner.training.model_card.train_command`):
every option that differs from the built-in default, with a fresh ``--output-dir`` (``RUN-reproduced``), so
that pasting it never touches the run being reported (no ``--overwrite``, never the same folder).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from mclner.errors import UserError
from mclner.training.model_card import train_command  # noqa: F401  (re-exported: mclner.viz.report.train_command)

SAMPLE_SENTENCES = 8  # target sentences shown with their gold and predicted entities


@dataclass
class Figure:
    title: str
    files: List[Path]  # png, svg, json
    note: str = ""


@dataclass
class Report:
    """What the page shows, rendered as Markdown (:func:`render_markdown`) and HTML
    (`mclner.viz.html_report.render_html`)."""

    run: Path
    args: Dict[str, Any]
    results: Dict[str, Any]
    figures: List[Figure] = field(default_factory=list)
    # (text, gold entities, predicted entities); entities as pipeline-style dicts (entity_group, start, end)
    samples: List[Tuple[str, List[Dict[str, Any]], List[Dict[str, Any]]]] = field(default_factory=list)
    sample_source: str = ""
    notes: List[str] = field(default_factory=list)
    commands: List[str] = field(default_factory=list)

    @property
    def method(self) -> str:
        return str(self.args.get("method") or self.results.get("method") or "?")


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.2f}"
    except (TypeError, ValueError):
        return "-"


def stage_rows(results: Dict[str, Any]) -> List[List[str]]:
    """The stages table: stage, steps, epochs, best source-dev F1, decoding, early stop, target data."""
    rows = []
    tdata = results.get("target_data") or {}
    for name, r in (results.get("stages") or {}).items():
        r = r if isinstance(r, dict) else {}
        cal = r.get("calibrated") or {}
        dec = ", ".join(f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}" for k, v in cal.items()) \
            if isinstance(cal, dict) and cal else "-"
        td = tdata.get(name) if isinstance(tdata, dict) else None
        tds = ", ".join(f"{k} {v}" for k, v in td.items()) if isinstance(td, dict) else "-"
        rows.append([str(name), str(r.get("steps", "-")), str(r.get("epochs", "-")), _pct(r.get("best_dev_f1")), dec,
                     "yes" if r.get("early_stopped") else "no", tds])
    return rows


STAGE_HEAD = ["stage", "steps", "epochs", "best source-dev F1", "decoding", "early stop", "target data"]


def reproduce_commands(run: Path, args: Dict[str, Any]) -> List[str]:
    """Commands that train the run again into a new folder, score its checkpoint and rebuild this page.
    None of them writes into the run folder except the last (the report itself)."""
    from mclner.training.config import recorded_impl

    words = train_command(args)
    fresh = str(run) + "-reproduced"
    if "--output-dir" in words:
        words[words.index("--output-dir") + 1] = fresh
    else:
        words += ["--output-dir", fresh]
    cmds = [shlex.join(words)]
    ckpt = run / "best"
    if args.get("target"):
        ev = ["mclner", "evaluate", str(ckpt), str(args["target"]), "--lang", str(args.get("target_lang"))]
        k = args.get("max_eval_sentences")
        if k:
            ev += ["--max-sentences", str(k)]
        used = recorded_impl(args)
        if used not in (None, "auto"):  # the implementation the run's own scores were computed with
            ev += ["--impl", used]
        cmds.append(shlex.join(ev))
    cmds.append(shlex.join(["mclner", "report", str(run)]))
    return cmds


def build_report(run_dir: Path, with_model: bool = True, max_sentences: int = 200, seed: int = 0,
                 device: Optional[str] = None, impl: Optional[str] = None) -> Report:
    """Collect the page of a run and write its figures to ``RUN_DIR/plots/``."""
    from mclner.viz.plots import plot_per_type, plot_training_curves
    from mclner.viz.runs import load_results, per_type_table, read_log, training_curves

    run = Path(run_dir).resolve()
    if not (run / "training_args.json").is_file():
        hint = f" (its run folder is {run.parent.parent})" if (run / "config.json").is_file() else ""
        raise UserError(f"{run}: not a run folder (no training_args.json){hint}")
    try:
        args = json.loads((run / "training_args.json").read_text(encoding="utf-8"))
    except (ValueError, OSError) as exc:
        raise UserError(f"{run / 'training_args.json'}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(args, dict):
        raise UserError(f"{run / 'training_args.json'}: not a JSON object")
    results = load_results(run)
    rep = Report(run, args, results)
    plots = run / "plots"
    try:
        curves = training_curves(read_log(run))
        res = plot_training_curves(curves, plots / "curves", seed=seed, title=f"training curves: {run.name}")
        rep.figures.append(Figure("Training curves", res.files))
    except UserError as exc:
        rep.notes.append(f"training curves: {exc}")
    final = results.get("final") or {}
    if "target_test" in final:
        res = plot_per_type(per_type_table({run.name: results}), plots / "per_type", seed=seed)
        rep.figures.append(Figure("Per-type scores (target test)", res.files))
    ckpt = run / "best"
    if with_model and ckpt.is_dir():
        _model_parts(rep, ckpt, max_sentences, seed, device, impl)
    rep.commands = reproduce_commands(run, args)
    return rep


def _model_parts(rep: Report, ckpt: Path, max_sentences: int, seed: int, device: Optional[str],
                 impl: Optional[str]) -> None:
    """Entity t-SNE, target-test confusion, relation heatmap (models with relation views) and the
    sample of predicted target sentences, from ``RUN/best``."""
    import numpy as np

    from mclner.data.readers import load_sentences
    from mclner.inference import load_model
    from mclner.ops.impl import check_impl
    from mclner.ops.impl import choose_impl as resolve_impl
    from mclner.viz.model import confusion_of, entity_representations
    from mclner.viz.plots import plot_confusion, plot_embedding

    run, args, notes = rep.run, rep.args, rep.notes
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
                             title=f"entity representations ({rep.method}, test sets)")
        rep.figures.append(Figure("Entity representations", res.files,
                                  f"{len(langs)} gold entities (first {max_sentences} test sentences of each set), "
                                  f"mean word states, {res.data['method']}; colour = language, marker = type."))
    if tgt:
        conf = confusion_of(lm.model, lm.collator, lm.label_map, tgt, device=lm.device, impl=impl)
        rep.figures.append(Figure("Entity-type confusion (target test)",
                                  plot_confusion(conf, run / "plots" / "confusion", seed=seed).files))
        _samples(rep, lm, tgt[:SAMPLE_SENTENCES], impl)
    if src:
        _heatmap(rep, lm, src, seed, impl)


def _samples(rep: Report, lm: Any, sents: List[Any], impl: str) -> None:
    from mclner.data.iob2 import iob2_to_entities
    from mclner.data.text import entity_dicts, words_to_text
    from mclner.evaluation import predict_entities

    preds = predict_entities(lm.model, sents, lm.collator, lm.label_map, device=lm.device, impl=impl)
    for s, pred in zip(sents, preds):
        tw = words_to_text(list(s.tokens))
        rep.samples.append((tw.text, entity_dicts(tw.text, tw.spans, iob2_to_entities(s.tags)),
                            entity_dicts(tw.text, tw.spans, pred)))
    rep.sample_source = f"the first {len(sents)} sentences of {rep.args.get('target')} test"


def _heatmap(rep: Report, lm: Any, src: list, seed: int, impl: str) -> None:
    from mclner.data.iob2 import iob2_to_entities
    from mclner.viz.figures import relation_heatmap

    k = next((i for i, s in enumerate(src) if iob2_to_entities(s.tags) and len(s.tokens) <= 15), 0)
    try:
        plot, caption, _ = relation_heatmap(lm, src[k], rep.run / "plots" / "heatmap",
                                            where=f"source test sentence {k}", train_args=rep.args, run_dir=rep.run,
                                            seed=seed, impl=impl)
    except UserError as exc:  # e.g. a model without relation-level views
        rep.notes.append(f"heatmap: {exc}")
        return
    rep.figures.append(Figure("Relation similarity (views A/B)", plot.files,
                              f"Cosine similarity of view A of source pair (i, j) with view B of the same sentence "
                              f"(left) and {caption}."))


# ----------------------------------------------------------------------------- Markdown


def _md_table(head: List[str], rows: List[List[str]], right_from: int = 1) -> List[str]:
    out = ["| " + " | ".join(head) + " |",
           "|" + "|".join("---" if i < right_from else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return out


def render_markdown(rep: Report) -> str:
    from mclner.viz.runs import compare_markdown, per_type_table

    a, run = rep.args, rep.run
    lines = [f"# Run report: {run.name}", "",
             f"Method `{rep.method}`, encoder `{a.get('encoder')}`, source `{a.get('source')}`, target "
             f"`{a.get('target')}` ({a.get('target_lang')}), seed {a.get('seed')}.", "", "## Results", ""]
    final = rep.results.get("final") or {}
    for split, title in (("target_test", "target test"), ("source_dev", "source dev")):
        if split in final:
            s = final[split]
            lines += [f"**{title}**: P {_pct(s.get('precision'))}, R {_pct(s.get('recall'))}, F1 {_pct(s.get('f1'))} "
                      f"({s.get('sentences', '?')} sentences, {s.get('support', '?')} entities)", ""]
            lines += [compare_markdown(per_type_table({run.name: rep.results}, split=split), digits=2), ""]
    lines += ["### Stages", ""] + _md_table(STAGE_HEAD, stage_rows(rep.results)) + [""]
    lines += ["## Figures", ""]
    for f in rep.figures:
        png = Path(f.files[0])
        rel = png.relative_to(run) if png.is_relative_to(run) else png
        lines += [f"### {f.title}", "", f"![{f.title}]({rel.as_posix()})", ""] + ([f.note, ""] if f.note else [])
    if rep.notes:
        lines += ["Figures not made: " + "; ".join(rep.notes), ""]
    if rep.samples:
        lines += [f"## Sample predictions ({rep.sample_source})", ""]
        for text, gold, pred in rep.samples:
            def ents(es: List[Dict[str, Any]]) -> str:
                return ", ".join(f"{e['word']} [{e['entity_group']}]" for e in es) or "-"

            lines += [f"- {text}", f"  - gold: {ents(gold)}", f"  - predicted: {ents(pred)}"]
        lines.append("")
    lines += ["## Reproduce", "", "Into a new folder (the run reported here is left as it is):", "", "```sh",
              *rep.commands, "```", ""]
    lines += ["## Configuration", "", "```json", json.dumps(a, indent=2, default=str), "```", ""]
    return "\n".join(lines)


def write_report(run_dir: Path, with_model: bool = True, max_sentences: int = 200, seed: int = 0,
                 device: Optional[str] = None, impl: Optional[str] = None) -> Tuple[Path, List[str]]:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/report.md`` with their figures; returns the HTML
    page's path and notes on figures that could not be made (e.g. the heatmap of a method without
    contrastive views). ``impl``: the op implementation of the checkpoint figures (default auto)."""
    from mclner.viz.html_report import render_html

    rep = build_report(run_dir, with_model, max_sentences, seed, device, impl)
    (rep.run / "report.md").write_text(render_markdown(rep), encoding="utf-8")
    out = rep.run / "report.html"
    out.write_text(render_html(rep), encoding="utf-8")
    return out, rep.notes
