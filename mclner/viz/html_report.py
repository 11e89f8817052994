"""The run report as one self-contained HTML page (`mclner report`): figures embedded as data URIs
(SVG: text stays text, drawn with the browser's fonts), no script, no external resource, so the file
can be mailed or archived and opens the same anywhere. Sample sentences show gold and predicted
entities highlighted the way displaCy marks them (a coloured box with the type after the words)."""

from __future__ import annotations

import base64
import hashlib
import html
import json
from pathlib import Path
from typing import Any, Dict, List, Sequence

# displaCy's colours for the usual types; other types get a stable pastel from their name.
_COLOURS = {"PER": "#aa9cfc", "PERSON": "#aa9cfc", "ORG": "#7aecec", "LOC": "#ff9561", "GPE": "#feca74",
            "MISC": "#bfe1d9", "NORP": "#c887fb", "FAC": "#9cc9cc", "EVENT": "#ffeb80", "PRODUCT": "#bfeeb7",
            "DATE": "#bfe1d9", "TIME": "#bfe1d9", "WORK_OF_ART": "#f0d0ff", "LAW": "#ff8197", "LANGUAGE": "#ff8197"}

_CSS = """
body { font-family: "DejaVu Sans", "Noto Sans", "Noto Sans CJK SC", "Noto Sans CJK JP", sans-serif;
       margin: 2em auto; max-width: 1100px; color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: .2em; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: .92em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; } th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1.2em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; }
pre { background: #f6f6f6; padding: .8em; overflow-x: auto; font-size: .85em; }
.meta { color: #444; } .note { color: #8a5a00; }
.sentence { margin: .8em 0 1.1em; } .row { margin: .15em 0; line-height: 2.3; }
.row .which { display: inline-block; width: 6.5em; color: #666; font-size: .85em; }
mark.entity { padding: .25em .4em; margin: 0 .15em; border-radius: .35em; line-height: 1; }
mark.entity .label { font-size: .62em; font-weight: bold; text-transform: uppercase; margin-left: .45em;
                     vertical-align: middle; }
"""


def _esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def type_colour(t: str) -> str:
    if t in _COLOURS:
        return _COLOURS[t]
    h = int(hashlib.sha256(t.encode("utf-8")).hexdigest()[:6], 16)
    r, g, b = 160 + h % 80, 160 + (h >> 8) % 80, 160 + (h >> 16) % 80
    return f"#{r:02x}{g:02x}{b:02x}"


def marked(text: str, entities: Sequence[Dict[str, Any]]) -> str:
    """``text`` as HTML with each entity (``start``/``end`` character offsets, ``entity_group``)
    in a coloured box labelled with its type, displaCy-style."""
    out: List[str] = []
    pos = 0
    for e in sorted(entities, key=lambda e: (e["start"], e["end"])):
        s, t = int(e["start"]), int(e["end"])
        if s < pos:  # overlapping (nested) entity: shown by its own row of the figure, not here
            continue
        out.append(_esc(text[pos:s]))
        typ = str(e["entity_group"])
        out.append(f'<mark class="entity" style="background: {type_colour(typ)}">{_esc(text[s:t])}'
                   f'<span class="label">{_esc(typ)}</span></mark>')
        pos = t
    out.append(_esc(text[pos:]))
    return "".join(out)


def _table(head: Sequence[str], rows: Sequence[Sequence[Any]], num_from: int = 1) -> str:
    th = "".join(f"<th>{_esc(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f'<td class="num">{_esc(c)}</td>' if i >= num_from else f"<td>{_esc(c)}</td>"
                                    for i, c in enumerate(r)) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _image(files: Sequence[Path]) -> str:
    """The figure as a data URI: its SVG (text kept as text) when written, else its PNG."""
    svg = next((Path(f) for f in files if str(f).endswith(".svg")), None)
    if svg is not None and svg.is_file():
        return "data:image/svg+xml;base64," + base64.b64encode(svg.read_bytes()).decode("ascii")
    png = Path(files[0])
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode("ascii")


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.2f}"
    except (TypeError, ValueError):
        return "-"


def _scores(split_scores: Dict[str, Any]) -> str:
    rows = []
    for t, r in sorted((split_scores.get("per_type") or {}).items()):
        rows.append([t, _pct(r.get("precision")), _pct(r.get("recall")), _pct(r.get("f1")), r.get("support", "-")])
    rows.append(["micro (all types)", _pct(split_scores.get("precision")), _pct(split_scores.get("recall")),
                 _pct(split_scores.get("f1")), split_scores.get("support", "-")])
    return _table(["type", "precision", "recall", "F1", "gold entities"], rows)


def render_html(rep: Any) -> str:
    """The page of a `mclner.viz.report.Report`."""
    from mclner.viz.report import STAGE_HEAD, stage_rows

    a, run = rep.args, rep.run
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>Run report: {_esc(run.name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>Run report: {_esc(run.name)}</h1>",
             f'<p class="meta">Method <b>{_esc(rep.method)}</b>, encoder <code>{_esc(a.get("encoder"))}</code>, '
             f'source <code>{_esc(a.get("source"))}</code>, target <code>{_esc(a.get("target"))}</code> '
             f'({_esc(a.get("target_lang"))}), seed {_esc(a.get("seed"))}. Folder: <code>{_esc(run)}</code></p>']
    final = rep.results.get("final") or {}
    parts.append("<h2>Results</h2>")
    overview = []
    for split, title in (("target_test", "target test"), ("source_dev", "source dev")):
        s = final.get(split)
        if isinstance(s, dict):
            overview.append([title, _pct(s.get("precision")), _pct(s.get("recall")), _pct(s.get("f1")),
                             s.get("sentences", "-"), s.get("support", "-")])
    if overview:
        parts.append(_table(["scored on", "precision", "recall", "F1", "sentences", "gold entities"], overview))
    else:
        parts.append('<p class="note">No final scores yet (the run has not finished).</p>')
    for split, title in (("target_test", "Per-type scores, target test"),
                         ("source_dev", "Per-type scores, source dev")):
        if isinstance(final.get(split), dict):
            parts += [f"<h3>{_esc(title)}</h3>", _scores(final[split])]
    rows = stage_rows(rep.results)
    if rows:
        parts += ["<h3>Stages</h3>", _table(STAGE_HEAD, rows)]
    if rep.samples:
        parts.append(f"<h2>Sample predictions</h2><p class=\"meta\">{_esc(rep.sample_source)}: gold entities above, "
                     "the model's below.</p>")
        for text, gold, pred in rep.samples:
            parts.append('<div class="sentence">'
                         f'<div class="row"><span class="which">gold</span>{marked(text, gold)}</div>'
                         f'<div class="row"><span class="which">predicted</span>{marked(text, pred)}</div></div>')
    parts.append("<h2>Figures</h2>")
    for f in rep.figures:
        parts.append(f"<figure><img alt=\"{_esc(f.title)}\" src=\"{_image(f.files)}\">"
                     f"<figcaption><b>{_esc(f.title)}</b>{'. ' + _esc(f.note) if f.note else ''}</figcaption></figure>")
    if rep.notes:
        parts.append(f'<p class="note">Figures not made: {_esc("; ".join(rep.notes))}</p>')
    parts += ["<h2>Reproduce</h2><p>Into a new folder (the run reported here is left as it is):</p>",
              "<pre>" + "\n".join(_esc(c) for c in rep.commands) + "</pre>"]
    opts = [[k, json.dumps(v, ensure_ascii=False, default=str) if not isinstance(v, str) else v]
            for k, v in a.items() if k not in ("method_config", "method_options")]
    method_opts = a.get("method_config")
    method_opts = method_opts if isinstance(method_opts, dict) else a.get("method_options") or {}
    parts += ["<h2>Options</h2>", _table(["option", "value"], opts, num_from=99)]
    if method_opts:
        parts += [f"<h3>Options of {_esc(rep.method)}</h3>",
                  _table(["option", "value"], [[k, json.dumps(v, default=str)] for k, v in method_opts.items()], 99)]
    parts.append("</body></html>\n")
    return "\n".join(parts)
