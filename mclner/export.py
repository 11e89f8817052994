"""`mclner export CKPT OUT`: a tagger checkpoint as a standard Hugging Face token-classification folder.

A tagger model (token-classification, ConCNER) is an encoder, the mean of each word's sub-word states,
dropout and one linear layer over IOB2 tags. A linear layer commutes with the mean, so the same encoder
with the same layer on every sub-word piece (``AutoModelForTokenClassification``) gives a word whose
pieces are one token exactly the logits the toolkit gives that word: the exported folder's
``pipeline("token-classification", aggregation_strategy="simple")`` finds the toolkit's entities and
scores there. Where the pipeline's own tokenisation cuts a word into several pieces it tags each piece
(the toolkit averages them first), and it splits raw text by its tokenizer, not by the checkpoint's
segmenter: the two can then differ at a word's edges.

Relation-grid models (mCL-NER) and DLBri's span/type students decode entities from a word-pair grid or
from span scores; `transformers` has no such head, so they are not exported: their ``encoder/`` folder is
the fine-tuned encoder as a Hugging Face model, and `NERPredictor` runs the whole model.
"""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any, Dict, Union

from mclner.errors import UserError


def export_token_classification(checkpoint: Union[str, Path], out: Union[str, Path], overwrite: bool = False
                                ) -> Path:
    """Write ``out`` (a new folder): ``config.json`` (the encoder's, with ``id2label``/``label2id`` of
    the IOB2 tags and the ``ForTokenClassification`` architecture), ``model.safetensors``, the
    tokenizer files and a model card. Returns ``out``."""
    import torch
    from transformers import AutoModelForTokenClassification

    from mclner.inference import load_model

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise UserError(f"{out} exists and is not empty (pass --overwrite to replace it)")
        if not (out / "config.json").is_file() or (out / "checksums.json").exists():
            raise UserError(f"{out}: --overwrite replaces only a folder written by `mclner export`")
    lm = load_model(checkpoint, "cpu")
    hook = getattr(lm.model, "token_classifier", None)
    parts = hook() if callable(hook) else None
    if parts is None:
        raise UserError(f"{checkpoint}: method {lm.config.get('method')!r} has no per-word tag classifier to "
                        "export (relation-grid and span models keep their own decoding; docs/USAGE.md, "
                        "\"Models that leave the toolkit\"); use NERPredictor, or its encoder/ folder")
    encoder, classifier, tags = parts
    cfg = encoder.config.__class__.from_dict(encoder.config.to_dict())
    cfg.num_labels = len(tags)
    cfg.id2label = {i: t for i, t in enumerate(tags)}
    cfg.label2id = {t: i for i, t in enumerate(tags)}
    try:
        hf = AutoModelForTokenClassification.from_config(cfg)
    except ValueError as exc:
        raise UserError(f"{checkpoint}: transformers has no token-classification model for encoder type "
                        f"{cfg.model_type!r} ({str(exc).splitlines()[0]})") from None
    base = getattr(hf, hf.base_model_prefix, None)
    head = getattr(hf, "classifier", None)
    if base is None or not isinstance(head, torch.nn.Linear) or head.weight.shape != classifier.weight.shape:
        raise UserError(f"{checkpoint}: {type(hf).__name__} has no linear 'classifier' over the encoder's states; "
                        "this encoder type cannot be exported")
    missing, unexpected = base.load_state_dict(encoder.state_dict(), strict=False)
    unexpected = [k for k in unexpected if not k.startswith("pooler.")]  # the token model has no pooler
    if missing or unexpected:
        raise UserError(f"{checkpoint}: the encoder's weights do not fit {type(hf).__name__} "
                        f"(missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})")
    with torch.no_grad():
        head.weight.copy_(classifier.weight)
        head.bias.copy_(classifier.bias)
    hf.eval()
    tmp = out.with_name(f".{out.name}.tmp-{uuid.uuid4().hex[:8]}")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        hf.save_pretrained(str(tmp), safe_serialization=True)
        lm.tokenizer.save_pretrained(str(tmp))
        (tmp / "README.md").write_text(_card(lm.config, checkpoint, tags), encoding="utf-8")
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def _card(cfg: Dict[str, Any], checkpoint: Any, tags: Any) -> str:
    method = cfg.get("method", "?")
    text = cfg.get("text") or {}
    lines = ["---", "library_name: transformers", "pipeline_tag: token-classification", "tags:", "- ner",
             f"- {method}", "---", "", f"# {method} tagger (exported from mclner)", "",
             f"Exported by `mclner export` from the checkpoint `{Path(checkpoint).name}`: the fine-tuned encoder "
             "with the method's linear IOB2 tag classifier on every sub-word piece.", "",
             "```python", "from transformers import pipeline", "",
             'ner = pipeline("token-classification", model="path/to/this/folder", aggregation_strategy="simple")',
             'print(ner("Angela Merkel visited Paris."))', "```", "",
             f"Tags: {', '.join(tags)}.", "",
             "The toolkit averages a word's sub-word pieces before the classifier, the pipeline classifies each "
             "piece: both agree wherever a word is one piece of the tokenizer, and may differ at the edges of "
             "words cut into several pieces."]
    if text.get("segmentation") == "word":
        lines += ["", f"The model's target corpus was split into words (segmenter `{text.get('segmenter')}`); the "
                  "pipeline splits text by its tokenizer alone. For text of that language, the checkpoint with "
                  "`mclner predict` or `NERPredictor` splits it as the model learned."]
    return "\n".join(lines) + "\n"


def describe(out: Path) -> Dict[str, Any]:
    """What an exported folder holds (for the command's summary line)."""
    cfg = json.loads((Path(out) / "config.json").read_text(encoding="utf-8"))
    return {"architectures": cfg.get("architectures"), "labels": list((cfg.get("id2label") or {}).values())}
