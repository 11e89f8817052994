#!/usr/bin/env bash
# The relation grid's learning curve (docs/TRAINING.md, "Levers against the NONE majority"): the source
# stage of the grid alone (no code-switching, no contrastive losses, no self-training) at the quick
# preset, its source dev F1 with plain argmax decoding every EVERY steps, then the decoding NONE bias
# that --calibrate-none-bias picks on the best checkpoint (the issue's target: <= 1).
#   bash scripts/grid_curve.sh [STEPS] [FLAG ...]      e.g.  bash scripts/grid_curve.sh 250 --none-weight 0.1
# STEPS: 100 (default) or any number; FLAGs go to `mclner train` (the lever under test). One run per
# (steps, seed, flags) under $OUT; a finished run is only re-read, an unfinished one resumed.
# Env: SEED (42), EVERY (25), EVAL_SENTENCES (200), OUT (runs/grid-curve), MCLNER (the command, default
# `mclner`; e.g. MCLNER="python -m mclner" from a source tree), MCLNER_TRAIN_ARGS (e.g. "--device cuda").
# Prints one line per evaluation and a markdown row: flags | F1 at each step | P / R at the last | bias.
set -euo pipefail
cd "$(dirname "$0")/.."
steps=100
if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then steps=$1; shift; fi
flags=("$@")
seed=${SEED:-42}; every=${EVERY:-25}; n_eval=${EVAL_SENTENCES:-200}
label=$(printf '%s' "${flags[*]:-default}" | sed 's/--//g' | tr -c 'A-Za-z0-9._=-' '_')
out=${OUT:-runs/grid-curve}/$steps-s$seed-$label
read -r -a mclner <<< "${MCLNER:-mclner}"
if [ ! -f "$out/results.json" ]; then
  # shellcheck disable=SC2086
  "${mclner[@]}" train --preset quick --method mclner --self-training-rounds 0 --no-codeswitch --no-sc --no-tc \
    --calibrate-none-bias --max-steps "$steps" --eval-every "$every" --patience 0 --max-eval-sentences "$n_eval" \
    --target none --fused --seed "$seed" --no-progress --output-dir "$out" \
    ${MCLNER_TRAIN_ARGS:-} "${flags[@]}" $( [ -d "$out" ] && echo --resume )
fi
python - "$out" "${flags[*]:-(defaults)}" <<'EOF'
import json
import sys
from pathlib import Path

out, label = Path(sys.argv[1]), sys.argv[2]
rows = [json.loads(x) for x in (out / "log.jsonl").read_text().splitlines() if x.strip()]
evals = {r["step"]: r for r in rows if r.get("event") == "eval" and r.get("stage") == "source"}  # last wins
cal = [r for r in rows if r.get("event") == "calibration" and r.get("stage") == "source"]
if not evals:
    sys.exit(f"{out}: no evaluation in log.jsonl")
for step in sorted(evals):
    r = evals[step]
    print(f"step {step}: source dev argmax F1 {100 * r['dev_f1']:.1f} "
          f"(P {100 * r['dev_precision']:.1f} / R {100 * r['dev_recall']:.1f})")
bias = f"{cal[-1]['none_bias']:g}" if cal else "-"
last = evals[max(evals)]
print("| flags | " + " | ".join(f"step {s}" for s in sorted(evals)) + " | P / R at the last | calibrated bias |")
print("|---" * (len(evals) + 3) + "|")
print(f"| {label} | " + " | ".join(f"{100 * evals[s]['dev_f1']:.1f}" for s in sorted(evals))
      + f" | {100 * last['dev_precision']:.1f} / {100 * last['dev_recall']:.1f} | {bias} |")
EOF
