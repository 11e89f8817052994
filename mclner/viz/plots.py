"""Figures (matplotlib, optional: ``pip install "mclner[viz]"``).

Every ``plot_*`` function writes ``OUT.png``, ``OUT.svg`` (text kept as text) and ``OUT.json`` (the
data behind the figure, read back from the drawn artists: axis labels, tick labels, legend entries,
number of points, matrix shapes, plus the values plotted) and returns them as a ``PlotResult``.
Figures are built without pyplot on the Agg canvas, so they never touch the caller's backend; the
files are byte-for-byte reproducible for the same inputs and seed.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from mclner.errors import UserError
from mclner.viz.confusion import OUTSIDE, EntityConfusion
from mclner.viz.runs import EVAL_KEYS, METRICS, PerTypeTable, TrainingCurves

PathLike = Union[str, Path]
log = logging.getLogger("mclner")

# Fonts with CJK glyphs, tried after DejaVu Sans (matplotlib falls back glyph by glyph).
_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Source Han Sans SC", "WenQuanYi Zen Hei",
              "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "SimHei", "Microsoft YaHei",
              "PingFang SC", "Hiragino Sans GB")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p", "d", "8")
_GLYPH_NOTE = {"shown": False}


@dataclass
class PlotResult:
    """The files written and the data behind the figure (also in ``OUT.json``)."""

    files: List[Path]
    data: Dict[str, Any] = field(default_factory=dict)


def _matplotlib():
    try:
        import matplotlib
    except ModuleNotFoundError:
        raise UserError('plots need matplotlib: pip install "mclner[viz]" (or "matplotlib>=3.7")') from None
    return matplotlib


# Where distributions put CJK fonts (Debian fonts-noto-cjk, fonts-wqy-*, Fedora google-noto-*-cjk, macOS):
# searched when matplotlib's font cache, built before such a font was installed, knows none.
_CJK_FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts", "/Library/Fonts", "/System/Library/Fonts",
                  "~/.local/share/fonts", "~/.fonts")
_CJK_FILE_HINTS = ("cjk", "wqy", "droidsansfallback", "uming", "ukai", "simhei", "msyh", "pingfang", "hiragino",
                   "sourcehan", "ipag", "takao")


@functools.cache
def cjk_fonts() -> Tuple[str, ...]:
    """Installed fonts with CJK glyphs, best first (empty when none is installed). Fonts installed
    after matplotlib cached its font list are found on disk and registered."""
    import os

    from matplotlib import font_manager

    def known() -> Tuple[str, ...]:
        have = {f.name for f in font_manager.fontManager.ttflist}
        return tuple(f for f in _CJK_FONTS if f in have)

    found = known()
    if found:
        return found
    for root in _CJK_FONT_DIRS:
        root = os.path.expanduser(root)
        for dirpath, _dirs, files in os.walk(root):
            for name in sorted(files):
                low = name.lower()
                if low.endswith((".ttf", ".otf", ".ttc")) and any(h in low for h in _CJK_FILE_HINTS):
                    try:
                        font_manager.fontManager.addfont(os.path.join(dirpath, name))
                    except (OSError, RuntimeError, ValueError):  # an unreadable font file: skip it
                        continue
    return known()


def _rc(seed: int) -> Dict[str, Any]:
    # The families themselves, not the generic "sans-serif": matplotlib falls back glyph by glyph only
    # along font.family, so DejaVu Sans draws Latin text and the CJK font every character it lacks.
    return {
        "font.family": ["DejaVu Sans", *cjk_fonts()],
        "svg.fonttype": "none",  # text stays text: searchable, small
        "svg.hashsalt": f"mclner-{seed}",  # stable element ids
        "axes.unicode_minus": False,
    }


def _styled(fn: Callable[..., PlotResult]) -> Callable[..., PlotResult]:
    """Run a plot function under the toolkit's matplotlib settings (fonts, stable SVG ids from ``seed``):
    they are read while artists are made and drawn, so the whole body runs inside them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> PlotResult:
        matplotlib = _matplotlib()
        with matplotlib.rc_context(_rc(int(kw.get("seed", 0)))):
            return fn(*args, **kw)

    return wrapper


def _figure(figsize: Tuple[float, float], nrows: int = 1, ncols: int = 1, **kw: Any):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **kw)


def _out_stem(out: PathLike) -> Path:
    """The output path without suffix; its folder is made when missing (``RUN/plots``, a script's
    ``figs/``). The command line checks a path given with ``-o`` before it gets here."""
    out = Path(out)
    if out.suffix.lower() in (".png", ".svg", ".json"):
        out = out.with_suffix("")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise UserError(f"{out}: {out.parent} is a file, not a folder") from None
    except OSError as exc:
        raise UserError(f"{out}: cannot create the folder {out.parent} ({exc.strerror})") from None
    return out


def _texts(items) -> List[str]:
    return [t.get_text() for t in items]


def describe_axes(ax) -> Dict[str, Any]:
    """What an Axes shows, read from its artists (used in ``OUT.json`` and by the tests)."""
    from matplotlib.collections import PathCollection
    from matplotlib.container import BarContainer

    legends = [ax.get_legend()] if ax.get_legend() is not None else []
    legends += [a for a in ax.artists if a.__class__.__name__ == "Legend"]
    return {
        "title": ax.get_title(),
        "xlabel": ax.get_xlabel(),
        "ylabel": ax.get_ylabel(),
        "xticklabels": _texts(ax.get_xticklabels()),
        "yticklabels": _texts(ax.get_yticklabels()),
        "legend": [_texts(lg.get_texts()) for lg in legends],
        "lines": [{"label": ln.get_label(), "points": len(ln.get_xdata())} for ln in ax.get_lines()
                  if not ln.get_label().startswith("_")],
        "legend_covers_last_points": _covered_ends(ax, legends),
        "scatter_points": [len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection)],
        "bars": [len(c.patches) for c in ax.containers if isinstance(c, BarContainer)],
        "images": [list(im.get_array().shape) for im in ax.get_images()],
    }


def _covered_ends(ax, legends) -> List[str]:
    """The labelled lines whose last point lies under a legend (drawn figures only)."""
    covered = []
    for ln in ax.get_lines():
        xs, ys = ln.get_xdata(), ln.get_ydata()
        if ln.get_label().startswith("_") or not len(xs):
            continue
        px, py = ax.transData.transform((float(xs[-1]), float(ys[-1])))
        if any(lg.get_window_extent().contains(px, py) for lg in legends):
            covered.append(ln.get_label())
    return covered


def _save(fig, out: PathLike, data: Dict[str, Any]) -> PlotResult:
    stem = _out_stem(out)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fig.canvas.draw()  # tick labels exist only after a draw
        data = {**data, "axes": [describe_axes(ax) for ax in fig.axes if ax.get_label() != "<colorbar>"]}
        png, svg = stem.parent / (stem.name + ".png"), stem.parent / (stem.name + ".svg")
        fig.savefig(png, dpi=120, metadata={"Software": None})
        fig.savefig(svg, metadata={"Date": None, "Creator": None})
    missing = [w for w in caught if "missing from" in str(w.message)]
    for w in caught:
        if w not in missing:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    if missing:
        data["missing_glyphs"] = True
        if not _GLYPH_NOTE["shown"]:
            _GLYPH_NOTE["shown"] = True
            log.warning("some characters have no glyph in the installed fonts (CJK needs e.g. Noto Sans CJK: "
                        "apt-get install fonts-noto-cjk); the PNG shows boxes for them, the SVG keeps the text")
    js = stem.parent / (stem.name + ".json")
    js.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=_jsonable) + "\n", encoding="utf-8")
    return PlotResult([png, svg, js], data)


def _jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _nan_to_none(a: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(a, dtype=float)]


# ----------------------------------------------------------------------------- training curves


@_styled
def plot_training_curves(curves: TrainingCurves, out: PathLike, title: Optional[str] = None,
                         log_scale: bool = False, seed: int = 0) -> PlotResult:
    """Every loss term (top) and dev P/R/F1 (bottom) against the global step; dashed lines separate
    the stages, whose names are written at the top."""
    if not curves.terms and not curves.evals:
        raise UserError("the log has no training steps or evaluations to plot")
    fig, axes = _figure((9.0, 6.5), 2, 1, sharex=True)
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
        label = st.name + (f" (NONE bias {curves.calibration[st.name]:g})" if st.name in curves.calibration else "")
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
    return _save(fig, out, data)


# ----------------------------------------------------------------------------- per-type scores


@_styled
def plot_per_type(table: PerTypeTable, out: PathLike, title: Optional[str] = None, seed: int = 0) -> PlotResult:
    """Grouped bars: one panel per metric (P, R, F1), types (and ``micro``) on the x axis, one bar per run."""
    n_runs, n_types = len(table.runs), len(table.types)
    fig, axes = _figure((max(6.0, 1.1 * n_types * max(1, n_runs) ** 0.5 + 3), 7.5), 3, 1, sharex=True)
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
        "values": {m: _nan_to_none(table.values[m]) for m in METRICS},
        "support": table.support.tolist(),
        "marks": marks,  # per metric: the bars drawn as "0" (a score of zero) or "n/s" (not scored)
    }
    return _save(fig, out, data)


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


@_styled
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
    fig, axes = _figure((len(panels) * (side * cell + margin) + 1.0, side * cell + margin + 0.5), 1, len(panels))
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
                    "matrix": _nan_to_none(m)} for p, m in zip(panels, mats)],
    }
    return _save(fig, out, data)


def plot_matrix(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], out: PathLike,
                title: str = "", xlabel: str = "", ylabel: str = "", **kw: Any) -> PlotResult:
    """One labelled heatmap (see ``plot_matrices`` for the options)."""
    return plot_matrices([MatrixPanel(matrix, row_labels, col_labels, "", xlabel, ylabel)], out, title=title or None,
                         **kw)


@_styled
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
    res.files[2].write_text(json.dumps(res.data, indent=1, ensure_ascii=False, default=_jsonable) + "\n",
                            encoding="utf-8")
    return res


# ----------------------------------------------------------------------------- embeddings


def embed_2d(points: np.ndarray, method: str = "auto", seed: int = 0) -> Tuple[np.ndarray, str]:
    """2-D coordinates of ``points`` ``[n, d]`` and the method used.

    ``method``: ``"tsne"`` (scikit-learn's TSNE, seeded; needs scikit-learn), ``"pca"`` (the two
    leading principal components, numpy only, deterministic signs) or ``"auto"``: t-SNE when
    scikit-learn is importable and there are at least 5 points, else PCA.
    """
    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or not np.isfinite(x).all():
        raise ValueError(f"points must be a finite [n, d] array, got shape {tuple(x.shape)}")
    if method not in ("auto", "tsne", "pca"):
        raise ValueError(f"method must be 'auto', 'tsne' or 'pca', got {method!r}")
    n = x.shape[0]
    if method in ("auto", "tsne"):
        try:
            from sklearn.manifold import TSNE
        except ImportError:
            if method == "tsne":
                raise UserError("t-SNE needs scikit-learn (pip install scikit-learn); or use method='pca'") from None
        else:
            if n >= 5 or method == "tsne":
                if n < 2:
                    raise ValueError("t-SNE needs at least 2 points")
                perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
                coords = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(x)
                return np.asarray(coords, dtype=np.float64), "tsne"
    return _pca_2d(x), "pca"


def _pca_2d(x: np.ndarray) -> np.ndarray:
    n = x.shape[0]
    out = np.zeros((n, 2))
    if n < 2 or x.shape[1] == 0:
        return out
    xc = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    k = min(2, vt.shape[0])
    comps = vt[:k]
    # SVD signs are arbitrary: make each component's largest-magnitude loading positive.
    signs = np.sign(comps[np.arange(k), np.abs(comps).argmax(axis=1)])
    signs[signs == 0] = 1.0
    out[:, :k] = xc @ (comps * signs[:, None]).T
    return out


@_styled
def plot_embedding(points: np.ndarray, languages: Sequence[str], types: Sequence[str], out: PathLike,
                   method: str = "auto", title: Optional[str] = None, seed: int = 0) -> PlotResult:
    """Scatter of entity representations in 2-D: colour = language, marker = entity type.

    ``points`` ``[n, d]`` are reduced with ``embed_2d(method, seed)`` (``d == 2`` with ``method="none"``
    plots them as given). Two legends: languages (colours) and types (markers).
    """
    from matplotlib.lines import Line2D

    x = np.asarray(points, dtype=np.float64)
    if x.ndim != 2 or len(languages) != x.shape[0] or len(types) != x.shape[0]:
        raise ValueError(f"points {tuple(x.shape)}, {len(languages)} languages and {len(types)} types do not match")
    if method == "none":
        if x.shape[1] != 2:
            raise ValueError(f"method='none' needs 2-D points, got {x.shape[1]} dimensions")
        coords, used = x, "none"
    else:
        coords, used = embed_2d(x, method, seed)
    langs = sorted(set(languages))
    kinds = sorted(set(types))
    if len(kinds) > len(_MARKERS):
        raise ValueError(f"{len(kinds)} types but only {len(_MARKERS)} markers")
    fig, axes = _figure((7.5, 6.0))
    ax = axes[0, 0]
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(langs) <= 10 else "tab20"]
    colours = {lang: palette(i % palette.N) for i, lang in enumerate(langs)}
    lang_arr, type_arr = np.asarray(languages), np.asarray(types)
    for lang in langs:
        for t in kinds:
            sel = (lang_arr == lang) & (type_arr == t)
            if sel.any():
                ax.scatter(coords[sel, 0], coords[sel, 1], color=colours[lang], marker=_MARKERS[kinds.index(t)],
                           s=28, alpha=0.8, edgecolors="none", label=f"_{lang}/{t}")
    lang_handles = [Line2D([], [], color=colours[lang], marker="o", linestyle="", label=lang) for lang in langs]
    type_handles = [Line2D([], [], color="dimgrey", marker=_MARKERS[i], linestyle="", label=t)
                    for i, t in enumerate(kinds)]
    first = ax.legend(handles=lang_handles, title="language", loc="upper left", fontsize="small")
    ax.add_artist(first)
    ax.legend(handles=type_handles, title="type", loc="upper right", fontsize="small")
    names = {"tsne": "t-SNE", "pca": "PCA", "none": ""}
    ax.set_xlabel(f"{names[used]} 1".strip())
    ax.set_ylabel(f"{names[used]} 2".strip())
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title)
    data = {
        "kind": "embedding",
        "method": used,
        "seed": seed,
        "languages": langs,
        "types": kinds,
        "counts": {f"{lang}/{t}": int(((lang_arr == lang) & (type_arr == t)).sum()) for lang in langs for t in kinds},
        "coords": coords.round(6).tolist(),
        "point_languages": list(languages),
        "point_types": list(types),
    }
    return _save(fig, out, data)
