"""Entity representations in 2-D (matplotlib, optional): t-SNE (scikit-learn) or PCA, and the
scatter with colour = language and marker = entity type."""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from mclner.errors import UserError
from mclner.viz.canvas import MARKERS, PlotResult, new_figure, save_figure, styled

PathLike = Union[str, Path]


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


@styled
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
    if len(kinds) > len(MARKERS):
        raise ValueError(f"{len(kinds)} types but only {len(MARKERS)} markers")
    fig, axes = new_figure((7.5, 6.0))
    ax = axes[0, 0]
    import matplotlib

    palette = matplotlib.colormaps["tab10" if len(langs) <= 10 else "tab20"]
    colours = {lang: palette(i % palette.N) for i, lang in enumerate(langs)}
    lang_arr, type_arr = np.asarray(languages), np.asarray(types)
    for lang in langs:
        for t in kinds:
            sel = (lang_arr == lang) & (type_arr == t)
            if sel.any():
                ax.scatter(coords[sel, 0], coords[sel, 1], color=colours[lang], marker=MARKERS[kinds.index(t)],
                           s=28, alpha=0.8, edgecolors="none", label=f"_{lang}/{t}")
    lang_handles = [Line2D([], [], color=colours[lang], marker="o", linestyle="", label=lang) for lang in langs]
    type_handles = [Line2D([], [], color="dimgrey", marker=MARKERS[i], linestyle="", label=t)
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
    return save_figure(fig, out, data)
