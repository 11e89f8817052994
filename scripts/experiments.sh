#!/usr/bin/env bash
# The en->zh comparison of docs/RESULTS.md: every method at the same preset (budget, data, encoder),
# main rows over several seeds, ablation rows on the first seed; each checkpoint is then scored on the
# whole MSRA test set (4,631 sentences) with plain argmax decoding and with the checkpoint's own
# decoding (calibrated where the method calibrates), and the table is printed (mean ± std over seeds).
#   bash scripts/experiments.sh [PRESET] [SEED ...]          e.g.  bash scripts/experiments.sh quick 13 42 87
# PRESET: quick (CPU, 2 cores) or full (GPU). MCLNER_ROWS="tc mclner" runs only those rows.
# Extra `mclner train` options: MCLNER_TRAIN_ARGS="--fused --device cuda".
# MCLNER_ESTIMATE=1: train nothing; print the estimated hours per row and in total (planned steps per
# stage from the preset and data sizes, seconds per step from a short probe of each row on this device,
# MCLNER_PROBE_STEPS steps per stage, default 8; 0: planned steps only) and write $root/estimate.json.
#   MCLNER_ESTIMATE=1 MCLNER_TRAIN_ARGS="--device cuda" bash scripts/experiments.sh full
set -euo pipefail
cd "$(dirname "$0")/.."
# `python -m mclner` from the checkout would import ./mclner, which has no native modules (they are
# built into the installed package), so `--fused` would quietly run the reference ops: keep the
# working directory off sys.path (Python >= 3.11; older Pythons show "impl auto (reference here)").
export PYTHONSAFEPATH=1
preset=${1:-quick}; shift || true
seeds=("$@"); [ ${#seeds[@]} -gt 0 ] || seeds=(13 42 87)
root=runs/$preset
mkdir -p "$root"
# row name -> mclner train options
declare -A ROWS=(
  [tc]="--method token-classification"
  [mclner]="--method mclner"
  [concner]="--method concner"
  [grid]="--method mclner --no-codeswitch --no-sc --no-tc --self-training-rounds 0"
  [cs]="--method mclner --no-sc --no-tc --self-training-rounds 0"
  [cs-sc]="--method mclner --no-tc --self-training-rounds 0"
  [mclner-src]="--method mclner --self-training-rounds 0"
  [concner-no-lcl]="--method concner --no-lcl"
  [concner-no-tcl]="--method concner --no-tcl"
  [concner-no-kd]="--method concner --no-kd"
  [dlbri]="--method dlbri"
  [dlbri-no-bridging]="--method dlbri --no-bridging"
  [dlbri-one-bridge]="--method dlbri --dlbri-bridges 1"
  [dlbri-delta0]="--method dlbri --delta 0"
  [dlbri-no-lp]="--method dlbri --no-lp"
  [dlbri-no-boundary]="--method dlbri --no-boundary"
  [dlbri-no-combination]="--method dlbri --no-combination"
  [dlbri-lp-delta]="--method dlbri --lp-threshold delta"
)
# ablation rows whose options act only in late stages start from the finished earlier stages of the
# same seed's main row when it is complete (`mclner train --reuse-stages-from`: the result equals
# retraining those stages, docs/TRAINING.md "Reusing finished stages"), so the row differs from its
# main row only where its option acts
declare -A SHARES=(
  [mclner-src]=mclner [concner-no-kd]=concner [dlbri-delta0]=dlbri [dlbri-no-lp]=dlbri
  [dlbri-no-boundary]=dlbri [dlbri-no-combination]=dlbri [dlbri-lp-delta]=dlbri
)
MAIN=(tc mclner concner dlbri)
ABLATIONS=(grid cs cs-sc mclner-src concner-no-lcl concner-no-tcl concner-no-kd
           dlbri-no-bridging dlbri-one-bridge dlbri-delta0 dlbri-no-lp dlbri-no-boundary dlbri-no-combination
           dlbri-lp-delta)
read -r -a only <<< "${MCLNER_ROWS:-}"
wanted() { [ ${#only[@]} -eq 0 ] && return 0; local r; for r in "${only[@]}"; do [ "$r" = "$1" ] && return 0; done; return 1; }
if [ "${MCLNER_ESTIMATE:-0}" = 1 ]; then
  est=()
  for row in "${MAIN[@]}"; do wanted "$row" && est+=(--row "$row" "${#seeds[@]}" "--fused ${ROWS[$row]} ${MCLNER_TRAIN_ARGS:-}"); done
  for row in "${ABLATIONS[@]}"; do wanted "$row" && est+=(--row "$row" 1 "--fused ${ROWS[$row]} ${MCLNER_TRAIN_ARGS:-}"); done
  [ ${#est[@]} -gt 0 ] || { echo "MCLNER_ROWS names no row" >&2; exit 2; }
  probe=(--probe-steps "${MCLNER_PROBE_STEPS:-8}")
  [ "${MCLNER_PROBE_STEPS:-8}" != 0 ] || probe=(--no-probe)  # planned steps only (no device needed)
  # the two whole-MSRA scorings of run() below count as inference of each run
  exec python -m mclner.training.estimate --preset "$preset" --seed "${seeds[0]}" --extra-target-evals 2 \
    "${probe[@]}" --json "$root/estimate.json" "${est[@]}"
fi
run() {  # run ROW SEED
  local row=$1 seed=$2 out="$root/$1-s$2"
  wanted "$row" || return 0
  if [ ! -f "$out/results.json" ]; then
    local start=()
    if [ -d "$out" ]; then
      start=(--resume)
    elif [ -n "${SHARES[$row]:-}" ] && [ -f "$root/${SHARES[$row]}-s$seed/results.json" ]; then
      start=(--reuse-stages-from "$root/${SHARES[$row]}-s$seed")
    fi
    # shellcheck disable=SC2086
    python -m mclner train --preset "$preset" --seed "$seed" --output-dir "$out" --no-progress --fused \
      ${ROWS[$row]} ${MCLNER_TRAIN_ARGS:-} "${start[@]}"
  fi
  score "$out/msra_full.json"
  # a tagger, or a grid whose calibrated bias is 0, already decoded with plain argmax: the same numbers
  # (`mclner evaluate` writes which decoding it used), so the second pass over MSRA is skipped
  if [ ! -f "$out/msra_full_argmax.json" ] && grep -qE '"decoding": "decoding: (argmax per word|NONE bias 0 \(plain argmax\))' \
      "$out/msra_full.json"; then
    cp "$out/msra_full.json" "$out/msra_full_argmax.json.tmp" && mv "$out/msra_full_argmax.json.tmp" "$out/msra_full_argmax.json"
  fi
  score "$out/msra_full_argmax.json" --none-bias 0
}
score() {  # score FILE [EVALUATE OPTIONS]: the whole MSRA test set, unless FILE exists
  local file=$1; shift
  [ -f "$file" ] && return 0
  # written to a temporary file and renamed: an evaluation that is killed leaves no file that looks done
  python -m mclner evaluate "$(dirname "$file")/best" msra-zh --fused --json "$@" > "$file.tmp"
  mv "$file.tmp" "$file"
}
for seed in "${seeds[@]}"; do for row in "${MAIN[@]}"; do run "$row" "$seed"; done; done
for row in "${ABLATIONS[@]}"; do run "$row" "${seeds[0]}"; done
python scripts/results_table.py "$root"
