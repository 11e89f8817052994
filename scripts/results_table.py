"""Markdown table of `mclner train` runs: source dev and target test P/R/F1 (overall and per type),
steps, wall time and the self-training filter counts, read from each run's results.json and log.jsonl.

    python scripts/results_table.py runs/quick-s42/{tc,grid,cs,cs-sc,cs-sc-tc,full}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _f(x: float) -> str:
    return f"{100 * x:.1f}"


def row(run: Path) -> str:
    res = json.loads((run / "results.json").read_text())
    log = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    steps = {name: st["steps"] for name, st in res["stages"].items()}
    dev, tgt = res["final"].get("source_dev", {}), res["final"].get("target_test", {})
    per = " / ".join(f"{t} {_f(v['f1'])}" for t, v in sorted(tgt.get("per_type", {}).items()))
    pl = [r for r in log if r.get("event") == "pseudo_labels"]
    st = ""
    if pl:
        c = pl[-1]
        st = f"{c['unlabeled']}→{c['has_entity']}→{c['continuous']}→{c['confident']}"
    secs = sum(r.get("elapsed_s", 0.0) for r in _last_per_stage(log))
    return (f"| {run.name} | {'+'.join(str(v) for v in steps.values())} | {_f(dev.get('f1', 0))} "
            f"| {_f(tgt.get('precision', 0))} / {_f(tgt.get('recall', 0))} / **{_f(tgt.get('f1', 0))}** | {per} "
            f"| {st or '—'} | {secs / 60:.0f} |")


def _last_per_stage(log: list) -> list:
    last: dict = {}
    for r in log:
        if "stage" in r and "elapsed_s" in r:
            last[r["stage"]] = r
    return list(last.values())


def main(argv: list) -> int:
    print("| run | steps | source dev F1 | target P / R / **F1** | target F1 per type | pseudo-labels "
          "(unlabelled→entity→continuous→confident) | train min |")
    print("|---|---|---|---|---|---|---|")
    for a in argv:
        print(row(Path(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
