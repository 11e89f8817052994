"""Figures of a checkpoint shared by `mclner plot` and `mclner report`, so that both draw them from
the same settings: the relation-similarity heatmap of a source sentence against its code-switched
copy (made as the run made its own: the run's lexicon, its resolved method options and target
segmentation) or against a target sentence."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from mclner.errors import UserError

# The share of non-entity words a code-switched copy switches when the checkpoint records none.
DEFAULT_SWITCH_RATIO = 0.3


def sentence_title(words: Any, limit: int = 60) -> str:
    """A sentence's words as a quoted title fragment, cut at ``limit`` characters."""
    from mclner.data.text import words_to_text

    text = words_to_text(list(words)).text if words else ""
    return "“" + (text if len(text) <= limit else text[: limit - 1].rstrip() + "…") + "”"


def switch_ratio(lm: Any) -> float:
    """The word ratio of the code-switched copy: the checkpoint's resolved method options
    (``config.json["method_config"]``, the values the run trained with, defaults included)."""
    opts = (lm.config or {}).get("method_config") or {}
    try:
        return float(opts.get("cs_word_ratio", DEFAULT_SWITCH_RATIO))
    except (TypeError, ValueError):
        return DEFAULT_SWITCH_RATIO


def relation_heatmap(lm: Any, source: Any, out: Path, *, where: str, train_args: Dict[str, Any],
                     run_dir: Optional[Path], lexicon: Optional[str] = None, target_lang: Optional[str] = None,
                     target: Optional[Any] = None, target_where: str = "", seed: int = 0, impl: str = "auto",
                     title: Optional[str] = None) -> Tuple[Any, str, Any]:
    """Draw the relation-similarity heatmap of ``source`` (a labelled sentence; ``where`` names it,
    e.g. "sentence 3 of conll2003-en test") against its code-switched copy, or against ``target``
    (a target sentence, ``target_where`` names it). Returns the PlotResult, a caption and the
    counterpart sentence. A model
    without relation-level contrastive views is a UserError (from `mclner.viz.model`)."""
    from mclner.viz.model import relation_similarity
    from mclner.viz.plots import MatrixPanel, plot_matrices

    spans = None
    if target is not None:
        other = target
        caption = f"against {target_where or 'a target sentence'}: {sentence_title(other.tokens, 200)}"
    else:
        from mclner.data.codeswitch import CodeSwitcher
        from mclner.data.lexicon import load_lexicon
        from mclner.data.segmentation import recorded_mode

        lex = lexicon or train_args.get("lexicon")
        lang = target_lang or train_args.get("target_lang") or "zh"
        if not lex:
            raise UserError("--lexicon is needed for the code-switched counterpart (or give --target)")
        seg = recorded_mode(train_args, run_dir)  # as the run split its translations
        res = CodeSwitcher(load_lexicon(lex, lang), target_lang=lang, word_ratio=switch_ratio(lm), seed=seed,
                           segmentation=seg).switch_detailed(source)
        other, spans = res.sentence, list(res.spans)
        caption = f"against its code-switched copy: {sentence_title(other.tokens, 200)}"
    maps = relation_similarity(lm.model, lm.collator, source, other, spans, impl=impl, device=lm.device)
    panels = [MatrixPanel(m.matrix, m.words, m.words, m.title, "column word j", "row word i") for m in maps]
    plot = plot_matrices(panels, out, title=title or f"relation similarity of {where}: {sentence_title(source.tokens)}",
                         cmap="RdBu_r", vmin=-1.0, vmax=1.0, colorbar_label="cosine similarity", seed=seed)
    return plot, caption, other
