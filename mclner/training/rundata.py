"""The run's data: source train/dev, target test and unlabelled target sentences read with the run's
filters and seeded subsets, the target segmentation, and the method's training examples (made once
per run, so that a resumed run sees the same data)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import torch

from mclner.errors import UserError
from mclner.methods.base import Context, Method
from mclner.schema import entity_types


@dataclass
class RunSentences:
    """The run's sentences as read and filtered, before the method prepares its examples."""

    train: List[Any]
    source_index: List[int]  # position of each training sentence in the source's train split
    source_total: int  # that split's size
    dev: List[Any]
    target_test: List[Any]  # the first --max-eval-sentences
    target_test_all: List[Any]
    target_unlabeled: List[Any]


@dataclass
class Data:
    train: List[Any]
    dev: List[Any]
    target_test: List[Any]
    target_unlabeled: List[Any]
    label_map: Any
    examples: List[Any]  # the method's training examples (made once per run)
    segmentation: Any = None  # mclner.data.segmentation.Segmentation of translations into the target


def load_split(spec: str, split: str, lang: Optional[str] = None) -> List[Any]:
    """One split of a data set by name or path (`mclner.data.load.load_sentences`), a missing file a
    one-line error."""
    from mclner.data.load import load_sentences

    try:
        return list(load_sentences(spec, split=split, lang=lang))
    except FileNotFoundError as exc:
        raise UserError(f"cannot read {spec!r} ({split}): {exc}") from None


def _subset(items: List[Any], k: Optional[int], seed: int) -> List[Any]:
    if k is None or len(items) <= k:
        return items
    idx = sorted(random.Random(seed).sample(range(len(items)), k))
    return [items[i] for i in idx]


def _dev_sentences(cfg: Any) -> List[Any]:
    """--target-dev, else the source's dev split (none: the last model of each stage is kept)."""
    if cfg.target_dev:
        return load_split(cfg.target_dev, "dev", cfg.target_lang)
    try:
        return load_split(cfg.source, "dev")
    except (KeyError, UserError) as exc:  # a source without a dev split
        if "no dev" not in str(exc) and not isinstance(exc, KeyError):
            raise
        return []


def _unlabeled(cfg: Any, method: Method, test: List[Any]) -> List[Any]:
    spec = cfg.target_unlabeled or cfg.target
    if not spec:
        raise UserError(f"method {method.name!r} ({', '.join(s.name for s in method.stages())}) needs "
                        "unlabelled target text: pass --target-unlabeled or --target")
    if cfg.target_unlabeled and cfg.target_unlabeled_format == "text":
        raw = raw_target_text(cfg, test)
    else:
        raw = load_split(spec, "train", cfg.target_lang)
    unl = [type(s)(list(s.tokens), None, getattr(s, "lang", cfg.target_lang)) for s in raw]
    if cfg.max_words:
        unl = [s for s in unl if 0 < len(s.tokens) <= cfg.max_words]
    return _subset(unl, cfg.max_unlabeled_sentences, cfg.seed + 1)


def read_sentences(cfg: Any, method: Method) -> RunSentences:
    """Source train/dev, target test and (when a stage of the method reads it) unlabelled target text,
    with the run's filters and subsets applied."""
    split = load_split(cfg.source, "train")
    # (position in the split, sentence): methods may read per-sentence files given for the whole split
    kept = [(k, s) for k, s in enumerate(split) if s.tags is not None]
    if cfg.max_words:
        kept = [(k, s) for k, s in kept if 0 < len(s.tokens) <= cfg.max_words]
    kept = _subset(kept, cfg.max_train_sentences, cfg.seed)
    train = [s for _, s in kept]
    if not train:
        raise UserError(f"source {cfg.source!r} has no labelled training sentences (after --max-words)")
    dev = [s for s in _dev_sentences(cfg) if s.tags is not None][: cfg.max_eval_sentences or None]
    tgt_test_all: List[Any] = []
    if cfg.target:
        tgt_test_all = [s for s in load_split(cfg.target, "test", cfg.target_lang) if s.tags is not None]
    unl = _unlabeled(cfg, method, tgt_test_all) if method.needs_unlabeled() else []
    return RunSentences(train, [k for k, _ in kept], len(split), dev, tgt_test_all[: cfg.max_eval_sentences or None],
                        tgt_test_all, unl)


def raw_target_text(cfg: Any, test: List[Any]) -> List[Any]:
    """--target-unlabeled as raw text (--target-unlabeled-format text), split like the target corpus."""
    from mclner.data.segmenters import read_raw_text

    return read_raw_text(cfg.target_unlabeled, cfg.target_lang, cfg.target_segmentation, cfg.target_segmenter, test)


def target_segmentation(cfg: Any, unlabeled: List[Any], test: List[Any]) -> Any:
    """--target-segmentation resolved on the run's target text: the unlabelled target text (read for
    ``auto`` even when no stage uses it, if --target-unlabeled names it), else the whole target test set."""
    from mclner.data.segmentation import resolve_segmentation

    mode = cfg.target_segmentation or "auto"
    spec = cfg.target_unlabeled or cfg.target
    if cfg.target_unlabeled and cfg.target_unlabeled_format == "text":
        unlabeled = []  # split by the segmentation decided on the test set: no evidence of its own
    elif not unlabeled and cfg.target_unlabeled and mode == "auto":
        unlabeled = load_split(cfg.target_unlabeled, "train", cfg.target_lang)
    if unlabeled:
        return resolve_segmentation(mode, cfg.target_lang, unlabeled, f"the unlabelled target text ({spec})")
    return resolve_segmentation(mode, cfg.target_lang, test, f"the target test set ({cfg.target})")


def _printer(is_main: bool) -> Callable[[Dict[str, Any]], None]:
    def emit(record: Dict[str, Any]) -> None:
        if is_main and record.get("message"):
            print(record["message"], flush=True)

    return emit


def load_data(cfg: Any, method: Method, is_main: bool = True, label_map: Any = None,
              log: Optional[Callable[[Dict[str, Any]], None]] = None) -> Data:
    """The run's sentences (:func:`read_sentences`), then the method's training examples (``log``:
    where the method reports, `Context.log`; default: its messages are printed by the main process)."""
    from mclner.data.labels import LabelMap

    r = read_sentences(cfg, method)
    if label_map is None:
        label_map = LabelMap(entity_types(r.train))
    segmentation = target_segmentation(cfg, r.target_unlabeled, r.target_test_all)
    ctx = Context(cfg, torch.device("cpu"), "reference", label_map, is_main, log or _printer(is_main),
                  source_index=r.source_index, source_total=r.source_total, segmentation=segmentation)
    examples = method.prepare_examples(r.train, ctx)
    return Data(r.train, r.dev, r.target_test, r.target_unlabeled, label_map, examples, segmentation)
