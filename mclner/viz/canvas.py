"""The toolkit's matplotlib canvas (matplotlib is optional: ``pip install "mclner[viz]"``): its
settings (fonts with CJK glyphs, text kept as text in SVG, stable element ids), a figure on the Agg
canvas without pyplot, and saving a figure as ``OUT.png``, ``OUT.svg`` and ``OUT.json`` (the data
behind it, read back from the drawn artists: axis labels, tick labels, legend entries, number of
points, matrix shapes, plus the values plotted). The ``plot_*`` functions (`mclner.viz.plots`,
`mclner.viz.embedding`) draw on it; the files are byte-for-byte reproducible for the same inputs and
seed.
"""

from __future__ import annotations

import functools
import json
import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple, Union

import numpy as np

from mclner.errors import UserError

PathLike = Union[str, Path]
log = logging.getLogger("mclner")

# Fonts with CJK glyphs, tried after DejaVu Sans (matplotlib falls back glyph by glyph).
_CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans CJK JP", "Noto Sans CJK TC", "Source Han Sans SC", "WenQuanYi Zen Hei",
              "WenQuanYi Micro Hei", "Droid Sans Fallback", "AR PL UMing CN", "SimHei", "Microsoft YaHei",
              "PingFang SC", "Hiragino Sans GB")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*", "h", "<", ">", "p", "d", "8")
_GLYPH_NOTE = {"shown": False}


@dataclass
class PlotResult:
    """The files written and the data behind the figure (also in ``OUT.json``)."""

    files: List[Path]
    data: Dict[str, Any] = field(default_factory=dict)


def require_matplotlib():
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


def rc_settings(seed: int) -> Dict[str, Any]:
    # The families themselves, not the generic "sans-serif": matplotlib falls back glyph by glyph only
    # along font.family, so DejaVu Sans draws Latin text and the CJK font every character it lacks.
    return {
        "font.family": ["DejaVu Sans", *cjk_fonts()],
        "svg.fonttype": "none",  # text stays text: searchable, small
        "svg.hashsalt": f"mclner-{seed}",  # stable element ids
        "axes.unicode_minus": False,
    }


def styled(fn: Callable[..., PlotResult]) -> Callable[..., PlotResult]:
    """Run a plot function under the toolkit's matplotlib settings (fonts, stable SVG ids from ``seed``):
    they are read while artists are made and drawn, so the whole body runs inside them."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kw: Any) -> PlotResult:
        matplotlib = require_matplotlib()
        with matplotlib.rc_context(rc_settings(int(kw.get("seed", 0)))):
            return fn(*args, **kw)

    return wrapper


def new_figure(figsize: Tuple[float, float], nrows: int = 1, ncols: int = 1, **kw: Any):
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


def save_figure(fig, out: PathLike, data: Dict[str, Any]) -> PlotResult:
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
    js.write_text(json.dumps(data, indent=1, ensure_ascii=False, default=jsonable) + "\n", encoding="utf-8")
    return PlotResult([png, svg, js], data)


def jsonable(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return None if np.isnan(x) else float(x)
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def nan_to_none(a: np.ndarray) -> list:
    return [[None if np.isnan(v) else float(v) for v in row] for row in np.asarray(a, dtype=float)]
