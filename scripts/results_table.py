"""Markdown table of the runs of scripts/experiments.sh: per row (runs named ROW-sSEED) the mean ± std
over seeds of the whole-MSRA-test F1 with argmax decoding and with the checkpoint's own decoding,
the source dev F1, the steps per stage and the training minutes (of the stages the run trained: a
row that took stages from its main row with --reuse-stages-from says how many). "span F1" and "type acc" split the
own-decoding test score into span extraction (boundaries only) and type prediction (accuracy on the
exactly found spans; typed F1 = span F1 × type acc), from msra_full.json; files written before
`mclner evaluate` reported the split show —.

    python scripts/results_table.py runs/quick
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Optional


def _ms(xs: List[float]) -> str:
    if not xs:
        return "—"
    if len(xs) == 1:
        return f"{100 * xs[0]:.1f}"
    return f"{100 * statistics.mean(xs):.1f} ± {100 * statistics.stdev(xs):.1f}"


def _minutes(run: Path) -> float:
    last: Dict[str, float] = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if "stage" in r and isinstance(r.get("elapsed_s"), (int, float)):
            last[r["stage"]] = r["elapsed_s"]
    return sum(last.values()) / 60


def _scores(path: Path) -> Optional[Dict[str, Any]]:
    """An evaluation's JSON, or None when it is missing or unreadable (e.g. still being written by a run
    of scripts/experiments.sh in parallel): the table shows — for it, with a note on stderr."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        print(f"note: {path}: not readable JSON (still being written?), left out", file=sys.stderr)
        return None


def table(root: Path) -> str:
    rows: Dict[str, List[Path]] = defaultdict(list)
    for d in sorted(root.iterdir()):
        m = re.fullmatch(r"(.+)-s(\d+)", d.name)
        if m and (d / "results.json").is_file():
            rows[m.group(1)].append(d)
    out = ["| row | seeds | MSRA test F1, argmax | MSRA test F1, own decoding | span F1 | type acc | source dev F1 "
           "| steps | train min |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, runs in rows.items():
        arg, own, span, typ, dev, mins = [], [], [], [], [], []
        steps, reused = "", 0
        for r in runs:
            res = json.loads((r / "results.json").read_text())
            dev.append(res["final"].get("source_dev", {}).get("f1", 0.0))
            steps = "+".join(str(s["steps"]) for s in res["stages"].values())
            argmax, full = _scores(r / "msra_full_argmax.json"), _scores(r / "msra_full.json")
            for sc, acc in ((argmax, arg), (full, own)):
                if sc is not None:
                    acc.append(sc["f1"])
            if full is not None:
                if "span" in full and "type" in full:
                    span.append(full["span"]["f1"])
                    typ.append(full["type"]["accuracy"])
            mins.append(_minutes(r))
            reused = max(reused, len(res.get("reused_stages", {}).get("stages", [])))
        seeds = ",".join(re.fullmatch(r".+-s(\d+)", r.name).group(1) for r in runs)
        out.append(f"| {name} | {seeds} | {_ms(arg)} | {_ms(own)} | {_ms(span)} | {_ms(typ)} | {_ms(dev)} | {steps} | "
                   f"{statistics.mean(mins):.0f}{f' (+{reused} reused stages)' if reused else ''} |")
    return "\n".join(out)


def main(argv: List[str]) -> int:
    for a in argv or ["runs/quick"]:
        print(table(Path(a)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
