"""Named-entity sets of the Hugging Face hub (``datasets``; needs the hub or a local ``datasets``
cache), read into IOB2 :class:`mclner.data.sentence.Sentence`."""

from __future__ import annotations

from typing import Any, List, Optional

from mclner.data.iob2 import entities_to_iob2, iob2_to_entities
from mclner.data.sentence import Sentence
from mclner.errors import UserError

# name -> (hub path, config template, default language); the config takes the language.
HF_SETS = {
    "conll2003": ("eriktks/conll2003", None, "en"),
    "conll2002": ("eriktks/conll2002", "{lang}", "es"),
    "xtreme": ("google/xtreme", "PAN-X.{lang}", None),
    "wikiann": ("unimelb-nlp/wikiann", "{lang}", None),
}
# Tag ids of these sets, for copies whose features lost the ClassLabel names.
_CONLL_TAGS = ["O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
HF_TAG_NAMES = {
    "conll2003": _CONLL_TAGS, "conll2002": _CONLL_TAGS, "xtreme": _CONLL_TAGS[:7], "wikiann": _CONLL_TAGS[:7],
}


def load_hf(name: str, lang: Optional[str], split: str) -> List[Sentence]:
    """The ``split`` (train, dev, test) of the hub set ``name`` (a key of :data:`HF_SETS`) in ``lang``."""
    hub, config_t, default_lang = HF_SETS[name]
    lang = lang or default_lang
    if config_t and lang is None:
        raise UserError(f"the dataset {name!r} needs a language: write {name}:<lang>, e.g. {name}:de")
    config = config_t.format(lang=lang) if config_t else None
    hf_split = {"train": "train", "dev": "validation", "test": "test"}[split]
    try:
        import datasets
    except ImportError:  # pragma: no cover
        raise UserError("reading Hugging Face datasets needs the `datasets` package") from None
    from mclner.data.hub import offline_unless_reachable

    offline = False
    try:
        # without network: the local datasets cache only, at once (not the HTTP client's retries)
        with offline_unless_reachable() as offline:
            ds = _load(datasets, hub, config, hf_split)
    except Exception as exc:  # the hub or the local datasets cache is unreachable / has no such set
        where = ("the hub cannot be reached and the local datasets cache has no copy" if offline else
                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        raise UserError(
            f"cannot load the Hugging Face dataset {hub}" + (f" ({config})" if config else "")
            + f" split {hf_split}: {where}. "
            "Without hub access use an embedded source (`mclner data list`) or a local file."
        ) from None
    feature = getattr(ds.features["ner_tags"], "feature", None)
    names = getattr(feature, "names", None) or HF_TAG_NAMES[name]
    out = []
    for ex in ds:
        tags = [t if isinstance(t, str) else names[t] for t in ex["ner_tags"]]
        out.append(Sentence(list(ex["tokens"]), tags, lang or "en"))
    # Some sets (wikiann) already use IOB2; conll2002/2003 on the hub are IOB2 too. Normalise anyway.
    return [_normalise_iob2(s) for s in out]


def _load(datasets: Any, hub: str, config: Optional[str], hf_split: str) -> Any:
    try:
        return datasets.load_dataset(hub, config, split=hf_split)
    except RuntimeError as exc:
        # datasets >= 4 no longer runs loading scripts (conll2002/2003 still have one): the hub's
        # automatic parquet export of the same data is the documented replacement.
        if "script" not in str(exc).lower():
            raise
        return datasets.load_dataset(hub, config, split=hf_split, revision="refs/convert/parquet")


def _normalise_iob2(s: Sentence) -> Sentence:
    if s.tags is None:
        return s
    return Sentence(s.tokens, entities_to_iob2(iob2_to_entities(s.tags), len(s.tokens)), s.lang)
