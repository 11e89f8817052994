"""What a run folder holds, as plain data: training curves from ``log.jsonl``, per-type scores from
``results.json``, and the markdown table of ``mclner compare``. No matplotlib needed here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from mclner.errors import UserError

PathLike = Union[str, Path]

# Numbers in a step record that are not loss terms: the engine's counters, schedule and diagnostics.
# A method's own statistics come in the record's "stats" object (never drawn as a loss); logs written
# before that object existed carried one such statistic at the top level, listed in LEGACY_STATS.
NOT_LOSS_KEYS = frozenset({"step", "epoch", "grad_norm", "elapsed_s"})
LEGACY_STATS = frozenset({"tc_pairs"})
EVAL_KEYS = ("dev_f1", "dev_precision", "dev_recall")
METRICS = ("precision", "recall", "f1")


def read_log(path: PathLike) -> List[Dict[str, Any]]:
    """The records of a ``log.jsonl`` (a run folder or the file itself); a bad line is a UserError
    naming file and line, a torn last line (a killed run) is skipped with a warning."""
    from mclner.store.jsonl import read_jsonl

    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such run folder or file")
    if path.is_dir():
        path = path / "log.jsonl"
        if not path.is_file():
            raise UserError(f"{path}: no such file (is it a run folder written by `mclner train`?)")
    return read_jsonl(path)  # a torn last line (a killed run) is skipped with a warning


def text_line_of(path: Path, offset: int) -> int:
    """The 1-based line of a byte offset of a file (for errors naming where bad bytes are)."""
    try:
        with open(path, "rb") as f:
            return f.read(offset).count(b"\n") + 1
    except OSError:
        return 1


@dataclass
class StageSpan:
    """A training stage on the global step axis: its steps are ``offset + 1 .. offset + steps``."""

    name: str
    offset: int
    steps: int


@dataclass
class TrainingCurves:
    """Loss terms and dev scores against a global step (stages one after another)."""

    stages: List[StageSpan]
    terms: Dict[str, Tuple[List[int], List[float]]]  # loss term -> (global steps, values)
    evals: Dict[str, Tuple[List[int], List[float]]]  # dev_f1 / dev_precision / dev_recall -> (steps, values)
    calibration: Dict[str, float] = field(default_factory=dict)  # stage -> decoding NONE bias
    final: Dict[str, float] = field(default_factory=dict)  # "final" event: split -> F1


def _is_loss_key(key: str, value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and key not in NOT_LOSS_KEYS
            and key not in LEGACY_STATS and not key.startswith("lr_") and math.isfinite(float(value)))


def training_curves(records: Iterable[Mapping[str, Any]], terms: Optional[Sequence[str]] = None) -> TrainingCurves:
    """Curves from the records of ``log.jsonl`` (``StepLogger``): step records ``{stage, step, <loss
    terms>, grad_norm, lr_*, elapsed_s}`` and ``{"event": "eval", stage, step, dev_f1, ...}``.

    Each stage restarts its step count; stages are laid end to end in the order they first appear.
    A resumed run appends to the log and repeats some steps: the last record of a (stage, step) wins.
    ``terms`` restricts the loss terms (default: every number that is not a counter, ``grad_norm``,
    a learning rate or ``elapsed_s``).
    """
    order: List[str] = []
    steps: Dict[Tuple[str, int], Dict[str, float]] = {}
    evals: Dict[Tuple[str, int], Dict[str, float]] = {}
    calibration: Dict[str, float] = {}
    final: Dict[str, float] = {}
    for rec in records:
        event = rec.get("event")
        stage = rec.get("stage")
        if event == "final":
            final = {k: float(v) for k, v in rec.items() if k != "event" and isinstance(v, (int, float))}
            continue
        if event == "calibration" and stage is not None and isinstance(rec.get("none_bias"), (int, float)):
            calibration[str(stage)] = float(rec["none_bias"])
            continue
        if stage is None or not isinstance(rec.get("step"), int) or event not in (None, "eval"):
            continue
        stage = str(stage)
        if stage not in order:
            order.append(stage)
        key = (stage, int(rec["step"]))
        if event == "eval":
            evals[key] = {k: float(rec[k]) for k in EVAL_KEYS if isinstance(rec.get(k), (int, float))}
        else:
            steps[key] = {k: float(v) for k, v in rec.items() if _is_loss_key(k, v)}
    stages: List[StageSpan] = []
    offset = 0
    for name in order:
        last = max([s for (st, s) in list(steps) + list(evals) if st == name], default=0)
        stages.append(StageSpan(name, offset, last))
        offset += last
    offsets = {s.name: s.offset for s in stages}
    names = list(terms) if terms is not None else sorted({k for v in steps.values() for k in v},
                                                         key=lambda k: (k != "loss", k))
    term_curves: Dict[str, Tuple[List[int], List[float]]] = {}
    for t in names:
        pts = sorted((offsets[st] + s, v[t]) for (st, s), v in steps.items() if t in v)
        if pts:
            term_curves[t] = ([p[0] for p in pts], [p[1] for p in pts])
    eval_curves: Dict[str, Tuple[List[int], List[float]]] = {}
    for k in EVAL_KEYS:
        pts = sorted((offsets[st] + s, v[k]) for (st, s), v in evals.items() if k in v)
        if pts:
            eval_curves[k] = ([p[0] for p in pts], [p[1] for p in pts])
    return TrainingCurves(stages, term_curves, eval_curves, calibration, final)


# ----------------------------------------------------------------------------- results.json


def load_results(run_dir: PathLike) -> Dict[str, Any]:
    """``results.json`` of a run folder (or the file itself)."""
    path = Path(run_dir)
    if not path.exists():
        raise UserError(f"{path}: no such run folder or file")
    if path.is_dir():
        path = path / "results.json"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such file (the run has not finished, or it is not a run folder)") from None
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, expected the run's results.json") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{path}: not UTF-8 text (byte {exc.start}): not a results.json written by `mclner train`") \
            from None
    except json.JSONDecodeError as exc:
        raise UserError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    except (OSError, RecursionError) as exc:
        raise UserError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: not a JSON object")
    check_results(data, path)
    return data


def _check_scores(s: Any, where: str) -> None:
    """A score dict as `mclner.evaluation.evaluate` writes it: precision/recall/f1 numbers in [0, 1],
    support a count, per_type a dict of such dicts (checked one level down)."""
    if not isinstance(s, Mapping):
        raise UserError(f"{where}: expected an object of scores, got {type(s).__name__}")
    for m in METRICS:
        v = s.get(m)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise UserError(f"{where}: {m} must be a number in [0, 1], got {v!r}")
    sup = s.get("support", 0)
    if isinstance(sup, bool) or not isinstance(sup, int) or sup < 0:
        raise UserError(f"{where}: support must be a count, got {sup!r}")


def check_results(data: Mapping[str, Any], path: Any = "results.json") -> None:
    """A one-line UserError naming the field when a results.json is not shaped as `mclner train`
    writes it (what the tables and figures read: ``final`` → split → scores → ``per_type``)."""
    final = data.get("final")
    if final is None:
        return
    if not isinstance(final, Mapping):
        raise UserError(f"{path}: 'final' must be an object of splits, got {type(final).__name__}")
    for split, s in final.items():
        _check_scores(s, f"{path}: final.{split}")
        per = s.get("per_type", {})
        if not isinstance(per, Mapping):
            raise UserError(f"{path}: final.{split}.per_type must be an object, got {type(per).__name__}")
        for t, r in per.items():
            _check_scores(r, f"{path}: final.{split}.per_type.{t}")
    stages = data.get("stages")
    if stages is not None and not isinstance(stages, Mapping):
        raise UserError(f"{path}: 'stages' must be an object, got {type(stages).__name__}")


def run_names(paths: Sequence[PathLike]) -> List[str]:
    """Short distinct names for run folders: the folder name, with parents added until they differ."""
    parts = [Path(p).resolve().parts for p in paths]
    for depth in range(1, max((len(p) for p in parts), default=1) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return [str(p) for p in paths]


@dataclass
class PerTypeTable:
    """Scores of several runs on one split: ``values[metric][run, type]``; the last type is ``micro``."""

    runs: List[str]
    types: List[str]
    split: str
    values: Dict[str, np.ndarray]
    support: np.ndarray  # [run, type] gold entities (the micro column: all of them)


def per_type_table(results: Mapping[str, Mapping[str, Any]], split: str = "target_test") -> PerTypeTable:
    """Per-type P/R/F1 of runs side by side, from ``{name: results.json contents}``, on ``split``
    (``target_test`` or ``source_dev``: the keys of ``results["final"]``). Types are the union over the
    runs (a type a run does not score counts as absent: NaN), then ``micro`` (the overall scores)."""
    if not results:
        raise UserError("no runs to compare")
    scores = {}
    for name, res in results.items():
        final = res.get("final") if isinstance(res, Mapping) else None
        if not isinstance(final, Mapping) or split not in final:
            have = sorted(final) if isinstance(final, Mapping) else []
            raise UserError(f"run {name}: no {split!r} scores in results.json (has: {', '.join(have) or 'none'})")
        scores[name] = final[split]
    return scores_table(scores, split)


def scores_table(scores: Mapping[str, Mapping[str, Any]], split: str = "") -> PerTypeTable:
    """``per_type_table`` from score dicts as ``mclner.evaluation.evaluate`` returns them
    (``{precision, recall, f1, support, per_type: {type: {...}}}``), one per run name."""
    if not scores:
        raise UserError("no runs to compare")
    types = sorted({t for s in scores.values() for t in s.get("per_type", {})})
    cols = types + ["micro"]
    runs = list(scores)
    values = {m: np.full((len(runs), len(cols)), np.nan) for m in METRICS}
    support = np.zeros((len(runs), len(cols)), dtype=np.int64)
    for i, name in enumerate(runs):
        s = scores[name]
        for j, t in enumerate(cols):
            r = s if t == "micro" else s.get("per_type", {}).get(t)
            if r is None:
                continue
            for m in METRICS:
                values[m][i, j] = float(r[m])
            support[i, j] = int(r.get("support", 0))
    return PerTypeTable(runs, cols, split, values, support)


def compare_markdown(table: PerTypeTable, digits: int = 1) -> str:
    """A markdown table: one row per type (and ``micro``), P/R/F1 (percent) of each run side by side,
    then the gold support (one number when the runs agree, else one per run)."""
    head = ["type"] + [f"{r} {m}" for r in table.runs for m in ("P", "R", "F1")] + ["support"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for j, t in enumerate(table.types):
        cells = [t]
        for i in range(len(table.runs)):
            for m in METRICS:
                v = table.values[m][i, j]
                cells.append("-" if np.isnan(v) else f"{100 * v:.{digits}f}")
        sup = sorted(set(table.support[:, j].tolist()))
        cells.append(str(sup[0]) if len(sup) == 1 else " / ".join(str(x) for x in table.support[:, j]))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- what each run was scored on


def run_info(run_dir: PathLike, results: Mapping[str, Any], split: str = "target_test") -> Dict[str, Any]:
    """A run's method and the data its ``split`` scores come from: the data set (``training_args.json``),
    how many sentences and gold entities were scored, and the first-K cut (``--max-eval-sentences``)."""
    path = Path(run_dir)
    folder = path if path.is_dir() else path.parent
    try:
        args = json.loads((folder / "training_args.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        args = {}
    args = args if isinstance(args, dict) else {}
    scores = (results.get("final") or {}).get(split) or {}
    data = args.get("target") if split == "target_test" else args.get("target_dev") or args.get("source")
    part = "test" if split == "target_test" else "dev"
    return {"method": results.get("method") or args.get("method") or "?", "data": f"{data} {part}" if data else "?",
            "first_k": args.get("max_eval_sentences"), "sentences": scores.get("sentences"),
            "support": scores.get("support")}


def runs_markdown(names: Sequence[str], infos: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table of each run's method and scored data (``run_info``)."""
    lines = ["| run | method | scored on | sentences | entities |", "|---|---|---|---:|---:|"]
    for n, i in zip(names, infos):
        data = str(i["data"]) + (f" (first {i['first_k']})" if i.get("first_k") else "")
        lines.append(f"| {n} | {i['method']} | {data} | {i.get('sentences', '?')} | {i.get('support', '?')} |")
    return "\n".join(lines) + "\n"


def scored_apart(infos: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the runs were scored on different data (set, sentences or gold entities differ)."""
    return len({(i["data"], i.get("sentences"), i.get("support")) for i in infos}) > 1
