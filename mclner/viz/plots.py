"""Figures of runs and checkpoints (matplotlib, optional: ``pip install "mclner[viz]"``): training
curves, per-type scores, labelled matrices (heatmaps) and the entity-type confusion; the 2-D
embedding of entity representations is in `mclner.viz.embedding`.

Every ``plot_*`` function writes ``OUT.png``, ``OUT.svg`` (text kept as text) and ``OUT.json`` (the
data behind the figure) and returns them as a ``PlotResult`` (`mclner.viz.canvas`). Figures are built
without pyplot on the Agg canvas, so they never touch the caller's backend; the files are
byte-for-byte reproducible for the same inputs and seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from mclner.errors import UserError
from mclner.viz.canvas import PlotResult, describe_axes, jsonable, nan_to_none, new_figure, save_figure, styled
from mclner.viz.confusion import OUTSIDE, EntityConfusion
from mclner.viz.embedding import embed_2d, plot_embedding
from mclner.viz.runs import EVAL_KEYS, METRICS, PerTypeTable, TrainingCurves

PathLike = Union[str, Path]

# plot_* functions of the toolkit, wherever they are drawn (mclner.viz re-exports them)
__all__ = ["MatrixPanel", "PlotResult", "describe_axes", "embed_2d", "plot_confusion", "plot_embedding",
           "plot_matrices", "plot_matrix", "plot_per_type", "plot_training_curves", "settings_text"]


# ----------------------------------------------------------------------------- training curves


@styled
def plot_training_curves(curves: TrainingCurves, out: PathLike, title: Optional[str] = None,
                         log_scale: bool = False, seed: int = 0) -> PlotResult:
    """Every loss term (top) and dev P/R/F1 (bottom) against the global step; dashed lines separate
    the stages, whose names are written at the top."""
    if not curves.terms and not curves.evals:
        raise UserError("the log has no training steps or evaluations to plot")
    fig, axes = new_figure((9.0, 6.5), 2, 1, sharex=True)
    ax_loss, ax_dev = axes[0, 0], axes[1, 0]
    for name, (xs, ys) in curves.terms.items():
        ax_loss.plot(xs, ys, label=name, linewidth=2.0 if name == "loss" else 1.2,
                     color="black" if name == "loss" else None)
    if log_scale:
        ax_loss.set_yscale("log")
    ax_loss.set_ylabel("loss")
    # legends beside the axes, never over the curves (the last point of a run is the one looked for)
    if curves.terms:
        ax_loss.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0.0)
    styles = {"dev_f1": ("-o", "dev F1"), "dev_precision": ("--", "dev precision"), "dev_recall": (":", "dev recall")}
    for k in EVAL_KEYS:
        if k in curves.evals:
            xs, ys = curves.evals[k]
            ax_dev.plot(xs, [100 * y for y in ys], styles[k][0], label=styles[k][1], markersize=4)
    ax_dev.set_ylabel("dev score (%)")
    ax_dev.set_xlabel("optimizer step (stages one after another)")
    if curves.evals:
        ax_dev.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0.0)
    else:
        ax_dev.set_ylim(0, 100)
        ax_dev.text(0.5, 0.5, "no dev evaluations in the log", ha="center", va="center", transform=ax_dev.transAxes)
    from matplotlib.ticker import MaxNLocator

    ax_dev.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (ax_loss, ax_dev):
        for st in curves.stages:
            if st.offset > 0:
                ax.axvline(st.offset + 0.5, color="grey", linestyle="--", linewidth=0.8)
    for st in curves.stages:
        chosen = curves.calibration.get(st.name)
        label = st.name + (f" ({settings_text(chosen)})" if chosen else "")
        ax_loss.text(st.offset + 1, 1.01, label, transform=ax_loss.get_xaxis_transform(), fontsize="small",
                     va="bottom", ha="left")
    if title:
        fig.suptitle(title)
    data = {
        "kind": "training_curves",
        "stages": [{"name": s.name, "offset": s.offset, "steps": s.steps} for s in curves.stages],
        "terms": {k: {"step": xs, "value": ys} for k, (xs, ys) in curves.terms.items()},
        "evals": {k: {"step": xs, "value": ys} for k, (xs, ys) in curves.evals.items()},
        "calibration": curves.calibration,
        "final": curves.final,
    }
    return save_figure(fig, out, data)


def settings_text(values: Dict[str, Any]) -> str:
    """Decoding settings as a short label: ``{"a": 2.0, "b": "x"}`` -> ``a 2, b x``."""
    def shown(v: Any) -> str:
        if isinstance(v, float) or isinstance(v, int) and not isinstance(v, bool):
            return f"{v:g}"
        return v if isinstance(v, str) else json.dumps(v)

    return ", ".join(f"{k} {shown(v)}" for k, v in values.items())


# ----------------------------------------------------------------------------- per-type scores


@styled
def plot_per_type(table: PerTypeTable, out: PathLike, title: Optional[str] = None, seed: int = 0) -> PlotResult:
    """Grouped bars: one panel per metric (P, R, F1), types (and ``micro``) on the x axis, one bar per run."""
    n_runs, n_types = len(table.runs), len(table.types)
    fig, axes = new_figure((max(6.0, 1.1 * n_types * max(1, n_runs) ** 0.5 + 3), 7.5), 3, 1, sharex=True)
    width = 0.8 / max(1, n_runs)
    x = np.arange(n_types)
    marks: Dict[str, List[Dict[str, Any]]] = {}
    for ax, m in zip(axes[:, 0], METRICS):
        for i, run in enumerate(table.runs):
            raw = 100 * table.values[m][i]
            xs = x - 0.4 + width * (i + 0.5)
            bars = ax.bar(xs, np.nan_to_num(raw, nan=0.0), width, label=run)
            colour = bars.patches[0].get_facecolor() if bars.patches else "black"
            # A zero bar has no height and a type the run did not score has no bar: say which it is.
            for xi, v, t in zip(xs, raw, table.types):
                if np.isnan(v) or v == 0:
                    label = "n/s" if np.isnan(v) else "0"
                    ax.text(xi, 1.5, label, ha="center", va="bottom", fontsize="x-small", rotation=90,
                            color="dimgrey" if label == "n/s" else colour)
                    marks.setdefault(m, []).append({"run": run, "type": t, "mark": label})
        ax.set_ylabel({"precision": "precision (%)", "recall": "recall (%)", "f1": "F1 (%)"}[m])
        ax.set_ylim(0, 100)
        ax.grid(axis="y", linewidth=0.4, alpha=0.6)
    if any(mk["mark"] == "n/s" for v in marks.values() for mk in v):
        fig.text(0.01, 0.0, "n/s: not scored by that run (the type is absent from its results)", fontsize="x-small",
                 color="dimgrey", ha="left", va="bottom")
    axes[0, 0].legend(fontsize="small", loc="upper left", ncols=min(n_runs, 3))
    axes[-1, 0].set_xticks(x, table.types)
    axes[-1, 0].set_xlabel(f"entity type ({table.split})")
    if title:
        fig.suptitle(title)
    data = {
        "kind": "per_type",
        "split": table.split,
        "runs": table.runs,
        "types": table.types,
        "values": {m: nan_to_none(table.values[m]) for m in METRICS},
        "support": table.support.tolist(),
        "marks": marks,  # per metric: the bars drawn as "0" (a score of zero) or "n/s" (not scored)
    }
    return save_figure(fig, out, data)


# ----------------------------------------------------------------------------- matrices


@dataclass
class MatrixPanel:
    """One heatmap: ``matrix[i, j]`` for row label i (y axis) and column label j (x axis)."""

    matrix: np.ndarray
    row_labels: Sequence[str]
    col_labels: Sequence[str]
    title: str = ""
    xlabel: str = ""
    ylabel: str = ""


@styled
def plot_matrices(panels: Sequence[MatrixPanel], out: PathLike, title: Optional[str] = None, cmap: str = "viridis",
                  vmin: Optional[float] = None, vmax: Optional[float] = None, annotate: Optional[bool] = None,
                  fmt: str = ".2f", colorbar_label: str = "", seed: int = 0) -> PlotResult:
    """Labelled heatmaps side by side on one colour scale (e.g. the relation-similarity heatmaps of
    view A and view B, words on both axes). ``vmin``/``vmax`` default to the range over all panels;
    values are written in the cells when ``annotate`` (default: when every panel is at most 15×15)."""
    if not panels:
        raise ValueError("no matrices to plot")
    mats = []
    for k, p in enumerate(panels):
        m = np.asarray(p.matrix, dtype=float)
        if m.ndim != 2 or m.shape != (len(p.row_labels), len(p.col_labels)):
            raise ValueError(f"panel {k}: matrix shape {tuple(m.shape)} does not match "
                             f"{len(p.row_labels)} row and {len(p.col_labels)} column labels")
        mats.append(m)
    finite = np.concatenate([m[np.isfinite(m)] for m in mats]) if mats else np.zeros(0)
    lo = float(finite.min()) if vmin is None and finite.size else (vmin if vmin is not None else 0.0)
    hi = float(finite.max()) if vmax is None and finite.size else (vmax if vmax is not None else 1.0)
    if annotate is None:
        annotate = all(max(m.shape) <= 15 for m in mats)
    side = max(max(m.shape) for m in mats)
    cell = 0.55 if side <= 20 else 0.25
    longest = max(len(str(t)) for p in panels for t in list(p.col_labels) + list(p.row_labels)) if side else 0
    margin = 1.5 + 0.07 * longest
    fig, axes = new_figure((len(panels) * (side * cell + margin) + 1.0, side * cell + margin + 0.5), 1, len(panels))
    im = None
    for ax, p, m in zip(axes[0], panels, mats):
        im = ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
        long_cols = max((len(str(t)) for t in p.col_labels), default=0) > 4
        if side > 12:
            ax.set_xticks(np.arange(m.shape[1]), list(p.col_labels), rotation=90)
        else:
            ax.set_xticks(np.arange(m.shape[1]), list(p.col_labels), rotation=35 if long_cols else 0,
                          ha="right" if long_cols else "center", rotation_mode="anchor")
        ax.set_yticks(np.arange(m.shape[0]), list(p.row_labels))
        ax.set_title(p.title)
        ax.set_xlabel(p.xlabel)
        ax.set_ylabel(p.ylabel)
        if annotate:
            for i in range(m.shape[0]):
                for j in range(m.shape[1]):
                    if np.isfinite(m[i, j]):
                        r, g, b, _ = im.cmap(im.norm(m[i, j]))
                        dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # readable text on the cell colour
                        ax.text(j, i, format(m[i, j], fmt), ha="center", va="center", fontsize="x-small",
                                color="white" if dark else "black")
    cb = fig.colorbar(im, ax=list(axes[0]), shrink=0.9)
    cb.ax.set_label("<colorbar>")
    if colorbar_label:
        cb.set_label(colorbar_label)
    if title:
        fig.suptitle(title)
    data = {
        "kind": "matrices",
        "title": title or "",
        "vmin": lo,
        "vmax": hi,
        "panels": [{"title": p.title, "rows": list(p.row_labels), "cols": list(p.col_labels),
                    "matrix": nan_to_none(m)} for p, m in zip(panels, mats)],
    }
    return save_figure(fig, out, data)


def plot_matrix(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], out: PathLike,
                title: str = "", xlabel: str = "", ylabel: str = "", **kw: Any) -> PlotResult:
    """One labelled heatmap (see ``plot_matrices`` for the options)."""
    return plot_matrices([MatrixPanel(matrix, row_labels, col_labels, "", xlabel, ylabel)], out, title=title or None,
                         **kw)


@styled
def plot_confusion(conf: EntityConfusion, out: PathLike, normalize: bool = False, title: Optional[str] = None,
                   seed: int = 0) -> PlotResult:
    """The entity-type confusion matrix; with ``normalize`` each gold row sums to 1."""
    rows = [f"{OUTSIDE} (spurious)" if t == OUTSIDE else t for t in conf.labels]
    cols = [f"{OUTSIDE} (missed)" if t == OUTSIDE else t for t in conf.labels]
    m = conf.row_normalized() if normalize else conf.counts.astype(float)
    m[-1, -1] = np.nan  # O against O is not counted: left blank
    res = plot_matrices([MatrixPanel(m, rows, cols, "", "predicted type", "gold type")], out,
                        title=title or f"entity types ({conf.match} span match)", cmap="Blues",
                        vmin=0.0, vmax=1.0 if normalize else None, fmt=".2f" if normalize else ".0f",
                        colorbar_label="fraction of the gold row" if normalize else "entities", seed=seed)
    res.data.update({"kind": "confusion", "labels": conf.labels, "counts": conf.counts.tolist(), "match": conf.match,
                     "normalized": normalize})
    res.files[2].write_text(json.dumps(res.data, indent=1, ensure_ascii=False, default=jsonable) + "\n",
                            encoding="utf-8")
    return res
