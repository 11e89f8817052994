#!/usr/bin/env bash
# The en->zh experiment table of docs/RESULTS.md: one `mclner train` per row, equal budgets (the
# preset's steps, seed, data), then the markdown table. Usage:
#   bash scripts/experiments.sh [PRESET] [SEED] [extra mclner train options...]
# PRESET defaults to quick (CPU, ~20-35 min per row on 2 cores); use full on a GPU. Rows run one after
# another; the self-training row continues the "+ L_tc" row's source stage (--resume), so its source
# stage is the same model and only the self-training round is added. --preset quick calibrates the
# decoding bias against NONE (results.json); nb-ROW.jsonl has the plain-argmax scores too.
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-quick}; seed=${2:-42}; shift $(( $# > 2 ? 2 : $# )) || true
root=runs/$preset-s$seed
mkdir -p "$root"
run() {
    local name=$1; shift
    mclner train --preset "$preset" --fused --seed "$seed" --output-dir "$root/$name" --no-progress "$@"
}
run tc --overwrite --method token-classification "$@"
run grid --overwrite --no-codeswitch --no-sc --no-tc "$@"
run cs --overwrite --no-sc --no-tc "$@"
run cs-sc --overwrite --no-tc "$@"
run cs-sc-tc --overwrite "$@"
rm -rf "$root/full"; mkdir -p "$root/full/stages"
cp -r "$root/cs-sc-tc/stages/source" "$root/full/stages/"
cp "$root/cs-sc-tc/log.jsonl" "$root/full/"
# quick: one self-training round of 120 steps (docs/RESULTS.md); full: the preset's epochs
st_args=(); [ "$preset" = quick ] && st_args=(--max-steps 120 --eval-every 40)
run full --resume --self-training-rounds 1 "${st_args[@]}" "$@"
python scripts/results_table.py "$root"/{tc,grid,cs,cs-sc,cs-sc-tc,full}
# F1 against the decoding bias (argmax = bias 0; the bias source dev picks is marked)
for r in tc grid cs cs-sc cs-sc-tc full; do
    python scripts/none_bias.py "$root/$r/best" > "$root/nb-$r.jsonl"
done
