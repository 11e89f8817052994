"""Score every part of a DLBri run on labelled target data: each student pair of the source (teacher),
student and combination stages' best checkpoints, and the combination; argmax decoding, seqeval F1.

    python scripts/dlbri_stages.py runs/quick/dlbri-s13 [--data msra-zh] [--split test] [--max-sentences 500]

Says at which stage a run gains or loses on the target (docs/RESULTS.md, "DLBri: where the seeds
part"); writes the numbers to RUN/dlbri_stages_<N>.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a DLBri run folder (with stages/*/best)")
    ap.add_argument("--data", default="msra-zh", help="labelled data set (name or path, as mclner evaluate takes)")
    ap.add_argument("--split", default="test", help="split of --data")
    ap.add_argument("--max-sentences", type=int, default=500, help="the first N labelled sentences (0: all)")
    ap.add_argument("--device", default="cpu", help="torch device")
    args = ap.parse_args()

    from mclner.data.readers import load_sentences
    from mclner.errors import UserError
    from mclner.evaluation import predict_entities, score
    from mclner.inference import load_model

    run = Path(args.run)
    try:
        sents = [s for s in load_sentences(args.data, split=args.split) if s.tags is not None]
        sents = sents[: args.max_sentences or None]
        out = {}
        for stage in ("source", "students", "combine"):
            if not (run / "stages" / stage / "best").is_dir():
                continue
            lm = load_model(run / "stages" / stage / "best", args.device)
            if getattr(lm.model, "method", "") != "dlbri":
                raise UserError(f"{run}: not a DLBri run")
            modes = [("student", 1.0), ("student", 2.0)] + ([("combination", 1.0)] if stage == "combine" else [])
            for mode, k in modes:
                lm.model.config.decode_with, lm.model.config.student = mode, k
                preds = predict_entities(lm.model, sents, lm.collator, lm.label_map, batch_size=32,
                                         device=lm.device, impl="auto")
                r = score([s.tags for s in sents], preds)
                key = f"{stage}/{'pair ' + str(int(k)) if mode == 'student' else 'combination'}"
                out[key] = {"precision": r["precision"], "recall": r["recall"], "f1": r["f1"],
                            "predicted_entities": sum(len(p) for p in preds), "gold_entities": r.get("support")}
                print(f"{key:24s} F1 {100 * r['f1']:5.1f}  P {100 * r['precision']:5.1f}  R {100 * r['recall']:5.1f}"
                      f"  predicted {out[key]['predicted_entities']}", flush=True)
        if not out:
            raise UserError(f"{run}: no stages/source, students or combine with a best checkpoint (not a DLBri run?)")
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    (run / f"dlbri_stages_{len(sents)}.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
