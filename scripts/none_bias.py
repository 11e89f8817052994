"""Diagnostic behind `--calibrate-none-bias`: F1 of a relation-grid checkpoint as a function of the
bias subtracted from the NONE logit at decoding time, on the source dev set and on the target test set,
and the bias that source-dev calibration picks (no target labels are used to pick it). For a
token-classification checkpoint the same sweep lowers the O logit, for comparison.

If F1 rises with the bias, the model ranks the entity cells right but its NONE prior still wins the
argmax: the state of an under-trained W2NER-style model (docs/RESULTS.md).

    python scripts/none_bias.py CHECKPOINT [--dev conll2003-en:validation] [--target msra-zh:test:zh] [--max 500]
"""

from __future__ import annotations

import argparse
import json

from mclner.data.readers import load_sentences
from mclner.evaluation import predict_entities, score
from mclner.inference import load_model
from mclner.methods.mclner.calibrate import NONE_BIAS_GRID, calibrate_none_bias


def _data(spec: str, k: int):
    name, split, *lang = spec.split(":")
    sents = [s for s in load_sentences(name, split=split, lang=lang[0] if lang else None) if s.tags is not None]
    return sents[:k]


def _tagger_curve(lm, sentences, grid) -> dict:
    """The same sweep for a token-classification checkpoint: the bias is subtracted from the O logit."""
    from mclner.data.iob2 import iob2_to_entities

    tags = lm.model.config.tags
    _, probs = predict_entities(lm.model, sentences, lm.collator, lm.label_map, device=lm.device, return_probs=True)
    curve = {}
    for b in grid:
        preds = []
        for p in probs:
            y = p.clamp_min(1e-30).log()
            y[:, tags.index("O")] -= b
            preds.append(list(iob2_to_entities([tags[int(i)] for i in y.argmax(-1)])))
        curve[float(b)] = score([s.tags for s in sentences], preds)["f1"]
    return curve


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--dev", default="conll2003-en:validation", help="NAME:SPLIT[:LANG] used to pick the bias")
    ap.add_argument("--target", default="msra-zh:test:zh", help="NAME:SPLIT[:LANG] reported at every bias")
    ap.add_argument("--max", type=int, default=500, help="first K labelled sentences of each")
    args = ap.parse_args()
    lm = load_model(args.checkpoint)
    dev_data, tgt_data = _data(args.dev, args.max), _data(args.target, args.max)
    if lm.method.name == "token-classification":  # shift the O logit instead
        dev_curve = _tagger_curve(lm, dev_data, NONE_BIAS_GRID)
        tgt_curve = _tagger_curve(lm, tgt_data, NONE_BIAS_GRID)
        pick = max(dev_curve, key=lambda b: (dev_curve[b], -b))
    else:
        kw = dict(grid=NONE_BIAS_GRID, device=lm.device, impl="auto")
        pick, dev_curve = calibrate_none_bias(lm.model, dev_data, lm.collator, lm.label_map, **kw)
        _, tgt_curve = calibrate_none_bias(lm.model, tgt_data, lm.collator, lm.label_map, **kw)
    for b in NONE_BIAS_GRID:
        print(json.dumps({"bias": b, "dev_f1": round(100 * dev_curve[b], 2), "target_f1": round(100 * tgt_curve[b], 2),
                          "picked": b == pick}))


if __name__ == "__main__":
    main()
