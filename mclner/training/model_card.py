"""The model card (``README.md``) every checkpoint carries, and the `mclner train` command that
reproduces a run from its ``training_args.json`` (also used by `mclner report`).

The card says what a person picking up the folder needs: the method, the data and lexicon it was
trained with, the entity types, how raw text is split, the scores known when it was written (the dev
score of the stage; for ``RUN/best`` the target-test scores once the run has scored them), the
command that trains it again, how to use it, its intended use and its limits. It has the YAML header
of Hugging Face model cards, so that a hub or a model browser reads its language and task.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from pathlib import Path
from typing import Any, Dict, List, Optional

CARD = "README.md"


def _option_words(f: dataclasses.Field, value: Any) -> List[str]:
    from mclner.methods.base import option_flag

    if isinstance(f.default, bool):
        return [option_flag(f) if value else "--no-" + option_flag(f)[2:]]
    return [option_flag(f), str(value)]


def train_command(args: Dict[str, Any]) -> List[str]:
    """``mclner train ...`` (argv words) that reproduces a run from its ``training_args.json``: every
    option that differs from its built-in default (the common ones and the method's own)."""
    from mclner.methods import get_method
    from mclner.training.config import TrainConfig, recorded_impl

    words = ["mclner", "train", "--method", str(args.get("method", TrainConfig.method))]
    if args.get("impl", "") is None and recorded_impl(args) == "reference":
        words += ["--impl", "reference"]  # a run from before auto became the default
    for f in dataclasses.fields(TrainConfig):
        if "help" not in f.metadata or f.name not in args:
            continue
        v = args[f.name]
        if v is None or v == f.default:
            continue
        words += _option_words(f, v)
    cls = get_method(str(args.get("method", TrainConfig.method)))
    # the resolved method options when recorded (so a later change of a default is written out), else
    # those given explicitly (runs recorded before method_config existed)
    opts = args.get("method_config")
    opts = opts if isinstance(opts, dict) else args.get("method_options") or {}
    for f in dataclasses.fields(cls.Config):
        if f.name in opts and opts[f.name] != f.default and opts[f.name] is not None:
            words += _option_words(f, opts[f.name])
    return words


def _pct(x: Any) -> str:
    try:
        return f"{100 * float(x):.1f}"
    except (TypeError, ValueError):
        return "-"


def _scores_rows(name: str, s: Any) -> List[str]:
    if not isinstance(s, dict):
        return []
    n = s.get("sentences")
    where = f"{name}" + (f" ({n} sentences)" if isinstance(n, int) else "")
    return [f"| {where} | {_pct(s.get('precision'))} | {_pct(s.get('recall'))} | {_pct(s.get('f1'))} |"]


def model_card(cfg: Dict[str, Any], train_args: Dict[str, Any], final: Optional[Dict[str, Any]] = None) -> str:
    """The card's Markdown for a checkpoint's ``config.json`` contents and run options; ``final``:
    the run's final scores (``results.json["final"]``) when known."""
    method = str(cfg.get("method", "?"))
    try:
        from mclner.methods import get_method

        description = get_method(method).description
    except Exception:  # an unregistered method still gets a card
        description = ""
    types = list((cfg.get("label_map") or {}).get("types") or [])
    text = cfg.get("text") or {}
    a = train_args
    src_lang, tgt_lang = "en", a.get("target_lang")
    langs = [x for x in dict.fromkeys([src_lang, tgt_lang]) if x]
    extra = cfg.get("extra") or {}
    lines = ["---", "library_name: mclner", "pipeline_tag: token-classification",
             "language:"] + [f"- {x}" for x in langs] + ["tags:", "- ner", "- cross-lingual", f"- {method}", "---", ""]
    lines += [f"# {method} named entity recognition model", ""]
    if description:
        lines += [f"Method `{method}`: {description}.", ""]
    lines += ["## Data", "",
              f"- Labelled source: `{a.get('source')}`" + (f", the first {a['max_train_sentences']} sentences of a "
                                                           "seeded sample" if a.get("max_train_sentences") else ""),
              f"- Target: `{a.get('target')}` (language `{tgt_lang}`)"
              + (f"; unlabelled target text `{a['target_unlabeled']}`" if a.get("target_unlabeled") else ""),
              f"- Lexicon: `{a.get('lexicon')}`",
              f"- Encoder: `{a.get('encoder')}` (fine-tuned; `encoder/` is a Hugging Face folder with its tokenizer)",
              f"- Entity types: {', '.join(types) or '-'}"]
    if text:
        lines.append(f"- Raw text is split like the target corpus: {text.get('segmentation')} segmentation, segmenter "
                     f"`{text.get('segmenter')}` (`mclner predict --segmenter` overrides it)")
    lines += ["", "## Scores", "", "| data | precision | recall | F1 |", "|---|---:|---:|---:|"]
    rows: List[str] = []
    if isinstance(final, dict):
        rows += _scores_rows(f"target test `{a.get('target')}`", final.get("target_test"))
        rows += _scores_rows(f"source dev `{a.get('source')}`", final.get("source_dev"))
    elif isinstance(extra.get("dev"), dict):
        rows += _scores_rows(f"source dev `{a.get('source')}`, stage {extra.get('stage')}, step {extra.get('step')}",
                             extra["dev"])
    lines += rows or ["| not scored when this checkpoint was written (see the run's results.json) | - | - | - |"]
    lines += ["", "Entity-level micro scores (seqeval, strict IOB2), in percent.", ""]
    try:
        cmd = shlex.join(train_command(a))
    except Exception:  # a record this version cannot rebuild a command from
        cmd = ""
    if cmd:
        lines += ["## Command", "", "```sh", cmd, "```", ""]
    lines += ["## Use", "", "```python", "from mclner import NERPredictor", "",
              'ner = NERPredictor.from_pretrained("path/to/this/folder", device="cpu")',
              'print(ner("Angela Merkel visited Paris."))', "```", "",
              "or `mclner predict path/to/this/folder --text \"...\"`. Tagger methods (token-classification, "
              "ConCNER) export to a plain Hugging Face token-classification folder with `mclner export`.", ""]
    lines += ["## Intended use", "",
              "Research on zero-resource cross-lingual NER: finding the entity types above in target-language "
              "text with a model that saw labels in the source language only.", "",
              "## Limits", "",
              "- Trained without target-language labels: expect clearly lower scores on the target than on the "
              "source, and lower still on text unlike the training corpora (domain, period, register).",
              "- One sentence per input; very long sentences are cut into windows.",
              "- Only the entity types above; no nested entities from tagger methods.",
              "- Not suited to decisions about people without human review.", ""]
    return "\n".join(lines)


def write_model_card(folder: Path, cfg: Dict[str, Any], train_args: Dict[str, Any]) -> None:
    """Write ``README.md`` into a checkpoint folder being written (before its checksums)."""
    (Path(folder) / CARD).write_text(model_card(cfg, train_args), encoding="utf-8")


def refresh_model_card(folder: Path, final: Dict[str, Any]) -> None:
    """Rewrite the card of a finished checkpoint (``RUN/best``) with the run's final scores. As for
    the calibrated decoding bias, the folder is re-made as a hard-linked copy with the new card and
    checksums and swapped in atomically (its files may be links into a stage: never written through)."""
    import shutil
    import uuid

    from mclner.inference.checkpoint import checksums_required, read_config
    from mclner.store.atomic import atomic_replace_dir
    from mclner.store.checksums import replace_recorded_file
    from mclner.store.links import link_or_copy

    folder = Path(folder)
    cfg = read_config(folder)
    try:
        args = json.loads((folder / "training_args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        args = {}
    text = model_card(cfg, args if isinstance(args, dict) else {}, final)
    tmp = folder.with_name(f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        shutil.copytree(folder, tmp, copy_function=link_or_copy)
        if not (tmp / CARD).exists():
            (tmp / CARD).write_text("", encoding="utf-8")
        replace_recorded_file(tmp, CARD, text, checksums_required(cfg))
        atomic_replace_dir(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_card_and_tokenizer(folder: Path, cfg: Dict[str, Any], train_args: Dict[str, Any], tokenizer: Any,
                             encoder_dir: str) -> None:
    """What a checkpoint folder being written gets besides its weights: the model card, and the
    tokenizer files also in the encoder folder (hard links to the top-level copies), so that
    ``AutoTokenizer.from_pretrained(CKPT / "encoder")`` opens it like the model."""
    import os
    import shutil

    folder = Path(folder)
    write_model_card(folder, cfg, train_args)
    if tokenizer is None:
        return
    enc = folder / encoder_dir
    for name in TOKENIZER_FILES:
        src = folder / name
        if src.is_file() and not (enc / name).exists():
            try:
                os.link(src, enc / name)
            except OSError:  # a file system without hard links
                shutil.copy2(src, enc / name)


# The files `save_pretrained` of a tokenizer writes (fast and slow tokenizers of the supported encoders).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "sentencepiece.bpe.model", "spiece.model", "vocab.txt", "vocab.json", "merges.txt")
